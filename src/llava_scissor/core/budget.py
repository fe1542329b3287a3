"""Token budgets and memory limits: the one home of these rules, imported wherever they are used.

K, the output budget (``final_budget``): ``min(max_tokens, n)``, or
``round-half-up(retention * n)`` within [1, n]. Every method, the FLOPs model and
``scc`` take K from here.

S, the spatial step's budget (``budget_sizes``). With ``retention`` / ``max_tokens``
only the final K is given. The spatial step then keeps S = round(sqrt(K * F * N))
tokens (clipped to [max(K, F), F*N]), the geometric mean of the input and output sizes,
so that both steps reduce the count by the same factor. Why: the temporal step can
only merge what the spatial step left apart, and the merge step re-attaches every
original token anyway, so neither step should do all the work; an even split in log
scale is the neutral choice and keeps the temporal similarity matrix (S x S) at sqrt
of the naive size. ``spatial_retention`` / ``spatial_max_tokens`` set S explicitly; an
S below K, or (temporal step off) different from K, is refused, never clamped.

Matrix sizes (``fits_in_memory``, ``check_matrix_memory``): an n x n similarity matrix
takes ``engine.gram.matrix_bytes(n, dtype)``; above ``max_matrix_bytes`` a set
goes strip by strip, and a sampled budget (which needs the whole matrix) is refused.
"""

from __future__ import annotations

import math

from .._errors import ScissorError
from .config import ScissorConfig, similarity_dtype
from .engine.gram import matrix_bytes

__all__ = ["round_half_up", "final_budget", "budget_sizes", "fits_in_memory", "check_matrix_memory"]


def round_half_up(x: float) -> int:
    """The nearest integer, halves rounded up (Python's ``round`` rounds them to even)."""
    return math.floor(x + 0.5)


def final_budget(total: int, retention: float | None, max_tokens: int | None) -> int | None:
    """K of ``total`` tokens: ``min(max_tokens, total)``, or ``round-half-up(retention * total)``
    within [1, total]; None when neither is given (threshold mode)."""
    if max_tokens is not None:
        return min(int(max_tokens), total)
    if retention is not None:
        return max(1, min(total, round_half_up(retention * total)))
    return None


def _spatial_budget(frames: int, total: int, k: int, cfg: ScissorConfig) -> int:
    """S of a video of ``total`` = F * N tokens with final budget K (the spatial step on)."""
    if cfg.spatial_max_tokens is not None:
        s = min(cfg.spatial_max_tokens, total)
    elif cfg.spatial_retention is not None:
        s = max(1, min(total, round_half_up(cfg.spatial_retention * total)))
    elif cfg.temporal:
        s = round_half_up(math.sqrt(k * total))
    else:
        s = k
    return min(max(s, frames), total)  # every frame keeps at least one token


def budget_sizes(frames: int, tokens_per_frame: int, cfg: ScissorConfig) -> tuple[int | None, int | None]:
    """(S, K) of one video in budget mode, (None, None) in threshold mode.

    K: ``final_budget``; S: see the module docstring. Raises ScissorError when the steps
    that are switched on cannot reach K exactly.
    """
    total = frames * tokens_per_frame
    k = final_budget(total, cfg.retention, cfg.max_tokens)
    if k is None:
        return None, None
    if not cfg.spatial and not cfg.temporal:
        if k != total:
            raise ScissorError(
                f"a budget of {k} < {total} tokens needs the spatial or the temporal step; both are switched off"
            )
        return total, k
    if not cfg.spatial:
        return total, k
    s = _spatial_budget(frames, total, k, cfg)
    if not cfg.temporal and s != k:
        raise ScissorError(
            f"with the temporal step off, the budget ({k} tokens) must be at least the number of frames ({frames})"
        )
    if s < k:
        raise ScissorError(f"the spatial budget ({s} tokens) must be at least the final budget ({k} tokens)")
    return s, k


def fits_in_memory(cfg: ScissorConfig, rows: int) -> bool:
    """Whether a rows x rows similarity matrix stays under ``max_matrix_bytes`` (no strips)."""
    return matrix_bytes(rows, similarity_dtype(cfg)) <= cfg.max_matrix_bytes


def check_matrix_memory(sizes: list[tuple[int | None, int | None]], cfg: ScissorConfig) -> None:
    """Refuse a sampled budget whose temporal step needs an S x S matrix above ``cfg.max_matrix_bytes``.

    sizes: (S, K) per video (``budget_sizes``). Threshold mode and exact budgets go strip
    by strip above the cap; a sampled budget's cut needs the whole matrix. Failing here,
    before any work, beats an out-of-memory kill halfway through.
    """
    if not (cfg.budgeted and cfg.temporal and cfg.approximate):
        return
    s = max(s for s, _ in sizes if s is not None)
    if fits_in_memory(cfg, s):
        return
    need = matrix_bytes(s, similarity_dtype(cfg))
    raise ScissorError(
        f"this sampled budget's temporal step compares S = {s:,} spatial tokens, a {need / 2**20:,.0f} MiB "
        f"similarity matrix held in memory, above max_matrix_bytes = {cfg.max_matrix_bytes / 2**20:,.0f} MiB. "
        "Raise max_matrix_bytes if the memory is there, lower S (spatial_retention / spatial_max_tokens), "
        "or use approximate=False or threshold mode (tau), which go strip by strip at any length"
    )
