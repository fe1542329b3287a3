"""Components of a large token set without its full similarity matrix.

For long videos the temporal step's S x S matrix does not fit in memory (S = 50,000
spatial tokens is 10 GB in float32). Here the matrix is produced in column strips of the
upper triangle (``gram_strips``, the same strips the in-memory path is built from, so
both see bitwise-identical similarities) and reduced on the fly:

* degree: row and column counts of each strip's adjacency are accumulated;
* components: the strip's edges are unioned into a parent-pointer forest by min-label
  hooking plus pointer jumping, iterated until every edge of the strip joins equal
  roots; hooking always points to the smaller root, so the forest never has a cycle.

A budget (``tiled_budget_components``) needs the cut's levels first: they come from a
spanning forest of each token's strongest edges (one pass), checked afterwards, or
from the exact spanning forest (one pass per Borůvka round); one more pass then gives
the components above a band around the levels and the band's edges, on which the cut
is taken in memory.

Peak extra memory is one strip (S x tile floats and its boolean adjacency) and, for a
budget, S x 32 neighbour entries, one strip's transpose and candidate mask, and the band's
edges, not S x S.
"""

from __future__ import annotations

from typing import Callable

import torch

from .exact import ErrorBound, band_limits, canonical_similarity, error_bound, product_units, unit_vectors
from .gram import _TILE, gram_strips, unit_dtype  # shared with the in-memory path
from .graph import Components, _boruvka

__all__ = ["tiled_threshold_components", "tiled_budget_components", "cut_band_graph", "union_pairs"]


def _find_roots(parent: torch.Tensor) -> torch.Tensor:
    """parent: [n] forest with parent[x] <= x -> [n] root of every vertex (pointer jumping)."""
    while True:
        up = parent.index_select(0, parent)  # on a CPU several times faster than parent[parent]
        if torch.equal(up, parent):
            return parent
        parent = up


def _union_edges(parent: torch.Tensor, adj: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Union the edges of a boolean block into the forest.

    parent: [n]; adj: [r, c] bool edges between vertices ``rows`` [r] and ``cols`` [c].
    Returns the updated, fully compressed parent array.
    """
    big = parent.shape[0]
    # The masked minima run over all r x c entries: in int32 they move half the bytes.
    narrow = torch.int32 if big < 2**31 else torch.int64
    while True:
        parent = _find_roots(parent)
        ri, rj = parent[rows].to(narrow), parent[cols].to(narrow)
        min_row = torch.where(adj, rj[None, :], big).amin(dim=1)  # smallest root among neighbours
        min_col = torch.where(adj, ri[:, None], big).amin(dim=0)
        # Converged when no edge leads to a smaller root on either side, i.e. every edge
        # joins equal roots.
        if bool((min_row >= ri).all()) and bool((min_col >= rj).all()):
            return parent
        parent = parent.clone()
        parent.scatter_reduce_(0, ri.long(), min_row.minimum(ri).long(), "amin")
        parent.scatter_reduce_(0, rj.long(), min_col.minimum(rj).long(), "amin")


def union_pairs(parent: torch.Tensor, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Union the edges (p[e], q[e]) into the forest parent [n] (parent[x] <= x) -> fully compressed."""
    # index_select, not indexing: on a CPU a gather by an index tensor, or by a mask, is
    # several times slower through ``[]`` (78k pairs: 0.39 against 0.05 ms).
    while True:
        parent = _find_roots(parent)
        rp, rq = parent.index_select(0, p), parent.index_select(0, q)
        apart = (rp != rq).nonzero().squeeze(1)
        if not apart.shape[0]:
            return parent
        rp, rq = rp.index_select(0, apart), rq.index_select(0, apart)
        parent = parent.clone()
        # Hook the larger root onto the smaller: the forest stays one (parent[x] <= x).
        parent.scatter_reduce_(0, torch.maximum(rp, rq), torch.minimum(rp, rq), "amin")
        p, q = p.index_select(0, apart), q.index_select(0, apart)


def _union_strip(parent: torch.Tensor, adj: torch.Tensor, i: int) -> torch.Tensor:
    """Union the edges of one strip's adjacency adj [i + t, t] (rows 0..i+t, columns i..i+t) into the forest."""
    rows, cols = adj.any(dim=1), adj.any(dim=0)
    if not bool(cols.any()):
        return parent
    # Only the vertices that have an edge in this strip take part.
    idx = torch.arange(parent.shape[0], device=parent.device)
    return _union_edges(parent, adj[rows][:, cols], idx[: adj.shape[0]][rows], idx[i : i + adj.shape[1]][cols])


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
    tile = tile or _TILE

    n = x.shape[0]
    device = x.device
    xn, residual = product_units(unit_vectors(x, unit_dtype(sim_dtype)), sim_dtype)
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
        parent = _union_strip(parent, adj, i)
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

    r, c = ((strip >= lo) & (strip <= hi)).nonzero().unbind(1)
    if r.shape[0]:
        strip[r, c] = canonical_similarity(x, r, x, c + i).to(strip.dtype)


def _strip_best_(strip: torch.Tensor, i: int, labels: torch.Tensor, best_w: torch.Tensor, best_u: torch.Tensor) -> None:
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


def _spanning_weights(
    n: int, device: torch.device, choose: Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]
) -> torch.Tensor:
    """The weights of a maximum spanning forest of n vertices, by Borůvka's algorithm.

    choose(labels [n], C) -> (weight [C], target [C]): each component's strongest edge
    to another component and that component (itself and -inf when it has none), under
    a strict order of the edges (weight, then smaller end, then larger end), so the
    hooks form a forest apart from mutual pairs. Returns [E] weights, E <= n - 1.
    """
    labels = torch.arange(n, device=device)
    weights: list[torch.Tensor] = []
    while True:
        C = int(labels.max()) + 1
        comp_w, target = choose(labels, C)
        if not bool((comp_w > float("-inf")).any()):
            return torch.cat(weights) if weights else comp_w.new_zeros(0)
        comps = torch.arange(C, device=target.device)
        # Two components that chose each other chose the same edge: the smaller one stays the root.
        mutual = (target[target] == comps) & (comps < target)
        hooked = (target != comps) & ~mutual
        weights.append(comp_w[hooked])
        parent = torch.where(hooked, target, comps)
        for _ in range(max(1, C.bit_length())):
            parent = parent[parent]
        is_root = parent == comps
        labels = (is_root.cumsum(0) - 1)[parent][labels]


def _component_choice(
    labels: torch.Tensor, C: int, p: torch.Tensor, q: torch.Tensor, w: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each component's strongest candidate edge (p -> q, weight w; p in the component).

    Candidates inside a component or of weight -inf are ignored. The strict order:
    weight, then the smaller end, then the larger end (both smallest first).
    """
    n = labels.shape[0]
    cp, cq = labels[p], labels[q]
    ok = (cp != cq) & (w > float("-inf"))
    comp_w = torch.full((C,), float("-inf"), dtype=w.dtype, device=w.device)
    comp_w.scatter_reduce_(0, cp[ok], w[ok], "amax")
    pick = ok & (w == comp_w[cp])
    for key in (torch.minimum(p, q), torch.maximum(p, q)):
        least = torch.full((C,), n, dtype=torch.int64, device=w.device)
        least.scatter_reduce_(0, cp[pick], key[pick], "amin")
        pick &= key == least[cp]
    target = torch.arange(C, device=w.device)
    target[cp[pick]] = cq[pick]
    return comp_w, target


def _strips_choice(xn: torch.Tensor, tile: int) -> Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]:
    """``_spanning_weights``' choice from a pass over all strips of xn [n, d] (exact, one pass a round)."""

    n, device = xn.shape[0], xn.device

    def choose(labels: torch.Tensor, C: int) -> tuple[torch.Tensor, torch.Tensor]:
        best_w = torch.full((n,), float("-inf"), dtype=unit_dtype(xn.dtype), device=device)
        best_u = torch.full((n,), n, dtype=torch.int64, device=device)
        for i, strip in gram_strips(xn[None], tile):
            _strip_best_(strip[0], i, labels, best_w, best_u)
        return _component_choice(labels, C, torch.arange(n, device=device), best_u, best_w)

    return choose


# The key of no edge: below every ``_order_keys`` key.
_EMPTY = torch.iinfo(torch.int64).min


def _order_keys(w: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """float32 weights, int64 ends -> int64 keys ordered by (weight desc, end asc), exactly."""
    bits = w.view(torch.int32).to(torch.int64)
    ordered = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)  # monotone in the float's value
    return (ordered << 32) | (0xFFFFFFFF - u)


def _weights(keys: torch.Tensor) -> torch.Tensor:
    """int64 keys of ``_order_keys`` -> their float32 weights; the empty key (int64 min) -> -inf."""
    ordered = (keys >> 32).to(torch.int32)
    w = torch.where(ordered < 0, ordered ^ 0x7FFFFFFF, ordered).view(torch.float32)
    return torch.where(keys == _EMPTY, float("-inf"), w)


# A row of the neighbour lists' pass with at most this many new candidates in a strip
# takes them from a padded [rows, k + _FEW] top-k; one with more, from its whole strip row.
_FEW = 16


def _neighbour_lists(xn: torch.Tensor, tile: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """xn: [n, d] unit vectors (float32 products) -> ([n, k] weights, [n, k] ends) of each
    vertex's k strongest edges (weight, then smaller end), in one pass over the strips."""

    n, device = xn.shape[0], xn.device
    k = min(k, max(1, n - 1))
    keys = torch.full((n, k), _EMPTY, dtype=torch.int64, device=device)
    # One buffer for every strip's transpose and its candidate masks: fresh pages of this
    # size cost more than the copy.
    flip = torch.empty(n * tile, dtype=unit_dtype(xn.dtype), device=device)
    mask = torch.empty(n * tile, dtype=torch.bool, device=device)
    for i, strip in gram_strips(xn[None], tile):
        s = strip[0]
        R, t = s.shape
        s[i:].fill_diagonal_(float("-inf"))
        # A column's vertex meets here every vertex before it (the diagonal block is
        # symmetric) and no earlier strip held it: its whole column is its list so far.
        columns = flip[: t * R].view(t, R).copy_(s.T)
        # Sorted: a float top-k leaves equal weights in any order, and the rows' update
        # reads a list's k-th key from its last place.
        top = _top_keys(columns, k).sort(dim=1, descending=True).values
        keys[i : i + t, : top.shape[1]] = top
        if i:
            _update_rows_(keys[:i], s[:i], i, mask)
    u = 0xFFFFFFFF - (keys & 0xFFFFFFFF)
    w = torch.where(u < n, _weights(keys), float("-inf"))
    return w, u.clamp(max=n - 1)


def _update_rows_(keys: torch.Tensor, block: torch.Tensor, first: int, mask: torch.Tensor) -> None:
    """keys: [r, k] sorted lists of vertices 0..r, updated in place with block [r, c], their
    weights to vertices first..first+c. mask: a bool buffer of at least r * c.

    Only a weight above a row's k-th can enter its list (the block's ends are larger than
    any in the list, so a tie with the k-th orders after it). A long set's late strips
    hold a few such weights for some rows and none for most: they go, with their keys,
    into a narrow padded top-k; a row with more than ``_FEW`` takes its whole strip row.
    """
    r, c = block.shape
    k = keys.shape[1]
    kth = _weights(keys[:, -1])
    rows = (block.amax(dim=1) > kth).nonzero().squeeze(1)
    if not rows.shape[0]:
        return
    sub = block.index_select(0, rows)
    hit = torch.gt(sub, kth.index_select(0, rows)[:, None], out=mask[: rows.shape[0] * c].view(-1, c))
    at, col = hit.nonzero().unbind(1)  # row-major: at ascending
    counts = torch.bincount(at, minlength=rows.shape[0])
    many = (counts > _FEW).nonzero().squeeze(1)
    if many.shape[0]:
        cand = _top_keys(sub.index_select(0, many), k, first)
        both = torch.cat([keys.index_select(0, rows[many]), cand], dim=1)
        keys.index_copy_(0, rows[many], both.topk(k, dim=1).values)
    few = counts[at] <= _FEW
    at, col = at[few], col[few]
    if at.shape[0]:
        slot, which, per = at.unique_consecutive(return_inverse=True, return_counts=True)
        pos = torch.arange(at.shape[0], device=at.device) - (per.cumsum(0) - per)[which]  # rank in its row
        pad = torch.full((slot.shape[0], _FEW), _EMPTY, dtype=torch.int64, device=at.device)
        pad[which, pos] = _order_keys(sub[at, col], col + first)
        both = torch.cat([keys.index_select(0, rows[slot]), pad], dim=1)
        keys.index_copy_(0, rows[slot], both.topk(k, dim=1).values)


def _top_keys(block: torch.Tensor, k: int, first: int = 0) -> torch.Tensor:
    """block: [r, c] float32 weights of r vertices to vertices first..first+c -> [r, min(k, c)]
    or [r, c] keys (``_order_keys``) holding every row's k strongest edges.

    A top-(k + 1) of the weights picks them where the k-th and the (k + 1)-th weight
    differ (the set is then unique); only rows where they tie take the keys of the whole
    row, which order equal weights by their end. Keys for every entry would cost several
    times more than the products of the strip.
    """
    t, i = block.shape
    ends = torch.arange(first, first + i, device=block.device)
    if i <= k:
        return _order_keys(block, ends.expand(t, i))
    w, u = block.topk(k + 1, dim=1)
    keys = _order_keys(w[:, :k].contiguous(), u[:, :k] + first)
    tied = (w[:, k] == w[:, k - 1]).nonzero().squeeze(1)
    if tied.shape[0]:
        whole = _order_keys(block.index_select(0, tied), ends.expand(tied.shape[0], i))
        keys[tied] = whole.topk(k, dim=1).values
    return keys


def _lists_choice(w: torch.Tensor, u: torch.Tensor) -> Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]:
    """``_spanning_weights``' choice on the graph of the neighbour lists (both directions)."""
    n, k = w.shape
    v = torch.arange(n, device=w.device)[:, None].expand(n, k).reshape(-1)
    p, q, ww = torch.cat([v, u.reshape(-1)]), torch.cat([u.reshape(-1), v]), w.reshape(-1).repeat(2)
    return lambda labels, C: _component_choice(labels, C, p, q, ww)


# Neighbours per token kept by the first pass of a budget in strips (see below).
_NEIGHBOURS = 32


def tiled_budget_components(
    x: torch.Tensor, keep: int, tile: int | None = None, sim_dtype: torch.dtype = torch.float32
) -> tuple[Components, torch.Tensor]:
    """Exactly ``keep`` components of one token set by a single-linkage cut, strip by strip.

    x: [n, d] raw tokens. Returns (Components with B = 1, degree [1, n] int64, self
    included), the same as ``graph.budget_components`` on the in-memory matrix with the
    same exact decisions (``scc.components_of_sets``), without holding an n x n matrix:

    1. Estimate the cut's levels: from the spanning forest of every token's 32 strongest
       edges (one pass over the strips), else from the exact spanning forest of the
       products (Borůvka, one pass over the strips per round).
    2. One more pass around the estimate: pairs above a band (two error bounds around
       the levels) are joined into components; pairs inside it get their canonical
       values and are kept, with their ends, as edges between those components.
       Degrees are counted on the way.
    3. The cut runs in memory on the small graph of the components that band edges
       touch (numbered by their smallest token, the tie order of the in-memory cut),
       with the budget reduced by the components no band edge touches. It is exact if
       the levels it finds lie inside the band by at least one bound: pairs above the
       band join anyway, pairs below it can be neither a level nor a tie, and pairs
       outside it are on the right side of both levels. That is checked; an estimate
       that fails it (possible only for the neighbour-list one) is replaced by the
       exact forest's, which cannot fail (its levels are within one bound of the
       canonical ones).
    """
    tile = tile or _TILE
    n, device = x.shape[0], x.device
    wide = unit_dtype(sim_dtype)
    xn, residual = product_units(unit_vectors(x, wide), sim_dtype)
    bound = None if sim_dtype == torch.float64 else error_bound(x.shape[1], sim_dtype, device, residual)

    def from_lists() -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        lists = _neighbour_lists(xn, tile, _NEIGHBOURS)
        return _spanning_weights(n, device, _lists_choice(*lists)), lists

    def from_strips() -> tuple[torch.Tensor, None]:
        return _spanning_weights(n, device, _strips_choice(xn, tile)), None

    estimates: list[Callable[[], tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]]] = [from_strips]
    if wide == torch.float32:  # the neighbour lists order float32 weights exactly
        estimates.insert(0, from_lists)
    for estimate in estimates:
        forest, lists = estimate()
        ranked = forest.sort(descending=True).values
        joins = n - keep
        if joins > ranked.shape[0]:
            continue  # the neighbour lists' forest is too sparse to estimate the cut
        ext = torch.cat([ranked.new_full((1,), float("inf")), ranked, ranked.new_full((1,), float("-inf"))])
        levels = ext[joins : joins + 2].to(torch.float64)[None]  # [1, 2]: weakest kept, strongest cut
        result = _band_pass(x, xn, tile, levels, bound, keep, lists)
        if result is not None:
            return result
    raise RuntimeError("tiled budget cut: the exact spanning forest's levels failed the band check (a bug)")


def _band_pass(
    x: torch.Tensor,
    xn: torch.Tensor,
    tile: int,
    levels: torch.Tensor,
    bound: ErrorBound | None,
    keep: int,
    lists: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[Components, torch.Tensor] | None:
    """Steps 2 and 3 of ``tiled_budget_components`` around levels [1, 2]; None if the check fails.

    lists: the neighbour lists ([n, k] weights and ends) when the estimate came from them.
    A token whose k-th list weight is below the band ("sparse") has every pair at or above
    the band in its list, so the lists give all of its pairs the pass needs
    (``_sparse_pairs``); only the pairs between the other ("dense") tokens are computed
    again, strip by strip over the dense tokens alone. Of those, only the pairs above the
    band between "full" tokens (k list edges above it) are unioned: a pair above the band
    that no list holds joins two full tokens, and the list edges above the band are
    unioned first.

    The pairs above the band and the band's pairs are taken from the products (as the
    in-memory cut, ``sets._budget_by_band``, takes them); the band's pairs then get
    their canonical values. A pair's side of the band is the same from either pass: the
    products are within one error bound of the canonical values, and the band is two.
    """

    n, device = x.shape[0], x.device
    wide = unit_dtype(xn.dtype)
    halfwidth = torch.zeros_like(levels) if bound is None else 2 * bound.at(levels)
    lo, hi = band_limits(levels, halfwidth, wide)
    parent = torch.arange(n, device=device)
    above = torch.zeros(n, dtype=torch.int32, device=device)
    ends, values = [], []  # the band's pairs; their products (needed only without a bound)
    full = torch.ones(n, dtype=torch.bool, device=device)
    dense = torch.arange(n, device=device)  # the tokens whose pairs are computed again
    if lists is not None:  # (lists come with float32 or bfloat16 products: there is a bound)
        parent, full, dense, pairs = _sparse_pairs(lists, lo, hi, parent, above)
        ends.append(pairs)
    sub = xn if dense.shape[0] == n else xn.index_select(0, dense)
    sub_full = full[dense]
    sub_above = torch.zeros(dense.shape[0], dtype=torch.int32, device=device)
    # The strip's masks in buffers reused for every strip: fresh pages cost more than the
    # comparisons.
    above_buf = torch.empty(dense.shape[0] * tile, dtype=torch.bool, device=device)
    band_buf = torch.empty_like(above_buf)
    for i, strip in gram_strips(sub[None], tile):
        s = strip[0]
        R, t = s.shape
        adj = torch.gt(s, hi, out=above_buf[: R * t].view(R, t))  # rows 0..R, columns i..i+t
        band = torch.ge(s, lo, out=band_buf[: R * t].view(R, t))
        band ^= adj  # lo <= s <= hi (s > hi implies s >= lo)
        adj[i:].triu_(1)  # the diagonal block: each pair once, no diagonal
        sub_above[i : i + t] += adj.sum(dim=0, dtype=torch.int32)
        sub_above[:R] += adj.sum(dim=1, dtype=torch.int32)
        r, c = band.nonzero().unbind(1)
        once = r < c + i
        r, c = r[once], c[once]
        ends.append(torch.stack([dense[r], dense[c + i]], dim=1))  # dense is ascending: i < j
        if bound is None:
            values.append(s[r, c])
        rows, cols = sub_full[:R].nonzero().squeeze(1), sub_full[i : i + t].nonzero().squeeze(1)
        if rows.shape[0] and cols.shape[0]:
            parent = _union_edges(parent, adj[rows][:, cols], dense[rows], dense[cols + i])
    above.index_add_(0, dense, sub_above)
    root = _find_roots(parent)  # each component's smallest token
    band = torch.cat(ends)
    # All the band's canonical values in one call, as the in-memory path takes them.
    vals = torch.cat(values) if bound is None else canonical_similarity(x, band[:, 0], x, band[:, 1]).to(wide)
    margin = 0.0 if bound is None else float(bound.at(levels).max())
    return cut_band_graph(root, band, vals, keep, above.to(torch.int64), (float(lo), float(hi), margin))


def _sparse_pairs(
    lists: tuple[torch.Tensor, torch.Tensor],
    lo: torch.Tensor,
    hi: torch.Tensor,
    parent: torch.Tensor,
    above: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """What the neighbour lists w, u [n, k] give ``_band_pass`` for band limits lo, hi.

    Unions every list edge above the band into parent [n], and counts into above [n]
    (in place) the pairs above the band that touch a sparse token (k-th list weight
    below lo: all of its pairs at or above lo are in its list). Returns (parent, full
    [n] bool: k list edges above the band, dense [D] ascending: the other tokens, band
    [E, 2] the band pairs (i < j) with a sparse end, each once).
    """
    w, u = lists
    n, k = w.shape
    v = torch.arange(n, device=w.device)[:, None].expand(n, k)
    strong = w > hi
    parent = union_pairs(parent, v[strong], u[strong])
    full = strong.sum(dim=1) == k
    sparse = w[:, -1] < lo
    # A pair of two sparse tokens is in both lists: it is taken from its smaller end's.
    # A pair with one dense end is taken from the sparse end's list only.
    taken = sparse[:, None] & (~sparse[u] | (v < u))
    counted = taken & strong
    one = torch.ones_like(v[counted], dtype=above.dtype)
    above.index_add_(0, v[counted], one).index_add_(0, u[counted], one)
    band = taken & (w >= lo) & ~strong
    p, q = v[band], u[band]
    pairs = torch.stack([torch.minimum(p, q), torch.maximum(p, q)], dim=1)
    return parent, full, (~sparse).nonzero().squeeze(1), pairs


def cut_band_graph(
    root: torch.Tensor,
    ends: torch.Tensor,
    values: torch.Tensor,
    keep: int,
    above: torch.Tensor,
    band: tuple[float, float, float],
) -> tuple[Components, torch.Tensor] | None:
    """Step 3 of ``tiled_budget_components`` (and of the in-memory cut, ``sets.py``): the
    cut on the components above the band.

    root: [n] smallest token of each vertex's component above the band; ends: [E, 2]
    band pairs (i < j), values: [E] their similarities; above: [n] pairs above the band
    per vertex; band: (lo, hi, margin). The band edges are sorted once; their spanning
    forest is the one Kruskal's algorithm keeps in that order (``_forest_edges``). None
    when the levels are not inside the band by the margin.
    """
    n, device = root.shape[0], root.device
    idx = torch.arange(n, device=device)
    is_root = root == idx
    comp = (is_root.cumsum(0) - 1)[root]  # numbered by smallest token, like the in-memory tie order
    C = int(is_root.sum())
    a, b = comp[ends[:, 0]], comp[ends[:, 1]]
    cross = a != b
    order = values[cross].sort(descending=True, stable=True).indices
    ca, cb, cv = a[cross][order], b[cross][order], values[cross][order]
    # The band's spanning forest, strongest first (Kruskal's, in the sort's order).
    picked = _forest_edges(C, ca, cb)
    forest = cv[picked].tolist()
    levels = _band_levels(forest, C, n, keep, band)
    if levels is None:
        return None
    keep_t, cut_t = levels
    strong = cv[picked] > keep_t
    ties = C - keep - int(strong.sum())
    # Components strictly above keep_t (band edges above it; all joins of ties left out):
    # those of the forest's edges above it. Each is named by its smallest component id.
    strong_tree = picked[strong]
    top = union_pairs(torch.arange(C, device=device), ca[strong_tree], cb[strong_tree])
    if ties > 0:
        top = _split_ties(top, ca, cb, cv.cpu(), keep_t, ties)
    is_top = top == torch.arange(C, device=device)
    final = (is_top.cumsum(0) - 1)[top][comp]
    count = torch.full((1,), int(is_top.sum()), dtype=torch.int64, device=device)
    # Degree: 1 + pairs above the band + band pairs above the cut, at both ends; with
    # nothing cut (cut_t = -inf, the only level outside the band) every pair counts.
    if cut_t == float("-inf"):
        both = torch.tensor([[keep_t], [cut_t]], dtype=values.dtype, device=device)
        return Components(final[None], count, both[0], both[1]), torch.full_like(above, n)[None]
    strong = values > cut_t
    degree = 1 + above
    degree = degree.index_add(0, ends[strong, 0], torch.ones_like(ends[strong, 0]))
    degree = degree.index_add(0, ends[strong, 1], torch.ones_like(ends[strong, 1]))
    both = torch.tensor([keep_t, cut_t], dtype=values.dtype, device=device)
    return Components(final[None], count, both[:1], both[1:]), degree[None]


def _forest_edges(C: int, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a, b: [E] edge ends among C vertices, strongest edge first -> [F] positions of the
    spanning forest's edges, ascending: the edges Kruskal's algorithm keeps in that order.

    Borůvka's algorithm on the edge list, with an edge's position as its rank (a total
    order, so the forest is the one Kruskal's gives): every round each tree takes its
    first edge to another tree. A few vector passes per round and at most log2(C)
    rounds, where Kruskal's is a host loop over every edge.
    """
    E = a.shape[0]
    rank = torch.arange(E, device=a.device)
    parent = torch.arange(C, device=a.device)
    picked = []
    while rank.shape[0]:
        ra, rb = parent[a[rank]], parent[b[rank]]
        cross = ra != rb
        rank, ra, rb = rank[cross], ra[cross], rb[cross]  # an edge inside a tree stays there
        if not rank.shape[0]:
            break
        first = torch.full((C,), E, dtype=torch.int64, device=a.device)
        first.scatter_reduce_(0, ra, rank, "amin").scatter_reduce_(0, rb, rank, "amin")
        chosen = torch.unique(first[first < E])  # two trees may choose the same edge
        picked.append(chosen)
        parent = union_pairs(parent, a[chosen], b[chosen])
    return torch.cat(picked).sort().values if picked else torch.zeros(0, dtype=torch.int64, device=a.device)


def _band_levels(
    forest: list[float], C: int, n: int, keep: int, band: tuple[float, float, float]
) -> tuple[float, float] | None:
    """(keep_t, cut_t) of a cut of C components to ``keep`` along the band's spanning forest
    (weights strongest first), or None when a level is not inside the band by its margin."""
    joins = C - keep  # components above the band, minus the budget
    lo, hi, margin = band
    if n == 1:
        return float("inf"), float("-inf")
    if joins < 0 or joins > len(forest) or (joins == 0 and C < n):
        return None  # a level lies above or below the band
    keep_t = forest[joins - 1] if joins > 0 else float("inf")
    cut_t = forest[joins] if joins < len(forest) else float("-inf")
    if cut_t == float("-inf") and keep > 1:
        return None  # the strongest cut edge lies below the band
    for level in (keep_t, cut_t):
        if abs(level) != float("inf") and not lo + margin <= level <= hi - margin:
            return None  # too close to the band's edge for the pairs outside it
    return keep_t, cut_t


def _split_ties(
    top: torch.Tensor, a: torch.Tensor, b: torch.Tensor, w: torch.Tensor, keep_t: float, ties: int
) -> torch.Tensor:
    """Join ``ties`` more components through edges equal to keep_t, as the in-memory cut does.

    top: [C] component (smallest member id) of each band component; a, b: [E] edge ends,
    w: [E] (host) weights. The open components, those an edge equal to keep_t leaves,
    go through ``graph._boruvka`` with a merge limit, in order of their smallest member
    (the in-memory tie step's order). Returns top updated.
    """

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
