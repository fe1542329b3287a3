"""Synthetic video token features with structure like real ones (for benchmarks only).

A 14x14 token grid per frame; a static background of a few large regions, and a few
objects that drift across frames. Each token = its region's direction + noise, so SCC
finds components the way it does on real features.
"""

from __future__ import annotations

import torch


def synthetic_video(
    frames: int = 32, grid: int = 14, dim: int = 896, regions: int = 12, objects: int = 4,
    noise: float | tuple[float, float] = 0.35,
    seed: int = 0, dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """-> [frames, grid*grid, dim] features.

    noise: relative noise of every token, or a (low, high) range drawn per region (so
    that some regions are tight and merge, others stay apart, as in real videos).
    """
    g = torch.Generator().manual_seed(seed)
    if isinstance(noise, tuple):
        level = noise[0] + (noise[1] - noise[0]) * torch.rand(regions + objects, generator=g)
    else:
        level = torch.full((regions + objects,), float(noise))
    centers = torch.randn(regions + objects, dim, generator=g)
    ys, xs = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    # Background: Voronoi cells of fixed seeds.
    seeds = torch.rand(regions, 2, generator=g) * grid
    d2 = (ys[..., None] - seeds[:, 0]) ** 2 + (xs[..., None] - seeds[:, 1]) ** 2
    background = d2.argmin(-1)  # [grid, grid]
    start = torch.rand(objects, 2, generator=g) * grid
    velocity = (torch.rand(objects, 2, generator=g) - 0.5) * 0.8
    out = torch.empty(frames, grid * grid, dim)
    for f in range(frames):
        label = background.clone()
        pos = (start + velocity * f) % grid
        for o in range(objects):
            inside = ((ys - pos[o, 0]).abs() < 2) & ((xs - pos[o, 1]).abs() < 2)
            label[inside] = regions + o
        base = centers[label.reshape(-1)]
        scale = level[label.reshape(-1), None] * base.norm(dim=-1, keepdim=True) / dim**0.5
        out[f] = base + scale * torch.randn(grid * grid, dim, generator=g)
    return out.to(dtype)
