"""Qwen3-VL and Qwen3-VL-MoE.

Layout (transformers 5.24, ``processing_qwen3_vl.py``): the pixels are Qwen2-VL's
(temporal patches of two frames, 2 x 2 patch merger), but each temporal step is its own
segment, written ``<{t:.1f} seconds><|vision_start|>`` + (h/2)(w/2) ``<|video_pad|>`` +
``<|vision_end|>``, t the mean time of the step's two frames. The vision model also
returns ``deepstack_features``: one [rows, dim] tensor per layer of
``vision_config.deepstack_visual_indexes``, with the same rows as the video features,
added to the language model's hidden states at the video positions after its first
layers. They travel as ``VideoFeatures.side`` and are reduced like the features.

Positions (``get_rope_index``): each step is a grid (1, h/2, w/2) whose three axes start
at the current text position; the timestamp text advances it. Compressed tokens take
their representative's positions, computed on the uncompressed sequence (see ``prepare``).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ...._errors import ScissorError
from ._base import VideoFeatures, base_model, register_family
from .qwen2_vl import QwenVLFamily

__all__ = ["Qwen3VLFamily"]


class Qwen3VLFamily(QwenVLFamily):
    model_types: tuple[str, ...] = ("qwen3_vl", "qwen3_vl_moe")
    video_input_keys: tuple[str, ...] = ("pixel_values_videos", "video_grid_thw")

    def extract(self, model: Any, inputs: Mapping[str, Any]) -> list[VideoFeatures]:
        grid = inputs.get("video_grid_thw")
        if grid is None:
            raise ScissorError(
                f"{model.config.model_type} video inputs need video_grid_thw next to pixel_values_videos"
            )
        out = base_model(model).get_video_features(
            pixel_values_videos=inputs["pixel_values_videos"], video_grid_thw=grid, return_dict=True
        )
        deepstack = getattr(out, "deepstack_features", None) or []  # layers x videos
        m = self._merge(model)
        result = []
        for v, (rows, (t, h, w)) in enumerate(zip(out.pooler_output, grid.tolist())):
            n = (h // m) * (w // m)
            if rows.shape[0] != t * n:
                raise ScissorError(f"video features have {rows.shape[0]} rows; expected {t} x {n} for grid {(t, h, w)}")
            side = tuple(layer[v].reshape(t, n, -1) for layer in deepstack)
            result.append(VideoFeatures(rows.reshape(t, n, -1), None, (t, h // m, w // m), (1,) * t, side))
        return result

    def pack(self, model: Any, videos: Sequence[torch.Tensor], side: Any = None) -> Any:
        if not side:
            from transformers.modeling_outputs import BaseModelOutputWithPooling

            return BaseModelOutputWithPooling(pooler_output=tuple(videos))
        module = sys.modules[type(base_model(model)).__module__]
        # the model concatenates each layer's per-video tuple, as it does the features
        layers = [tuple(per_video[i] for per_video in side) for i in range(len(side[0]))]
        return module.BaseModelOutputWithDeepstackFeatures(pooler_output=tuple(videos), deepstack_features=layers)


register_family(Qwen3VLFamily())
