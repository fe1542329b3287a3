"""A straightforward implementation of the paper's algorithm, as a timed reference.

Written from the description in arXiv 2506.21862 (Sec. 3.2), the obvious way: for every
token set the full cosine matrix, its adjacency ``cos > tau`` as a list of edges, and
union-find over the edges (vectorized: every edge hooks the larger root under the
smaller, then pointers jump to their roots, until nothing changes). Components are
ordered by their highest-degree member, tokens are component means; the merge step takes
the argmax over one dense (K x F N) similarity matrix. No budgets, no strips, no exact
decisions near tau: this is what the library is measured against, not a second library.
"""

from __future__ import annotations

import torch


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def union_find(n: int, edges: torch.Tensor) -> torch.Tensor:
    """edges: [2, e] int64 -> [n] root (the smallest index) of every vertex's component."""
    parent = torch.arange(n)
    i, j = edges
    while True:
        ri, rj = parent[i], parent[j]
        lo, hi = torch.minimum(ri, rj), torch.maximum(ri, rj)
        # Hook: every root that an edge reaches from a smaller root moves under the smallest.
        hooked = parent.scatter_reduce(0, hi, lo, reduce="amin")
        while True:  # pointer jumping to the roots
            jumped = hooked[hooked]
            if torch.equal(jumped, hooked):
                break
            hooked = jumped
        if torch.equal(hooked, parent):
            return parent
        parent = hooked


def scc_dense(x: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """x: [n, d] -> (labels [n] in the output order, tokens [c, d] component means)."""
    n = x.shape[0]
    u = _unit(x.float())
    adjacency = (u @ u.T) > tau  # [n, n]
    adjacency.fill_diagonal_(True)
    degree = adjacency.sum(1)
    edges = torch.triu(adjacency, diagonal=1).nonzero().T  # [2, e]
    root = union_find(n, edges)
    roots, labels = torch.unique(root, return_inverse=True)
    c = roots.shape[0]
    # Order: by the index of each component's highest-degree member (ties: smaller index).
    key = degree * n + (n - 1 - torch.arange(n))  # larger degree, then smaller index, wins
    best = torch.full((c,), -1, dtype=key.dtype).scatter_reduce(0, labels, key, reduce="amax")
    leader = (n - 1) - best % n
    order = torch.argsort(leader)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(c)
    labels = rank[labels]
    sums = torch.zeros(c, x.shape[1]).index_add_(0, labels, x.float())
    tokens = sums / torch.bincount(labels, minlength=c)[:, None]
    return labels, tokens


def compress_dense(video: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor, int]:
    """video: [F, N, d] -> (tokens [K, d], assignment [F N], S): spatial, temporal, merge."""
    F, N, d = video.shape
    spatial = [scc_dense(frame, tau)[1] for frame in video]
    s_tokens = torch.cat(spatial)  # [S, d]
    _, t_tokens = scc_dense(s_tokens, tau)  # [K, d]
    originals = video.reshape(F * N, d).float()
    sim = _unit(t_tokens) @ _unit(originals).T  # [K, F N]
    assignment = sim.argmax(0)
    k = t_tokens.shape[0]
    sums = torch.zeros(k, d).index_add_(0, assignment, originals)
    counts = torch.bincount(assignment, minlength=k)
    return (t_tokens + sums) / (1 + counts)[:, None], assignment, s_tokens.shape[0]
