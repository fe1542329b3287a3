"""GLM-4.1V (``glm4v``) and GLM-4.6V (``glm46v``).

Layout (transformers 5.24, ``processing_glm4v.py``): a video is written
``<|begin_of_video|>`` + per temporal step (two frames) ``<|begin_of_image|>`` +
(h/2)(w/2) *image* tokens + ``<|end_of_image|>`` + the whole seconds of the step's first
frame (GLM-4.6V: ``{seconds:.1f} seconds``) + ``<|end_of_video|>``. The placeholders of a video are image tokens: the model
fills video features into ``input_ids == image_token_id`` positions, and only the video
markers (``mm_token_type_ids == 2``, which the processor derives from them) tell a
video's tokens from an image's. Pixels are Qwen2-VL's; ``get_video_features`` encodes
each step as its own (1, h, w) grid. No deepstack features.

Positions (``get_rope_index``): as Qwen3-VL, each step a (1, h/2, w/2) grid starting at
the current text position.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ._base import register_family
from .qwen3_vl import Qwen3VLFamily

__all__ = ["Glm4vFamily"]


class Glm4vFamily(Qwen3VLFamily):
    model_types: tuple[str, ...] = ("glm4v", "glm46v")

    def video_token_id(self, model: Any) -> int:
        return int(model.config.image_token_id)

    def token_types(self, config: Any, input_ids: torch.Tensor) -> torch.Tensor:
        """Image tokens between ``<|begin_of_video|>`` and ``<|end_of_video|>`` are video (2),
        the others image (1), as ``Glm4vProcessor.create_mm_token_type_ids`` marks them."""
        types = torch.zeros_like(input_ids, dtype=torch.int32)
        image = input_ids == int(config.image_token_id)
        opened = (input_ids == int(config.video_start_token_id)).cumsum(-1)
        closed = (input_ids == int(config.video_end_token_id)).cumsum(-1)
        inside = opened > closed
        types[image & ~inside] = 1
        types[image & inside] = 2
        return types

    def video_token_mask(self, model: Any, inputs: Mapping[str, Any]) -> torch.Tensor:
        types = inputs.get("mm_token_type_ids")
        if types is None:
            types = self.token_types(model.config, inputs["input_ids"])
        return types == 2

    def vision_attention(self, model: Any, inputs: Mapping[str, Any]) -> list[torch.Tensor]:
        # GLM's vision model takes each temporal step as its own (1, h, w) grid, as
        # get_video_features passes it; the steps of a video are joined back.
        grid = inputs["video_grid_thw"]
        steps = torch.repeat_interleave(grid, grid[:, 0], dim=0)
        steps[:, 0] = 1
        per_step = super().vision_attention(model, dict(inputs, video_grid_thw=steps))
        counts = grid[:, 0].tolist()
        starts = [sum(counts[:i]) for i in range(len(counts))]
        return [torch.cat(per_step[s : s + c]) for s, c in zip(starts, counts)]


register_family(Glm4vFamily())
