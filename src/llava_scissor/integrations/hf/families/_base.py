"""What a model family must tell the integration, and the registry keyed by ``model_type``."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ...._errors import ScissorError

__all__ = [
    "Family",
    "VideoFeatures",
    "base_model",
    "family_for",
    "get_family",
    "register_family",
    "supported_model_types",
]


@dataclass(frozen=True)
class VideoFeatures:
    """The projected tokens of one video, as the model would insert them.

    A video's placeholders form a sequence of *frame segments*: runs of placeholder
    tokens with text or markers between them (Qwen3-VL writes ``<t seconds>
    <|vision_start|>`` + one temporal step's tokens + ``<|vision_end|>`` per step). The
    families of one run per video have a single segment holding every frame.

    Where compressed tokens go: each output token sits in the segment of its
    representative's frame, in the order of the output (so positions, taken from the
    representative, stay those of that frame). A segment left with no token keeps its
    text and markers (a timestamp with an empty frame): the prompt's text never
    depends on compression, and every text token keeps its uncompressed position.

    Attributes:
        features: [F, N, dim] the tokens that compression may reorder and merge; F is the
            number of temporal steps the model's token layout has (frames, or Qwen's
            temporal grid steps of two frames each), N the tokens per step, frame-major.
        tail: [t, dim] tokens the model appends after the video and that are never
            compressed (LLaVA-OneVision's one newline token), or None.
        grid: (F, h, w) of the token layout, h * w == N.
        segments: frames of each placeholder segment, in order (sum F); None: one
            segment of all F frames.
        side: side features sharing the rows of ``features``, each [F, N, d_i] (Qwen3-VL's
            deepstack features, one per selected vision layer); reduced with the same
            weights as the features (``core.reduce.reduce_rows``).
    """

    features: torch.Tensor
    tail: torch.Tensor | None
    grid: tuple[int, int, int]
    segments: tuple[int, ...] | None = None
    side: tuple[torch.Tensor, ...] = ()

    @property
    def num_placeholders(self) -> int:
        """Placeholder tokens of this video in ``input_ids`` (F * N + t), over all segments."""
        f, n, _ = self.features.shape
        return f * n + (0 if self.tail is None else int(self.tail.shape[0]))

    @property
    def segment_frames(self) -> tuple[int, ...]:
        """Frames of each placeholder segment (``segments``, or one segment of all frames)."""
        return self.segments if self.segments is not None else (int(self.features.shape[0]),)


class Family:
    """How one kind of transformers model builds and inserts video tokens.

    Subclasses fill in the class attributes and the three methods. One instance serves
    every model of its ``model_types``; instances keep no per-model state.
    """

    #: ``config.model_type`` values this family serves.
    model_types: tuple[str, ...] = ()
    #: keys of the processor output that only the video encoder reads; the prepared
    #: inputs drop them because the compressed features travel in ``mm_encoder_outputs``.
    video_input_keys: tuple[str, ...] = ("pixel_values_videos",)
    #: True when the model uses multi-axis rotary positions that must be supplied.
    needs_positions: bool = False

    def video_token_id(self, model: Any) -> int:
        """The placeholder id of a video token."""
        config = model.config
        for name in ("video_token_id", "video_token_index"):
            value = getattr(config, name, None)
            if value is not None:
                return int(value)
        raise ScissorError(f"{type(model).__name__}.config has no video_token_id; expected a video model config")

    def token_types(self, config: Any, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids: [B, L] -> [B, L] int32: 0 text, 1 image, 2 video placeholder (the
        processor's ``mm_token_type_ids``, for families whose positions need it)."""
        types = torch.zeros_like(input_ids, dtype=torch.int32)
        image = getattr(config, "image_token_id", None)
        if image is not None:
            types[input_ids == int(image)] = 1
        types[input_ids == int(config.video_token_id)] = 2
        return types

    def video_token_mask(self, model: Any, inputs: Mapping[str, Any]) -> torch.Tensor:
        """[B, L] bool: the video placeholders of ``input_ids`` (by default the video token id)."""
        return inputs["input_ids"] == self.video_token_id(model)

    def extract(self, model: Any, inputs: Mapping[str, Any]) -> list[VideoFeatures]:
        """Run the vision encoder on the videos of ``inputs``; one entry per video, in order."""
        raise NotImplementedError

    def pack(
        self, model: Any, videos: Sequence[torch.Tensor], side: Sequence[Sequence[torch.Tensor]] | None = None
    ) -> Any:
        """Wrap per-video token tensors ``[K_i, dim]`` as ``mm_encoder_outputs["video"]``;
        ``side``: per video, its reduced side features ``[K_i, d_j]`` (families with
        ``VideoFeatures.side``)."""
        raise NotImplementedError

    def vision_attention(self, model: Any, inputs: Mapping[str, Any]) -> list[torch.Tensor]:
        """Per video ``[F, N]``: attention each token receives in the vision tower's last
        layer (mean over heads and queries), pooled to the token grid of ``extract``."""
        raise ScissorError(f"{type(self).__name__} cannot compute vision attention")

    def original_positions(self, model: Any, inputs: Mapping[str, Any]) -> torch.Tensor | None:
        """``[axes, B, L]`` rotary positions of the uncompressed sequence, or None when the
        model's positions follow from the attention mask alone."""
        return None


_REGISTRY: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    """Register ``family`` for each of its ``model_types`` (a later registration wins)."""
    if not family.model_types:
        raise ScissorError(f"{type(family).__name__} declares no model_types")
    for model_type in family.model_types:
        _REGISTRY[model_type] = family
    return family


def supported_model_types() -> list[str]:
    """The ``config.model_type`` values the integration supports, sorted."""
    return sorted(_REGISTRY)


def family_for(model_type: str) -> Family:
    """The family registered for ``model_type``; ScissorError if unsupported."""
    if model_type not in _REGISTRY:
        raise ScissorError(f"model type {model_type!r} is not supported; supported: {supported_model_types()}")
    return _REGISTRY[model_type]


def get_family(model: Any) -> Family:
    """The family of ``model`` by ``model.config.model_type``; ScissorError if unsupported."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in _REGISTRY:
        raise ScissorError(
            f"model type {model_type!r} ({type(model).__name__}) is not supported; "
            f"supported config.model_type values: {supported_model_types()}"
        )
    return _REGISTRY[model_type]


def base_model(model: Any) -> Any:
    """The inner ``*Model`` that owns ``get_video_features`` (what ``generate`` calls)."""
    inner = getattr(model, "model", None)
    if inner is not None and hasattr(inner, "get_video_features"):
        return inner
    return model


def call_video_encoder(fn: Callable[..., Any], **kwargs: Any) -> Any:
    """Call a ``get_video_features`` and return its ``pooler_output``.

    transformers 5.x returns a ``BaseModelOutputWithPooling``; ``return_dict=True`` makes
    that explicit, since some models return tuples otherwise.
    """
    out = fn(return_dict=True, **kwargs)
    pooled = getattr(out, "pooler_output", None)
    if pooled is None:
        raise ScissorError(
            f"{getattr(fn, '__qualname__', fn)} returned {type(out).__name__} without pooler_output; "
            "expected transformers >= 5 with BaseModelOutputWithPooling video features"
        )
    return pooled
