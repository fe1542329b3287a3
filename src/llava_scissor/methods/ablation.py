"""The paper's ablation baselines: other ways to pick the representative tokens.

Sun et al., "LLaVA-Scissor", arXiv 2506.21862 (2025), ablation on representative
selection (at 35 % retention: random 58.68 / uniform 61.25 / highest L2 norm 60.67 vs.
SCC 61.98 on MVBench). Each variant picks exactly ``K`` original tokens of the whole video
(frame-major) and then runs the same merge step as SCC: every original token goes to its
most similar representative (cosine), output token = (representative + assigned) /
(1 + count). ``merge=False`` in the config keeps the representatives unchanged and
discards the rest.

* ``uniform``: ``K`` evenly spaced indices over the F*N tokens (bin centres).
* ``random``: ``K`` indices drawn without replacement with ``config.seed``.
* ``l2norm``: the ``K`` tokens of largest L2 norm (ties: smaller index).

Output order: representatives ascending (frame-major), ordinary positions.
"""

from __future__ import annotations

from typing import Any

import torch

from ..core.config import ScissorConfig, similarity_dtype
from ..core.result import CompressionResult
from . import Method, register_method
from ._common import check_features, evenly_spaced, result_from_kept, token_budget

__all__ = ["uniform_compress", "random_compress", "l2norm_compress"]


def uniform_compress(features: torch.Tensor, config: ScissorConfig, *, options: Any = None) -> CompressionResult:
    """features: [F, N, d] -> K evenly spaced representatives, then the merge step."""
    frames, n, _ = check_features(features, "uniform")
    k = token_budget(config, frames, n, "uniform")
    kept = evenly_spaced(k, frames * n, device=features.device)
    return result_from_kept(features, kept, "uniform", config.merge, similarity_dtype(config))


def random_compress(features: torch.Tensor, config: ScissorConfig, *, options: Any = None) -> CompressionResult:
    """features: [F, N, d] -> K representatives drawn with ``config.seed``, then the merge step."""
    frames, n, _ = check_features(features, "random")
    k = token_budget(config, frames, n, "random")
    generator = torch.Generator(device="cpu").manual_seed(int(config.seed))
    kept = torch.randperm(frames * n, generator=generator)[:k].to(features.device)
    return result_from_kept(features, kept, "random", config.merge, similarity_dtype(config))


def l2norm_compress(features: torch.Tensor, config: ScissorConfig, *, options: Any = None) -> CompressionResult:
    """features: [F, N, d] -> the K tokens of largest L2 norm as representatives, then the merge step."""
    frames, n, _ = check_features(features, "l2norm")
    k = token_budget(config, frames, n, "l2norm")
    norms = features.reshape(frames * n, -1).float().norm(dim=-1)  # [F*N]
    kept = torch.sort(-norms, stable=True).indices[:k]
    return result_from_kept(features, kept, "l2norm", config.merge, similarity_dtype(config))


register_method(Method("uniform", uniform_compress))
register_method(Method("random", random_compress))
register_method(Method("l2norm", l2norm_compress))
