"""The public verbs that dispatch to the core or to another registered method."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from .core import CompressionResult, ScissorConfig
from .core import compress as _scissor_compress

__all__ = ["compress"]


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

    Not differentiable: every method runs under ``torch.no_grad()``; inputs that require
    grad are accepted and the results carry no gradient.
    """
    if method is None or method == "scissor":
        return _scissor_compress(features, config, **overrides)
    from .methods import compress_with  # lazy: baselines live outside the core

    with torch.no_grad():
        return compress_with(method, features, config, **overrides)
