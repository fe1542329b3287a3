"""Bad videos and options through the command line: one line on stderr, the right exit
status, no traceback, and no file of the user's changed.

Each row of ``CASES`` is a video (made here, or the committed sample cut short) and extra
options; it runs through ``ask``, ``compress`` and ``visualize`` with a tiny local model.
A refused input exits 2 with one ``llava-scissor: error:`` line; an input read differently
from what was asked (a stream that ends early, fewer frames than asked) exits 0 with one
``llava-scissor: warning:`` line and frames that are what they say they are.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")
pytest.importorskip("transformers")
pytest.importorskip("safetensors")
pytest.importorskip("PIL")

from hf_models import write_tiny_model  # noqa: E402
from test_video import write_video  # noqa: E402

from llava_scissor.cli import main  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "docs" / "sample.mp4"
COMMANDS = ("compress", "visualize", "ask")


def _cut(source: Path, out: Path, fraction: float) -> None:
    data = source.read_bytes()
    out.write_bytes(data[: int(len(data) * fraction)])


def _zero_frames(path: Path) -> None:
    with av.open(str(path), "w") as container:  # a valid container without any video frame
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        container.start_encoding()


def _audio_only(path: Path) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """A folder of the user's files: good and bad videos."""
    root = tmp_path_factory.mktemp("user")
    _cut(SAMPLE, root / "half.mp4", 0.5)  # index at the front: opens, 58 of 120 frames decode
    write_video(str(root / "plain.mp4"), 30, size=(64, 48))  # index at the end (no faststart)
    _cut(root / "plain.mp4", root / "headless.mp4", 0.3)  # ... so a cut loses the index
    (root / "empty.mp4").write_bytes(b"")
    (root / "noise.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (root / "notes.mp4").write_text("this is not a video\n")
    _zero_frames(root / "zero.mp4")
    _audio_only(root / "sound.wav")
    write_video(str(root / "one.mp4"), 1, size=(64, 48))
    write_video(str(root / "short.mp4"), 5, size=(64, 48))
    (root / "folder.mp4").mkdir()
    return root


@pytest.fixture(scope="module")
def ov_model(tmp_path_factory) -> str:
    return str(write_tiny_model("llava_onevision", tmp_path_factory.mktemp("ov") / "tiny-ov"))


# (name, video file, extra options, expected exit status, what the one stderr line says)
CASES = [
    ("truncated", "half.mp4", ["--frames", "8"], 0, "warning: .*half.mp4: the stream ends after 58 of the 120 frames"),
    ("truncated, index lost", "headless.mp4", [], 2, "error: cannot read video"),
    ("empty", "empty.mp4", [], 2, r"error: video file is empty \(0 bytes\)"),
    ("random bytes", "noise.mp4", [], 2, "error: cannot read video"),
    ("text", "notes.mp4", [], 2, "error: cannot read video"),
    ("zero frames", "zero.mp4", [], 2, "error: video has zero frames"),
    ("no video stream", "sound.wav", [], 2, r"error: video has zero frames \(no video stream\)"),
    ("missing", "nowhere.mp4", [], 2, "error: video file not found"),
    ("directory", "folder.mp4", [], 2, "error: expected a video file, got a directory"),
    ("one frame", "one.mp4", [], 0, "warning: .*one.mp4 has 1 frame, fewer than the 32 asked: each frame used once"),
    (
        "more frames than the video",
        "short.mp4",
        ["--frames", "100000"],
        0,
        r"warning: .*short.mp4 has 5 frames, fewer than the 100000 asked.*--repeat-frames",
    ),
    (
        "huge --frames, repeated",
        "short.mp4",
        ["--frames", "100000000", "--repeat-frames"],
        2,
        r"error: 100,000,000 frames of 64x48 need .* GiB of memory once decoded, more than the limit of",
    ),
    ("--frames 0", "short.mp4", ["--frames", "0"], 2, "error: argument --frames: frames must be >= 1"),
    ("--frames text", "short.mp4", ["--frames", "many"], 2, "error: argument --frames: frames must be a whole number"),
]


def _argv(command: str, video: str, model: str, out: Path, extra: list[str]) -> list[str]:
    if command == "ask":
        return ["ask", video, "what happens", "--model", model, "--max-new-tokens", "2", *extra]
    suffix = ".safetensors" if command == "compress" else ".png"
    return [command, video, "--model", model, "-o", str(out / f"result{suffix}"), *extra]


def _snapshot(folder: Path) -> dict[str, tuple[str, float, int]]:
    """Every file under folder: (sha256, mtime, mode)."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            st = path.stat()
            found[str(path.relative_to(folder))] = (
                hashlib.sha256(path.read_bytes()).hexdigest(),
                st.st_mtime,
                st.st_mode,
            )
    return found


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("name,video,extra,status,line", CASES, ids=[c[0] for c in CASES])
def test_bad_video(capsys, tmp_path, videos, ov_model, command, name, video, extra, status, line):
    out = tmp_path / "out"
    out.mkdir()
    before = _snapshot(videos)
    code = main(_argv(command, str(videos / video), ov_model, out, extra))
    stdout, stderr = capsys.readouterr()
    assert code == status, stderr
    assert stderr.count("\n") == 1 and stderr.endswith("\n"), stderr  # exactly one line
    assert "Traceback" not in stderr
    assert re.match(r"llava-scissor: " + line, stderr), stderr
    assert _snapshot(videos) == before  # no file of the user's changed
    if status == 2:
        assert list(out.iterdir()) == [] and stdout == ""  # nothing written, not even a temporary file
    elif command != "ask":
        assert [p.name for p in out.iterdir()] == [f"result{'.safetensors' if command == 'compress' else '.png'}"]


def test_truncated_video_keeps_true_indices(capsys, tmp_path, videos, ov_model):
    """The issue's case: the sample cut at half. Every frame index is a frame that decodes, none twice."""
    out = tmp_path / "t.safetensors"
    code = main(["compress", str(videos / "half.mp4"), "--model", ov_model, "-o", str(out), "--json"])
    stdout, stderr = capsys.readouterr()
    assert code == 0 and stderr.startswith("llava-scissor: warning:")
    indices = json.loads(stdout)["source"]["frame_indices"]
    assert len(indices) == 32 and len(set(indices)) == 32 and max(indices) == 57  # 58 frames decode


def test_visualize_features_of_more_frames_than_a_truncated_video_decodes(capsys, tmp_path, videos):
    import torch
    from safetensors.torch import save_file

    features = tmp_path / "f.safetensors"
    save_file({"features": torch.randn(100, 16, 8)}, str(features))
    code = main(["visualize", str(videos / "half.mp4"), "--features", str(features), "-o", str(tmp_path / "v.png")])
    _, stderr = capsys.readouterr()
    assert code == 2 and stderr.count("\n") == 1
    assert "holds 100 frames but the video gives 58" in stderr and "truncated" in stderr
    assert not (tmp_path / "v.png").exists()


@pytest.mark.parametrize(
    "video,extra,status,kind",
    [
        ("half.mp4", ["--frames", "8"], 0, "warning"),
        ("short.mp4", ["--frames", "100000000", "--repeat-frames"], 2, "error"),
        ("notes.mp4", [], 2, "error"),
    ],
)
def test_the_real_program(tmp_path, videos, ov_model, video, extra, status, kind):
    """The installed entry point as a user runs it: no Python warning text, no traceback."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    env.pop("LLAVA_SCISSOR_DEBUG", None)
    argv = [
        sys.executable,
        "-m",
        "llava_scissor",
        "compress",
        str(videos / video),
        "--model",
        ov_model,
        "-o",
        str(tmp_path / "o.safetensors"),
        *extra,
    ]
    run = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert run.returncode == status, run.stderr
    assert run.stderr.count("\n") == 1 and run.stderr.startswith(f"llava-scissor: {kind}:"), run.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_memory_is_refused_before_the_model_loads(capsys, tmp_path, videos, command):
    """The model folder does not exist: the memory check, which comes first, is what fails."""
    argv = _argv(
        command,
        str(videos / "short.mp4"),
        str(tmp_path / "no-model"),
        tmp_path,
        ["--frames", "100000000", "--repeat-frames"],
    )
    assert main(argv) == 2
    _, stderr = capsys.readouterr()
    assert stderr.count("\n") == 1 and "GiB of memory once decoded" in stderr, stderr
