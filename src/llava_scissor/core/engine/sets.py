"""Similarity graphs and components of B token sets at once, with exact decisions near every level.

``components_of_sets`` is what the paper's steps call (``core/compress.py``): the cosine
matrix of each set (``similarity_graph``, from ``gram.py``), the pairs near a deciding
level replaced by their canonical values (``exact.py``), the components (``graph.py``,
or strip by strip for sets whose matrix is too large, ``tiled.py``), ordered by their
highest-degree member. Also the paper's Eq. 2 sample and the segment means.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .exact import (
    ErrorBound,
    apriori_halfwidth,
    band_capacity,
    band_limits,
    error_bound,
    product_units,
    resolve_band_,
    resolve_pairs_,
    unit_vectors,
)
from .gram import _TILE, matrix_bytes, symmetric_gram, to_device, unit_dtype
from .graph import Components, budget_components, budget_levels, member_rank, order_components, threshold_components
from .products import product_dtype
from .reads import DATA_SIZED, HostReads
from .tiled import cut_band_graph, tiled_budget_components, tiled_threshold_components, union_pairs

__all__ = [
    "SetComponents",
    "components_of_sets",
    "similarity_graph",
    "degrees",
    "sample_mask",
    "sample_sizes_unread",
    "segment_mean",
    "segment_sizes",
]

_NEG_INF = float("-inf")
# Working buffers of unit vectors are kept near this size (see _small_unit_gram).
_CHUNK_BYTES = 2 << 20


def _small_unit_gram(
    x: torch.Tensor, sim_dtype: torch.dtype, norms: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """x: [B, n, d] raw tokens (n <= _TILE) -> ([B, n, n] cosine matrix, [] largest rounding residual).

    The matrix is in ``unit_dtype(sim_dtype)`` and exactly symmetric; the products are
    in ``sim_dtype``. Normalizes a few sets at a time into a small buffer: a video's
    frames are tens of MB of unit vectors that would otherwise be written once and read
    once, and on CPU fresh memory of that size costs more in page faults than the
    normalization itself. Bitwise equal to ``symmetric_gram(unit_vectors(x, sim_dtype))``
    for float32 / float64.
    """
    B, n, d = x.shape
    g = torch.empty(B, n, n, dtype=unit_dtype(sim_dtype), device=x.device)
    residual = g.new_zeros(())
    step = max(1, _CHUNK_BYTES // max(1, n * d * g.element_size()))
    units = torch.empty(min(step, B), n, d, dtype=g.dtype, device=x.device)
    for b in range(0, B, step):
        b_norms = None if norms is None else norms[b : b + step]
        xn, r = product_units(unit_vectors(x[b : b + step], g.dtype, out=units, norms=b_norms), sim_dtype)
        residual = torch.maximum(residual, r)
        symmetric_gram(xn, out=g[b : b + step])
    return g, residual


def similarity_graph(
    x: torch.Tensor, valid: torch.Tensor, sim_dtype: torch.dtype = torch.float32, norms: torch.Tensor | None = None
) -> tuple[torch.Tensor, ErrorBound, torch.Tensor | None]:
    """x: [B, n, d] raw tokens, valid: [B] -> (W [B, n, n], its error bound, units [B, n, d] or None).

    W holds the cosines, products in ``sim_dtype``, in ``unit_dtype(sim_dtype)``, with
    -inf on the diagonal and padding. The bound is on |W - canonical similarity|
    (``exact.py``). valid may be on the CPU (then nothing is read back from x's device).
    units: the float32 unit vectors of x where they were made whole (sets of more than
    _TILE tokens; None otherwise): the exact values of the pairs near a level are
    computed from them (``exact.resolve_band_``). norms: optional [B, n] ``token_norms(x)``.
    """
    units = None
    if x.shape[1] <= _TILE:
        W, residual = _small_unit_gram(x, sim_dtype, norms)
    else:
        units = unit_vectors(x, unit_dtype(sim_dtype), norms=norms)
        xn, residual = product_units(units, sim_dtype)
        W = symmetric_gram(xn)
        del xn
    W.diagonal(dim1=1, dim2=2).fill_(_NEG_INF)
    n = W.shape[1]
    # Sizes on the device are not read: the mask is then applied whether needed or not.
    if valid.device.type != "cpu" or bool((valid < n).any()):
        pad = torch.arange(n, device=W.device) >= to_device(valid, W.device)[:, None]  # [B, n]
        W.masked_fill_(pad[:, :, None] | pad[:, None, :], _NEG_INF)
    if units is not None and units.dtype != torch.float32:
        units = None  # float64 products decide on their own: no exact values needed
    return W, error_bound(x.shape[-1], sim_dtype, x.device, residual), units


def degrees(W: torch.Tensor, threshold: torch.Tensor, rows: int = 256) -> torch.Tensor:
    """W: [B, n, n] symmetric, threshold: [B] -> [B, n] int64 neighbours above it, self included.

    Counted in blocks of rows: the boolean block stays in cache, which on CPU makes the
    count several times faster than one pass over an n x n boolean matrix.
    """
    B, n, _ = W.shape
    out = torch.empty(B, n, dtype=torch.int32, device=W.device)
    thr = threshold[:, None, None]
    for r in range(0, n, rows):
        torch.sum(W[:, r : r + rows] > thr, dim=-1, dtype=torch.int32, out=out[:, r : r + rows])
    return out.to(torch.int64) + 1


def sample_mask(
    valid: torch.Tensor,
    n: int,
    epsilon: float,
    seed: int,
    group: torch.Tensor | None = None,
) -> torch.Tensor:
    """[B, n] bool: the vertices sampled by the paper's Eq. 2, N' = min(N, ceil(ln N / eps^2)).

    valid: [B] real vertices per set; group: [B] contiguous runs of sets drawn from one
    stream (default: each set its own). Every group draws from a fresh generator seeded
    with ``seed``, on the CPU, so a video's sample does not depend on the device or on
    the other videos of a batch (a set drawn alone takes a prefix of one stream, the same
    whatever n). The mask is on valid's device. valid on a device other than the CPU is
    not read: the draw (which needs only n) is copied there and ranked there
    (``sample_sizes_unread``).
    """
    B = valid.shape[0]
    group_cpu = torch.arange(B) if group is None else group.cpu()
    noise = torch.empty(B, n)
    for g in torch.unique_consecutive(group_cpu).tolist():
        rows = (group_cpu == g).nonzero().flatten()
        noise[rows] = torch.rand(rows.numel(), n, generator=torch.Generator().manual_seed(seed))
    if valid.device.type == "cpu":
        want = torch.tensor([_sample_size(v, epsilon) for v in valid.tolist()])
    else:
        noise = to_device(noise, valid.device)
        want = sample_sizes_unread(valid, n, epsilon)
    noise.masked_fill_(torch.arange(n, device=noise.device) >= valid[:, None], 2.0)  # padding sorts last
    rank = noise.argsort(dim=1).argsort(dim=1)
    return rank < want[:, None]


def _sample_size(v: int, epsilon: float) -> int:
    """Eq. 2's N' = min(N, ceil(ln N / eps^2)) for a set of v vertices (0 for an empty set)."""
    return min(v, math.ceil(math.log(v) / epsilon**2)) if v > 0 else 0


def sample_sizes_unread(valid: torch.Tensor, n: int, epsilon: float) -> torch.Tensor:
    """valid: [B] sizes <= n on any device -> [B] N' per set there, without reading valid.

    A table of N' for every size up to n is copied to valid's device and indexed there.
    """
    return to_device(torch.tensor([_sample_size(v, epsilon) for v in range(n + 1)]), valid.device)[valid]


def drop_unsampled_(W: torch.Tensor, sampled: torch.Tensor, rows: int = 1024) -> torch.Tensor:
    """W: [B, n, n], sampled: [B, n] bool -> W with -inf wherever neither end is sampled (in place).

    Row blocks keep the temporary mask at rows x n.
    """
    unsampled = ~sampled
    for r in range(0, W.shape[1], rows):
        block = unsampled[:, r : r + rows, None] & unsampled[:, None, :]
        W[:, r : r + rows].masked_fill_(block, _NEG_INF)
    return W


def segment_mean(x: torch.Tensor, index: torch.Tensor, num: int, dtype: torch.dtype) -> torch.Tensor:
    """x: [m, d], index: [m] in [0, num) -> [num, d] unweighted mean of each segment (in ``dtype``).

    Empty segments give zeros.
    """
    sums = torch.zeros(num, x.shape[-1], dtype=dtype, device=x.device).index_add_(0, index, x.to(dtype))
    return sums.div_(segment_sizes(index, num).clamp(min=1).to(dtype)[:, None])


def segment_sizes(index: torch.Tensor, num: int) -> torch.Tensor:
    """index: [m] in [0, num) -> [num] int64 members per segment.

    ``torch.bincount`` without reading the largest index back to the host (CUDA's does).
    """
    return torch.zeros(num, dtype=torch.int64, device=index.device).index_add_(0, index, torch.ones_like(index))


@dataclass(frozen=True)
class SetComponents:
    """Ordered components of B token sets (see ``components_of_sets``).

    labels: [B, n] int64 in [0, count[b]); representatives: [B, Cmax] int64 (-1 padded);
    count: [B]; degree: [B, n] (see ``components_of_sets``'s ``exact_degrees``);
    keep_threshold / cut_threshold: [B] (see graph.Components).
    unresolved: [] bool, True when a sync-free call found more pairs near a decision
    level than its buffers hold (the result may then differ from the canonical one:
    call again data-sized); always False otherwise.
    """

    labels: torch.Tensor
    representatives: torch.Tensor
    count: torch.Tensor
    degree: torch.Tensor
    keep_threshold: torch.Tensor
    cut_threshold: torch.Tensor
    unresolved: torch.Tensor


def components_of_sets(
    x: torch.Tensor,
    valid: torch.Tensor,
    *,
    tau: float,
    keep: torch.Tensor | None = None,
    group: torch.Tensor | None = None,
    approximate: bool = False,
    epsilon: float = 0.05,
    seed: int = 0,
    max_matrix_bytes: int = 1 << 30,
    sim_dtype: torch.dtype = torch.float32,
    reads: HostReads = DATA_SIZED,
    norms: torch.Tensor | None = None,
    exact_degrees: bool = True,
) -> SetComponents:
    """SCC of B token sets at once.

    x: [B, n, d] raw tokens (padding rows anything); valid: [B] real rows per set.
    valid, keep and group may live on the CPU: they are small, and host copies of them
    are needed (sampling, sizes), so passing them there saves reading them back. A
    sync-free call's valid may stay on the device, unread (sets that go strip by strip
    read it).
    sim_dtype: dtype of the similarity products (float32, bfloat16 or float64).
    Threshold mode (``keep`` None): components of ``cos > tau``. Budget mode: exactly
    ``keep[g]`` components per group of sets (``group``: [B], contiguous), by a
    single-linkage cut ranked over the whole group. ``approximate`` restricts edges to
    those touching a sampled vertex (paper Eq. 2), seeded by ``seed``. Sets whose
    n x n matrix exceeds ``max_matrix_bytes`` go strip by strip (``tiled.py``) with the
    same result, in threshold mode and for budgets of one set per group without
    sampling (other budgets hold the matrix whatever its size).

    With float32 and bfloat16 products every similarity near a level that decides
    something (tau; a budget's weakest kept and strongest cut edge) is replaced by its
    canonical value first (``exact.py``), so both give the same result.

    reads: sync-free, nothing is read back to the host (for GPUs; ``reads.py``): fixed-size
    buffers and a fixed number of Borůvka rounds, with the same result unless
    ``unresolved`` says otherwise; representatives are then padded to n columns. Sets
    that go strip by strip are not sync-free.
    norms: optional [B, n] ``exact.token_norms(x)`` when the caller has them (the unit
    vectors then take them instead of computing them again).
    exact_degrees: False when the caller takes the labels and representatives only: a
    budget's degrees may then be off where they cannot change a representative (pairs
    inside a component that lie within the bound of the cut and could not move its
    highest-degree member keep their products' side of it), which spares their
    canonical values. The labels and representatives are the same either way.
    """
    B, n, _ = x.shape
    device = x.device
    sim_dtype = _set_products(sim_dtype, x, valid, tau, keep, group, approximate, reads)
    tiled = matrix_bytes(n, sim_dtype) > max_matrix_bytes
    # A sync-free caller may know the sizes on the device only: nothing then reads them
    # (strips size their work on the host, so they do).
    valid_cpu = valid.cpu() if tiled or valid.device.type == "cpu" else reads.read(None, valid.cpu)
    valid = to_device(valid, device)
    sizes = valid if valid_cpu is None else valid_cpu  # read nowhere but on the host
    group_cpu = None if group is None else group.cpu()
    group = None if group is None else to_device(group, device)
    keep = None if keep is None else to_device(keep, device)
    if tiled:
        assert valid_cpu is not None  # strips size their work on the host
        one_per_group = group_cpu is None or bool((group_cpu == torch.arange(B)).all())
        if keep is None:
            return _tiled_sets(x, valid_cpu, tau, approximate, epsilon, seed, group_cpu, sim_dtype)
        if not approximate and one_per_group:
            return _tiled_sets(x, valid_cpu, tau, False, epsilon, seed, None, sim_dtype, keep.cpu())
    sampled = to_device(sample_mask(sizes, n, epsilon, seed, group_cpu), device) if approximate else None
    graph = _Graph.build(x, sizes, valid, sampled, sim_dtype, keep is not None, reads, norms)
    if keep is None:
        comps, degree, in_band = _threshold_search(graph, graph.W.new_full((B,), tau))
    else:
        comps, degree, in_band = _budget_search(graph, keep, group, exact_degrees)
    if degree is None:
        # Degree = row count of the adjacency, self included (the diagonal is always in A).
        degree = degrees(graph.W, comps.cut_threshold)
    labels, reps = order_components(comps, degree, valid, reads)
    unresolved = torch.zeros((), dtype=torch.bool, device=device)
    if graph.capacity is not None:
        unresolved = in_band > graph.capacity
    return SetComponents(labels, reps, comps.count, degree, comps.keep_threshold, comps.cut_threshold, unresolved)


def _set_products(
    sim_dtype: torch.dtype,
    x: torch.Tensor,
    valid: torch.Tensor,
    tau: float,
    keep: torch.Tensor | None,
    group: torch.Tensor | None,
    approximate: bool,
    reads: HostReads,
) -> torch.dtype:
    """The products ``components_of_sets`` takes for x [B, n, d] when ``sim_dtype`` is asked
    for: bfloat16 only where they pay (the same output either way, by exact decisions)."""
    sim_dtype = product_dtype(sim_dtype, x.device)  # where the device multiplies them faster
    if sim_dtype == torch.bfloat16 and x.shape[1] < max(_BF16_MIN_TOKENS, _BF16_MIN_WORK // x.shape[2]):
        # Small sets (a frame's tokens, a short video's few hundred spatial tokens):
        # float32 products cost little there, and rounding the tokens, the bfloat16 band
        # (several per cent of the pairs near a cut) and its float32 re-check cost more
        # than the products save. Those costs grow with the pairs, the products' saving
        # with pairs x dim: small dims need larger sets.
        return torch.float32
    if sim_dtype == torch.bfloat16 and not reads.sync_free and not approximate:
        if _crowded(x, valid.cpu(), tau if keep is None else None, None if keep is None else keep.cpu(), group):
            return torch.float32  # most of the band would be re-checked in float32 anyway
    return sim_dtype


@dataclass(frozen=True)
class _Graph:
    """The similarity graph of B sets and how its decisions are made exact (``components_of_sets``).

    W: [B, n, n] (written in place); x: [B, n, d] raw tokens; units: their float32 unit
    vectors or None; bound: the products' ErrorBound, None when they decide on their
    own (float64); capacity: the band's fixed size (sync-free) or None; fine: the
    float32 bound when the products are bfloat16; valid: [B]; sampled: [B, n] bool or None;
    reads: the call's host reads.
    """

    W: torch.Tensor
    x: torch.Tensor
    units: torch.Tensor | None
    bound: ErrorBound | None
    capacity: int | None
    fine: torch.Tensor | None
    valid: torch.Tensor
    sampled: torch.Tensor | None
    reads: HostReads

    @staticmethod
    def build(
        x: torch.Tensor,
        sizes: torch.Tensor,
        valid: torch.Tensor,
        sampled: torch.Tensor | None,
        sim_dtype: torch.dtype,
        budget: bool,
        reads: HostReads,
        norms: torch.Tensor | None = None,
    ) -> _Graph:
        """The graph of x [B, n, d] (``similarity_graph``, sizes as it takes them) and its band's size."""
        B, n, d = x.shape
        W, bound, units = similarity_graph(x, sizes, sim_dtype, norms)
        exact = sim_dtype != torch.float64  # float64 products decide on their own
        capacity = reads.capacity(_band_room, B, n, d, sim_dtype, budget) if exact else None
        # Low-precision products: the wide band is narrowed by float32 values first.
        fine = error_bound(d, torch.float32, x.device, 0.0).base if sim_dtype == torch.bfloat16 else None
        return _Graph(W, x, units, bound if exact else None, capacity, fine, valid, sampled, reads)


# Sets of fewer tokens, or of fewer than _BF16_MIN_WORK / dim, take float32 products
# (``_set_products``; measured on the corpus, one and two threads: at dim 896 a set of
# 2000 tokens is as fast either way, at dim 3584 bfloat16 pays from 1024).
_BF16_MIN_TOKENS = 1024
_BF16_MIN_WORK = 2048 * 896
# A bfloat16 band holding more than this share of a set's pairs costs more to narrow in
# float32 than bfloat16 products save (measured on the corpus at dims 896 and 3584).
_CROWDED_SHARE = 1 / 32
# Rows of a set whose similarities to the whole set estimate its band (``_crowded``).
_PROBE_ROWS = 64


def _crowded(
    x: torch.Tensor, valid: torch.Tensor, tau: float | None, keep: torch.Tensor | None, group: torch.Tensor | None
) -> bool:
    """Whether bfloat16 products of x [B, n, d] would put more than ``_CROWDED_SHARE`` of the
    pairs into the band that float32 values re-check (data-sized; a speed decision only).

    Estimated from _PROBE_ROWS evenly spaced rows of each set and their float32
    similarities to the whole set: the level is tau, or for a budget of keep[b]
    components (one set per group) the keep[b] / n quantile of the rows' strongest
    similarities (single linkage cuts near it); the band is the bfloat16 error bound
    of the rows' measured rounding around it, two bounds for a budget.
    """
    if keep is not None and group is not None and not torch.equal(group.cpu(), torch.arange(x.shape[0])):
        return False  # a budget over groups of sets: no per-set level to estimate
    d = x.shape[-1]
    near = total = 0
    for b, m in enumerate(valid.tolist()):
        if m < 2:
            continue
        u = unit_vectors(x[b, :m], torch.float32)
        rows = torch.linspace(0, m - 1, min(m, _PROBE_ROWS), device=x.device).long()
        ur = u[rows]
        _, residual = product_units(ur, torch.bfloat16)
        s = ur @ u.T  # [r, m]
        s[torch.arange(rows.shape[0], device=x.device), rows] = _NEG_INF
        if keep is None:
            assert tau is not None
            level = torch.tensor(tau, dtype=torch.float64)
        else:
            level = torch.quantile(s.amax(dim=1).double(), min(1.0, int(keep[b]) / m))
        half = (1 if keep is None else 2) * error_bound(d, torch.bfloat16, x.device, residual).at(level)
        near += int(((s.double() - level).abs() <= half).sum())
        total += s.numel()
    return total > 0 and near > _CROWDED_SHARE * total


def _band_room(B: int, n: int, d: int, sim_dtype: torch.dtype, budget: bool) -> int:
    """The fixed capacity of a sync-free band over B sets of n tokens of dim d."""
    # A budget's band reaches two bounds out (``_budget_search``).
    return band_capacity(B * n * (n - 1) // 2, apriori_halfwidth(d, sim_dtype) * (2 if budget else 1))


def _threshold_search(g: _Graph, tau: torch.Tensor) -> tuple[Components, torch.Tensor | None, torch.Tensor]:
    """Components of ``W > tau`` ([B]) -> (components, degrees when sampling took them first, pairs in the band)."""
    in_band = torch.zeros((), dtype=torch.int64, device=g.W.device)
    if g.bound is not None:
        refine = None if g.fine is None else (g.fine, None)
        in_band = resolve_band_(
            g.W, g.x, tau[:, None], g.bound.at(tau)[:, None], capacity=g.capacity, refine=refine, units=g.units
        )
    edges, degree = g.W, None
    if g.sampled is not None:
        # Degrees use every pair and are known before the components: take them,
        # then drop the unsampled edges in place rather than from a copy of W.
        degree = degrees(g.W, tau)
        edges = drop_unsampled_(g.W, g.sampled)
    return threshold_components(edges, tau, g.valid, g.reads), degree, in_band


def _budget_search(
    g: _Graph, keep: torch.Tensor, group: torch.Tensor | None, exact_degrees: bool = True
) -> tuple[Components, torch.Tensor | None, torch.Tensor]:
    """Exactly keep[g] components per group of sets (single-linkage cut) -> (components,
    degrees if the search counted them, pairs in the band)."""
    sampled = g.sampled
    if g.bound is not None and sampled is None and g.capacity is None:
        return _budget_by_band(g, keep, group, exact_degrees)

    def cut_edges() -> torch.Tensor:
        return g.W if sampled is None else drop_unsampled_(g.W.clone(), sampled)

    def cut_levels(edges: torch.Tensor) -> torch.Tensor:  # [B, 2]
        return torch.stack(budget_levels(edges, g.valid, keep, group, g.reads), dim=1)

    in_band = torch.zeros((), dtype=torch.int64, device=g.W.device)
    edges = cut_edges()
    if g.bound is not None:
        levels = cut_levels(edges)
        in_band = _resolve_cut_band_(
            g.W, g.x, g.units, levels, g.bound, g.capacity, g.fine, lambda: cut_levels(cut_edges())
        )
        if sampled is not None and g.reads.read(True, lambda: bool(in_band)):
            edges = cut_edges()
    return budget_components(edges, g.valid, keep, group, g.reads), None, in_band


def _budget_by_band(
    g: _Graph, keep: torch.Tensor, group: torch.Tensor | None, exact_degrees: bool = True
) -> tuple[Components, torch.Tensor | None, torch.Tensor]:
    """``_budget_search`` without sampling, data-sized: one spanning forest of W, then the cut on the band.

    1. The cut's levels from the products' spanning forest (``graph.budget_levels``).
    2. One scan of W's upper triangle finds the band's pairs, counts each row's entries
       above it and, with float32 products, lists the pairs above it where they are at
       most ``exact._HIGH_PER_ROW`` per row; the components above the band are theirs
       (``_components_of_pairs``), else one threshold search on W (reusing the forest's
       row maxima) finds them, before the band changes W.
    3. The band's pairs between two of those components get their exact values (with
       low-precision products all of them, narrowed first: ``resolve_band_``); the cut
       is taken on the small graph of the components that band pairs join
       (``tiled.cut_band_graph``, as the strip-by-strip path does), one group at a time.
    4. With float32 products, the band's pairs inside one component join nothing and
       decide only degrees: those within one bound of the exact cut get their exact
       values (without ``exact_degrees``, only those that could change a component's
       representative), and the degrees are corrected where that moves a pair across
       the cut (``_count_late_pairs_``).

    It is ``budget_components`` on the resolved W, without its second spanning forest:
    pairs above the band are joined by both, pairs below it can decide nothing, so the
    two agree whenever the resolved W's levels lie inside the band, which they do
    (within one bound of the products' ones, the band reaches two). With low-precision
    products the band is the narrowed one around the float32 levels, and the wide band's
    pairs above it are joined first. Where a level is not finite or a group cannot be
    cut there (checked), ``budget_components`` runs on the resolved W. The degrees come
    from the band's scan: pairs above the band, plus band pairs above the cut.
    """
    W, valid = g.W, g.valid
    B = W.shape[0]
    grp = torch.arange(B, device=W.device) if group is None else group
    first_best = W.max(dim=-1)  # both searches start from the row maxima
    levels = torch.stack(budget_levels(W, valid, keep, grp, first_best=first_best), dim=1)  # [B, 2]
    assert g.bound is not None
    halfwidth, refine = 2 * g.bound.at(levels), None
    relevels: list[torch.Tensor] = []
    if g.fine is not None:
        # Low-precision products: the band is narrowed around the levels of its float32
        # values (``_resolve_cut_band_``); they are kept for the cut below.
        halfwidth = halfwidth + 2 * g.fine

        def relevel() -> torch.Tensor:
            relevels.append(torch.stack(budget_levels(W, valid, keep, group), dim=1))
            return relevels[-1]

        refine = (2 * g.fine, relevel)
    finite = bool(torch.isfinite(levels).all()) and bool((valid > 0).all())
    lo, hi = band_limits(levels, halfwidth, W.dtype)  # [B]: resolve_band_'s interval
    found: list[torch.Tensor] = []
    counts = torch.empty(B, W.shape[1], dtype=torch.int32, device=W.device)
    unit = g.units is not None
    flat = (g.x if g.units is None else g.units).reshape(B * W.shape[1], -1)

    def search_above() -> torch.Tensor:  # the components of W above the band, on the products
        return threshold_components(W, hi, valid, first_best=first_best).labels

    late = None
    if refine is None:
        # Float32 products. The scan also lists the pairs above the band when they are
        # not too many: their components are those of W above the band. A band pair
        # inside one of them joins nothing, so it keeps its product's value until the
        # cut is known (step 4); the others get their canonical values now.
        high: list[torch.Tensor] = []
        in_band = resolve_band_(W, g.x, levels, halfwidth, pairs=found, above=counts, find_only=True, high=high)
        above = None
        if finite:
            # W still holds the products: the search sees what the scan saw.
            above = _components_of_pairs(high[0], B, W.shape[1]) if high else search_above()
            b, i, j = found[0].unbind(1)
            inside_one = above[b, i] == above[b, j]
            late = found[0][inside_one]
            resolve_pairs_(W, flat, unit, found[0][~inside_one])
        else:
            resolve_pairs_(W, flat, unit, found[0])
    else:
        above = search_above() if finite else None
        in_band = resolve_band_(W, g.x, levels, halfwidth, refine=refine, units=g.units, pairs=found, above=counts)
    if above is not None:
        if relevels and g.fine is not None:  # the narrowed band, inside the wide one
            lo2, hi2 = band_limits(relevels[0], (2 * g.fine).expand_as(relevels[0]), W.dtype)
            lo, hi = torch.maximum(lo, lo2), torch.minimum(hi, hi2)
        cut = _cut_groups(W, valid, keep, grp, above, found[0], lo, hi, counts)
        if cut is not None:
            if late is not None:
                rep_only = None if exact_degrees else (cut[0].labels, valid)
                _count_late_pairs_(W, flat, unit, late, cut[0].cut_threshold, g.bound, cut[1], rep_only)
            return cut[0], cut[1], in_band
    if late is not None:
        resolve_pairs_(W, flat, unit, late)  # the whole matrix decides: every pair exact
    return budget_components(W, valid, keep, group), None, in_band


def _components_of_pairs(pairs: torch.Tensor, B: int, n: int) -> torch.Tensor:
    """pairs: [P, 3] edges (b, i, j) of B graphs of n vertices -> [B, n] labels: the smallest
    vertex of each one's component (isolated vertices and padding: themselves)."""
    b, i, j = pairs.unbind(1)
    root = union_pairs(torch.arange(B * n, device=pairs.device), b * n + i, b * n + j)
    return root.view(B, n) - torch.arange(B, device=pairs.device)[:, None] * n


def _count_late_pairs_(
    W: torch.Tensor,
    flat: torch.Tensor,
    unit: bool,
    late: torch.Tensor,
    cut_t: torch.Tensor,
    bound: ErrorBound,
    degree: torch.Tensor | None,
    rep_only: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> None:
    """Step 4 of ``_budget_by_band``: the band pairs that kept their products' values
    (late: [P, 3], (b, i, j) inside one component above the band) decide only degrees,
    whether they lie above the cut (cut_t: [B], exact). Those within one bound of it get
    their canonical values (in W, from which degrees are counted when ``degree`` is
    None); degree ([B, n], counted on the products' values) is corrected in place where
    that moves a pair across the cut. rep_only: (labels [B, n] of the cut's components,
    valid [B]) when only the representatives need exact degrees: then only the pairs of
    components whose highest-degree member they could change are resolved.
    """
    b, i, j = late.unbind(1)
    product = W[b, i, j]
    near = (product.double() - cut_t[b].double()).abs() <= bound.at(cut_t)[b]
    pairs, before = late[near], (product > cut_t[b])[near]
    if rep_only is not None and degree is not None:
        undecided = _may_move_representatives(pairs, before, degree, *rep_only)
        pairs, before = pairs[undecided], before[undecided]
    resolve_pairs_(W, flat, unit, pairs)
    if degree is None:
        return
    b, i, j = pairs.unbind(1)
    change = (W[b, i, j] > cut_t[b]).to(torch.int64) - before.to(torch.int64)
    n = degree.shape[1]
    flat_degree = degree.view(-1)
    flat_degree.index_add_(0, b * n + i, change)
    flat_degree.index_add_(0, b * n + j, change)


def _may_move_representatives(
    pairs: torch.Tensor, before: torch.Tensor, degree: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """pairs: [P, 3] (b, i, j) inside one component each, whose side of the cut is
    uncertain (before: [P] bool, the products' side); degree: [B, n] counted on those
    sides; labels: [B, n] components; valid: [B] -> [P] bool: the pairs of components
    whose representative (highest degree, then smallest index: ``order_components``)
    their canonical values could change.

    Each such pair may add or remove one neighbour at both its ends, so a member's true
    degree lies between its count less the uncertain pairs counted above the cut and its
    count plus those counted below. A component is decided when its member with the
    highest lower end ranks above every other member's upper end.
    """
    B, n = degree.shape
    b, i, j = pairs.unbind(1)
    ends = torch.cat([b * n + i, b * n + j])
    counted = before.to(torch.int64).repeat(2)
    down = torch.zeros(B * n, dtype=torch.int64, device=degree.device).index_add_(0, ends, counted)
    up = torch.zeros(B * n, dtype=torch.int64, device=degree.device).index_add_(0, ends, 1 - counted)
    valid = to_device(valid, degree.device)
    low = member_rank(degree - down.view(B, n), valid).reshape(-1)
    high = member_rank(degree + up.view(B, n), valid).reshape(-1)
    comp = (labels + torch.arange(B, device=degree.device)[:, None] * n).reshape(-1)
    top = torch.full((B * n,), -1, dtype=torch.int64, device=degree.device).scatter_reduce_(0, comp, low, "amax")
    leader = low == top[comp]  # one member per component: the ranks are distinct
    rival = torch.where(leader, -1, high)
    best_rival = torch.full_like(top, -1).scatter_reduce_(0, comp, rival, "amax")
    return (top <= best_rival)[comp[b * n + i]]


def _cut_groups(
    W: torch.Tensor,
    valid: torch.Tensor,
    keep: torch.Tensor,
    group: torch.Tensor,
    above: torch.Tensor,
    pairs: torch.Tensor,
    lo: torch.Tensor,
    hi: torch.Tensor,
    counts: torch.Tensor,
) -> tuple[Components, torch.Tensor | None] | None:
    """Step 3 of ``_budget_by_band``: every group's cut on its band graph -> (components,
    [B, n] degrees or None where a group cut nothing), or None if a group fails its check.

    above: [B, n] labels of the components of W above the scanned band (before the band
    changed W); pairs: [P, 3] the scanned band's (b, i, j), i < j, whose values W now
    holds; lo, hi: [B] the band of the cut, inside the scanned one (pairs above it are
    joined first, pairs below it dropped); counts: [B, n] each row's entries above the
    scanned band. A group's graphs are taken as one vertex set, graph after graph (the
    tie order of ``budget_components``: graphs in order, then their smallest vertex).
    """
    B, n = above.shape
    device = W.device
    real = torch.arange(n, device=device) < valid[:, None]  # [B, n]
    graph_of = torch.arange(B, device=device)[:, None].expand(B, n)[real]  # [R] graph of each real vertex
    start = valid.cumsum(0) - valid  # [B] first flat place of each graph
    comp = (above + torch.arange(B, device=device)[:, None] * n)[real]  # [R] component, unique per graph
    place = torch.arange(comp.shape[0], device=device)
    smallest = torch.full((B * n,), comp.shape[0], dtype=torch.int64, device=device)
    smallest.scatter_reduce_(0, comp, place, "amin")
    b, i, j = pairs.unbind(1)
    ends = torch.stack([start[b] + i, start[b] + j], dim=1)
    values = W[b, i, j]
    joined = values > hi[b]
    root = union_pairs(smallest[comp], ends[joined, 0], ends[joined, 1])  # each vertex's smallest member
    # Degrees: entries above the scanned band, plus the pairs joined here, at both ends.
    strong = counts[real].to(torch.int64)
    joined_ends = ends[joined].reshape(-1)
    strong.index_add_(0, joined_ends, torch.ones_like(joined_ends))
    inside = ~joined & (values >= lo[b])
    ends, values, edge_group = ends[inside], values[inside], group[b[inside]]
    final = torch.empty_like(place)  # group-wide component numbers
    degree = torch.empty_like(place)
    levels = W.new_empty(B, 2)
    sizes, groups = valid.tolist(), group.tolist()
    nothing_cut = False
    for gi, k in enumerate(keep.tolist()):
        members = [m for m in range(B) if groups[m] == gi]
        if not members:
            continue
        first, last = int(start[members[0]]), int(start[members[-1]]) + sizes[members[-1]]
        mine = edge_group == gi
        band = (float(lo[members[0]]), float(hi[members[0]]), 0.0)
        cut = cut_band_graph(root[first:last] - first, ends[mine] - first, values[mine], k, strong[first:last], band)
        if cut is None:
            return None
        comps, deg = cut
        nothing_cut |= not bool(torch.isfinite(comps.cut_threshold).all())
        final[first:last] = comps.labels[0]
        degree[first:last] = deg[0]
        levels[members] = torch.cat([comps.keep_threshold, comps.cut_threshold])
    # A graph's components are a run of its group's numbers: renumber them from 0.
    low = torch.full((B,), comp.shape[0], dtype=torch.int64, device=device).scatter_reduce_(0, graph_of, final, "amin")
    top = torch.full((B,), -1, dtype=torch.int64, device=device).scatter_reduce_(0, graph_of, final, "amax")
    labels = torch.zeros(B, n, dtype=torch.int64, device=device)
    labels[real] = final - low[graph_of]
    out_degree = None
    if not nothing_cut:  # nothing cut: every pair counts, which the scan did not count
        out_degree = torch.ones(B, n, dtype=torch.int64, device=device)
        out_degree[real] = degree
    return Components(labels, (top - low + 1).clamp(min=0), levels[:, 0], levels[:, 1]), out_degree


def _resolve_cut_band_(
    W: torch.Tensor,
    x: torch.Tensor,
    units: torch.Tensor | None,
    levels: torch.Tensor,
    bound: ErrorBound,
    capacity: int | None,
    fine: torch.Tensor | None,
    relevel: Callable[[], torch.Tensor],
) -> torch.Tensor:
    """Make exact every pair of W [B, n, n] that can decide a cut whose product levels are levels [B, 2].

    The exact levels lie within one bound of the products' ones, so a band of two bounds
    holds every pair that can decide the exact cut (``exact.py``). With low-precision
    products (``fine``: the float32 bound) the band is narrowed by float32 values and the
    levels re-read from them (``relevel``); those lie within one fine bound of the exact
    ones only if the band reaches two fine bounds further. units: x's float32 unit
    vectors, or None. Returns the pairs in the band.
    """
    halfwidth, refine = 2 * bound.at(levels), None
    if fine is not None and capacity is None:
        halfwidth, refine = halfwidth + 2 * fine, (2 * fine, relevel)
    return resolve_band_(W, x, levels, halfwidth, capacity=capacity, refine=refine, units=units)


def _tiled_sets(
    x: torch.Tensor,
    valid: torch.Tensor,
    tau: float,
    approximate: bool,
    epsilon: float,
    seed: int,
    group: torch.Tensor | None,
    sim_dtype: torch.dtype,
    keep: torch.Tensor | None = None,
) -> SetComponents:
    """Components of B sets of raw tokens, one set at a time, strip by strip.

    Threshold mode, or with ``keep`` ([B], one budget per set) a budget cut. valid,
    group, keep: on the CPU.
    """
    B, n, _ = x.shape
    sampled = to_device(sample_mask(valid, n, epsilon, seed, group), x.device) if approximate else None
    labels = torch.zeros(B, n, dtype=torch.int64, device=x.device)
    degree = torch.ones(B, n, dtype=torch.int64, device=x.device)
    counts, reps, levels = [], [], []
    for b, m in enumerate(valid.tolist()):
        if keep is None:
            comps, deg = tiled_threshold_components(
                x[b, :m], tau, None if sampled is None else sampled[b, :m], sim_dtype=sim_dtype
            )
        else:
            comps, deg = tiled_budget_components(x[b, :m], int(keep[b]), sim_dtype=sim_dtype)
        levels.append(torch.cat([comps.keep_threshold, comps.cut_threshold]))
        lab, rep = order_components(comps, deg, to_device(valid[b : b + 1], x.device))
        labels[b, :m] = lab[0]
        degree[b, :m] = deg[0]
        counts.append(comps.count)
        reps.append(rep[0])
    reps_padded = torch.nn.utils.rnn.pad_sequence(reps, batch_first=True, padding_value=-1)
    keep_t, cut_t = torch.stack(levels).to(unit_dtype(sim_dtype)).unbind(1)
    unresolved = torch.zeros((), dtype=torch.bool, device=x.device)
    return SetComponents(labels, reps_padded, torch.cat(counts), degree, keep_t, cut_t, unresolved)
