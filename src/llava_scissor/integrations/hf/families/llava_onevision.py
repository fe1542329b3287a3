"""LLaVA-OneVision (and LLaVA-Video checkpoints, which share ``model_type``).

Layout (transformers 5.x): vision tower -> projector -> 2x2 bilinear pooling, giving
ceil(p/2)^2 tokens per frame for p x p patches (196 for SigLIP-384/14), then one
``image_newline`` token per video. The placeholder run of a video is F * N + 1 long.
The newline is the ``tail`` of the video: kept by default (the public checkpoints were
trained with it) and dropped in the paper's flat layout (``keep_newline=False``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ...._errors import ScissorError
from ._base import (
    Family,
    VideoFeatures,
    base_model,
    call_video_encoder,
    register_family,
)
from ._vision_attention import (
    capture_module_input,
    feature_layer_index,
    received_attention_qk,
)

__all__ = ["LlavaOnevisionFamily", "video_list"]

_ENCODER_OPTIONS = ("vision_feature_layer", "vision_feature_select_strategy")


def video_list(pixel_values_videos: Any) -> list[torch.Tensor]:
    """pixel_values_videos: [V, F, C, H, W] tensor or a list of [F, C, H, W] (frames may
    differ per video). Returns one [F, C, H, W] tensor per video."""
    if isinstance(pixel_values_videos, torch.Tensor):
        if pixel_values_videos.dim() != 5:
            raise ScissorError(
                "pixel_values_videos must be [videos, frames, channels, height, width], "
                f"got shape {tuple(pixel_values_videos.shape)}"
            )
        return list(pixel_values_videos.unbind(0))
    videos = list(pixel_values_videos)
    for v in videos:
        if not isinstance(v, torch.Tensor) or v.dim() != 4:
            raise ScissorError("a list of pixel_values_videos must hold [frames, channels, height, width] tensors")
    return videos


def _grouped_encode(fn: Any, videos: list[torch.Tensor], options: Mapping[str, Any]) -> list[torch.Tensor]:
    """Run ``fn`` once per group of equally shaped videos; returns pooler rows per video."""
    out: list[torch.Tensor | None] = [None] * len(videos)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, v in enumerate(videos):
        groups.setdefault(tuple(v.shape), []).append(i)
    for indices in groups.values():
        batch = torch.stack([videos[i] for i in indices])  # [g, F, C, H, W]
        pooled = call_video_encoder(fn, pixel_values_videos=batch, **options)
        for row, i in zip(pooled, indices):
            # 5.23 returns [F*N(+1), D] rows per video; earlier 5.x releases (e.g. 5.18)
            # return LLaVA-NeXT-Video's as [F, N, D]. Both flatten to token rows.
            out[i] = row.reshape(-1, row.shape[-1])
    return [o for o in out if o is not None]


class LlavaOnevisionFamily(Family):
    model_types = ("llava_onevision",)
    video_input_keys = ("pixel_values_videos", "image_sizes_videos")
    has_newline = True

    def _grid(self, model: Any) -> tuple[int, int]:
        vc = model.config.vision_config
        side = vc.image_size // vc.patch_size
        pooled = math.ceil(side / 2)
        return pooled, pooled

    def extract(self, model: Any, inputs: Mapping[str, Any]) -> list[VideoFeatures]:
        videos = video_list(inputs["pixel_values_videos"])
        options = {k: inputs[k] for k in _ENCODER_OPTIONS if inputs.get(k) is not None}
        pooled = _grouped_encode(base_model(model).get_video_features, videos, options)
        h, w = self._grid(model)
        tail = 1 if self.has_newline else 0
        result = []
        for video, rows in zip(videos, pooled):
            frames = int(video.shape[0])
            if rows.shape[0] != frames * h * w + tail:
                raise ScissorError(
                    f"{type(model).__name__}.get_video_features gave {rows.shape[0]} tokens for {frames} frames; "
                    f"expected {frames} x {h * w}{' + 1 newline' if tail else ''}"
                )
            body = rows[: frames * h * w].reshape(frames, h * w, -1)  # [F, N, D]
            result.append(VideoFeatures(body, rows[frames * h * w :] if tail else None, (frames, h, w)))
        return result

    def pack(self, model: Any, videos: Sequence[torch.Tensor], side: Any = None) -> Any:
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        # The model flattens (0, 1) and checks only the total count, so one row holding
        # every video's tokens in order is accepted whatever each video's length.
        return BaseModelOutputWithPooling(pooler_output=torch.cat(list(videos), dim=0)[None])

    def _pool_attention(self, model: Any, received: torch.Tensor) -> torch.Tensor:
        """received: [frames, p*p] -> [frames, N] with the model's own 2x2 bilinear pooling."""
        side = round(math.sqrt(received.shape[1]))
        grid = received.view(-1, 1, side, side)
        h, w = self._grid(model)
        pooled = torch.nn.functional.interpolate(grid, size=(h, w), mode="bilinear")
        return pooled.flatten(1)

    def vision_attention(self, model: Any, inputs: Mapping[str, Any]) -> list[torch.Tensor]:
        inner = base_model(model)
        tower = inner.vision_tower
        layers = _encoder_layers(tower)
        layer_option = inputs.get("vision_feature_layer", model.config.vision_feature_layer)
        strategy = inputs.get("vision_feature_select_strategy", model.config.vision_feature_select_strategy)
        layer = layers[feature_layer_index(layer_option, len(layers))]
        result = []
        for video in video_list(inputs["pixel_values_videos"]):
            with torch.no_grad(), capture_module_input(layer.self_attn) as store:
                tower(video.to(tower.dtype), return_dict=True)
            hidden = store["kwargs"].get("hidden_states", store["args"][0] if store["args"] else None)
            received = received_attention_qk(layer.self_attn, hidden)  # [F, P]
            if strategy == "default":
                received = received[:, 1:]  # the CLS token is not a feature
            result.append(self._pool_attention(model, received))
        return result


def _encoder_layers(tower: Any) -> Any:
    vision_model = getattr(tower, "vision_model", tower)
    encoder = getattr(vision_model, "encoder", None)
    layers = getattr(encoder, "layers", None)
    if layers is None:
        raise ScissorError(f"{type(tower).__name__} has no encoder.layers; expected a CLIP/SigLIP vision tower")
    return layers


register_family(LlavaOnevisionFamily())
