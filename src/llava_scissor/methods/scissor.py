"""``scissor``: Semantic Connected Components (the library's own method) in the registry.

Sun, Zhao, Wei, Hou, "LLaVA-Scissor: Token Compression with Semantic Connected Components
for Video LLMs", arXiv 2506.21862 (2025). The algorithm lives in ``llava_scissor.core``;
this module only registers it so that every method is reachable by name.
"""

from __future__ import annotations

from typing import Any

import torch

from ..core.compress import compress as core_compress
from ..core.config import ScissorConfig
from ..core.result import CompressionResult
from . import Method, register_method

__all__ = ["scissor_compress"]


def scissor_compress(features: torch.Tensor, config: ScissorConfig, *, options: Any = None) -> CompressionResult:
    """features: [F, N, d] -> SCC (threshold ``tau`` or an exact budget), see ``llava_scissor.core.compress``."""
    result = core_compress(features, config)  # one tensor in, one result out
    assert isinstance(result, CompressionResult)
    return result


register_method(
    Method(
        name="scissor",
        compress=scissor_compress,
    )
)
