"""Qwen2-VL and Qwen2.5-VL.

Layout: the ViT sees patches of ``temporal_patch_size`` (2) frames x 14 x 14 pixels; the
PatchMerger joins 2 x 2 neighbouring patches, giving per video ``grid_t`` temporal steps
of (h / 2) * (w / 2) tokens, frame-major, no newline. Compression treats one temporal
step (two frames) as one "frame": the spatial step runs per temporal step.

Positions are 3-D rotary (time, height, width) computed by ``get_rope_index`` on the
whole sequence; the integration computes them on the uncompressed sequence and gives
each output token the position of its representative (see ``prepare``).
"""

from __future__ import annotations

import inspect
import itertools
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ...._errors import ScissorError
from ._base import (
    Family,
    VideoFeatures,
    base_model,
    call_video_encoder,
    get_family,
    register_family,
)
from ._vision_attention import capture_module_input

__all__ = ["QwenVLFamily", "mm_token_type_ids_from_ids"]


def mm_token_type_ids_from_ids(model: Any, input_ids: torch.Tensor) -> torch.Tensor:
    """input_ids: [B, L] -> [B, L] int: 0 text, 1 image placeholder, 2 video placeholder
    (what the transformers processor returns as ``mm_token_type_ids``)."""
    return get_family(model).token_types(model.config, input_ids)


class QwenVLFamily(Family):
    model_types: tuple[str, ...] = ("qwen2_vl", "qwen2_5_vl")
    video_input_keys: tuple[str, ...] = ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts")
    needs_positions = True

    def _merge(self, model: Any) -> int:
        return int(model.config.vision_config.spatial_merge_size)

    def extract(self, model: Any, inputs: Mapping[str, Any]) -> list[VideoFeatures]:
        grid = inputs.get("video_grid_thw")
        if grid is None:
            raise ScissorError("Qwen video inputs need video_grid_thw next to pixel_values_videos")
        inner = base_model(model)
        pooled = call_video_encoder(
            inner.get_video_features, pixel_values_videos=inputs["pixel_values_videos"], video_grid_thw=grid
        )
        m = self._merge(model)
        result = []
        for rows, (t, h, w) in zip(pooled, grid.tolist()):
            n = (h // m) * (w // m)
            if rows.shape[0] != t * n:
                raise ScissorError(
                    f"Qwen video features have {rows.shape[0]} rows; expected {t} x {n} for grid {(t, h, w)}"
                )
            result.append(VideoFeatures(rows.reshape(t, n, -1), None, (t, h // m, w // m)))
        return result

    def pack(self, model: Any, videos: Sequence[torch.Tensor], side: Any = None) -> Any:
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        # The model concatenates the per-video tuple in order.
        return BaseModelOutputWithPooling(pooler_output=tuple(videos))

    def original_positions(self, model: Any, inputs: Mapping[str, Any]) -> torch.Tensor:
        """[3, B, L] (t, h, w) positions of the uncompressed sequence (0 on padding)."""
        inner = base_model(model)
        fn = inner.get_rope_index
        params = inspect.signature(fn).parameters
        ids = inputs["input_ids"]
        kwargs: dict[str, Any] = {
            "image_grid_thw": inputs.get("image_grid_thw"),
            "video_grid_thw": inputs.get("video_grid_thw"),
            "attention_mask": inputs.get("attention_mask"),
        }
        if "mm_token_type_ids" in params:
            types = inputs.get("mm_token_type_ids")
            kwargs["mm_token_type_ids"] = types if types is not None else mm_token_type_ids_from_ids(model, ids)
        if "second_per_grid_ts" in params and inputs.get("second_per_grid_ts") is not None:
            kwargs["second_per_grid_ts"] = inputs["second_per_grid_ts"]
        positions, _ = fn(ids, **kwargs)
        return positions

    def vision_attention(self, model: Any, inputs: Mapping[str, Any]) -> list[torch.Tensor]:
        inner = base_model(model)
        visual = inner.visual
        grid = inputs["video_grid_thw"]
        attn = visual.blocks[-1].attn
        pixels = inputs["pixel_values_videos"].to(visual.dtype)
        with torch.no_grad(), capture_module_input(attn) as store:
            visual(pixels, grid_thw=grid)
        args, kwargs = store["args"], store["kwargs"]
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]  # [P, dim]
        cu_seqlens = kwargs["cu_seqlens"] if "cu_seqlens" in kwargs else args[1]
        cos, sin = kwargs["position_embeddings"]
        rotary = sys.modules[type(attn).__module__].apply_rotary_pos_emb_vision
        with torch.no_grad():
            p = hidden.shape[0]
            q, k, _ = attn.qkv(hidden).reshape(p, 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
            q, k = rotary(q, k, cos, sin)
            q, k = q.transpose(0, 1).float(), k.transpose(0, 1).float()  # [H, P, hd]
            received = torch.empty(p, dtype=torch.float32, device=hidden.device)
            bounds = cu_seqlens.tolist()
            for start, end in itertools.pairwise(bounds):
                probs = torch.softmax(q[:, start:end] @ k[:, start:end].transpose(-1, -2) * attn.scaling, dim=-1)
                received[start:end] = probs.mean(dim=(0, 1))
        unit = self._merge(model) ** 2
        merged = received.view(-1, unit).mean(dim=1)  # one value per merged token, block order
        order = _window_order(visual, grid)
        if order is not None:
            merged = merged[torch.argsort(order)]  # undo Qwen2.5's window permutation
        sizes = [int(t * h * w) // unit for t, h, w in grid.tolist()]
        return [chunk.view(int(t), -1) for chunk, (t, _, _) in zip(merged.split(sizes), grid.tolist())]


def _window_order(visual: Any, grid: torch.Tensor) -> torch.Tensor | None:
    """Qwen2.5-VL's window_index (merged tokens in block order), None for Qwen2-VL."""
    if not hasattr(visual, "fullatt_block_indexes"):
        return None
    if hasattr(visual, "get_window_index"):
        return visual.get_window_index(grid)[0]
    from transformers.vision_utils import get_vision_window_index

    return get_vision_window_index(
        grid,
        spatial_merge_size=visual.spatial_merge_size,
        window_size=visual.window_size,
        patch_size=visual.patch_size,
    )[0]


register_family(QwenVLFamily())
