"""Attention that each vision patch receives in one layer of a ViT, read with a hook.

Used by methods whose ``side_inputs`` include ``"vision_attention"`` (e.g. VisionZip).
The hook captures the layer's input and recomputes its attention probabilities from the
layer's own projections, so it works with any attention implementation (sdpa, flash)
without switching the model to eager attention.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from ...._errors import ScissorError

__all__ = ["capture_module_input", "feature_layer_index", "received_attention_qk"]


@contextlib.contextmanager
def capture_module_input(module: torch.nn.Module) -> Iterator[dict[str, Any]]:
    """While active, ``store["args"]`` / ``store["kwargs"]`` hold the last call's inputs."""
    store: dict[str, Any] = {}

    def hook(_module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        store["args"] = args
        store["kwargs"] = kwargs

    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield store
    finally:
        handle.remove()


def received_attention_qk(attn: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """hidden: [B, P, dim] input of a CLIP/SigLIP-style attention (``q_proj``, ``k_proj``).

    Returns [B, P] float32: softmax(q k^T * scale) averaged over heads and queries, i.e.
    the mean attention each of the P tokens receives (rows of the result sum to 1).
    """
    for name in ("q_proj", "k_proj"):
        if not hasattr(attn, name):
            raise ScissorError(f"{type(attn).__name__} has no {name}; expected a CLIP/SigLIP attention module")
    heads = int(attn.num_heads)
    b, p, _ = hidden.shape
    q = attn.q_proj(hidden).view(b, p, heads, -1).transpose(1, 2).float()  # [B, H, P, hd]
    k = attn.k_proj(hidden).view(b, p, heads, -1).transpose(1, 2).float()
    scale = float(getattr(attn, "scale", q.shape[-1] ** -0.5))
    probs = torch.softmax(q @ k.transpose(-1, -2) * scale, dim=-1)  # [B, H, P, P]
    return probs.mean(dim=(1, 2))  # [B, P]


def feature_layer_index(vision_feature_layer: Any, num_layers: int) -> int:
    """The encoder layer whose output ``hidden_states[vision_feature_layer]`` is.

    ``hidden_states`` has ``num_layers + 1`` entries (embeddings first), so entry ``i >= 1``
    is the output of layer ``i - 1`` and a negative entry ``-j`` that of layer ``-j``.
    A list of layers (concatenated features) uses the last one listed.
    """
    if isinstance(vision_feature_layer, (list, tuple)):
        vision_feature_layer = vision_feature_layer[-1]
    index = int(vision_feature_layer)
    if index < 0:
        return num_layers + index
    if index == 0:
        raise ScissorError("vision_feature_layer 0 selects the patch embeddings; no attention layer precedes it")
    return index - 1
