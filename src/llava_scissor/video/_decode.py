"""Probing and uniform frame sampling with PyAV."""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Iterator

import numpy as np

from .._errors import ScissorError

__all__ = ["Clip", "VideoInfo", "probe", "read_video", "sample_indices"]

# Seek instead of decoding through a gap when the next sampled frame is at least
# this many frames ahead (about 4-8 s of a typical video; keyframes are usually closer).
_SEEK_GAP = 250

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about its first video stream.

    Attributes:
        path: the file.
        frames: number of frames (from the header, else counted by demuxing packets).
        fps: average frame rate, or None when the container does not say.
        duration: seconds, or None when unknown.
        width, height: frame size in pixels.
        codec: decoder name (``h264``, ``vp9``, ``gif``, ...).
        container: demuxer name (``mov,mp4,m4a,3gp,3g2,mj2``, ``matroska,webm``, ...).
    """

    path: str
    frames: int
    fps: float | None
    duration: float | None
    width: int
    height: int
    codec: str
    container: str


@dataclass(frozen=True)
class Clip:
    """Frames sampled from one video.

    Attributes:
        frames: [F, H, W, 3] uint8 RGB.
        indices: [F] index of each sampled frame in the video (0-based, display order).
        timestamps: [F] seconds from the start (``index / fps``; None without a frame rate).
        info: the probed video.
    """

    frames: np.ndarray
    indices: tuple[int, ...]
    timestamps: tuple[float, ...] | None
    info: VideoInfo

    @property
    def num_frames(self) -> int:
        """F, the number of sampled frames."""
        return int(self.frames.shape[0])


def sample_indices(total: int, num_frames: int) -> list[int]:
    """[num_frames] uniformly spaced frame indices in ``[0, total)``, first and last included.

    The rule of LLaVA-OneVision's evaluation code: ``linspace(0, total - 1, num_frames)``
    truncated to integers. When ``num_frames > total`` some frames repeat, so the
    result always has ``num_frames`` entries.
    """
    if isinstance(total, bool) or not isinstance(total, int) or total < 1:
        raise ScissorError(f"a video needs at least 1 frame to sample from, got {total!r}")
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise ScissorError(f"frames must be an int >= 1, got {num_frames!r}")
    return [int(i) for i in np.linspace(0, total - 1, num_frames).astype(np.int64)]


def probe(path: str | os.PathLike[str]) -> VideoInfo:
    """Open ``path`` and describe its first video stream (counts frames if the header does not)."""
    av = _import_av()
    path = _check_path(path)
    with _open(av, path) as container:
        stream = _video_stream(container, path)
        frames = int(stream.frames or 0)
        if frames <= 0:
            frames = _count_packets(av, container, stream, path)
        if frames <= 0:
            raise ScissorError(f"video has zero frames: {path}")
        return _info(container, stream, path, frames)


def read_video(
    path: str | os.PathLike[str],
    num_frames: int = 32,
    *,
    seek: bool | None = None,
    max_side: int | None = None,
    progress: ProgressFn | None = None,
) -> Clip:
    """Sample ``num_frames`` frames uniformly (see ``sample_indices``) from a video file.

    Returns a ``Clip`` whose ``frames`` are [num_frames, H, W, 3] uint8 RGB; with
    ``max_side``, frames whose longer side exceeds it are scaled down (aspect kept) as
    they are decoded, so a 4K video does not need 4K frames in memory.

    ``seek``: None (default) seeks only across long gaps between sampled frames of a
    constant-rate video; True always seeks; False decodes straight through (frames
    after the last sampled one are never decoded). Both give the same frames on a
    constant-frame-rate video. ``progress(done, total)`` is called after each
    sampled frame. Raises ``ScissorError`` for a missing, unreadable, corrupt or
    empty file and for a bad ``num_frames``.
    """
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise ScissorError(f"frames must be an int >= 1, got {num_frames!r}")
    if max_side is not None and (isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 1):
        raise ScissorError(f"max_side must be an int >= 1 or None, got {max_side!r}")
    av = _import_av()
    info = probe(path)
    indices = sample_indices(info.frames, num_frames)
    convert = _converter(info, max_side)
    wanted = sorted(set(indices))
    with _open(av, info.path) as container:
        stream = _video_stream(container, info.path)
        stream.thread_type = "AUTO"
        can_seek = (
            info.fps is not None
            and stream.time_base is not None
            and "gif" not in info.container
        )
        use_seek = can_seek if seek else False
        if seek is None:
            gaps = np.diff([0] + wanted)
            use_seek = can_seek and bool(gaps.size) and int(gaps.max()) >= _SEEK_GAP
        try:
            if use_seek:
                got = _read_seeking(container, stream, wanted, info, convert, progress)
            else:
                got = _read_sequential(container, stream, wanted, convert, progress)
        except av.error.FFmpegError as exc:
            raise ScissorError(f"cannot decode video {info.path}: {_reason(exc)} (corrupt or truncated?)") from None
    if not got:
        raise ScissorError(f"video has zero decodable frames: {info.path}")
    # A header may promise more frames than a damaged file holds: a frame that could not
    # be decoded is replaced by the nearest decoded one before it (or the first one).
    decoded = sorted(got)
    nearest = {i: max((d for d in decoded if d <= i), default=decoded[0]) for i in wanted}
    frames = np.stack([got[nearest[i]] for i in indices])  # [F, H, W, 3]
    timestamps = None if info.fps is None else tuple(i / info.fps for i in indices)
    return Clip(frames=frames, indices=tuple(indices), timestamps=timestamps, info=info)


# --------------------------------------------------------------------------- internals


def _import_av() -> Any:
    try:
        import av
    except ImportError:
        raise ScissorError(
            "reading video needs PyAV: pip install 'llava-scissor[video]'"
        ) from None
    return av


def _check_path(path: str | os.PathLike[str]) -> str:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ScissorError(f"video file not found: {path}")
    if os.path.isdir(path):
        raise ScissorError(f"expected a video file, got a directory: {path}")
    if not os.access(path, os.R_OK):
        raise ScissorError(f"video file is not readable (permission denied): {path}")
    if os.path.getsize(path) == 0:
        raise ScissorError(f"video file is empty (0 bytes): {path}")
    return path


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return str(text).strip().rstrip(".")


def _open(av: Any, path: str) -> Any:
    try:
        return av.open(path, "r")
    except av.error.FFmpegError as exc:
        raise ScissorError(
            f"cannot read video {path}: {_reason(exc)} (not a video, or the file is corrupt or truncated)"
        ) from None
    except OSError as exc:
        raise ScissorError(f"cannot open video {path}: {_reason(exc)}") from None


def _video_stream(container: Any, path: str) -> Any:
    if not container.streams.video:
        raise ScissorError(f"video has zero frames (no video stream): {path}")
    return container.streams.video[0]


def _count_packets(av: Any, container: Any, stream: Any, path: str) -> int:
    """Count the stream's frames by demuxing (no decoding)."""
    try:
        count = sum(1 for packet in container.demux(stream) if packet.size)
    except av.error.FFmpegError as exc:
        raise ScissorError(f"cannot read video {path}: {_reason(exc)} (corrupt or truncated?)") from None
    return count


def _info(container: Any, stream: Any, path: str, frames: int) -> VideoInfo:
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else None
    duration: float | None = None
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / 1_000_000  # AV_TIME_BASE
    return VideoInfo(
        path=path,
        frames=frames,
        fps=fps,
        duration=duration,
        width=int(stream.codec_context.width),
        height=int(stream.codec_context.height),
        codec=str(stream.codec_context.name),
        container=str(container.format.name),
    )


def _converter(info: VideoInfo, max_side: int | None) -> Callable[[Any], np.ndarray]:
    """frame -> [H, W, 3] uint8 RGB, scaled down to ``max_side`` when larger."""
    longest = max(info.width, info.height)
    if max_side is None or longest <= max_side:
        return lambda frame: frame.to_ndarray(format="rgb24")
    scale = max_side / longest
    width = max(1, round(info.width * scale))
    height = max(1, round(info.height * scale))
    return lambda frame: frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="AREA")


def _read_sequential(
    container: Any,
    stream: Any,
    wanted: list[int],
    convert: Callable[[Any], np.ndarray],
    progress: ProgressFn | None,
) -> dict[int, np.ndarray]:
    """Decode from the start; convert only the wanted frames; stop after the last one."""
    targets = set(wanted)
    last = wanted[-1]
    got: dict[int, np.ndarray] = {}
    for index, frame in enumerate(container.decode(stream)):
        if index in targets:
            got[index] = convert(frame)  # [H, W, 3]
            if progress is not None:
                progress(len(got), len(wanted))
        if index >= last:
            break
    return got


def _read_seeking(
    container: Any,
    stream: Any,
    wanted: list[int],
    info: VideoInfo,
    convert: Callable[[Any], np.ndarray],
    progress: ProgressFn | None,
) -> dict[int, np.ndarray]:
    """Seek to the keyframe before each far-away wanted frame, then decode forward to it.

    Frame indices come from timestamps: ``round((pts - start) * time_base * fps)``.
    """
    assert info.fps is not None
    time_base = Fraction(stream.time_base)
    start = stream.start_time or 0
    fps = Fraction(info.fps).limit_denominator(1_000_000)
    got: dict[int, np.ndarray] = {}
    decoder: Iterator[Any] | None = None
    position = -1  # index of the last decoded frame
    last_frame: Any = None
    for target in wanted:
        if decoder is None or target - position >= _SEEK_GAP or target <= position:
            offset = start + int((Fraction(target) / fps) / time_base)
            container.seek(offset, backward=True, any_frame=False, stream=stream)
            decoder = iter(container.decode(stream))
            position = -1
        frame = None
        for frame in decoder:
            if frame.pts is None:
                position += 1
            else:
                position = int(round((frame.pts - start) * time_base * fps))
            last_frame = frame
            if position >= target:
                break
        else:
            frame = last_frame  # end of stream before the target: keep the last frame
        if frame is None:
            continue
        got[target] = convert(frame)  # [H, W, 3]
        if progress is not None:
            progress(len(got), len(wanted))
    return got
