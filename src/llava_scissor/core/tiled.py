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

__all__ = ["tiled_threshold_components", "tiled_budget_components"]


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


def _strip_best_(
    strip: torch.Tensor, i: int, labels: torch.Tensor, best_w: torch.Tensor, best_u: torch.Tensor
) -> None:
    """Fold one strip into every vertex's strongest edge to another component (in place).

    strip: [i + t, t] similarities of rows 0..i+t with columns i..i+t; labels: [n];
    best_w, best_u: [n] weight and other end of the best edge so far. Ties go to the
    smaller other end, so the choice is the same whatever the strip order.
    """
    R, t = strip.shape
    s = strip.masked_fill(labels[:R, None] == labels[None, i : i + t], float("-inf"))  # also the diagonal
    row_w, row_u = s.max(dim=1)  # a row's other end is a column: offset by i
    col_w, col_u = s.max(dim=0)  # a column's other end is a row: rows start at 0
    for w, u, lo, hi in ((row_w, row_u + i, 0, R), (col_w, col_u, i, i + t)):
        bw, bu = best_w[lo:hi], best_u[lo:hi]
        better = (w > bw) | ((w == bw) & (u < bu))
        best_w[lo:hi] = torch.where(better, w, bw)
        best_u[lo:hi] = torch.where(better, u, bu)


def _spanning_weights(xn: torch.Tensor, tile: int) -> torch.Tensor:
    """xn: [n, d] unit vectors -> [n - c] the weights of a maximum spanning forest, strip by strip.

    Borůvka's algorithm without a matrix: every round one pass over the strips finds
    each vertex's strongest edge to another component, each component takes the
    strongest of its members' (edges ordered by weight, then by their smaller and
    larger end: a strict order, so the hooks form a forest apart from mutual pairs),
    and the hooks are resolved by pointer jumping. ceil(log2 n) rounds at most.
    """
    from .scc import gram_strips, unit_dtype

    n, device, wide = xn.shape[0], xn.device, unit_dtype(xn.dtype)
    labels = torch.arange(n, device=device)
    v = torch.arange(n, device=device)
    weights = []
    while True:
        best_w = torch.full((n,), float("-inf"), dtype=wide, device=device)
        best_u = torch.full((n,), n, dtype=torch.int64, device=device)
        for i, strip in gram_strips(xn[None], tile):
            _strip_best_(strip[0], i, labels, best_w, best_u)
        C = int(labels.max()) + 1
        comp_w = torch.full((C,), float("-inf"), dtype=wide, device=device).scatter_reduce_(0, labels, best_w, "amax")
        if not bool((comp_w > float("-inf")).any()):
            return torch.cat(weights) if weights else best_w.new_zeros(0)
        # Each component's edge: the largest weight, then the smallest smaller end, then
        # the smallest larger end (one edge leaves a component through one member).
        a, b = torch.minimum(v, best_u), torch.maximum(v, best_u)
        pick = (best_w == comp_w[labels]) & (best_w > float("-inf"))
        for key in (a, b):
            least = torch.full((C,), n, dtype=torch.int64, device=device)
            least.scatter_reduce_(0, labels[pick], key[pick], "amin")
            pick &= key == least[labels]
        target = torch.arange(C, device=device)
        target[labels[pick]] = labels[best_u[pick]]
        comps = torch.arange(C, device=device)
        # Two components that chose each other chose the same edge: the smaller one stays the root.
        mutual = (target[target] == comps) & (comps < target)
        hooked = (target != comps) & ~mutual
        weights.append(comp_w[hooked])
        parent = torch.where(hooked, target, comps)
        for _ in range(max(1, C.bit_length())):
            parent = parent[parent]
        is_root = parent == comps
        labels = (is_root.cumsum(0) - 1)[parent][labels]


def tiled_budget_components(
    x: torch.Tensor, keep: int, tile: int | None = None, sim_dtype: torch.dtype = torch.float32
) -> tuple[Components, torch.Tensor]:
    """Exactly ``keep`` components of one token set by a single-linkage cut, strip by strip.

    x: [n, d] raw tokens. Returns (Components with B = 1, degree [1, n] int64, self
    included), the same as ``graph.budget_components`` on the in-memory matrix with the
    same exact decisions (``scc.components_of_sets``), without holding an n x n matrix:

    1. The spanning forest's weights of the products (``_spanning_weights``, one pass over
       the strips per Borůvka round) give the cut's levels; the exact levels lie within
       one error bound of them.
    2. One more pass: pairs above the band (two bounds around the levels) are joined
       into components; pairs inside it get their canonical values and are kept, with
       their ends, as edges between those components. Degrees are counted on the way.
    3. The cut itself runs in memory on the small graph of the components that band
       edges touch (numbered by their smallest token, the tie order of the in-memory
       cut), with the budget reduced by the components that no band edge touches:
       pairs above the band join anyway, pairs below it can be neither the cut's levels
       nor its ties.
    """
    from .exact import band_limits, error_bound, product_units
    from .scc import _TILE, gram_strips, normalize, unit_dtype

    tile = tile or _TILE
    n, device = x.shape[0], x.device
    wide = unit_dtype(sim_dtype)
    xn, residual = product_units(normalize(x, wide), sim_dtype)
    # 1. The levels of the products.
    ranked = _spanning_weights(xn, tile).sort(descending=True).values
    joins = n - keep
    ext = torch.cat([ranked.new_full((1,), float("inf")), ranked, ranked.new_full((1,), float("-inf"))])
    levels = ext[joins : joins + 2].to(torch.float64)[None]  # [1, 2]: weakest kept, strongest cut
    halfwidth = torch.zeros_like(levels)
    if sim_dtype != torch.float64:
        halfwidth = 2 * error_bound(x.shape[1], sim_dtype, device, residual).at(levels)
    lo, hi = band_limits(levels, halfwidth, wide)
    # 2. Components above the band, band edges, degrees above the band.
    parent = torch.arange(n, device=device)
    idx = torch.arange(n, device=device)
    above = torch.zeros(n, dtype=torch.int64, device=device)
    ends, values = [], []
    for i, strip in gram_strips(xn[None], tile):
        s = strip[0]
        if sim_dtype != torch.float64:
            _resolve_strip_(s, x, i, lo, hi)
        t = s.shape[1]
        upper = idx[: s.shape[0], None] < idx[None, i : i + t]  # each pair once, no diagonal
        adj = (s > hi) & upper
        above[i : i + t] += adj.sum(dim=0)
        above[: s.shape[0]] += adj.sum(dim=1)
        r, c = ((s >= lo) & (s <= hi) & upper).nonzero().unbind(1)
        ends.append(torch.stack([r, c + i], dim=1))
        values.append(s[r, c])
        if bool(adj.any()):
            rows, cols = adj.any(dim=1), adj.any(dim=0)
            block = adj[rows][:, cols]
            parent = _union_edges(parent, block, idx[: s.shape[0]][rows], idx[i : i + t][cols])
    root = _find_roots(parent)  # each component's smallest token
    return _cut_band_graph(root, torch.cat(ends), torch.cat(values), keep, above)


def _cut_band_graph(
    root: torch.Tensor, ends: torch.Tensor, values: torch.Tensor, keep: int, above: torch.Tensor
) -> tuple[Components, torch.Tensor]:
    """Step 3 of ``tiled_budget_components``: the cut on the components above the band.

    root: [n] smallest token of each vertex's component above the band; ends: [E, 2]
    band pairs (i < j), values: [E] their similarities; above: [n] pairs above the band
    per vertex. The spanning forest of the band edges is found by Kruskal's algorithm
    (the band holds a few thousand pairs; they are sorted once and joined on the host).
    """
    n, device = root.shape[0], root.device
    idx = torch.arange(n, device=device)
    is_root = root == idx
    comp = (is_root.cumsum(0) - 1)[root]  # numbered by smallest token, like the in-memory tie order
    C = int(is_root.sum())
    a, b = comp[ends[:, 0]], comp[ends[:, 1]]
    cross = a != b
    order = values[cross].sort(descending=True, stable=True).indices
    ca, cb, cv = a[cross][order].tolist(), b[cross][order].tolist(), values[cross][order].tolist()
    # Kruskal on the host: the band's spanning-forest weights, strongest first.
    up = list(range(C))

    def find(v: int) -> int:
        while up[v] != v:
            up[v] = up[up[v]]
            v = up[v]
        return v

    forest = []
    for p, q, w in zip(ca, cb, cv):
        rp, rq = find(p), find(q)
        if rp != rq:
            up[max(rp, rq)] = min(rp, rq)
            forest.append(w)
    joins = C - keep  # components above the band, minus the budget
    if joins < 0 or joins > len(forest):
        raise RuntimeError(f"tiled budget cut: the band holds {len(forest)} joins, {joins} needed (a bug)")
    keep_t = forest[joins - 1] if joins > 0 else float("inf")
    cut_t = forest[joins] if joins < len(forest) else float("-inf")
    ties = joins - sum(w > keep_t for w in forest)
    # Components strictly above keep_t (band edges above it; all joins of ties left out).
    up = list(range(C))
    for p, q, w in zip(ca, cb, cv):
        if w > keep_t:
            rp, rq = find(p), find(q)
            if rp != rq:
                up[max(rp, rq)] = min(rp, rq)
    top = torch.tensor([find(v) for v in range(C)], device=device)  # smallest component id of each
    if ties > 0:
        top = _split_ties(top, torch.tensor(ca, device=device), torch.tensor(cb, device=device), torch.tensor(cv), keep_t, ties)
    is_top = top == torch.arange(C, device=device)
    final = (is_top.cumsum(0) - 1)[top][comp]
    count = torch.full((1,), int(is_top.sum()), dtype=torch.int64, device=device)
    # Degree: 1 + pairs above the band + band pairs above the cut, at both ends; with
    # nothing cut (cut_t = -inf, the only level outside the band) every pair counts.
    if cut_t == float("-inf"):
        levels = torch.tensor([[keep_t], [cut_t]], dtype=values.dtype, device=device)
        return Components(final[None], count, levels[0], levels[1]), torch.full_like(above, n)[None]
    strong = values > cut_t
    degree = 1 + above
    degree = degree.index_add(0, ends[strong, 0], torch.ones_like(ends[strong, 0]))
    degree = degree.index_add(0, ends[strong, 1], torch.ones_like(ends[strong, 1]))
    levels = torch.tensor([keep_t, cut_t], dtype=values.dtype, device=device)
    return Components(final[None], count, levels[:1], levels[1:]), degree[None]


def _split_ties(
    top: torch.Tensor, a: torch.Tensor, b: torch.Tensor, w: torch.Tensor, keep_t: float, ties: int
) -> torch.Tensor:
    """Join ``ties`` more components through edges equal to keep_t, as the in-memory cut does.

    top: [C] component (smallest member id) of each band component; a, b: [E] edge ends,
    w: [E] (host) weights. The open components, those an edge equal to keep_t leaves,
    go through ``graph._boruvka`` with a merge limit, in order of their smallest member
    (the in-memory tie step's order). Returns top updated.
    """
    from .graph import _boruvka

    device = top.device
    tie = (w == keep_t).to(device)
    ta, tb = top[a[tie]], top[b[tie]]
    ta, tb = ta[ta != tb], tb[ta != tb]
    opened = torch.unique(torch.cat([ta, tb]))  # sorted: by smallest member
    k = opened.shape[0]
    slot = torch.full((top.shape[0],), -1, dtype=torch.int64, device=device)
    slot[opened] = torch.arange(k, device=device)
    graph = torch.full((1, k, k), float("-inf"), device=device)
    graph[0, slot[ta], slot[tb]] = 1.0
    graph[0, slot[tb], slot[ta]] = 1.0
    one = torch.ones(1, dtype=torch.int64, device=device)
    labels, _, _, _, _ = _boruvka(graph, graph.new_zeros(1), k * one, merge_limit=ties * one, group=0 * one)
    # Each tie group takes the smallest member of its first component as its name.
    name = torch.full((k,), top.shape[0], dtype=torch.int64, device=device)
    name = name.scatter_reduce(0, labels[0], opened, "amin")[labels[0]]
    renamed = top.clone()
    renamed[opened] = name
    return renamed[top]
