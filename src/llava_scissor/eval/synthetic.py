"""Synthetic videos with known semantic regions, for measuring compression without a model.

A video is a grid of ``height x width`` tokens per frame over ``frames`` frames. Every
token belongs to one ground-truth region:

* background areas: a static Voronoi partition of the grid (large, always visible);
* moving objects: rectangles that move at a constant velocity and bounce off the borders,
  occluding the background (present in every frame);
* events: small objects (1x1 or 2x2 tokens) that appear for only a few frames.

Each region has a unit prototype vector (prototypes share a common component, so
different regions are mildly similar, as in real feature spaces). A token is its region's
prototype plus a static texture (fixed per background position, or per position inside
an object, so it moves with the object), plus per-frame noise and a small per-frame
global drift, rescaled to a norm in [0.8, 1.2]. Typical cosine of a token with its own
prototype: ~0.9; with another region's prototype: ~0.2.

The generator also produces stand-ins for the attention some methods need: a saliency
score (objects and events draw more attention than background, plus noise) as
``vision_attention`` and a differently-noised one as ``llm_attention``. They are
synthetic: real attention comes from the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .._errors import ScissorError

__all__ = ["SyntheticVideo", "make_video", "REGION_KINDS"]

REGION_KINDS = ("background", "object", "event")


@dataclass(frozen=True)
class SyntheticVideo:
    """A synthetic video and its ground truth.

    Attributes:
        features: [F, N, d] float32 token features, frame-major, N = height * width.
        labels: [F, N] int64 region of each token (index into ``prototypes``).
        prototypes: [R, d] unit vector of each region.
        kinds: R region kinds ("background", "object", "event").
        vision_attention: [F, N] synthetic attention each token receives in a vision tower.
        llm_attention: [F, N] synthetic attention each token receives in the LLM (FastV).
        height, width: the token grid of a frame.
        seed: the generator's seed.
    """

    features: torch.Tensor
    labels: torch.Tensor
    prototypes: torch.Tensor
    kinds: tuple[str, ...]
    vision_attention: torch.Tensor
    llm_attention: torch.Tensor
    height: int
    width: int
    seed: int
    frames_present: tuple[int, ...] = field(default=())

    @property
    def num_regions(self) -> int:
        return int(self.prototypes.shape[0])

    def regions_of(self, kind: str) -> list[int]:
        """Indices of the regions of one kind that appear in the video."""
        present = set(torch.unique(self.labels).tolist())
        return [r for r, k in enumerate(self.kinds) if k == kind and r in present]

    def side_inputs(self) -> dict[str, torch.Tensor]:
        """Side inputs for the methods that need them (synthetic attention)."""
        return {"vision_attention": self.vision_attention, "llm_attention": self.llm_attention}


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=-1)


def make_video(
    frames: int = 32,
    height: int = 14,
    width: int = 14,
    dim: int = 128,
    backgrounds: int = 6,
    objects: int = 3,
    events: int = 4,
    event_frames: tuple[int, int] = (2, 4),
    texture: float = 0.35,
    noise: float = 0.15,
    drift: float = 0.1,
    seed: int = 0,
) -> SyntheticVideo:
    """A synthetic video with ``backgrounds`` areas, ``objects`` moving objects and
    ``events`` short-lived small objects (each visible for ``event_frames`` frames).

    Deterministic for a given ``seed``; CPU float32.
    """
    _check_sizes(frames, height, width, dim, backgrounds, objects, events, event_frames)
    g = torch.Generator().manual_seed(seed)
    n = height * width
    regions = backgrounds + objects + events
    kinds = ("background",) * backgrounds + ("object",) * objects + ("event",) * events
    common = torch.randn(dim, generator=g)
    prototypes = _unit(_unit(torch.randn(regions, dim, generator=g)) + 0.45 * _unit(common))  # [R, d]
    rows = torch.arange(height).repeat_interleave(width).float()  # [N]
    cols = torch.arange(width).repeat(height).float()

    # Background: static Voronoi cells around random seeds.
    seeds = torch.rand(backgrounds, 2, generator=g) * torch.tensor([height, width])
    dist = (rows[:, None] - seeds[:, 0]) ** 2 + (cols[:, None] - seeds[:, 1]) ** 2
    background = dist.argmin(dim=1)  # [N]
    labels = background.repeat(frames, 1)  # [F, N]
    bg_texture = torch.randn(n, dim, generator=g) / math.sqrt(dim)
    texture_of = bg_texture.repeat(frames, 1, 1)  # [F, N, d], static texture per position

    _paint_moving_objects(labels, texture_of, objects, backgrounds, height, width, dim, g)
    present = _paint_events(labels, texture_of, events, backgrounds + objects, event_frames, height, width, dim, g)

    frame_drift = torch.randn(frames, 1, dim, generator=g) / math.sqrt(dim)
    frame_noise = torch.randn(frames, n, dim, generator=g) / math.sqrt(dim)
    x = prototypes[labels] + texture * texture_of + noise * frame_noise + drift * frame_drift
    norms = 0.8 + 0.4 * torch.rand(frames, n, 1, generator=g)
    features = _unit(x) * norms

    salient = torch.tensor([0.0 if k == "background" else 1.0 for k in kinds])[labels]  # [F, N]
    vision_logits = 1.5 * salient + 0.5 * torch.randn(frames, n, generator=g)
    vision_attention = torch.softmax(vision_logits.reshape(frames, n), dim=1)
    llm_logits = 1.0 * salient + 0.8 * torch.randn(frames, n, generator=g)
    llm_attention = torch.softmax(llm_logits.reshape(-1), dim=0).reshape(frames, n)
    return SyntheticVideo(
        features=features,
        labels=labels,
        prototypes=prototypes,
        kinds=kinds,
        vision_attention=vision_attention,
        llm_attention=llm_attention,
        height=height,
        width=width,
        seed=seed,
        frames_present=tuple(present),
    )


def _check_sizes(
    frames: int,
    height: int,
    width: int,
    dim: int,
    backgrounds: int,
    objects: int,
    events: int,
    event_frames: tuple[int, int],
) -> None:
    for name, value in (("frames", frames), ("height", height), ("width", width), ("dim", dim)):
        if value < 1:
            raise ScissorError(f"{name} must be >= 1, got {value}")
    if backgrounds < 1:
        raise ScissorError(f"backgrounds must be >= 1, got {backgrounds}")
    if objects < 0 or events < 0:
        raise ScissorError(f"objects and events must be >= 0, got {objects} and {events}")
    lo, hi = event_frames
    if not 1 <= lo <= hi:
        raise ScissorError(f"event_frames must be (min, max) with 1 <= min <= max, got {event_frames}")


def _paint_moving_objects(
    labels: torch.Tensor,
    texture_of: torch.Tensor,
    objects: int,
    first_region: int,
    height: int,
    width: int,
    dim: int,
    g: torch.Generator,
) -> None:
    """Moving objects: rectangles with a constant velocity, bouncing off the borders.

    labels: [F, N] region of each token, texture_of: [F, N, d], both painted in place.
    """
    frames = labels.shape[0]
    for o in range(objects):
        region = first_region + o
        oh = int(torch.randint(2, max(3, min(5, height)) + 1, (1,), generator=g)) if height > 2 else 1
        ow = int(torch.randint(2, max(3, min(5, width)) + 1, (1,), generator=g)) if width > 2 else 1
        oh, ow = min(oh, height), min(ow, width)
        obj_texture = torch.randn(oh, ow, dim, generator=g) / math.sqrt(dim)
        pos = torch.rand(2, generator=g) * torch.tensor([height - oh, width - ow]).clamp(min=0).float()
        vel = (torch.rand(2, generator=g) - 0.5) * 1.6  # cells per frame
        for f in range(frames):
            r0, c0 = int(round(float(pos[0]))), int(round(float(pos[1])))
            for dr in range(oh):
                for dc in range(ow):
                    idx = (r0 + dr) * width + (c0 + dc)
                    labels[f, idx] = region
                    texture_of[f, idx] = obj_texture[dr, dc]
            pos = pos + vel
            for axis, limit in ((0, height - oh), (1, width - ow)):
                if pos[axis] < 0 or pos[axis] > limit:
                    vel[axis] = -vel[axis]
                    pos[axis] = pos[axis].clamp(0, max(limit, 0))


def _paint_events(
    labels: torch.Tensor,
    texture_of: torch.Tensor,
    events: int,
    first_region: int,
    event_frames: tuple[int, int],
    height: int,
    width: int,
    dim: int,
    g: torch.Generator,
) -> list[int]:
    """Events: small objects visible for a few frames, painted in place (as above); returns each one's length."""
    frames = labels.shape[0]
    lo, hi = event_frames
    present = []
    for e in range(events):
        region = first_region + e
        size = 1 if bool(torch.rand(1, generator=g) < 0.5) or min(height, width) < 2 else 2
        length = int(torch.randint(lo, hi + 1, (1,), generator=g))
        length = min(length, frames)
        start = int(torch.randint(0, frames - length + 1, (1,), generator=g))
        r0 = int(torch.randint(0, height - size + 1, (1,), generator=g))
        c0 = int(torch.randint(0, width - size + 1, (1,), generator=g))
        ev_texture = torch.randn(size, size, dim, generator=g) / math.sqrt(dim)
        for f in range(start, start + length):
            for dr in range(size):
                for dc in range(size):
                    idx = (r0 + dr) * width + (c0 + dc)
                    labels[f, idx] = region
                    texture_of[f, idx] = ev_texture[dr, dc]
        present.append(length)
    return present
