"""Probing and uniform frame sampling with PyAV.

Frames are what they say they are. A header may promise more frames than the file holds
(a truncated download, a damaged tail): the decoder's own output decides. When the stream
ends before the header's last frame, the frames are sampled again from the part that
decodes, and the clip says so (``Clip.truncated``, ``Clip.note``, a ``ScissorWarning``);
a frame is never repeated under another frame's index or time. A video with fewer frames
than asked gives each frame once unless ``repeat=True``. The memory the decoded frames will
need is checked before anything is decoded.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Iterator

import numpy as np

from .._errors import ScissorError, ScissorWarning
from .._sampling import sample_indices

__all__ = ["Clip", "VideoInfo", "check_request", "memory_limit", "probe", "read_video", "sample_indices"]

# Seek instead of decoding through a gap when the next sampled frame is at least
# this many frames ahead (about 4-8 s of a typical video; keyframes are usually closer).
_SEEK_GAP = 250

# Decoded frames may take at most this share of the memory available when the read starts:
# the model's pixel values (float32, resized) and activations need room besides them.
_MEMORY_SHARE = 0.5
# The limit where the available memory cannot be read (neither /proc/meminfo nor sysconf).
_FALLBACK_LIMIT = 8 * 2**30

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
        indices: [F] index of each sampled frame in the video (0-based, display order);
            an index appears twice only when repetition was asked for.
        timestamps: [F] seconds from the start of the stream, from each decoded frame's own
            timestamp (``index / fps`` where the frame has none; None without either).
        info: the probed video (what its header says).
        requested: the number of frames asked for.
        available: frames the sampling was spread over: ``info.frames``, or fewer when the
            stream ends before the frame count of its header.
        note: one line saying how the clip differs from the request (a stream that ends
            early, fewer frames than asked, repeated frames); None when it is as asked.
    """

    frames: np.ndarray
    indices: tuple[int, ...]
    timestamps: tuple[float, ...] | None
    info: VideoInfo
    requested: int
    available: int
    note: str | None = None

    @property
    def num_frames(self) -> int:
        """F, the number of sampled frames."""
        return int(self.frames.shape[0])

    @property
    def truncated(self) -> bool:
        """True when the stream ended before the header's frame count."""
        return self.available < self.info.frames


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


def memory_limit() -> tuple[int, str]:
    """(bytes, explanation): the most memory the decoded frames of one read may take.

    Half of the memory available now (``MemAvailable`` on Linux); 8 GiB where that
    cannot be read.
    """
    available = _available_memory()
    if available is None:
        return _FALLBACK_LIMIT, "the fixed limit where the available memory is unknown"
    return int(available * _MEMORY_SHARE), f"half of the {_gib(available)} of memory available"


def check_request(
    info: VideoInfo,
    num_frames: int,
    *,
    repeat: bool = False,
    max_side: int | None = None,
    max_bytes: int | None = None,
) -> int:
    """Bytes the decoded frames of ``read_video(info.path, num_frames, ...)`` will take.

    Raises ``ScissorError`` (before anything is decoded) when that exceeds ``max_bytes``
    (default: ``memory_limit()``).
    """
    _check_count(num_frames)
    _check_max_side(max_side)
    count = num_frames if repeat else min(num_frames, info.frames)  # len(sample_indices(...))
    width, height = _output_size(info, max_side)
    need = count * height * width * 3
    if max_bytes is None:
        limit, why = memory_limit()
    else:
        limit, why = int(max_bytes), "max_bytes"
    if need > limit:
        raise ScissorError(
            f"{count:,} frames of {width}x{height} need {_gib(need)} of memory once decoded, more than the "
            f"limit of {_gib(limit)} ({why}); ask for fewer frames"
        )
    return need


def read_video(
    path: str | os.PathLike[str],
    num_frames: int = 32,
    *,
    repeat: bool = False,
    seek: bool | None = None,
    max_side: int | None = None,
    max_bytes: int | None = None,
    progress: ProgressFn | None = None,
) -> Clip:
    """Sample ``num_frames`` frames uniformly (see ``sample_indices``) from a video file.

    Returns a ``Clip`` whose ``frames`` are [min(num_frames, frames in the video), H, W, 3]
    uint8 RGB; with ``repeat=True`` frames of a shorter video repeat to give [num_frames,
    ...]. With ``max_side``, frames whose longer side exceeds it are scaled down (aspect
    kept) as they are decoded, so a 4K video does not need 4K frames in memory.

    A stream that ends before its header's frame count is sampled from the frames that
    decode (``clip.truncated``); that, and a video shorter than ``num_frames`` without
    ``repeat``, is reported in ``clip.note`` and by a ``ScissorWarning``.

    ``seek``: None (default) seeks only across long gaps between sampled frames of a
    constant-rate video; True always seeks; False decodes straight through (frames
    after the last sampled one are never decoded). Both give the same frames on a
    constant-frame-rate video. ``max_bytes`` caps the memory of the decoded frames
    (default ``memory_limit()``). ``progress(done, total)`` is called after each
    sampled frame. Raises ``ScissorError`` for a missing, unreadable, corrupt or
    empty file, a bad ``num_frames`` and a request over the memory limit.
    """
    _check_count(num_frames)
    _check_max_side(max_side)
    av = _import_av()
    info = probe(path)
    check_request(info, num_frames, repeat=repeat, max_side=max_side, max_bytes=max_bytes)
    convert = _converter(info, max_side)
    indices = sample_indices(info.frames, num_frames, repeat=repeat)
    got, end = _decode(av, info, sorted(set(indices)), convert, seek, progress)
    available = info.frames
    if end is not None:
        # The stream ends early: sample again over the frames that decode. Frames already
        # decoded are kept; the rest are read from the start (seeking near a damaged end
        # is unreliable).
        available = min(end if end != _UNKNOWN_END else _count_decodable(av, info), info.frames)
        if available == 0:
            raise ScissorError(f"video has zero decodable frames: {info.path}")
        indices = sample_indices(available, num_frames, repeat=repeat)
        missing = sorted(set(indices) - got.keys())
        if missing:
            more, again = _decode(av, info, missing, convert, False, None)
            if again is not None:
                raise ScissorError(
                    f"cannot decode video {info.path}: it decodes differently on a second read (corrupt?)"
                )
            got.update(more)
    frames = np.stack([got[i].pixels for i in indices])  # [F, H, W, 3]
    times = [got[i].time for i in indices]
    timestamps = None if any(t is None for t in times) else tuple(float(t) for t in times if t is not None)
    note = _note(info, num_frames, available, len(indices), repeat)
    clip = Clip(
        frames=frames,
        indices=tuple(got[i].index for i in indices),
        timestamps=timestamps,
        info=info,
        requested=num_frames,
        available=available,
        note=note,
    )
    if note is not None and (clip.truncated or not repeat):
        warnings.warn(note, ScissorWarning, stacklevel=2)
    return clip


# --------------------------------------------------------------------------- internals


def _import_av() -> Any:
    try:
        import av
    except ImportError:
        raise ScissorError("reading video needs PyAV: pip install 'llava-scissor[video]'") from None
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


def _check_count(num_frames: Any) -> None:
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise ScissorError(f"frames must be an int >= 1, got {num_frames!r}")


def _check_max_side(max_side: Any) -> None:
    if max_side is not None and (isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 1):
        raise ScissorError(f"max_side must be an int >= 1 or None, got {max_side!r}")


def _available_memory() -> int | None:
    """Bytes of memory available now, or None where it cannot be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def _gib(nbytes: int) -> str:
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 / 10 else f"{nbytes / 2**20:.1f} MiB"


def _note(info: VideoInfo, asked: int, available: int, count: int, repeat: bool) -> str | None:
    """One line on how the sampled frames differ from the request, or None."""
    if available < info.frames:
        head = (
            f"{info.path}: the stream ends after {available} of the {info.frames} frames its header "
            f"promises (truncated or damaged file)"
        )
        if count < asked:
            return f"{head}; used all {available} frames that decode, fewer than the {asked} asked"
        if asked > available:
            return f"{head}; frames of the {available} that decode repeated to give the {asked} asked"
        return f"{head}; sampled {count} frames from the {available} that decode"
    if asked > available:
        has = f"{info.path} has {available} frame{'s' if available > 1 else ''}, fewer than the {asked} asked"
        if repeat:
            return f"{has}: frames repeated to give {asked}"
        return f"{has}: each frame used once, none repeated"
    return None


def _output_size(info: VideoInfo, max_side: int | None) -> tuple[int, int]:
    """(width, height) of the decoded frames, scaled down to ``max_side`` when larger."""
    longest = max(info.width, info.height)
    if max_side is None or longest <= max_side:
        return info.width, info.height
    scale = max_side / longest
    return max(1, round(info.width * scale)), max(1, round(info.height * scale))


def _converter(info: VideoInfo, max_side: int | None) -> Callable[[Any], np.ndarray]:
    """frame -> [H, W, 3] uint8 RGB, scaled down to ``max_side`` when larger."""
    width, height = _output_size(info, max_side)
    if (width, height) == (info.width, info.height):
        return lambda frame: frame.to_ndarray(format="rgb24")
    return lambda frame: frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="AREA")


@dataclass(frozen=True)
class _Decoded:
    """One decoded frame: its own index in the stream, its time (s) and its pixels [H, W, 3]."""

    index: int
    time: float | None
    pixels: np.ndarray


# The stream ended early at a place the seeking reader cannot tell: count the frames.
_UNKNOWN_END = -1


def _decode(
    av: Any,
    info: VideoInfo,
    wanted: list[int],
    convert: Callable[[Any], np.ndarray],
    seek: bool | None,
    progress: ProgressFn | None,
) -> tuple[dict[int, _Decoded], int | None]:
    """The wanted frames (by index), and where the stream ended when that was before the
    last wanted frame: the number of frames that decode (``_UNKNOWN_END`` when not known);
    None when every wanted frame was reached."""
    with _open(av, info.path) as container:
        stream = _video_stream(container, info.path)
        stream.thread_type = "AUTO"
        can_seek = info.fps is not None and stream.time_base is not None and "gif" not in info.container
        use_seek = can_seek if seek else False
        if seek is None:
            gaps = np.diff([0] + wanted)
            use_seek = can_seek and bool(gaps.size) and int(gaps.max()) >= _SEEK_GAP
        if use_seek:
            return _read_seeking(av, container, stream, wanted, info, convert, progress)
        return _read_sequential(av, container, stream, wanted, info, convert, progress)


def _clock(stream: Any, fps: float | None) -> Callable[[Any, int], float | None]:
    """(frame, index) -> seconds from the stream's start: the frame's own timestamp, else index / fps."""
    time_base = Fraction(stream.time_base) if stream.time_base is not None else None
    start = stream.start_time or 0

    def seconds(frame: Any, index: int) -> float | None:
        if frame.pts is not None and time_base is not None:
            return float((frame.pts - start) * time_base)
        return None if fps is None else index / fps

    return seconds


def _read_sequential(
    av: Any,
    container: Any,
    stream: Any,
    wanted: list[int],
    info: VideoInfo,
    convert: Callable[[Any], np.ndarray],
    progress: ProgressFn | None,
) -> tuple[dict[int, _Decoded], int | None]:
    """Decode from the start; convert only the wanted frames; stop after the last one."""
    targets = set(wanted)
    last = wanted[-1]
    seconds = _clock(stream, info.fps)
    got: dict[int, _Decoded] = {}
    count = 0
    try:
        for index, frame in enumerate(container.decode(stream)):
            count = index + 1
            if index in targets:
                got[index] = _Decoded(index, seconds(frame, index), convert(frame))  # [H, W, 3]
                if progress is not None:
                    progress(len(got), len(wanted))
            if index >= last:
                return got, None
    except av.error.FFmpegError as exc:
        # A damaged packet ends the stream here; the frames before it are real.
        if count == 0:
            raise ScissorError(f"cannot decode video {info.path}: {_reason(exc)} (corrupt or truncated?)") from None
    return got, count


def _read_seeking(
    av: Any,
    container: Any,
    stream: Any,
    wanted: list[int],
    info: VideoInfo,
    convert: Callable[[Any], np.ndarray],
    progress: ProgressFn | None,
) -> tuple[dict[int, _Decoded], int | None]:
    """Seek to the keyframe before each far-away wanted frame, then decode forward to it.

    Frame indices come from timestamps: ``round((pts - start) * time_base * fps)``; each
    frame keeps the index its timestamp gives, even where that is past the target.
    """
    assert info.fps is not None
    time_base = Fraction(stream.time_base)
    start = stream.start_time or 0
    fps = Fraction(info.fps).limit_denominator(1_000_000)
    seconds = _clock(stream, info.fps)
    got: dict[int, _Decoded] = {}
    decoder: Iterator[Any] | None = None
    position = -1  # index of the last decoded frame
    try:
        for target in wanted:
            if decoder is None or target - position >= _SEEK_GAP or target <= position:
                offset = start + int((Fraction(target) / fps) / time_base)
                container.seek(offset, backward=True, any_frame=False, stream=stream)
                decoder = iter(container.decode(stream))
                position = -1
            for frame in decoder:
                if frame.pts is None:
                    position += 1
                else:
                    position = int(round((frame.pts - start) * time_base * fps))
                if position >= target:
                    break
            else:
                return got, _UNKNOWN_END  # the stream ends before the target
            got[target] = _Decoded(position, seconds(frame, position), convert(frame))  # [H, W, 3]
            if progress is not None:
                progress(len(got), len(wanted))
    except av.error.FFmpegError:
        return got, _UNKNOWN_END
    return got, None


def _count_decodable(av: Any, info: VideoInfo) -> int:
    """How many frames decode from the start before the stream ends or breaks."""
    count = 0
    with _open(av, info.path) as container:
        stream = _video_stream(container, info.path)
        stream.thread_type = "AUTO"
        try:
            for _ in container.decode(stream):
                count += 1
        except av.error.FFmpegError:
            pass
    return count
