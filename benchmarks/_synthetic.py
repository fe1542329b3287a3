"""Synthetic video token features with structure like real ones (for benchmarks only).

A 14 x 14 token grid per frame. ``synthetic_video`` builds a static background of a few
large regions and a few objects drifting across frames; every token is its region's
direction plus noise, so SCC finds components the way it does on real features.

``CORPUS`` names generators that each stress one trait of real videos:

- ``uniform``: tight regions, one noise level (most tokens merge).
- ``mixed``: noise drawn per region, from tight to loose (some merge, others stay apart).
- ``shared_mean``: every region shares a mean direction, cosine about 0.3 between region
  centres, as projector features of one video share a direction.
- ``static``: static shots; every frame repeats the previous one with a small drift
  (near-duplicate frames: the temporal step's pairs crowd near tau).
- ``cuts``: four scenes, each with its own regions (the temporal step splits at the cuts).
- ``objects``: many small moving objects (one to four tokens each) over a background.
- ``noise``: independent random tokens, no structure (nothing merges).

Every generator is ``gen(frames, dim, seed) -> [frames, 196, dim]`` float32.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch

GRID = 14


def synthetic_video(
    frames: int = 32,
    grid: int = GRID,
    dim: int = 896,
    regions: int = 12,
    objects: int = 4,
    noise: float | tuple[float, float] = 0.35,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    centers: torch.Tensor | None = None,
    object_size: float = 2.0,
) -> torch.Tensor:
    """-> [frames, grid*grid, dim] features.

    noise: relative noise of every token, or a (low, high) range drawn per region (so
    that some regions are tight and merge, others stay apart, as in real videos).
    centers: [regions + objects, dim] region directions (default: independent Gaussian).
    object_size: half-width of an object's square, in tokens.
    """
    g = torch.Generator().manual_seed(seed)
    if isinstance(noise, tuple):
        level = noise[0] + (noise[1] - noise[0]) * torch.rand(regions + objects, generator=g)
    else:
        level = torch.full((regions + objects,), float(noise))
    if centers is None:
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
            inside = ((ys - pos[o, 0]).abs() < object_size) & ((xs - pos[o, 1]).abs() < object_size)
            label[inside] = regions + o
        base = centers[label.reshape(-1)]
        scale = level[label.reshape(-1), None] * base.norm(dim=-1, keepdim=True) / dim**0.5
        out[f] = base + scale * torch.randn(grid * grid, dim, generator=g)
    return out.to(dtype)


def uniform(frames: int, dim: int, seed: int = 0) -> torch.Tensor:
    """Tight regions, one noise level."""
    return synthetic_video(frames=frames, dim=dim, noise=0.25, seed=seed)


def mixed(frames: int, dim: int, seed: int = 0) -> torch.Tensor:
    """Noise per region from 0.1 (tight) to 0.6 (loose)."""
    return synthetic_video(frames=frames, dim=dim, noise=(0.1, 0.6), seed=seed)


def shared_mean(frames: int, dim: int, seed: int = 0, cosine: float = 0.3) -> torch.Tensor:
    """Region centres m * sqrt(c) + r_i * sqrt(1 - c): cosine c between any two centres."""
    g = torch.Generator().manual_seed(seed + 1000)
    regions, objects = 12, 4
    mean = torch.randn(dim, generator=g)
    own = torch.randn(regions + objects, dim, generator=g)
    centers = mean * cosine**0.5 + own * (1 - cosine) ** 0.5
    return synthetic_video(frames=frames, dim=dim, noise=(0.2, 0.4), seed=seed, centers=centers)


def static(frames: int, dim: int, seed: int = 0, shot: int = 8, drift: float = 0.03) -> torch.Tensor:
    """Shots of ``shot`` frames; each frame is the previous one plus ``drift`` relative noise."""
    x = synthetic_video(frames=frames, dim=dim, noise=(0.2, 0.4), seed=seed)
    g = torch.Generator().manual_seed(seed + 2000)
    scale = drift * x[0].norm(dim=-1, keepdim=True) / dim**0.5
    for f in range(frames):
        if f % shot:
            x[f] = x[f - 1] + scale * torch.randn(x.shape[1], dim, generator=g)
    return x


def cuts(frames: int, dim: int, seed: int = 0, scenes: int = 4) -> torch.Tensor:
    """``scenes`` runs of frames, each a different video (its own regions and objects)."""
    bounds = [frames * i // scenes for i in range(scenes + 1)]
    parts = [
        synthetic_video(frames=b - a, dim=dim, noise=(0.2, 0.4), seed=seed + 10 * i)
        for i, (a, b) in enumerate(itertools.pairwise(bounds))
        if b > a
    ]
    return torch.cat(parts)


def objects(frames: int, dim: int, seed: int = 0) -> torch.Tensor:
    """40 small moving objects (squares of about 1-4 tokens) over 6 background regions."""
    return synthetic_video(frames=frames, dim=dim, regions=6, objects=40, noise=(0.2, 0.4), seed=seed, object_size=1.0)


def noise(frames: int, dim: int, seed: int = 0) -> torch.Tensor:
    """Independent Gaussian tokens."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(frames, GRID * GRID, dim, generator=g)


Generator = Callable[..., torch.Tensor]

CORPUS: dict[str, Generator] = {
    "uniform": uniform,
    "mixed": mixed,
    "shared_mean": shared_mean,
    "static": static,
    "cuts": cuts,
    "objects": objects,
    "noise": noise,
}
