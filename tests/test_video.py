"""Video input: every container format, uniform sampling, seeking, and clear errors."""

from __future__ import annotations

import os
import random
import tracemalloc
import warnings

import numpy as np
import pytest

av = pytest.importorskip("av")

from llava_scissor import ScissorError, ScissorWarning  # noqa: E402
from llava_scissor.video import check_request, memory_limit, probe, read_video, sample_indices  # noqa: E402

# (suffix, encoder, pixel format); lossy codecs, so pixel checks allow a tolerance
FORMATS = [
    ("mp4", "libx264", "yuv420p"),
    ("webm", "libvpx-vp9", "yuv420p"),
    ("mkv", "libx264", "yuv420p"),
    ("avi", "mpeg4", "yuv420p"),
    ("gif", "gif", "rgb8"),
]
STEP = 8  # grey level of frame i is STEP * i


def level(i: int) -> int:
    return (STEP * i) % 256


def write_video(
    path: str,
    frames: int = 30,
    *,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    size: tuple[int, int] = (64, 48),
    fps: int = 10,
    gop: int | None = None,
    pattern: str = "level",
) -> str:
    """Write a small video whose frame i is a flat grey of level(i) ("level") or a moving
    square on a two-tone background ("scene"). Returns the path."""
    w, h = size
    with av.open(path, "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        if gop:
            stream.codec_context.gop_size = gop
        for i in range(frames):
            if pattern == "level":
                array = np.full((h, w, 3), level(i), np.uint8)
            else:
                array = np.zeros((h, w, 3), np.uint8)
                array[: h // 2] = (70, 130, 220)
                array[h // 2 :] = (60, 160, 60)
                x = int((w - 16) * i / max(frames - 1, 1))
                array[h // 3 : h // 3 + 16, x : x + 16] = (230, 40, 40)
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.mark.parametrize("suffix,codec,pix_fmt", FORMATS)
def test_each_format_samples_uniformly(tmp_path, suffix, codec, pix_fmt):
    path = write_video(str(tmp_path / f"v.{suffix}"), 30, codec=codec, pix_fmt=pix_fmt)
    info = probe(path)
    assert info.frames == 30  # webm/mkv headers have no count: counted by demuxing
    assert (info.width, info.height) == (64, 48)
    assert info.fps == pytest.approx(10.0)
    clip = read_video(path, 8)
    assert clip.frames.shape == (8, 48, 64, 3) and clip.frames.dtype == np.uint8
    assert list(clip.indices) == sample_indices(30, 8) == [0, 4, 8, 12, 16, 20, 24, 29]
    assert clip.timestamps == pytest.approx([i / 10 for i in clip.indices])
    got = clip.frames.reshape(8, -1).mean(1)
    want = np.array([level(i) for i in clip.indices], dtype=float)
    assert np.abs(got - want).max() < 10, (got, want)  # the right frames, in order


def test_sample_indices_rule():
    for total in (1, 2, 7, 30, 1000):
        for n in (1, 2, 8, 32):
            idx = sample_indices(total, n)
            assert len(idx) == min(n, total)  # never more frames than the video has
            assert len(sample_indices(total, n, repeat=True)) == n
            assert idx[0] == 0 and all(0 <= i < total for i in idx)
            assert idx == sorted(idx)
            if min(n, total) > 1:
                assert idx[-1] == total - 1
    assert sample_indices(3, 6) == [0, 1, 2]  # each frame once
    assert sample_indices(3, 6, repeat=True) == [0, 0, 0, 1, 1, 2]  # repeats only when asked
    assert sample_indices(100, 4) == [0, 33, 66, 99]


def test_one_sampling_rule_for_decoder_and_model_inputs(tmp_path):
    """11 frames, 4 samples: LLaVA-OneVision's linspace(0, 10, 4) = 0, 3.33, 6.67, 10 truncates
    to frame 6 (rounding would give 7); the decoder and the model inputs agree."""
    pytest.importorskip("transformers")
    from llava_scissor.integrations.hf.inputs import sample_frames

    assert sample_indices(11, 4) == [0, 3, 6, 10]
    frames = np.arange(11, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    assert sample_frames(frames, 4)[:, 0, 0, 0].tolist() == [0, 3, 6, 10]
    assert read_video(write_video(str(tmp_path / "eleven.mp4"), 11), 4).indices == (0, 3, 6, 10)
    assert sample_frames(frames, 20).shape[0] == 11  # never padded


def test_more_frames_than_the_video_uses_each_frame_once(tmp_path):
    path = write_video(str(tmp_path / "short.mp4"), 3)
    with pytest.warns(ScissorWarning, match="has 3 frames, fewer than the 5 asked: each frame used once"):
        clip = read_video(path, 5)
    assert clip.frames.shape[0] == 3 and clip.indices == (0, 1, 2)
    assert (clip.requested, clip.available, clip.truncated) == (5, 3, False)
    assert "none repeated" in clip.note


def test_repetition_only_when_asked(tmp_path):
    path = write_video(str(tmp_path / "short.mp4"), 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # asked for: no warning
        clip = read_video(path, 5, repeat=True)
    assert clip.frames.shape[0] == 5
    assert list(clip.indices) == [0, 0, 1, 1, 2]  # a repeated frame keeps its own index
    assert clip.timestamps == pytest.approx([0.0, 0.0, 0.1, 0.1, 0.2])
    np.testing.assert_array_equal(clip.frames[0], clip.frames[1])
    assert clip.note.endswith("frames repeated to give 5")


def test_one_frame_video(tmp_path):
    path = write_video(str(tmp_path / "one.mp4"), 1)
    with pytest.warns(ScissorWarning, match="has 1 frame, fewer than the 32 asked"):
        clip = read_video(path, 32)
    assert clip.frames.shape[0] == 1 and clip.indices == (0,)


def test_exact_request_has_no_note(tmp_path):
    path = write_video(str(tmp_path / "v.mp4"), 12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clip = read_video(path, 12)
    assert clip.note is None and clip.indices == tuple(range(12))


def _faststart_video(path: str, frames: int, gop: int = 5) -> str:
    """An mp4 with its index at the front, as most downloaded videos have: cut in half it
    still opens, and its header promises every frame. The top-left quarter of frame i is
    a flat level(i); the bottom-right quarter is noise, so that frames fill the file."""
    with av.open(path, "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.gop_size = gop
        rng = np.random.default_rng(0)
        for i in range(frames):
            array = np.full((48, 64, 3), level(i), np.uint8)
            array[24:, 32:] = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _cut(path: str, out: str, fraction: float = 0.5) -> str:
    data = open(path, "rb").read()
    with open(out, "wb") as fh:
        fh.write(data[: int(len(data) * fraction)])
    return out


@pytest.mark.parametrize("seek", [False, True, None])
def test_truncated_stream_is_sampled_from_what_decodes(tmp_path, seek):
    full = _faststart_video(str(tmp_path / "full.mp4"), 30)
    cut = _cut(full, str(tmp_path / "cut.mp4"))
    assert probe(cut).frames == 30  # the header still promises all 30 frames
    with pytest.warns(ScissorWarning, match=r"the stream ends after \d+ of the 30 frames"):
        clip = read_video(cut, 8, seek=seek)
    assert clip.truncated and 0 < clip.available < 30
    assert clip.indices == tuple(sample_indices(clip.available, 8))  # spread over the frames that exist
    assert clip.indices[-1] == clip.available - 1 and len(set(clip.indices)) == 8  # nothing repeated
    assert clip.timestamps == pytest.approx([i / 10 for i in clip.indices])
    got = clip.frames[:, :20, :28].reshape(8, -1).mean(1)
    want = np.array([level(i) for i in clip.indices], dtype=float)
    assert np.abs(got - want).max() < 10, (got, want)  # each frame is the frame its index says
    assert "sampled 8 frames from the" in clip.note


def test_truncated_sample_video_is_not_relabelled(tmp_path):
    """docs/sample.mp4 cut at half: 58 of 120 frames decode. Before, frame 57 was repeated 16
    times under indices 61-119 and times 5.1-9.9 s."""
    cut = _cut(os.path.join(ROOT, "docs", "sample.mp4"), str(tmp_path / "half.mp4"))
    with pytest.warns(ScissorWarning, match="truncated or damaged"):
        clip = read_video(cut, 32)
    assert clip.truncated and clip.available < 120
    assert max(clip.indices) == clip.available - 1 and len(set(clip.indices)) == 32
    assert max(clip.timestamps) < clip.available / 12 + 1e-6
    for a, b in zip(clip.frames[:-1], clip.frames[1:]):
        assert not np.array_equal(a, b)  # the sample's car moves: no frame repeated


def test_truncated_and_too_few_frames(tmp_path):
    full = _faststart_video(str(tmp_path / "full.mp4"), 30)
    cut = _cut(full, str(tmp_path / "cut.mp4"))
    with pytest.warns(ScissorWarning, match="fewer than the 64 asked"):
        clip = read_video(cut, 64)
    assert clip.indices == tuple(range(clip.available))


def test_memory_is_checked_before_decoding(tmp_path, monkeypatch):
    path = write_video(str(tmp_path / "v.mp4"), 4, size=(64, 48))
    need = check_request(probe(path), 4)
    assert need == 4 * 48 * 64 * 3
    from llava_scissor.video import _decode

    monkeypatch.setattr(_decode, "_decode", lambda *a, **k: pytest.fail("decoded before the check"))
    with pytest.raises(
        ScissorError,
        match=r"100,000 frames of 64x48 need 0.9 GiB of memory once decoded, "
        r"more than the limit of 1.0 MiB \(max_bytes\)",
    ) as err:
        read_video(path, 100_000, repeat=True, max_bytes=2**20)
    assert "\n" not in str(err.value)
    limit, why = memory_limit()
    assert limit > 0 and why
    with pytest.raises(ScissorError, match="more than the limit of .* memory available|fixed limit"):
        read_video(path, 10**9, repeat=True)  # 9 TB of frames, whatever this machine has
    # without repeat the request is 4 frames: it fits
    assert check_request(probe(path), 100_000, max_bytes=2**20) == need


def test_seeking_gives_the_same_frames(tmp_path):
    path = write_video(str(tmp_path / "long.mp4"), 600, size=(32, 32), fps=30, gop=30, pattern="level")
    straight = read_video(path, 6, seek=False)
    seeking = read_video(path, 6, seek=True)
    assert straight.indices == seeking.indices == tuple(sample_indices(600, 6))
    np.testing.assert_array_equal(straight.frames, seeking.frames)
    auto = read_video(path, 2)  # a 599-frame gap: seeks
    np.testing.assert_array_equal(auto.frames, straight.frames[[0, -1]])


def test_only_sampled_frames_are_kept_in_memory(tmp_path):
    path = write_video(str(tmp_path / "big.mp4"), 120, size=(256, 192))
    frame_bytes = 256 * 192 * 3
    tracemalloc.start()
    try:
        clip = read_video(path, 4, seek=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert clip.frames.shape == (4, 192, 256, 3)
    assert peak < 16 * frame_bytes  # far below the 120 decoded frames


def _expect(path, match):
    with pytest.raises(ScissorError, match=match) as err:
        read_video(path, 4)
    assert "\n" not in str(err.value)


def test_missing_file(tmp_path):
    _expect(str(tmp_path / "nope.mp4"), "video file not found")


def test_directory(tmp_path):
    _expect(str(tmp_path), "got a directory")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    _expect(str(path), "empty")


def test_not_a_video(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_bytes(random.Random(0).randbytes(4096))  # seeded: the same bytes every run
    _expect(str(path), "cannot read video")


def test_truncated_file(tmp_path):
    full = write_video(str(tmp_path / "full.mp4"), 30)
    data = open(full, "rb").read()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 3])
    _expect(str(cut), "cannot (read|decode) video|zero")


def test_zero_frames(tmp_path):
    path = str(tmp_path / "zero.mp4")
    with av.open(path, "w") as container:  # a valid container without any video frame
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        container.start_encoding()
    _expect(path, "zero frames")


@pytest.mark.parametrize("bad", [0, -3, True, 2.5])
def test_bad_frame_count(tmp_path, bad):
    path = write_video(str(tmp_path / "v.mp4"), 10)
    with pytest.raises(ScissorError, match="frames must be an int >= 1"):
        read_video(path, bad)


def test_progress_is_reported(tmp_path):
    path = write_video(str(tmp_path / "v.mp4"), 20)
    calls = []
    read_video(path, 5, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 5) for i in range(1, 6)]


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_committed_sample_video():
    path = os.path.join(ROOT, "docs", "sample.mp4")
    assert os.path.getsize(path) < 300 * 1024
    info = probe(path)
    assert (info.frames, info.width, info.height) == (120, 384, 288)
    assert info.duration == pytest.approx(10.0, abs=0.2)
    clip = read_video(path, 32)
    day, night = clip.frames[0].mean(), clip.frames[-1].mean()
    assert day > night + 40  # a bright day scene, then a night scene


def test_sample_video_script_renders(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_sample_video", os.path.join(ROOT, "scripts", "make_sample_video.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    frames = module.render(seconds=1.0, fps=4)
    assert len(frames) == 4 and frames[0].shape == (288, 384, 3)
    np.testing.assert_array_equal(frames[0], module.render(seconds=1.0, fps=4)[0])  # deterministic
    path = str(tmp_path / "s.mp4")
    module.write(path, frames, fps=4, crf=30)
    assert probe(path).frames == 4


def test_max_side_scales_while_decoding(tmp_path):
    path = write_video(str(tmp_path / "wide.mp4"), 6, size=(160, 96))
    full = read_video(path, 3)
    small = read_video(path, 3, max_side=80)
    assert full.frames.shape == (3, 96, 160, 3) and small.frames.shape == (3, 48, 80, 3)
    assert abs(float(small.frames.mean()) - float(full.frames.mean())) < 2
    assert read_video(path, 3, max_side=500).frames.shape == full.frames.shape
    with pytest.raises(ScissorError, match="max_side"):
        read_video(path, 3, max_side=0)


def test_sample_video_with_more_frames_than_it_has():
    """The issue's case: --frames 200 on the 120-frame sample gave 200 frames."""
    path = os.path.join(ROOT, "docs", "sample.mp4")
    with pytest.warns(ScissorWarning, match="has 120 frames, fewer than the 200 asked"):
        clip = read_video(path, 200)
    assert clip.indices == tuple(range(120)) and clip.num_frames == 120
