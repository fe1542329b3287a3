"""``pooling``: PLLaVA-style average pooling of each frame's token grid to the budget.

Xu, Zhao, Zhou, Ng, Feng, "PLLaVA: Parameter-free LLaVA Extension from Images to Videos
for Video Dense Captioning", arXiv 2404.16994 (2024). PLLaVA average-pools the visual
feature map of every frame spatially (its default: 24x24 -> 12x12 per frame, frames
kept; pooling along time was found to hurt). Here the pooling target follows the budget:

* K >= F: every frame gets ``K // F`` or ``K // F + 1`` cells (extra cells spread evenly
  over the frames). A frame with ``k`` cells on an H x W grid is cut into ``h`` bands of
  rows (``h`` ~ sqrt(k * H / W), the aspect ratio of the grid) and each band into columns,
  so the cells are near-equal rectangles that partition the frame; with ``k = h * w`` this
  is exactly ``adaptive_avg_pool2d`` to (h, w). Each cell becomes the mean of its tokens.
* K < F: frames are grouped into K contiguous bins and each bin is averaged to one token
  (temporal pooling, needed only at extreme budgets).

A frame of N tokens is a square grid when N is a perfect square, else a 1 x N row.
Representative of a cell: its centre token; output order: frame, then raster order.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import torch

from ..core.config import ScissorConfig
from ..core.result import CompressionResult
from . import Method, register_method
from ._common import check_features, even_split, grid_shape, result_from_assignment, token_budget

__all__ = ["pooling_compress", "pool_cells"]


@lru_cache(maxsize=256)
def _cells(height: int, width: int, count: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Partition an H x W grid into ``count`` near-equal rectangles.

    Returns (label of each of the H*W positions in raster order, centre position of each cell).
    """
    count = max(1, min(count, height * width))
    bands = int(round(math.sqrt(count * height / width)))
    bands = max(bands, math.ceil(count / width), 1)
    bands = min(bands, height, count)
    per_band = even_split(count, bands, width)
    labels = [0] * (height * width)
    centres: list[int] = []
    cell = 0
    for b in range(bands):
        r0, r1 = (b * height) // bands, ((b + 1) * height) // bands
        cols = per_band[b]
        for c in range(cols):
            c0, c1 = (c * width) // cols, ((c + 1) * width) // cols
            for r in range(r0, r1):
                for q in range(c0, c1):
                    labels[r * width + q] = cell
            centres.append(((r0 + r1 - 1) // 2) * width + (c0 + c1 - 1) // 2)
            cell += 1
    return tuple(labels), tuple(centres)


def pool_cells(
    frames: int, tokens_per_frame: int, budget: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The pooling partition of a video: (assignment [F*N] output cell, representatives [K])."""
    n = tokens_per_frame
    if budget >= frames:
        height, width = grid_shape(n)
        assignment = torch.empty(frames * n, dtype=torch.long)
        reps: list[int] = []
        offset = 0
        for f, k_f in enumerate(even_split(budget, frames, n)):
            labels, centres = _cells(height, width, k_f)
            assignment[f * n : (f + 1) * n] = torch.tensor(labels, dtype=torch.long) + offset
            reps.extend(f * n + c for c in centres)
            offset += len(centres)
        return assignment.to(device), torch.tensor(reps, dtype=torch.long, device=device)
    # Temporal pooling: K contiguous bins of frames, one token each.
    frame_bin = (torch.arange(frames) * budget) // frames  # [F] non-decreasing, covers 0..K-1
    assignment = frame_bin.repeat_interleave(n)
    reps = []
    for b in range(budget):
        members = torch.nonzero(frame_bin == b).flatten()
        middle = int(members[(members.numel() - 1) // 2])
        reps.append(middle * n + n // 2)
    return assignment.to(device), torch.tensor(reps, dtype=torch.long, device=device)


def pooling_compress(features: torch.Tensor, config: ScissorConfig, *, options: Any = None) -> CompressionResult:
    """features: [F, N, d] -> K average-pooled tokens (cells of each frame's grid)."""
    frames, n, _ = check_features(features, "pooling")
    k = token_budget(config, frames, n, "pooling")
    assignment, reps = pool_cells(frames, n, k, features.device)
    return result_from_assignment(features, assignment, reps, "pooling")


register_method(
    Method(
        "pooling",
        pooling_compress,
    )
)
