"""The public verbs, and the one dispatch between SCC and another registered method."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from .core import CompressionResult, ScissorConfig
from .core import compress as _scissor_compress
from .methods import Method, compress_with, get_method

__all__ = ["compress", "resolve_method", "SCISSOR"]

#: The registry name of SCC, the default method everywhere.
SCISSOR = "scissor"


def resolve_method(method: str | None) -> Method:
    """The registered ``Method`` called ``method``; None means SCC (``"scissor"``)."""
    return get_method(SCISSOR if method is None else method)


def compress(
    features: torch.Tensor | Sequence[torch.Tensor],
    config: ScissorConfig | None = None,
    *,
    method: str | None = None,
    **overrides: Any,
) -> CompressionResult | list[CompressionResult]:
    """Compress the tokens of one video, or of several.

    features: [frames, tokens_per_frame, dim] float tensor, or a list of such tensors
    (frames may differ per video). Returns one ``CompressionResult`` per video (a list
    for a list input).

    ``config`` / ``overrides`` are ``ScissorConfig`` fields (``tau``, ``retention``,
    ``max_tokens``, ...). ``method`` picks another registered method
    (``llava_scissor.available_methods()``); the default is ``"scissor"``.
    """
    name = resolve_method(method).name
    if name == SCISSOR:
        return _scissor_compress(features, config, **overrides)  # all videos in one batched call
    return compress_with(name, features, config, **overrides)
