"""Reduce other rows that share a video's token axis exactly as a compression reduced it.

Some models carry, next to the video features, side features with the same rows: Qwen3-VL's
deepstack features (one [F*N, d'] tensor per selected vision layer, added to the language
model's hidden states at the video positions). After compression they must have the K
rows of the output, and each row must be the same weighted mean of the originals as the
output token it goes with, or the side features describe other tokens than the main ones.

Every method of this library builds an output token as one of these linear maps of its
originals (``m`` = F*N original rows, ``a`` = ``assignment``, ``r`` = ``representatives``):

* scissor: S_s = mean of the originals of spatial component s, T_j = mean of the S_s of
  temporal component j, then with the merge step (T_j + sum_{a(o)=j} o) / (1 + count_j),
  without it T_j;
* a selection merged into its kept tokens: (o_{r_j} + sum_{a(o)=j} o) / (1 + count_j);
* a partition averaged: mean_{a(o)=j} o;
* a selection: o_{r_j}.

``reduce_rows`` applies, to each output token, the first map that reproduces that token
from the main features (checked, within the rounding of the token dtype), so side rows
get the weights the main rows got. A token no map reproduces raises ``ScissorError``:
the method made it some other way, and reducing side rows "alike" would be a guess.
"""

from __future__ import annotations

import torch

from .._errors import ScissorError
from .engine.sets import segment_mean, segment_sizes
from .result import CompressionResult

__all__ = ["reduce_rows"]


def _candidates(result: CompressionResult, x: torch.Tensor, acc: torch.dtype) -> list[torch.Tensor]:
    """x: [F*N, d] -> the candidate maps applied to x, each [K, d] in ``acc``."""
    k = result.num_tokens
    a = result.assignment
    valid = a >= 0
    members = x[valid].to(acc)
    target = a[valid]
    sums = torch.zeros(k, x.shape[1], dtype=acc, device=x.device).index_add_(0, target, members)
    counts = segment_sizes(target, k).to(acc)[:, None]
    out = []
    if result.spatial_labels is not None and result.temporal_labels is not None:
        s_count = int(result.temporal_labels.shape[0])
        spatial = segment_mean(x, result.spatial_labels, s_count, acc)  # [S, d]
        temporal = segment_mean(spatial, result.temporal_labels, k, acc)  # [K, d]
        out += [(temporal + sums) / (1.0 + counts), temporal]
    kept = x[result.representatives].to(acc)
    out += [(kept + sums) / (1.0 + counts), sums / counts.clamp(min=1), kept]
    return out


def _tolerance(dtype: torch.dtype) -> tuple[float, float]:
    if dtype in (torch.float16, torch.bfloat16):
        return 2e-2, 1e-2
    return 1e-4, 1e-5


def reduce_rows(result: CompressionResult, rows: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """rows: [F*N, d'] (or [F, N, d']) side rows of the video that ``result`` compressed;
    features: [F, N, d] (or [F*N, d]) the main features it compressed.

    Returns [K, d'] in ``rows``' dtype: output row j is the weighted mean of the original
    rows that output token j is of the original features (module docstring). Raises
    ``ScissorError`` when a token is none of the library's maps of its originals.
    """
    m = result.num_input_tokens
    rows = rows.reshape(m, -1) if rows.dim() == 3 else rows
    flat = features.reshape(m, -1)
    if rows.shape[0] != m or flat.shape[0] != m:
        raise ScissorError(
            f"side rows {tuple(rows.shape)} and features {tuple(features.shape)} must both have the "
            f"{m} original rows of the compressed video"
        )
    acc = torch.float64 if flat.dtype == torch.float64 else torch.float32
    reference = result.tokens.to(acc)
    rtol, atol = _tolerance(result.tokens.dtype)
    # absolute tolerance relative to the tokens' scale, kept on the device (no host read)
    slack = atol * reference.abs().amax().clamp(min=1.0) + rtol * reference.abs()  # [K, d]
    chosen = torch.full((result.num_tokens,), -1, dtype=torch.long, device=flat.device)
    for i, candidate in enumerate(_candidates(result, flat, acc)):
        match = ((candidate - reference).abs() <= slack).all(dim=1)
        chosen = torch.where((chosen < 0) & match, torch.full_like(chosen, i), chosen)
    missing = int((chosen < 0).sum())  # the one host read
    if missing:
        raise ScissorError(
            f"method {result.method!r}: {missing} of {result.num_tokens} output tokens are not a weighted mean of "
            "their originals that side features (deepstack) could share; use a method that selects or averages "
            "tokens (scissor, the selection baselines, pooling)"
        )
    reduced = torch.stack(_candidates(result, rows, acc))  # [C, K, d']
    picked = reduced.gather(0, chosen.view(1, -1, 1).expand(1, -1, reduced.shape[-1]))[0]
    return picked.to(rows.dtype)
