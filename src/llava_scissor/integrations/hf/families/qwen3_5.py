"""Qwen3.5 and Qwen3.5-MoE.

Layout (transformers 5.24): the processor is Qwen3-VL's (``Qwen3VLProcessor``): one
segment per temporal step between timestamps, the same pixels and the same
``get_rope_index``. What differs is inside: the vision model returns no deepstack
features, and the language model mixes Gated DeltaNet (linear attention) layers with
full-attention layers, which changes nothing for the video tokens' layout.
"""

from __future__ import annotations

from ._base import register_family
from .qwen3_vl import Qwen3VLFamily

__all__ = ["Qwen3_5Family"]


class Qwen3_5Family(Qwen3VLFamily):
    model_types: tuple[str, ...] = ("qwen3_5", "qwen3_5_moe")


register_family(Qwen3_5Family())
