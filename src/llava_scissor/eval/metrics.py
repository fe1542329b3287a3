"""Fidelity metrics of a compression against ground-truth regions (no model needed).

* ``reconstruction``: mean cosine between each original token and the output token it
  maps to (``assignment``); a token that the method discarded (``-1``) is compared with
  its most similar output token, the best the LLM could still draw on.
* ``region_coverage``: share of the video's regions that some output token represents.
  Output token j represents region ``argmax_r cos(token_j, prototype_r)`` when that cosine
  is at least ``threshold`` (default 0.8; a single token's cosine with its own prototype is
  ~0.9 in the synthetic videos, with other regions' ~0.2). A token that blends two regions
  represents neither, because its cosine with each drops.
* ``event_coverage``: the same, over the short-lived regions (events) only.

With real features there are no prototypes: ``pseudo_regions`` clusters the tokens
(seeded k-means on cosine) and treats clusters visible in at most ``event_frames`` frames
as events.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._errors import ScissorError
from ..core.result import CompressionResult

__all__ = ["reconstruction", "represented_regions", "coverage", "fidelity", "pseudo_regions", "Regions"]


@dataclass(frozen=True)
class Regions:
    """Ground truth to measure coverage against.

    Attributes:
        prototypes: [R, d] one vector per region.
        labels: [F, N] int64 region of each token.
        events: indices of the short-lived regions.
    """

    prototypes: torch.Tensor
    labels: torch.Tensor
    events: tuple[int, ...]

    def present(self) -> list[int]:
        return sorted(set(torch.unique(self.labels).tolist()))


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.float(), dim=-1)


def reconstruction(result: CompressionResult, features: torch.Tensor) -> float:
    """features: [F, N, d] -> mean cosine of each original token with the output token it maps to."""
    flat = _unit(features.reshape(-1, features.shape[-1]))
    out = _unit(result.tokens.to(flat.device))
    if result.assignment.numel() != flat.shape[0]:
        raise ScissorError(
            f"result has {result.assignment.numel()} assignments for {flat.shape[0]} tokens; "
            "pass the features the result was computed from"
        )
    a = result.assignment.to(flat.device)
    target = a.clone()
    lost = a < 0
    if bool(lost.any()):
        target[lost] = (flat[lost] @ out.T).argmax(dim=1)
    return float((flat * out[target]).sum(-1).mean())


def represented_regions(result: CompressionResult, prototypes: torch.Tensor, threshold: float = 0.8) -> set[int]:
    """Regions (indices into ``prototypes: [R, d]``) that some output token represents."""
    sim = _unit(result.tokens) @ _unit(prototypes.to(result.tokens.device)).T  # [K, R]
    best, region = sim.max(dim=1)
    return set(region[best >= threshold].tolist())


def coverage(represented: set[int], regions: list[int]) -> float:
    """Share of ``regions`` in ``represented`` (1.0 for an empty list)."""
    if not regions:
        return 1.0
    return sum(1 for r in regions if r in represented) / len(regions)


def fidelity(
    result: CompressionResult, features: torch.Tensor, regions: Regions, threshold: float = 0.8
) -> dict[str, float]:
    """{"region_coverage", "event_coverage", "reconstruction"} of one compressed video."""
    present = regions.present()
    represented = represented_regions(result, regions.prototypes, threshold)
    events = [r for r in regions.events if r in present]
    return {
        "region_coverage": coverage(represented, present),
        "event_coverage": coverage(represented, events),
        "reconstruction": reconstruction(result, features),
    }


def pseudo_regions(
    features: torch.Tensor, clusters: int = 64, event_frames: int = 4, iterations: int = 25, seed: int = 0
) -> Regions:
    """Regions for real features: spherical k-means (seeded) over all tokens.

    features: [F, N, d]. Clusters seen in at most ``event_frames`` frames count as events.
    """
    frames, n, dim = features.shape
    x = _unit(features.reshape(frames * n, dim))
    clusters = max(1, min(clusters, x.shape[0]))
    g = torch.Generator().manual_seed(seed)
    centres = x[torch.randperm(x.shape[0], generator=g)[:clusters].to(x.device)].clone()
    labels = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    for _ in range(iterations):
        labels = (x @ centres.T).argmax(dim=1)
        sums = torch.zeros_like(centres).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=clusters)
        keep = counts > 0
        centres[keep] = _unit(sums[keep])
    labels = labels.view(frames, n)
    events = []
    for c in torch.unique(labels).tolist():
        seen = int((labels == c).any(dim=1).sum())
        if seen <= event_frames:
            events.append(c)
    return Regions(prototypes=centres, labels=labels, events=tuple(events))
