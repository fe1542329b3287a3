"""Model inputs for videos, with or without transformers' video processors.

transformers' video processors need a GPU-enabled torchvision build; where there is none
(CPU machines, CI) they cannot be constructed. This module then does their job from
parts that work everywhere: frames are sampled, run through the model's image processor
(PIL backend: resize, rescale, normalize) and laid out as the model expects, and each
video placeholder in the text is expanded to the number of tokens the model will produce.
When the model's own processor is available, ``build_video_inputs`` uses it instead.

Frames arrive decoded: one uint8 array or tensor ``[F, H, W, 3]`` per video (the video
decoder lives in ``llava_scissor.video``).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from ..._errors import ScissorError
from ..._sampling import sample_indices
from .families import family_for, supported_model_types

__all__ = [
    "ProcessorParts",
    "load_processor",
    "build_video_inputs",
    "sample_frames",
    "sampled_fps",
    "to_model",
    "video_token_for",
]

_QWEN2 = ("qwen2_vl", "qwen2_5_vl")
#: one placeholder segment per temporal step, a timestamp text before it
_QWEN3 = ("qwen3_vl", "qwen3_vl_moe", "qwen3_5", "qwen3_5_moe")
_GLM = ("glm4v", "glm46v")
_PATCHED = _QWEN2 + _QWEN3 + _GLM  # temporal patches of Qwen2-VL's pixel layout

_VIDEO_TOKENS = {
    "llava_onevision": "<video>",
    "llava_next_video": "<video>",
    **{t: "<|video_pad|>" for t in _QWEN2 + _QWEN3},
    **{t: "<|video|>" for t in _GLM},
}


def video_token_for(model_type: str) -> str:
    """The placeholder string of one video in prompts of a supported ``model_type``."""
    return _VIDEO_TOKENS.get(model_type, "<video>")


@dataclass
class ProcessorParts:
    """What building video inputs needs when the model's processor cannot be built.

    Attributes:
        config: the model's config (``AutoConfig``); decides the layout and token counts.
        tokenizer: the model's tokenizer.
        image_processor: the model's image processor (PIL backend).
        video_settings: overrides of the image processor's settings for video frames
            (e.g. ``{"size": {...}}`` from ``video_preprocessor_config.json``).
        fps: the rate frames are taken as sampled at when no timestamps are given
            (``build_video_inputs``; Qwen2.5-VL's temporal positions, Qwen3-VL / GLM-4V's timestamps).
    """

    config: Any
    tokenizer: Any
    image_processor: Any
    video_settings: dict[str, Any] = field(default_factory=dict)
    fps: float = 2.0

    @property
    def model_type(self) -> str:
        return str(self.config.model_type)

    @property
    def video_token(self) -> str:
        token = getattr(self.tokenizer, "video_token", None)
        return token if isinstance(token, str) else _VIDEO_TOKENS[self.model_type]

    def setting(self, name: str) -> Any:
        if name in self.video_settings:
            return self.video_settings[name]
        return getattr(self.image_processor, name)


def _has_video_processor(processor: Any) -> bool:
    return getattr(processor, "video_processor", None) is not None


def load_processor(name_or_path: str, **kwargs: Any) -> Any:
    """The model's processor if it can be built here, else ``ProcessorParts``.

    Everything goes through ``from_pretrained`` (a hub id or a local folder, with the
    usual ``local_files_only`` / cache behaviour); nothing is downloaded otherwise.
    """
    from transformers import AutoConfig, AutoImageProcessor, AutoProcessor, AutoTokenizer

    try:
        processor = AutoProcessor.from_pretrained(name_or_path, **kwargs)
        if _has_video_processor(processor):
            return processor
    except (ImportError, ValueError, OSError, RecursionError):
        # ImportError: the video processor needs torchvision; ValueError / OSError: no
        # processor config in the folder; RecursionError: a folder without
        # video_preprocessor_config.json whose image processor is named like the model's
        # processor (LLaVA-NeXT-Video: "LlavaNextImageProcessor" -> "LlavaNextVideoProcessor"),
        # which transformers' AutoVideoProcessor then loads as itself, endlessly. In every
        # case the parts below still work.
        processor = None
    config = AutoConfig.from_pretrained(name_or_path, **kwargs)
    if config.model_type not in _VIDEO_TOKENS:
        raise ScissorError(f"model type {config.model_type!r} is not supported; supported: {supported_model_types()}")
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
    image_processor = AutoImageProcessor.from_pretrained(name_or_path, backend="pil", **kwargs)
    return ProcessorParts(config, tokenizer, image_processor)


def _sample_index(total: int, num_frames: int | None) -> np.ndarray:
    """The indices ``sample_frames`` keeps: all frames, or the library's one sampling rule."""
    if num_frames is None:
        return np.arange(total)
    return np.asarray(sample_indices(total, num_frames), dtype=np.int64)


def sample_frames(frames: Any, num_frames: int | None) -> np.ndarray:
    """frames: [F, H, W, 3] uint8 -> [min(num_frames, F), H, W, 3], spread uniformly by the
    library's one rule (``llava_scissor.video.sample_indices``: LLaVA-OneVision's, first and
    last frame included); all frames when ``num_frames`` is None or >= F (never repeated)."""
    array = frames.cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ScissorError(f"frames must be [frames, height, width, 3], got shape {array.shape}")
    if array.dtype != np.uint8:
        raise ScissorError(f"frames must be uint8 RGB, got dtype {array.dtype}")
    return array[_sample_index(array.shape[0], num_frames)]


def sampled_fps(timestamps: Sequence[float] | None) -> float | None:
    """Frames per second of frames taken at ``timestamps`` (seconds, ascending):
    (F - 1) / (last - first), the rate the frames were actually sampled at; None for a
    single frame, a zero span or no timestamps."""
    if timestamps is None or len(timestamps) < 2:
        return None
    span = float(timestamps[-1]) - float(timestamps[0])
    return (len(timestamps) - 1) / span if span > 0 else None


def _frame_times(
    timestamps: Sequence[Sequence[float] | None] | None, videos: Sequence[Any], num_frames: int | None
) -> list[list[float] | None]:
    """Per video, the seconds of the frames that ``sample_frames`` keeps (None: unknown)."""
    if timestamps is None:
        return [None] * len(videos)
    if len(timestamps) != len(videos):
        raise ScissorError(f"timestamps: {len(timestamps)} lists for {len(videos)} videos; expected one per video")
    out: list[list[float] | None] = []
    for ts, video in zip(timestamps, videos):
        if ts is None:
            out.append(None)
            continue
        total = len(video)
        if len(ts) != total:
            raise ScissorError(f"timestamps: {len(ts)} values for a video of {total} frames; expected one per frame")
        values = [float(t) for t in ts]
        if any(b < a for a, b in itertools.pairwise(values)):
            raise ScissorError("timestamps must not decrease (seconds of each frame, in display order)")
        out.append([values[i] for i in _sample_index(total, num_frames)])
    return out


def build_video_inputs(
    processor: Any,
    text: str | Sequence[str],
    videos: Sequence[Any],
    images: Sequence[Any] | None = None,
    *,
    num_frames: int | None = None,
    timestamps: Sequence[Sequence[float] | None] | None = None,
    padding_side: str = "left",
) -> Any:
    """Model inputs (a ``BatchFeature`` of tensors) for prompts with videos.

    text: one prompt or a batch; each video placeholder (``<video>`` for LLaVA,
    ``<|video_pad|>`` for Qwen, as the chat template writes it) is matched, in order,
    with one entry of ``videos`` ([F, H, W, 3] uint8 frames each; frame counts may
    differ). ``processor``: the model's processor (used as is when it has a video
    processor) or ``ProcessorParts``. ``num_frames`` samples each video uniformly.
    ``timestamps``: per video, the seconds of each given frame (``Clip.timestamps`` of
    the decoder); the rate they were sampled at (``sampled_fps``) sets Qwen2.5-VL's
    ``second_per_grid_ts`` and the timestamps written between frames (Qwen3-VL, GLM-4V).
    Without them the frames are taken as sampled at ``ProcessorParts.fps`` (2 fps).

    Without a video processor, LLaVA videos come back as a list of [F, C, H, W] tensors
    in ``pixel_values_videos`` when frame counts differ (the model itself only takes
    equal counts; ``prepare`` / ``apply`` take both).
    """
    texts = [text] if isinstance(text, str) else list(text)
    sampled = [sample_frames(v, num_frames) for v in videos]
    times = _frame_times(timestamps, videos, num_frames)
    if not isinstance(processor, ProcessorParts):
        return _with_model_processor(
            processor, texts, sampled, times if timestamps is not None else None, images, padding_side
        )

    model_type = processor.model_type
    texts, video_data = _expand_videos(processor, texts, sampled, times)
    texts, image_data = _expand_images(processor, texts, images)

    from transformers import BatchFeature

    tokenizer = processor.tokenizer
    tokenizer.padding_side = padding_side
    batch = BatchFeature(dict(tokenizer(texts, return_tensors="pt", padding=True)))
    batch.update(image_data)
    batch.update(video_data)
    if model_type in _PATCHED:
        batch["mm_token_type_ids"] = family_for(model_type).token_types(processor.config, batch["input_ids"])
    return batch


def _with_model_processor(
    processor: Any,
    texts: list[str],
    sampled: list[np.ndarray],
    times: list[list[float] | None] | None,
    images: Sequence[Any] | None,
    padding_side: str,
) -> Any:
    """``build_video_inputs`` by the model's own processor (``times``: None when no timestamps were given)."""
    if not _has_video_processor(processor):
        raise ScissorError("processor has no video processor; pass ProcessorParts (see load_processor)")
    kwargs: dict[str, Any] = {
        "text": texts,
        "videos": [list(v) for v in sampled],
        "return_tensors": "pt",
        "padding": True,
    }
    if times is not None:
        kwargs.update(_processor_metadata(times))
    if images is not None:
        kwargs["images"] = images
    processor.tokenizer.padding_side = padding_side
    return processor(**kwargs)


def _expand_videos(
    parts: ProcessorParts, texts: list[str], sampled: list[np.ndarray], times: list[list[float] | None]
) -> tuple[list[str], dict[str, Any]]:
    """The prompts with each video placeholder expanded to the model's tokens, and the videos' pixel inputs."""
    model_type = parts.model_type
    if model_type in _PATCHED:
        video_data, _ = _qwen_videos(parts, sampled, times)
        replacements = _segmented_text(parts, video_data["video_grid_thw"], times, [len(v) for v in sampled])
    elif model_type in ("llava_onevision", "llava_next_video"):
        video_data, counts = _llava_videos(parts, sampled)
        replacements = [parts.video_token * c for c in counts]
    else:
        raise ScissorError(f"model type {model_type!r} is not supported; supported: {supported_model_types()}")
    if model_type in _GLM:
        # GLM-4V's frames are image tokens: the video markers tell them apart (its chat
        # template writes them; a bare placeholder gets them here)
        wrapped = f"<|begin_of_video|>{parts.video_token}<|end_of_video|>"
        texts = [t.replace(wrapped, parts.video_token) for t in texts]
        replacements = [f"<|begin_of_video|>{r}<|end_of_video|>" for r in replacements]
    return _expand(texts, parts.video_token, replacements), video_data


def _expand_images(
    parts: ProcessorParts, texts: list[str], images: Sequence[Any] | None
) -> tuple[list[str], dict[str, Any]]:
    """The prompts with each image placeholder expanded (Qwen only), and the images' pixel inputs."""
    if not images:
        return texts, {}
    if parts.model_type not in _QWEN2 + _QWEN3:
        raise ScissorError(
            f"images next to videos need the model's own processor for {parts.model_type!r} "
            "(its image token count depends on the anyres layout); without torchvision only Qwen is supported"
        )
    image_data = dict(parts.image_processor(images=list(images), return_tensors="pt"))
    merge = int(parts.setting("merge_size"))
    image_counts = [int(g.prod()) // merge**2 for g in image_data["image_grid_thw"]]
    image_token = getattr(parts.tokenizer, "image_token", None) or "<|image_pad|>"
    return _expand(texts, image_token, [image_token * c for c in image_counts]), image_data


def _step_times(ts: list[float] | None, frames: int, steps: int, temporal: int, fps: float) -> list[float]:
    """Seconds of each temporal step: the frames' times (``fps`` apart from 0 when
    unknown), the last repeated to fill the last step, averaged over each step's first
    and last frame (Qwen3-VL's rule)."""
    times = list(ts) if ts is not None else [i / fps for i in range(frames)]
    times += [times[-1]] * (steps * temporal - len(times))
    return [(times[i] + times[i + temporal - 1]) / 2 for i in range(0, steps * temporal, temporal)]


def _segmented_text(
    parts: ProcessorParts, grids: torch.Tensor, times: list[list[float] | None], frames: list[int]
) -> list[str]:
    """The text each video placeholder expands to, as the model's processor writes it:
    Qwen2-VL one run; Qwen3-VL / Qwen3.5 per step ``<t seconds><|vision_start|>`` + run
    + ``<|vision_end|>``; GLM-4V per step ``<|begin_of_image|>`` + run (image tokens) +
    ``<|end_of_image|>`` + whole seconds of the step's first frame (GLM-4.6V: ``{s:.1f} seconds``)."""
    merge = int(parts.setting("merge_size"))
    temporal = int(parts.setting("temporal_patch_size"))
    tok = parts.tokenizer
    out = []
    for (t, h, w), ts, f in zip(grids.tolist(), times, frames):
        n = h * w // merge**2
        if parts.model_type in _QWEN2:
            out.append(parts.video_token * (t * n))
        elif parts.model_type in _QWEN3:
            start = getattr(tok, "vision_start_token", None) or "<|vision_start|>"
            end = getattr(tok, "vision_end_token", None) or "<|vision_end|>"
            steps = _step_times(ts, f, t, temporal, parts.fps)
            out.append("".join(f"<{s:.1f} seconds>{start}{parts.video_token * n}{end}" for s in steps))
        else:
            image = getattr(tok, "image_token", None) or "<|image|>"
            firsts = (list(ts) if ts is not None else [i / parts.fps for i in range(f)])[::temporal]
            firsts += [firsts[-1]] * (t - len(firsts))
            stamp = (lambda s: f"{s:.1f} seconds") if parts.model_type == "glm46v" else (lambda s: f"{int(s)}")
            out.append("".join(f"<|begin_of_image|>{image * n}<|end_of_image|>{stamp(s)}" for s in firsts[:t]))
    return out


def _processor_metadata(times: list[list[float] | None]) -> dict[str, Any]:
    """``video_metadata`` telling the model's processor when the given frames were taken.

    The frames are already sampled (``do_sample_frames=False``). Each video's metadata
    has rate r = ``sampled_fps`` and frame "indices" t * r, so that the processor's own
    rules give back the same numbers: its sampled fps (len(indices) / total * fps) is r,
    Qwen2.5-VL's ``second_per_grid_ts`` is temporal_patch_size / r, and the timestamps
    Qwen3-VL / GLM-4V write (index / fps) are the frames' seconds.
    """
    from transformers.video_utils import VideoMetadata

    metadata = []
    for ts in times:
        if ts is None:
            raise ScissorError("timestamps: the model's processor needs them for every video or for none")
        rate = sampled_fps(ts) or 1.0
        # fractional "indices" on purpose: index / fps must give back each frame's seconds
        indices: Any = [t * rate for t in ts]
        metadata.append(VideoMetadata(total_num_frames=len(ts), fps=rate, frames_indices=indices))
    return {"video_metadata": metadata, "do_sample_frames": False}


def _expand(texts: list[str], token: str, replacements: list[str]) -> list[str]:
    """Replace the i-th occurrence of ``token`` (over the whole batch) by replacements[i]."""
    found = sum(t.count(token) for t in texts)
    if found != len(replacements):
        raise ScissorError(f"the prompts hold {found} {token!r} placeholders but {len(replacements)} videos were given")
    it = iter(replacements)
    out = []
    for t in texts:
        parts = t.split(token)
        pieces = [parts[0]]
        for part in parts[1:]:
            pieces.append(next(it))
            pieces.append(part)
        out.append("".join(pieces))
    return out


def _chw(frame: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(frame.transpose(2, 0, 1))  # [3, H, W]


def _normalise(parts: ProcessorParts, image: np.ndarray) -> np.ndarray:
    ip = parts.image_processor
    if parts.setting("do_rescale"):
        image = ip.rescale(image, scale=parts.setting("rescale_factor"))
    if parts.setting("do_normalize"):
        image = ip.normalize(image, mean=parts.setting("image_mean"), std=parts.setting("image_std"))
    return image.astype(np.float32)


def _size_dict(value: Any) -> Any:
    from transformers.image_utils import SizeDict

    return value if isinstance(value, SizeDict) else SizeDict(**dict(value))


def _llava_videos(parts: ProcessorParts, videos: list[np.ndarray]) -> tuple[dict[str, Any], list[int]]:
    """LLaVA-OneVision / LLaVA-NeXT-Video: every frame resized (and center-cropped where
    the image processor does) to the vision tower's input size."""
    ip = parts.image_processor
    config = parts.config
    vc = config.vision_config
    side = vc.image_size // vc.patch_size
    if parts.model_type == "llava_onevision":
        per_frame, extra = math.ceil(side / 2) ** 2, 1  # 2x2 bilinear pooling, one newline
    else:
        stride = int(getattr(config, "spatial_pool_stride", 2))
        per_frame, extra = (side // stride) ** 2, 0
    size = _size_dict(parts.setting("size"))
    crop = parts.setting("crop_size") if parts.setting("do_center_crop") else None
    resample = parts.setting("resample")
    out, counts = [], []
    for frames in videos:
        pixels = []
        for frame in frames:
            image = ip.resize(_chw(frame), size=size, resample=resample)
            if crop is not None:
                image = ip.center_crop(image, size=_size_dict(crop))
            pixels.append(_normalise(parts, image))
        stacked = torch.from_numpy(np.stack(pixels))  # [F, 3, S, S]
        if stacked.shape[-1] != vc.image_size or stacked.shape[-2] != vc.image_size:
            raise ScissorError(
                f"frames were processed to {tuple(stacked.shape[-2:])} but the vision tower takes "
                f"{vc.image_size}x{vc.image_size}; check the image processor's size"
            )
        out.append(stacked)
        counts.append(len(frames) * per_frame + extra)
    if len({v.shape for v in out}) == 1:
        pixel_values: Any = torch.stack(out)  # [V, F, 3, S, S]
    else:
        pixel_values = out
    return {"pixel_values_videos": pixel_values}, counts


def _qwen_videos(
    parts: ProcessorParts, videos: list[np.ndarray], times: list[list[float] | None]
) -> tuple[dict[str, Any], list[int]]:
    """Qwen2-VL / Qwen2.5-VL (and the pixel layout of Qwen3-VL, Qwen3.5, GLM-4V):
    frames resized to multiples of patch * merge, grouped in
    temporal patches of ``temporal_patch_size`` frames (the last frame repeated to fill
    the last group), flattened in the merger's (t, h/m, w/m, m, m) order."""
    ip = parts.image_processor
    patch = int(parts.setting("patch_size"))
    merge = int(parts.setting("merge_size"))
    temporal = int(parts.setting("temporal_patch_size"))
    size = _size_dict(parts.setting("size"))
    resample = parts.setting("resample")
    rows, grids, counts, seconds = [], [], [], []
    for frames, ts in zip(videos, times):
        # temporal_factor: GLM-4V's resize rounds for temporal patches (the others ignore it)
        processed = np.stack(
            [
                _normalise(
                    parts,
                    ip.resize(_chw(f), size=size, resample=resample, factor=patch * merge, temporal_factor=temporal),
                )
                for f in frames
            ]
        )  # [F, C, H, W]
        if pad := -processed.shape[0] % temporal:
            processed = np.concatenate([processed, np.repeat(processed[-1:], pad, axis=0)])
        f, c, h, w = processed.shape
        gt, gh, gw = f // temporal, h // patch, w // patch
        x = processed.reshape(gt, temporal, c, gh // merge, merge, patch, gw // merge, merge, patch)
        x = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)  # (t, h/m, w/m, m, m, C, T, p, p)
        rows.append(torch.from_numpy(np.ascontiguousarray(x).reshape(gt * gh * gw, c * temporal * patch * patch)))
        grids.append([gt, gh, gw])
        counts.append(gt * gh * gw // merge**2)
        seconds.append(temporal / (sampled_fps(ts) or parts.fps))
    data: dict[str, Any] = {
        "pixel_values_videos": torch.cat(rows),
        "video_grid_thw": torch.tensor(grids, dtype=torch.long),
    }
    if parts.model_type == "qwen2_5_vl":
        data["second_per_grid_ts"] = torch.tensor(seconds, dtype=torch.float32)
    return data, counts


def to_model(batch: Any, device: torch.device | str, dtype: torch.dtype) -> dict[str, Any]:
    """Processor outputs (a mapping) on ``device``: floating-point tensors (pixels) also in the
    model's ``dtype``, integer ones (ids, masks, grids) keep theirs; lists of tensors alike."""
    out: dict[str, Any] = {}
    for key, value in dict(batch).items():
        if isinstance(value, torch.Tensor):
            value = value.to(device, dtype if value.is_floating_point() else value.dtype)
        elif isinstance(value, list) and value and all(isinstance(v, torch.Tensor) for v in value):
            value = [v.to(device, dtype if v.is_floating_point() else v.dtype) for v in value]
        out[key] = value
    return out
