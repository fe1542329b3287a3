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

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from ..._errors import ScissorError
from .families import supported_model_types

__all__ = ["ProcessorParts", "load_processor", "build_video_inputs", "sample_frames", "video_token_for"]

_VIDEO_TOKENS = {
    "llava_onevision": "<video>",
    "llava_next_video": "<video>",
    "qwen2_vl": "<|video_pad|>",
    "qwen2_5_vl": "<|video_pad|>",
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
        fps: frames per second of the sampled frames (Qwen2.5-VL's temporal positions).
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
    except (ImportError, ValueError, OSError):
        # ImportError: the video processor needs torchvision; the others: no processor
        # config in the folder. Either way the parts below still work.
        processor = None
    config = AutoConfig.from_pretrained(name_or_path, **kwargs)
    if config.model_type not in _VIDEO_TOKENS:
        raise ScissorError(
            f"model type {config.model_type!r} is not supported; supported: {supported_model_types()}"
        )
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
    image_processor = AutoImageProcessor.from_pretrained(name_or_path, backend="pil", **kwargs)
    return ProcessorParts(config, tokenizer, image_processor)


def sample_frames(frames: Any, num_frames: int | None) -> np.ndarray:
    """frames: [F, H, W, 3] uint8 -> [num_frames, H, W, 3], uniformly spread (first and
    last frame included); all frames when ``num_frames`` is None or >= F."""
    array = frames.cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ScissorError(f"frames must be [frames, height, width, 3], got shape {array.shape}")
    if array.dtype != np.uint8:
        raise ScissorError(f"frames must be uint8 RGB, got dtype {array.dtype}")
    total = array.shape[0]
    if num_frames is None or num_frames >= total:
        return array
    if num_frames < 1:
        raise ScissorError(f"num_frames must be >= 1, got {num_frames}")
    idx = np.linspace(0, total - 1, num_frames).round().astype(np.int64)
    return array[idx]


def build_video_inputs(
    processor: Any,
    text: str | Sequence[str],
    videos: Sequence[Any],
    images: Sequence[Any] | None = None,
    *,
    num_frames: int | None = None,
    padding_side: str = "left",
) -> Any:
    """Model inputs (a ``BatchFeature`` of tensors) for prompts with videos.

    text: one prompt or a batch; each video placeholder (``<video>`` for LLaVA,
    ``<|video_pad|>`` for Qwen, as the chat template writes it) is matched, in order,
    with one entry of ``videos`` ([F, H, W, 3] uint8 frames each; frame counts may
    differ). ``processor``: the model's processor (used as is when it has a video
    processor) or ``ProcessorParts``. ``num_frames`` samples each video uniformly.

    Without a video processor, LLaVA videos come back as a list of [F, C, H, W] tensors
    in ``pixel_values_videos`` when frame counts differ (the model itself only takes
    equal counts; ``prepare`` / ``apply`` take both).
    """
    texts = [text] if isinstance(text, str) else list(text)
    sampled = [sample_frames(v, num_frames) for v in videos]
    if not isinstance(processor, ProcessorParts):
        if not _has_video_processor(processor):
            raise ScissorError("processor has no video processor; pass ProcessorParts (see load_processor)")
        kwargs: dict[str, Any] = {"text": texts, "videos": [list(v) for v in sampled], "return_tensors": "pt", "padding": True}
        if images is not None:
            kwargs["images"] = images
        processor.tokenizer.padding_side = padding_side
        return processor(**kwargs)

    model_type = processor.model_type
    if model_type in ("qwen2_vl", "qwen2_5_vl"):
        video_data, counts = _qwen_videos(processor, sampled)
    elif model_type in ("llava_onevision", "llava_next_video"):
        video_data, counts = _llava_videos(processor, sampled)
    else:
        raise ScissorError(f"model type {model_type!r} is not supported; supported: {supported_model_types()}")
    texts = _expand(texts, processor.video_token, counts)

    image_data: dict[str, Any] = {}
    if images:
        if model_type not in ("qwen2_vl", "qwen2_5_vl"):
            raise ScissorError(
                f"images next to videos need the model's own processor for {model_type!r} "
                "(its image token count depends on the anyres layout); without torchvision only Qwen is supported"
            )
        image_data = dict(processor.image_processor(images=list(images), return_tensors="pt"))
        merge = int(processor.setting("merge_size"))
        image_counts = [int(g.prod()) // merge**2 for g in image_data["image_grid_thw"]]
        image_token = getattr(processor.tokenizer, "image_token", None) or "<|image_pad|>"
        texts = _expand(texts, image_token, image_counts)

    from transformers import BatchFeature

    tokenizer = processor.tokenizer
    tokenizer.padding_side = padding_side
    batch = BatchFeature(dict(tokenizer(texts, return_tensors="pt", padding=True)))
    batch.update(image_data)
    batch.update(video_data)
    if model_type in ("qwen2_vl", "qwen2_5_vl"):
        ids = batch["input_ids"]
        types = torch.zeros_like(ids, dtype=torch.int32)
        types[ids == processor.config.image_token_id] = 1
        types[ids == processor.config.video_token_id] = 2
        batch["mm_token_type_ids"] = types
    return batch


def _expand(texts: list[str], token: str, counts: list[int]) -> list[str]:
    """Replace the i-th occurrence of ``token`` (over the whole batch) by counts[i] copies."""
    found = sum(t.count(token) for t in texts)
    if found != len(counts):
        raise ScissorError(f"the prompts hold {found} {token!r} placeholders but {len(counts)} videos were given")
    it = iter(counts)
    out = []
    for t in texts:
        parts = t.split(token)
        pieces = [parts[0]]
        for part in parts[1:]:
            pieces.append(token * next(it))
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


def _qwen_videos(parts: ProcessorParts, videos: list[np.ndarray]) -> tuple[dict[str, Any], list[int]]:
    """Qwen2-VL / Qwen2.5-VL: frames resized to multiples of patch * merge, grouped in
    temporal patches of ``temporal_patch_size`` frames (the last frame repeated to fill
    the last group), flattened in the merger's (t, h/m, w/m, m, m) order."""
    ip = parts.image_processor
    patch = int(parts.setting("patch_size"))
    merge = int(parts.setting("merge_size"))
    temporal = int(parts.setting("temporal_patch_size"))
    size = _size_dict(parts.setting("size"))
    resample = parts.setting("resample")
    rows, grids, counts, seconds = [], [], [], []
    for frames in videos:
        processed = np.stack(
            [_normalise(parts, ip.resize(_chw(f), size=size, resample=resample, factor=patch * merge)) for f in frames]
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
        seconds.append(temporal / parts.fps)
    data: dict[str, Any] = {
        "pixel_values_videos": torch.cat(rows),
        "video_grid_thw": torch.tensor(grids, dtype=torch.long),
    }
    if parts.model_type == "qwen2_5_vl":
        data["second_per_grid_ts"] = torch.tensor(seconds, dtype=torch.float32)
    return data, counts
