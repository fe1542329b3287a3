"""``fastv``: drop the visual tokens that receive the least attention inside the language model.

Chen, Zhao, Liu, Bai, Lin, Zhou, Chang, "An Image is Worth 1/2 Tokens After Layer 2:
Plug-and-Play Inference Acceleration for Large Vision-Language Models", ECCV 2024,
arXiv 2403.06764. The first ``K`` decoder layers (0 .. K-1) see every visual token; each
visual token is scored by the attention it receives in layer K-1 (averaged over heads and
over all query positions), and layers K .. T-1 see only the best-scored visual tokens.
FastV's paper default is K = 2, R = 50 %; LLaVA-Scissor compares with K = 3 at equal
retention, which is the default here. The budget has the same meaning as for every other
method: exactly ``round(retention * F * N)`` (or ``max_tokens``) visual tokens remain
after layer K.

Here is the selection itself (``fastv_compress``, the registry entry), given
``llm_attention: [F, N]`` (the score of each visual token at layer K). Kept tokens go
through unchanged, the rest are discarded (``assignment = -1``). The in-model mechanics
that score the tokens inside a transformers language model and prune them there are in
``integrations/hf/fastv.py`` (``llava_scissor.apply(model, method="fastv", retention=...)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._errors import ScissorError
from ..core.config import ScissorConfig
from ..core.result import CompressionResult
from . import Method, register_method
from ._common import check_features, check_side_input, token_budget

__all__ = ["FastVOptions", "fastv_compress", "fastv_select", "attention_received"]


@dataclass(frozen=True)
class FastVOptions:
    """FastV hyperparameters.

    Attributes:
        layer: K: layers 0..K-1 see all tokens (layer K-1's attention ranks the visual
            tokens), layers K.. only the kept ones (LLaVA-Scissor's comparison: 3;
            FastV's paper default: 2).
    """

    layer: int = 3

    def __post_init__(self) -> None:
        if isinstance(self.layer, bool) or not isinstance(self.layer, int) or self.layer < 1:
            raise ScissorError(f"FastV layer must be an int >= 1, got {self.layer!r}")


def attention_received(attn: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
    """Score of each visual token: attention it receives, averaged over heads and queries.

    attn: [heads, L, L] (or [batch=1, heads, L, L]) attention probabilities of one sequence;
    visual: [V] int64 positions of the visual tokens in the sequence -> [V] float32.
    """
    if attn.dim() == 4:
        attn = attn[0]
    return attn.float().mean(dim=0).mean(dim=0)[visual]


def fastv_select(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """scores: [V] -> the ``keep`` best-scored positions, ascending (ties: smaller position)."""
    order = torch.sort(-scores.float(), stable=True).indices
    return torch.sort(order[:keep]).values


_HINT = (
    "FastV prunes inside the language model: use llava_scissor.prepare/apply(model, method='fastv', "
    "retention=...), or pass llm_attention=<[frames, tokens_per_frame] attention each visual token "
    "receives at layer K>"
)


def fastv_compress(
    features: torch.Tensor,
    config: ScissorConfig,
    *,
    options: FastVOptions | None = None,
    llm_attention: torch.Tensor | None = None,
) -> CompressionResult:
    """features: [F, N, d], llm_attention: [F, N] -> the K visual tokens with most attention."""
    frames, n, _ = check_features(features, "fastv")
    scores = check_side_input(llm_attention, "llm_attention", "fastv", (frames, n), _HINT)
    k = token_budget(config, frames, n, "fastv")
    device = features.device
    kept = fastv_select(scores.reshape(-1).to(device), k)
    flat = features.reshape(frames * n, -1)
    assignment = torch.full((frames * n,), -1, dtype=torch.long, device=device)
    assignment[kept] = torch.arange(k, device=device)
    return CompressionResult(
        tokens=flat[kept],
        assignment=assignment,
        representatives=kept,
        sizes=torch.ones(k, dtype=torch.long, device=device),
        frames=frames,
        tokens_per_frame=n,
        method="fastv",
    )


register_method(
    Method(
        "fastv",
        fastv_compress,
        side_inputs=("llm_attention",),
        in_model=True,
        options=FastVOptions,
    )
)
