"""The paper's algorithm as written (LLaVA-Scissor, arXiv 2506.21862, Sec. 3), threshold mode.

A plain, slow reading of the method for one video, to check the library against: a
dense similarity matrix, a union-find, loops. ``compress(video, tau=tau)`` gives the same
components in the same order and the same assignment (``tests/test_core_reference.py``,
which also checks both against the authors' outputs in ``tests/data``). No batching,
no strips, no budgets, no sampling: none of that changes what is computed.

The similarities are the ones the library decides by (``engine/exact.py``): cosines of
float32 unit vectors, computed in float64 and rounded once to float32. A zero token
(norm below 1e-12, no direction) points along an axis of its own: cosine 1 with every
other zero token, 0 with the rest (``compress.zero_axis``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["ReferenceResult", "cosine_similarity", "reference_scc", "reference_compress"]


@dataclass(frozen=True)
class ReferenceResult:
    """tokens [K, d] float32; spatial_labels [F*N] into the S spatial tokens;
    temporal_labels [S] into the K tokens; assignment [F*N] into the K tokens."""

    tokens: torch.Tensor
    spatial_labels: torch.Tensor
    temporal_labels: torch.Tensor
    assignment: torch.Tensor


def _with_zero_axis(x: torch.Tensor) -> torch.Tensor:
    """x: [m, d] -> [m, d + 1] float32: one more coordinate, 1 for a zero token (norm < 1e-12)."""
    x = x.float()
    return torch.cat([x, (x.norm(dim=-1, keepdim=True) < 1e-12).float()], dim=-1)


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a: [m, d], b: [n, d] -> [m, n] float32, cos(a_i, b_j) = <a_i, b_j> / (|a_i| |b_j|)."""
    ua = torch.nn.functional.normalize(_with_zero_axis(a), dim=-1).double()
    ub = torch.nn.functional.normalize(_with_zero_axis(b), dim=-1).double()
    return (ua @ ub.T).float()


def _find(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]  # path halving
        i = parent[i]
    return i


def reference_scc(tokens: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Sec. 3.1, SCC of one token set. tokens: [n, d] -> (labels [n] int64, means [c, d] float32)."""
    n = tokens.shape[0]
    # Tokens are vertices; i and j are adjacent when cos(x_i, x_j) > tau (strict).
    # The diagonal is always in A.
    adjacency = cosine_similarity(tokens, tokens) > tau  # A: [n, n]
    adjacency.fill_diagonal_(True)
    # The connected components of A, by union-find (tokens need not be neighbours in the frame).
    parent = list(range(n))
    for i, j in adjacency.nonzero().tolist():
        ri, rj = _find(parent, i), _find(parent, j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    root = [_find(parent, i) for i in range(n)]
    # Components are ordered by the index of their highest-degree member (degree: row count of A,
    # self included; ties to the smaller index).
    degree = adjacency.sum(dim=1).tolist()
    best: dict[int, int] = {}
    for i in range(n):
        if root[i] not in best or degree[i] > degree[best[root[i]]]:
            best[root[i]] = i
    order = sorted(best, key=lambda r: best[r])
    number = {r: c for c, r in enumerate(order)}
    labels = torch.tensor([number[r] for r in root], dtype=torch.int64)
    # Each component becomes one token: the unweighted mean of its members.
    means = torch.stack([tokens[labels == c].float().mean(dim=0) for c in range(len(order))])
    return labels, means


def reference_compress(video: torch.Tensor, tau: float) -> ReferenceResult:
    """Sec. 3.2, two-step compression of one video. video: [F, N, d] -> ``ReferenceResult``."""
    frames, n, d = video.shape
    # 1. Spatial: SCC on each frame; the frames' component tokens, in frame order -> S tokens.
    spatial, spatial_labels, offset = [], [], 0
    for f in range(frames):
        labels, means = reference_scc(video[f], tau)
        spatial.append(means)
        spatial_labels.append(labels + offset)
        offset += means.shape[0]
    s_tokens = torch.cat(spatial)  # [S, d]
    # 2. Temporal: one SCC over the S tokens -> K tokens.
    temporal_labels, k_tokens = reference_scc(s_tokens, tau)  # [S], [K, d]
    # 3. Merge: every original token joins its most similar of the K tokens (argmax; ties to its
    #    own component's token, else to the smaller index); output token j = (temporal token j +
    #    sum of its originals) / (1 + count).
    originals = video.reshape(frames * n, d).float()
    sims = cosine_similarity(originals, k_tokens)  # [F*N, K]
    home = temporal_labels[torch.cat(spatial_labels)]  # [F*N] the token of each original's component
    at_home = sims.gather(1, home[:, None])[:, 0] == sims.max(dim=1).values
    assignment = torch.where(at_home, home, sims.argmax(dim=1))  # [F*N]
    tokens = torch.stack(
        [
            (k_tokens[j] + originals[assignment == j].sum(dim=0)) / (1 + int((assignment == j).sum()))
            for j in range(k_tokens.shape[0])
        ]
    )
    return ReferenceResult(tokens, torch.cat(spatial_labels), temporal_labels, assignment)
