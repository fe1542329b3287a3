"""LLaVA-NeXT-Video.

Layout (transformers 5.x): vision tower -> ``vision_resampler`` (2-D pooling with
``spatial_pool_stride``) -> projector, giving (p / stride)^2 tokens per frame for p x p
patches, no newline. The placeholder run of a video is F * N long.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ._base import register_family
from .llava_onevision import LlavaOnevisionFamily

__all__ = ["LlavaNextVideoFamily"]


class LlavaNextVideoFamily(LlavaOnevisionFamily):
    model_types = ("llava_next_video",)
    video_input_keys = ("pixel_values_videos",)
    has_newline = False

    def _grid(self, model: Any) -> tuple[int, int]:
        vc = model.config.vision_config
        side = vc.image_size // vc.patch_size
        stride = int(getattr(model.config, "spatial_pool_stride", 2))
        return side // stride, side // stride

    def pack(self, model: Any, videos: Sequence[torch.Tensor], side: Any = None) -> Any:
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        # The model iterates over pooler_output (one entry per video) and flattens each.
        return BaseModelOutputWithPooling(pooler_output=list(videos))

    def _pool_attention(self, model: Any, received: torch.Tensor) -> torch.Tensor:
        """received: [frames, p*p] -> [frames, N] averaged over each pooling window."""
        side = round(received.shape[1] ** 0.5)
        stride = int(getattr(model.config, "spatial_pool_stride", 2))
        grid = received.view(-1, 1, side, side)
        return torch.nn.functional.avg_pool2d(grid, kernel_size=stride, stride=stride).flatten(1)


register_family(LlavaNextVideoFamily())
