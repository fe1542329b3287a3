"""Helpers shared by the baselines: input checks, the budget, per-frame allocation, merging.

Everything here is pure torch; tensors stay on the device of the input.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .._errors import ScissorError
from ..core.budget import final_budget
from ..core.compress import merge_into as core_merge_into
from ..core.config import ScissorConfig
from ..core.result import CompressionResult

__all__ = [
    "check_features",
    "check_side_input",
    "token_budget",
    "allocate",
    "even_split",
    "merge_into",
    "assign_to_nearest",
    "result_from_assignment",
    "result_from_kept",
    "evenly_spaced",
    "grid_shape",
]

# Similarities are computed in chunks of this many rows so that [F*N, K] never blows up.
_CHUNK = 8192


def check_features(features: Any, method: str) -> tuple[int, int, int]:
    """Validate ``features: [F, N, d]`` (floating point, finite size); return (F, N, d)."""
    if not isinstance(features, torch.Tensor):
        raise ScissorError(
            f"{method}: features must be a torch.Tensor [frames, tokens_per_frame, dim], got {type(features).__name__}"
        )
    if features.dim() != 3:
        raise ScissorError(
            f"{method}: features must be [frames, tokens_per_frame, dim], got shape {tuple(features.shape)}"
        )
    if not features.is_floating_point():
        raise ScissorError(f"{method}: features must be a floating-point tensor, got {features.dtype}")
    frames, tokens, dim = (int(s) for s in features.shape)
    if frames < 1 or tokens < 1 or dim < 1:
        raise ScissorError(f"{method}: features must not be empty, got shape {tuple(features.shape)}")
    return frames, tokens, dim


def check_side_input(value: Any, name: str, method: str, shape: tuple[int, ...], hint: str) -> torch.Tensor:
    """Validate a required side input (e.g. ``vision_attention: [F, N]``)."""
    if value is None:
        raise ScissorError(f"method {method!r} needs {name} (a tensor of shape {list(shape)}); {hint}")
    if not isinstance(value, torch.Tensor):
        raise ScissorError(
            f"{method}: {name} must be a torch.Tensor of shape {list(shape)}, got {type(value).__name__}"
        )
    if tuple(value.shape) != tuple(shape):
        raise ScissorError(f"{method}: {name} must have shape {list(shape)}, got {list(value.shape)}")
    if not value.is_floating_point():
        value = value.float()
    if not bool(torch.isfinite(value).all()):
        raise ScissorError(f"{method}: {name} contains NaN or infinite values")
    return value


def token_budget(config: ScissorConfig, frames: int, tokens_per_frame: int, method: str) -> int:
    """K of a budgeted config: ``round-half-up(retention * F * N)`` (>= 1) or ``min(max_tokens, F * N)``.

    Baselines have no threshold mode, so a config without a budget raises.
    """
    k = final_budget(frames * tokens_per_frame, config.retention, config.max_tokens)
    if k is not None:
        return k
    raise ScissorError(
        f"method {method!r} needs a token budget: pass retention=<fraction in (0, 1]> "
        "or max_tokens=<int> (only 'scissor' has a threshold mode)"
    )


def allocate(weights: torch.Tensor, total: int, cap: int | torch.Tensor) -> list[int]:
    """Split ``total`` into integer shares proportional to ``weights: [F]``, each <= ``cap``.

    Largest-remainder rounding (ties to the smaller index); shares above the cap are
    clipped and the excess is given to the others in proportion. Sum is exactly
    ``min(total, sum(cap))``. Runs on CPU in float64 (a handful of numbers).
    """
    w = weights.detach().to("cpu", torch.float64).clamp(min=0)
    count = w.numel()
    caps = torch.as_tensor(cap, dtype=torch.float64).expand(count).clone()
    total = int(min(total, int(caps.sum().item())))
    if w.sum() <= 0:
        w = torch.ones(count, dtype=torch.float64)
    shares = torch.zeros(count, dtype=torch.float64)
    free = torch.ones(count, dtype=torch.bool)
    remaining = float(total)
    # Water-filling: give proportional shares, fix the ones that hit their cap, repeat.
    for _ in range(count + 1):
        wf = torch.where(free, w, torch.zeros_like(w))
        if wf.sum() <= 0:
            wf = free.to(torch.float64)
        ideal = remaining * wf / wf.sum()
        over = free & (ideal >= caps)
        if not bool(over.any()):
            shares = torch.where(free, ideal, shares)
            break
        shares = torch.where(over, caps, shares)
        remaining -= float(caps[over].sum().item())
        free &= ~over
    base = torch.floor(shares + 1e-9)
    base = torch.minimum(base, caps)
    left = total - int(base.sum().item())
    if left > 0:
        frac = shares - base
        frac = torch.where(base < caps, frac, torch.full_like(frac, -1.0))
        # Stable descending sort: ties go to the smaller index.
        order = torch.sort(-frac, stable=True).indices
        for i in order.tolist():
            if left == 0:
                break
            if base[i] < caps[i]:
                base[i] += 1
                left -= 1
    return [int(v) for v in base.tolist()]


def even_split(total: int, parts: int, cap: int) -> list[int]:
    """``total`` split over ``parts`` as evenly as possible (each <= cap), extra units spread out."""
    if parts <= 0:
        return []
    total = min(total, parts * cap)
    q, r = divmod(total, parts)
    shares = [q] * parts
    # Spread the r extra units evenly (not all at the start).
    for j in range(r):
        shares[(j * parts) // r] += 1
    return shares


def evenly_spaced(count: int, size: int, device: torch.device | None = None) -> torch.Tensor:
    """``count`` distinct indices in [0, size), evenly spaced (bin centres), ascending."""
    if count <= 0:
        return torch.empty(0, dtype=torch.long, device=device)
    count = min(count, size)
    idx = (torch.arange(count, dtype=torch.float64) * 2 + 1) * size / (2 * count)
    return torch.floor(idx).to(torch.long).clamp(max=size - 1).to(device)


def grid_shape(tokens_per_frame: int) -> tuple[int, int]:
    """(H, W) of a frame's token grid: square when N is a perfect square, else 1 x N."""
    side = math.isqrt(tokens_per_frame)
    if side * side == tokens_per_frame:
        return side, side
    return 1, tokens_per_frame


def _normalized(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.float(), dim=-1, eps=1e-12)


def assign_to_nearest(tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Index of the most similar target (cosine) for each token; ties go to the smaller index.

    tokens: [M, d], targets: [K, d] -> [M] int64.
    """
    t = _normalized(targets)
    out = []
    for start in range(0, tokens.shape[0], _CHUNK):
        sim = _normalized(tokens[start : start + _CHUNK]) @ t.T  # [m, K]
        out.append(torch.argmax(sim, dim=1))  # first maximum = smaller index
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long, device=tokens.device)


def merge_into(
    flat: torch.Tensor, kept: torch.Tensor, sim_dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The paper's merge step (the core's ``merge_into``) with kept original tokens as targets.

    flat: [M, d] all original tokens (frame-major), kept: [K] int64 indices into ``flat``.
    Every original token goes to its most similar kept token (cosine argmax, ties to the
    smaller output index); output token j = (kept_j + sum of its assigned) / (1 + count_j).
    A kept token is most similar to itself, so it counts once as the target and once as
    an assigned original, exactly as the formula reads.

    Returns (tokens [K, d] in ``flat``'s dtype, assignment [M], sizes [K] = count_j).
    """
    merged, assignment = core_merge_into([flat], [flat[kept]], torch.float32, sim_dtype)
    sizes = torch.bincount(assignment[0], minlength=kept.numel())
    return merged[0].to(flat.dtype), assignment[0], sizes


def result_from_kept(
    features: torch.Tensor,
    kept: torch.Tensor,
    method: str,
    merge: bool = True,
    sim_dtype: torch.dtype = torch.float32,
) -> CompressionResult:
    """Result for a method that selects ``kept: [K]`` original (frame-major) tokens.

    With ``merge`` the paper's merge step follows (every token is assigned); without it
    the kept tokens go through unchanged and all others are discarded (``-1``).
    Output order: kept indices ascending.
    """
    frames, n, _ = features.shape
    flat = features.reshape(frames * n, -1)
    kept = torch.sort(kept.to(device=flat.device, dtype=torch.long)).values
    if merge:
        tokens, assignment, sizes = merge_into(flat, kept, sim_dtype)
    else:
        tokens = flat[kept]
        assignment = torch.full((frames * n,), -1, dtype=torch.long, device=flat.device)
        assignment[kept] = torch.arange(kept.numel(), device=flat.device)
        sizes = torch.ones(kept.numel(), dtype=torch.long, device=flat.device)
    return CompressionResult(
        tokens=tokens,
        assignment=assignment,
        representatives=kept,
        sizes=sizes,
        frames=int(frames),
        tokens_per_frame=int(n),
        method=method,
    )


def result_from_assignment(
    features: torch.Tensor,
    assignment: torch.Tensor,
    representatives: torch.Tensor,
    method: str,
    tokens: torch.Tensor | None = None,
) -> CompressionResult:
    """Result from a partition: ``assignment: [F*N]`` output index (or -1), ``representatives: [K]``.

    Output tokens are the unweighted means of their members unless ``tokens: [K, d]`` is
    given. The output is reordered so that representatives ascend (the LLM order), and
    ``assignment`` is relabelled accordingly.
    """
    frames, n, _ = features.shape
    flat = features.reshape(frames * n, -1)
    k = representatives.numel()
    valid = assignment >= 0
    sizes = torch.bincount(assignment[valid], minlength=k)
    if tokens is None:
        acc = torch.zeros(k, flat.shape[1], dtype=torch.float32, device=flat.device)
        acc.index_add_(0, assignment[valid], flat[valid].to(torch.float32))
        tokens = (acc / sizes.clamp(min=1).unsqueeze(1).to(torch.float32)).to(flat.dtype)
    order = torch.sort(representatives, stable=True).indices
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(k, device=order.device)
    new_assignment = torch.where(valid, inverse[assignment.clamp(min=0)], assignment)
    return CompressionResult(
        tokens=tokens[order],
        assignment=new_assignment,
        representatives=representatives[order],
        sizes=sizes[order],
        frames=int(frames),
        tokens_per_frame=int(n),
        method=method,
    )
