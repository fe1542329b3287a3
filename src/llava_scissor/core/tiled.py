"""Components of a large token set without its full similarity matrix.

For long videos the temporal step's S x S matrix does not fit in memory (S = 50,000
spatial tokens is 10 GB in float32). Here the matrix is produced in column strips of the
upper triangle (``gram_strips``, the same strips the in-memory path is built from, so
both see bitwise-identical similarities) and reduced on the fly:

* degree: row and column counts of each strip's adjacency are accumulated;
* components: the strip's edges are unioned into a parent-pointer forest by min-label
  hooking plus pointer jumping, iterated until every edge of the strip joins equal
  roots; hooking always points to the smaller root, so the forest never has a cycle.

Peak extra memory is one strip (S x tile floats and its boolean adjacency), not S x S.
"""

from __future__ import annotations

import torch

from .graph import Components

__all__ = ["tiled_threshold_components"]


def _find_roots(parent: torch.Tensor) -> torch.Tensor:
    """parent: [n] forest with parent[x] <= x -> [n] root of every vertex (pointer jumping)."""
    while True:
        up = parent[parent]
        if torch.equal(up, parent):
            return parent
        parent = up


def _union_edges(parent: torch.Tensor, adj: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Union the edges of a boolean block into the forest.

    parent: [n]; adj: [r, c] bool edges between vertices ``rows`` [r] and ``cols`` [c].
    Returns the updated, fully compressed parent array.
    """
    big = parent.shape[0]
    while True:
        parent = _find_roots(parent)
        ri, rj = parent[rows], parent[cols]
        min_row = torch.where(adj, rj[None, :], big).amin(dim=1)  # smallest root among neighbours
        min_col = torch.where(adj, ri[:, None], big).amin(dim=0)
        # Converged when no edge leads to a smaller root on either side, i.e. every edge
        # joins equal roots.
        if bool((min_row >= ri).all()) and bool((min_col >= rj).all()):
            return parent
        parent = parent.clone()
        parent.scatter_reduce_(0, ri, min_row.minimum(ri), "amin")
        parent.scatter_reduce_(0, rj, min_col.minimum(rj), "amin")


def tiled_threshold_components(
    x: torch.Tensor,
    tau: float,
    sampled: torch.Tensor | None = None,
    tile: int | None = None,
    sim_dtype: torch.dtype = torch.float32,
) -> tuple[Components, torch.Tensor]:
    """Components of ``cos > tau`` over one token set, strip by strip.

    x: [n, d] raw tokens; sampled: optional [n] bool (edges must touch a sampled vertex,
    the paper's Eq. 2); sim_dtype: dtype of the products. Returns (Components with B = 1,
    degree [1, n] int64, self included). Similarities near tau are replaced by their
    canonical values strip by strip, as in the in-memory path.
    """
    from .exact import band_limits, error_bound, product_units
    from .scc import _TILE, gram_strips, normalize, unit_dtype  # shared with the in-memory path

    tile = tile or _TILE

    n = x.shape[0]
    device = x.device
    xn, residual = product_units(normalize(x, unit_dtype(sim_dtype)), sim_dtype)
    exact = sim_dtype != torch.float64
    if exact:
        level = torch.full((1, 1), tau, dtype=torch.float64, device=device)
        halfwidth = error_bound(x.shape[1], sim_dtype, device, residual).at(level)
        lo, hi = band_limits(level, halfwidth, unit_dtype(sim_dtype))
    parent = torch.arange(n, device=device)
    degree = torch.ones(n, dtype=torch.int64, device=device)
    idx = torch.arange(n, device=device)
    for i, strip in gram_strips(xn[None], tile):
        if exact:
            _resolve_strip_(strip[0], x, i, lo, hi)
        adj = strip[0] > tau  # [i + t, t]: rows 0..i+t, columns i..i+t
        adj[i:].fill_diagonal_(False)
        # Columns count their whole strip; rows above the diagonal block count their
        # part (the block's own rows are its columns, by symmetry).
        degree[i : i + adj.shape[1]] += adj.sum(dim=0)
        degree[:i] += adj[:i].sum(dim=1)
        if sampled is not None:
            adj &= sampled[: adj.shape[0], None] | sampled[None, i : i + adj.shape[1]]
        rows_with = adj.any(dim=1)
        cols_with = adj.any(dim=0)
        if not bool(cols_with.any()):
            continue
        # Only the vertices that have an edge in this strip take part.
        block = adj[rows_with][:, cols_with]
        parent = _union_edges(parent, block, idx[: adj.shape[0]][rows_with], idx[i : i + adj.shape[1]][cols_with])
    root = _find_roots(parent)
    is_root = root == idx
    new_id = is_root.cumsum(0) - 1
    labels = new_id[root]
    count = is_root.sum().reshape(1)
    tau_t = torch.full((1,), tau, dtype=unit_dtype(sim_dtype), device=device)
    return Components(labels[None], count, tau_t, tau_t), degree[None]


def _resolve_strip_(strip: torch.Tensor, x: torch.Tensor, i: int, lo: torch.Tensor, hi: torch.Tensor) -> None:
    """strip: [i + t, t] = similarities of rows 0..i+t with columns i..i+t of x [n, d], in place.

    The entries in [lo, hi] ([1] each, ``exact.band_limits``) get their canonical values,
    as ``exact.resolve_band_`` does for a whole matrix (self-similarities may be among
    them; they are no edges anyway).
    """
    from .exact import canonical_similarity

    r, c = ((strip >= lo) & (strip <= hi)).nonzero().unbind(1)
    if r.shape[0]:
        strip[r, c] = canonical_similarity(x, r, x, c + i).to(strip.dtype)
