"""Exact decisions: bfloat16 and float32 products give identical results, the canonical ones."""

from __future__ import annotations

import importlib
import itertools

import pytest
import torch
from test_core_invariants import _union_find_labels, canonical, clustered_video

import llava_scissor
from llava_scissor.core.compress import merge_into
from llava_scissor.core.engine import exact as exact_module
from llava_scissor.core.engine.exact import (
    canonical_similarity,
    error_bound,
    float32_similarity,
    product_units,
    token_norms,
    unit_vectors,
)
from llava_scissor.core.engine.gram import padded_columns
from llava_scissor.core.engine.graph import budget_components
from llava_scissor.core.engine.sets import components_of_sets, similarity_graph


def near_tau_tokens(n: int, dim: int, tau: float, seed: int, spread: float = 1e-3) -> torch.Tensor:
    """[n, dim] tokens whose pairwise cosines are all within about 2 * spread of tau.

    x_k = a_k e + sqrt(1 - a_k^2) v_k with orthonormal e, v_k: cos(x_i, x_j) = a_i a_j
    exactly, and a_k = sqrt(tau) (1 + eps_k) with tiny eps_k (some below float32 error).
    """
    g = torch.Generator().manual_seed(seed)
    groups = []
    for m in [dim - 1] * (n // (dim - 1)) + [n % (dim - 1)]:  # more tokens than dims: several groups
        if m == 0:
            continue
        q, _ = torch.linalg.qr(torch.randn(dim, m + 1, generator=g, dtype=torch.float64))
        e, v = q[:, 0], q[:, 1:].T  # [dim], [m, dim]
        scale = torch.tensor([spread, 1e-5, 1e-7])[torch.randint(0, 3, (m,), generator=g)].double()
        a = tau**0.5 * (1 + scale * (2 * torch.rand(m, generator=g, dtype=torch.float64) - 1))
        groups.append(a[:, None] * e + (1 - a[:, None] ** 2).sqrt() * v)
    x = torch.cat(groups)
    return (x * (0.5 + torch.rand(n, 1, generator=g, dtype=torch.float64))).float()


def canonical_matrix(x: torch.Tensor) -> torch.Tensor:
    """x: [n, d] -> [n, n] canonical similarities (diagonal -inf)."""
    n = x.shape[0]
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    C = canonical_similarity(x, i.flatten(), x, j.flatten()).view(n, n)
    return C.fill_diagonal_(float("-inf"))


def same_result(a, b) -> None:
    for name in (
        "tokens",
        "assignment",
        "representatives",
        "sizes",
        "spatial_tokens",
        "spatial_labels",
        "temporal_labels",
        "spatial_representatives",
    ):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.spatial_threshold == b.spatial_threshold and a.temporal_threshold == b.temporal_threshold


# --- the canonical similarity --------------------------------------------------------


def test_canonical_similarity_is_batch_invariant_symmetric_and_accurate():
    x = torch.randn(50, 300, generator=torch.Generator().manual_seed(0))
    x[7] = 0.0
    i = torch.randint(0, 50, (400,), generator=torch.Generator().manual_seed(1))
    j = torch.randint(0, 50, (400,), generator=torch.Generator().manual_seed(2))
    full = canonical_similarity(x, i, x, j)
    # Any subset, any order, any pairing gives the same bits.
    for k in (1, 3, 257):
        assert torch.equal(canonical_similarity(x, i[:k], x, j[:k]), full[:k])
    assert torch.equal(canonical_similarity(x, j.flip(0), x, i.flip(0)), full.flip(0))
    ref = torch.nn.functional.cosine_similarity(x[i].double(), x[j].double(), dim=-1, eps=1e-300)
    ref[(i == 7) | (j == 7)] = 0.0
    assert float((full.double() - ref).abs().max()) < 1e-6  # float32 unit vectors, then exact
    assert bool((full[(i == 7) | (j == 7)] == 0).all())


def _tree_values(a, i, b, j) -> torch.Tensor:
    """The canonical values by their definition (the fixed tree on every pair)."""
    return canonical_similarity(a, i, b, j, dedupe=False)


@pytest.mark.parametrize("dim", [5, 300, 3584])
def test_certified_canonical_values_are_the_tree_ones(dim):
    # The float64 sampled product, certified against float32 rounding boundaries,
    # gives the tree's bits; across sets (a is not b), with repeated pairs and rows.
    g = torch.Generator().manual_seed(dim)
    a, b = torch.randn(60, dim, generator=g), torch.randn(40, dim, generator=g) * 3
    b[:10] = a[:10] + 1e-3 * torch.randn(10, dim, generator=g)  # cosines near 1
    i = torch.randint(0, 60, (700,), generator=g)
    j = torch.randint(0, 40, (700,), generator=g)
    i[-50:], j[-50:] = i[:50], j[:50]
    assert torch.equal(canonical_similarity(a, i, b, j), _tree_values(a, i, b, j))
    ua, ub = unit_vectors(a, torch.float32), unit_vectors(b, torch.float32)
    assert torch.equal(canonical_similarity(ua, i, ub, j, unit=True), _tree_values(a, i, b, j))


def test_certified_canonical_falls_back_to_the_tree_at_rounding_boundaries(monkeypatch):
    # Exact zeros (disjoint supports) and cosines far below a float32 ulp of the
    # bound cannot be certified: those pairs take the tree, and the values still agree.
    x = torch.zeros(6, 64)
    x[0, :3] = 1.0
    x[1, 3:5] = 2.0
    x[2, 0], x[2, 40] = 1e-9, 1.0  # cosine about 1e-9 with row 0
    x[3:] = torch.randn(3, 64, generator=torch.Generator().manual_seed(0))
    i, j = torch.tensor([0, 0, 3, 4, 1]), torch.tensor([1, 2, 4, 5, 2])
    calls = []
    tree = exact_module._tree_canonical

    def counting_tree(ua, ub):
        calls.append(ua.shape[0])
        return tree(ua, ub)

    monkeypatch.setattr(exact_module, "_tree_canonical", counting_tree)
    got = canonical_similarity(x, i, x, j)
    assert calls and calls[0] >= 2  # the exact zero and the tiny cosine at least
    monkeypatch.setattr(exact_module, "_tree_canonical", tree)
    assert torch.equal(got, _tree_values(x, i, x, j))
    assert got[0] == 0.0


def test_float32_similarity_is_within_the_float32_bound_of_canonical():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(120, 896, generator=g)
    i = torch.randint(0, 120, (2000,), generator=g)
    j = torch.randint(0, 120, (2000,), generator=g)
    approx = float32_similarity(x, i, x, j)
    exact = canonical_similarity(x, i, x, j)
    bound = float(error_bound(896, torch.float32, torch.device("cpu"), 0.0).base)
    assert float((approx - exact).abs().max()) <= bound
    # Pair order and precomputed unit vectors do not change a pair's value.
    perm = torch.randperm(2000, generator=g)
    assert torch.equal(float32_similarity(x, i[perm], x, j[perm]), approx[perm])
    u = unit_vectors(x, torch.float32)
    assert torch.equal(float32_similarity(u, i, u, j, unit=True), approx)
    y = torch.randn(30, 896, generator=g)
    jy = j % 30
    cross = float32_similarity(x, i, y, jy)
    assert float((cross - canonical_similarity(x, i, y, jy)).abs().max()) <= bound


def test_unit_vectors_do_not_depend_on_the_batch():
    x = torch.randn(300, 77, dtype=torch.float64)
    u = unit_vectors(x, torch.float32)
    for rows in (slice(0, 1), slice(5, 9), slice(100, 300)):
        assert torch.equal(unit_vectors(x[rows], torch.float32), u[rows])
    assert torch.allclose(u, torch.nn.functional.normalize(x.float(), dim=-1), atol=1e-6)
    assert torch.equal(unit_vectors(torch.zeros(2, 5), torch.float32), torch.zeros(2, 5))


def test_unit_vectors_take_the_token_norms_bitwise():
    """``compress`` measures every token's norm once (its NaN / zero checks) and the unit
    vectors of the spatial and merge steps take those norms: bitwise the ones they would
    compute, and taken only for tokens already in the unit vectors' dtype."""
    x = torch.randn(3, 50, 77) * 10
    norms = token_norms(x)
    want = unit_vectors(x, torch.float32)
    assert torch.equal(unit_vectors(x, torch.float32, norms=norms), want)
    out = torch.empty(3 * 50, 77)
    assert torch.equal(unit_vectors(x[1:], torch.float32, out=out, norms=norms[1:]), want[1:])
    assert not torch.equal(unit_vectors(x, torch.float32, norms=2 * norms), want)  # they are taken
    low = x.bfloat16()
    assert torch.equal(unit_vectors(low, torch.float32, norms=2 * token_norms(low)), unit_vectors(low, torch.float32))


def test_compress_measures_each_token_norm_once(monkeypatch):
    """A float32 call's spatial and merge steps normalize with the norms its checks took
    (and give the same output as when they compute them)."""
    sets_module = importlib.import_module("llava_scissor.core.engine.sets")
    merge_module = importlib.import_module("llava_scissor.core.engine.merge")
    x = clustered_video(6, 20, 16, seed=0)
    plain = llava_scissor.compress(x, retention=0.3)
    given = {}
    for module, step in ((sets_module, "spatial"), (merge_module, "merge")):

        def spy(t, dtype, out=None, norms=None, step=step):
            given.setdefault(step, []).append((t.shape[-2], norms is not None))
            return unit_vectors(t, dtype, out=out, norms=norms)

        monkeypatch.setattr(module, "unit_vectors", spy)
    same_result(llava_scissor.compress(x, retention=0.3), plain)
    # The frames (20 tokens each, 6 at a time) and the chunks of originals (all 120 at
    # once) take the norms; the spatial tokens and the targets (means) have none.
    assert (20, True) in given["spatial"] and all(taken for rows, taken in given["spatial"] if rows == 20)
    assert given["merge"][1:] == [(120, True)] and not given["merge"][0][1]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("dim", [16, 900])
def test_error_bound_holds(dtype, dim):
    """|product - canonical| <= bound for every pair (the premise of every exact decision)."""
    x = clustered_video(frames=1, n=120, dim=dim, seed=dim)[0]
    u, residual = product_units(unit_vectors(x, torch.float32), dtype)
    W = (u @ u.T).float()
    C = canonical_matrix(x)
    off = ~torch.eye(120, dtype=torch.bool)
    bound = error_bound(dim, dtype, x.device, float(residual)).at(W.double())
    assert bool(((W.double() - C.double()).abs() <= bound)[off].all())


# --- threshold mode: decisions at tau --------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_threshold_components_at_tau_are_the_canonical_ones(seed):
    """Cosines packed around tau: float32 and bfloat16 give union-find on canonical values."""
    tau = [0.9, 0.5, 0.75, 0.3][seed]
    x = near_tau_tokens(60, 96, tau, seed)
    C = canonical_matrix(x)
    expected = _union_find_labels([(a, b) for a, b in (C > tau).nonzero().tolist() if a < b], 60)
    degree = (C > tau).sum(1) + 1
    raw = {}
    for dtype in (torch.float32, torch.bfloat16):
        sc = components_of_sets(x[None], torch.tensor([60]), tau=tau, sim_dtype=dtype)
        assert canonical(sc.labels[0]) == expected
        assert torch.equal(sc.degree[0], degree)
        u, _ = product_units(unit_vectors(x, torch.float32), dtype)
        raw[dtype] = (u @ u.T).float() > tau
    # The inputs do put pairs on different sides for the two raw products.
    assert bool((raw[torch.float32] != raw[torch.bfloat16]).any())


def test_tiled_path_resolves_like_the_in_memory_path():
    x = near_tau_tokens(300, 64, 0.8, 5, spread=3e-3)
    for dtype in (torch.float32, torch.bfloat16):
        ref = components_of_sets(x[None], torch.tensor([300]), tau=0.8, sim_dtype=dtype)
        tiled = components_of_sets(x[None], torch.tensor([300]), tau=0.8, sim_dtype=dtype, max_matrix_bytes=1000)
        assert torch.equal(ref.labels, tiled.labels) and torch.equal(ref.degree, tiled.degree)
        assert torch.equal(ref.representatives, tiled.representatives)


# --- budget mode: the cut's levels ---------------------------------------------------------


@pytest.mark.parametrize("seed", range(10))
def test_tie_split_depends_on_the_partition_only(seed):
    """Changing similarities far above the cut changes Borůvka's contraction order, not the result.

    (Several of these seeds split the ties differently when the open components keep
    their contraction order instead of the canonical one.)
    """
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 30, 30, generator=g)
    W = torch.where(base > 0.97, 2.0 + torch.rand(1, 30, 30, generator=g), torch.where(base > 0.9, 1.0, -1.0))
    W = torch.maximum(W, W.mT)  # symmetric; many exact ties at 1.0
    W.diagonal(dim1=1, dim2=2).fill_(float("-inf"))
    valid = torch.tensor([30])
    n_high = len(set(_union_find_labels([(a, b) for _, a, b in (W > 1.5).nonzero().tolist()], 30)))
    keep = torch.tensor([n_high - 3])  # three joins through the tied edges
    ref = budget_components(W, valid, keep)
    high = W > 1.5
    for s in range(5):
        bumped = torch.where(high, 2.0 + torch.rand(1, 30, 30, generator=torch.Generator().manual_seed(s)), W)
        bumped = torch.where(high, torch.maximum(bumped, bumped.mT), W)
        got = budget_components(bumped, valid, keep)
        assert float(got.keep_threshold[0]) == 1.0 and int(got.count[0]) == n_high - 3
        assert canonical(got.labels[0]) == canonical(ref.labels[0])


@pytest.mark.parametrize("n", [80, 300])  # 300 > gram._TILE: bfloat16 products, band narrowed in float32
@pytest.mark.parametrize("seed", range(3))
def test_budget_cut_near_ties_is_identical(seed, n):
    """Packed cosines make the cut's level a near tie; both dtypes cut at the canonical level."""
    x = near_tau_tokens(n, 96, 0.7, 10 + seed, spread=2e-3)
    C = canonical_matrix(x)
    keeps = (5, n // 2, n - 1)
    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        for keep in keeps:
            sc = components_of_sets(x[None], torch.tensor([n]), tau=0.0, keep=torch.tensor([keep]), sim_dtype=dtype)
            out[dtype, keep] = sc
            # The cut equals the canonical one: every joined pair above cut_t, degree at cut_t.
            assert torch.equal(sc.degree[0], (C > sc.cut_threshold[0]).sum(1) + 1)
            assert bool((C == sc.keep_threshold[0]).any())
            assert int(sc.count[0]) == keep
    for keep in keeps:
        a, b = out[torch.float32, keep], out[torch.bfloat16, keep]
        assert torch.equal(a.labels, b.labels) and torch.equal(a.representatives, b.representatives)
        assert torch.equal(a.keep_threshold, b.keep_threshold) and torch.equal(a.cut_threshold, b.cut_threshold)


# --- the merge step: near-ties of the argmax ----------------------------------------------


@pytest.mark.parametrize(
    ("chunk", "share", "block"),
    [(1024, 0.5, None), (16, 0.5, None), (16, float("inf"), None), (1024, 0.5, 16), (16, float("inf"), 16)],
    ids=[
        "one-chunk",
        "chunks-switch-to-float32",
        "chunks-all-bfloat16",
        "targets-in-column-blocks",
        "chunks-all-bfloat16-in-column-blocks",
    ],
)
def test_merge_argmax_near_ties_are_canonical(monkeypatch, chunk, share, block):
    """Near-tied originals are decided by canonical values, whether their chunk's bfloat16
    products were narrowed in float32 or (once most originals needed it) the rest took
    float32 products, and whether the products ran whole or in column blocks of targets
    (``gram.wide_product_into``: 40 targets in blocks of 16, 16 and 8)."""
    merge_module = importlib.import_module("llava_scissor.core.engine.merge")
    monkeypatch.setattr(merge_module, "_MERGE_CHUNK", chunk)
    monkeypatch.setattr(merge_module, "_NARROWED_SHARE", share)
    if block is not None:
        gram_module = importlib.import_module("llava_scissor.core.engine.gram")
        monkeypatch.setattr(gram_module, "_WIDE_BLOCK", block)
        monkeypatch.setattr(gram_module, "_WIDE_COLUMNS", block)
    g = torch.Generator().manual_seed(3)
    targets = torch.randn(40, 64, generator=g)
    # Originals almost halfway between two targets: their two best cosines nearly tie.
    a = torch.randint(0, 40, (500,), generator=g)
    b = (a + 1 + torch.randint(0, 39, (500,), generator=g)) % 40
    tn = unit_vectors(targets, torch.float32)
    originals = tn[a] + tn[b] + 1e-5 * torch.randn(500, 64, generator=g)
    i, j = torch.meshgrid(torch.arange(500), torch.arange(40), indexing="ij")
    C = canonical_similarity(originals, i.flatten(), targets, j.flatten()).view(500, 40)
    expected = C.argmax(dim=1)  # ties to the smaller index, as the merge step does
    got = {}
    for dtype in (torch.float32, torch.bfloat16):
        merged, assignment = merge_into([originals], [targets], torch.float32, dtype)
        assert torch.equal(assignment[0], expected)
        got[dtype] = merged[0]
    assert torch.equal(got[torch.float32], got[torch.bfloat16])
    raw = {dt: (originals.to(dt) @ targets.to(dt).T).argmax(1) for dt in (torch.float32, torch.bfloat16)}
    assert bool((raw[torch.float32] != raw[torch.bfloat16]).any())  # the raw products disagree


class _MergeProducts:
    """Counts the originals that go through the merge step's products ``[m, d] @ [d, k]``, by dtype.

    k is taken as the product runs it (``gram.padded_columns``: 300 targets as 304 columns on a CPU)."""

    def __init__(self, shape: tuple[int, int]):
        from torch.overrides import TorchFunctionMode

        counter = self
        shape = (shape[0], padded_columns(shape[1], torch.device("cpu")))

        class Mode(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                if getattr(func, "__name__", None) == "mm" and args[1].shape == shape:
                    counter.rows[args[0].dtype] = counter.rows.get(args[0].dtype, 0) + args[0].shape[0]
                return func(*args, **(kwargs or {}))

        self.rows: dict[torch.dtype, int] = {}
        self.mode = Mode()


def _near_tied_originals(targets: torch.Tensor, m: int, g: torch.Generator) -> torch.Tensor:
    """[m, d] originals almost halfway between two of the targets."""
    k = targets.shape[0]
    a = torch.randint(0, k, (m,), generator=g)
    b = (a + 1 + torch.randint(0, k - 1, (m,), generator=g)) % k
    tn = unit_vectors(targets, torch.float32)
    return tn[a] + tn[b] + 1e-5 * torch.randn(m, targets.shape[1], generator=g)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("sync_free", [False, True])
def test_merge_never_assigns_to_the_padding_columns(dtype, sync_free, monkeypatch):
    """On a CPU 300 targets go into the product as 304 columns (``gram.padded_columns``),
    the last four zero rows. Originals opposite to every target have only negative
    similarities, below the padding's 0: the padded columns must still never win, and
    the assignment is the one without padding."""
    from llava_scissor.core.engine import gram as gram_module
    from llava_scissor.core.engine.merge import merge
    from llava_scissor.core.engine.reads import DATA_SIZED, SYNC_FREE

    g = torch.Generator().manual_seed(8)
    targets = torch.rand(300, 16, generator=g) + 0.1  # one orthant
    originals = -(torch.rand(500, 16, generator=g) + 0.1)  # the opposite one
    originals[:50] = -originals[:50]  # and some with positive similarities
    kw = dict(target_count=[torch.tensor(300)], reads=SYNC_FREE) if sync_free else dict(reads=DATA_SIZED)

    def assign() -> torch.Tensor:
        return merge([originals], [targets], torch.float32, dtype, 1 << 30, **kw)[1][0]

    widths = _MergeProducts((16, 300))
    with widths.mode:
        padded = assign()
    assert sum(widths.rows.values()) == 500  # every original went through a 304-column product
    assert int(padded.max()) < 300
    monkeypatch.setattr(gram_module, "_COLUMN_MULTIPLE", 1)
    assert torch.equal(padded, assign())


def test_merge_keeps_bfloat16_products_when_near_ties_have_few_candidates():
    """Every original near-tied between two targets: each has two candidates, whose float32
    values (sampled, not a float32 row) narrow them, so all originals keep bfloat16
    products; the assignment is the float32 one."""
    g = torch.Generator().manual_seed(3)
    targets = torch.randn(300, 64, generator=g)  # enough targets for bfloat16 products
    originals = _near_tied_originals(targets, 900, g)
    seen = _MergeProducts((64, 300))
    with seen.mode:
        _, assignment = merge_into([originals], [targets], torch.float32, torch.bfloat16)
    assert seen.rows == {torch.bfloat16: 900}
    assert torch.equal(assignment[0], merge_into([originals], [targets], torch.float32, torch.float32)[1][0])


def test_merge_takes_float32_after_a_small_bfloat16_chunk_when_candidates_crowd():
    """Targets closer to each other than bfloat16 rounding: every original has them all as
    candidates, and narrowing them costs more than float32 products. The bfloat16 products
    stop after the first ``_PROBE_CHUNK`` originals, the rest take float32 products; the
    assignment is the float32 one."""
    merge_module = importlib.import_module("llava_scissor.core.engine.merge")
    g = torch.Generator().manual_seed(4)
    targets = torch.randn(1, 64, generator=g) + 2e-2 * torch.randn(300, 64, generator=g)
    originals = _near_tied_originals(targets, 400, g)
    seen = _MergeProducts((64, 300))
    with seen.mode:
        _, assignment = merge_into([originals], [targets], torch.float32, torch.bfloat16)
    assert seen.rows == {torch.bfloat16: merge_module._PROBE_CHUNK, torch.float32: 400 - merge_module._PROBE_CHUNK}
    assert torch.equal(assignment[0], merge_into([originals], [targets], torch.float32, torch.float32)[1][0])


# --- whole videos ------------------------------------------------------------------------


def _packed_video(frames: int, n: int, dim: int, seed: int) -> torch.Tensor:
    """Clustered frames plus, in every frame, a block of tokens packed around tau = 0.8."""
    x = clustered_video(frames=frames, n=n, dim=dim, seed=seed)
    for f in range(frames):
        x[f, : n // 2] = near_tau_tokens(n // 2, dim, 0.8, seed * 100 + f, spread=3e-3)
    return x


@pytest.mark.parametrize(
    "options",
    [
        dict(tau=0.8),
        dict(tau=0.8, approximate=True, epsilon=0.3, seed=4),
        dict(retention=0.1),
        dict(retention=0.3, spatial_retention=0.6),
        dict(max_tokens=7),
        dict(tau=0.8, max_matrix_bytes=1 << 20),
    ],
    ids=["tau", "sampled", "retention", "spatial-budget", "max-tokens", "tiled"],
)
def test_bfloat16_compress_is_identical_to_float32(options):
    videos = [_packed_video(5, 36, 96, 1), _packed_video(3, 36, 96, 2), clustered_video(4, 36, 96, seed=3)]
    ref = llava_scissor.compress(videos, similarity_dtype="float32", **options)
    got = llava_scissor.compress(videos, similarity_dtype="bfloat16", **options)
    for a, b in zip(ref, got):
        same_result(a, b)


@pytest.mark.parametrize("seed", range(3))
def test_bfloat16_is_identical_on_random_videos(seed):
    g = torch.Generator().manual_seed(seed)
    x = clustered_video(frames=6, n=49, dim=[32, 200, 640][seed], noise=[0.3, 0.5, 0.8][seed], seed=seed)
    x = x * (0.1 + torch.rand(6, 49, 1, generator=g))  # norms vary
    for options in (dict(tau=0.6 + 0.1 * seed), dict(retention=0.15)):
        same_result(
            llava_scissor.compress(x, similarity_dtype="float32", **options),
            llava_scissor.compress(x, similarity_dtype="bfloat16", **options),
        )


def test_scc_accepts_bfloat16_products():
    x = near_tau_tokens(40, 32, 0.9, 0)
    a = llava_scissor.scc(x, 0.9, similarity_dtype=torch.float32)
    b = llava_scissor.scc(x, 0.9, similarity_dtype=torch.bfloat16)
    assert torch.equal(a.labels, b.labels) and torch.equal(a.degree, b.degree)


def test_similarity_graph_reports_a_bound_per_dtype():
    x = clustered_video(frames=2, n=20, dim=64)
    _, b32, _ = similarity_graph(x, torch.tensor([20, 20]), torch.float32)
    _, b16, _ = similarity_graph(x, torch.tensor([20, 20]), torch.bfloat16)
    _, b64, _ = similarity_graph(x, torch.tensor([20, 20]), torch.float64)
    level = torch.tensor([0.9])
    assert 0 < float(b32.at(level)) < 1e-5 < float(b16.at(level)) < 0.02
    assert float(b64.at(level)) == 0.0


# --- the in-memory budget cut on the band graph --------------------------------------------


def _prototype_sets(seed: int, sets: int, n: int, dim: int = 16) -> torch.Tensor:
    """Tokens copied from 6 integer prototypes plus a little noise on half of them: exact
    ties and near-ties at every level."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.randint(-2, 3, (6, dim), generator=g).float()
    x = protos[torch.randint(0, 6, (sets, n), generator=g)]
    noisy = torch.rand(sets, n, 1, generator=g) < 0.5
    return x + noisy * 1e-4 * torch.randn(sets, n, dim, generator=g)


def test_products_moved_within_their_bound_decide_alike(monkeypatch):
    """Every decision near a level is canonical: a similarity matrix whose entries are
    moved anywhere within the error bound of their canonical values (as another kernel's
    summation order may move them) gives the same labels, degrees and levels. Budgets
    over one and two sets, with band pairs inside a component above the band that lie
    near the cut on either side (their degrees are counted after the cut)."""
    sets_module = importlib.import_module("llava_scissor.core.engine.sets")
    graph, count_late = sets_module.similarity_graph, sets_module._count_late_pairs_
    crossings = []

    def spy(W, flat, unit, late, cut_t, bound, degree, rep_only=None):
        b, i, j = late.unbind(1)
        before = W[b, i, j] > cut_t[b]
        count_late(W, flat, unit, late, cut_t, bound, degree, rep_only)
        crossings.append(int((before != (W[b, i, j] > cut_t[b])).sum()))

    def moved(seed):
        def similarity_graph(x, valid, sim_dtype=torch.float32, norms=None):
            W, bound, units = graph(x, valid, sim_dtype, norms)
            g = torch.Generator().manual_seed(seed)
            for b in range(W.shape[0]):
                noise = 2 * torch.rand(W.shape[1:], generator=g, dtype=torch.float64) - 1
                noise = 0.9 * (noise + noise.T) / 2 * bound.at(torch.zeros(())).item()
                c = canonical_matrix(x[b]).double()
                W[b] = torch.where(torch.isfinite(W[b]), (c + noise).float(), W[b])
            return W, bound, units

        return similarity_graph

    monkeypatch.setattr(sets_module, "_count_late_pairs_", spy)
    for seed in range(4):
        x = torch.stack([near_tau_tokens(300, 32, 0.8, seed), near_tau_tokens(300, 32, 0.8, seed + 10)])
        for valid, keep, group in (
            ([300, 300], [100, 40], None),
            ([300, 290], [150], torch.tensor([0, 0])),
        ):
            args = dict(tau=0.0, keep=torch.tensor(keep), group=group)
            want = components_of_sets(x, torch.tensor(valid), **args)
            with monkeypatch.context() as m:
                m.setattr(sets_module, "similarity_graph", moved(seed))
                got = components_of_sets(x, torch.tensor(valid), **args)
                # Degrees exact only where they pick a representative: the rest is the same.
                rep_only = components_of_sets(x, torch.tensor(valid), exact_degrees=False, **args)
            for name in ("labels", "count", "degree", "representatives", "keep_threshold", "cut_threshold"):
                assert torch.equal(getattr(got, name), getattr(want, name)), (seed, keep, name)
                if name != "degree":
                    assert torch.equal(getattr(rep_only, name), getattr(want, name)), (seed, keep, name)
    assert sum(crossings) > 0, "no pair near the cut moved across it: the late count went untested"


def test_degrees_for_representatives_only_spare_canonical_values_and_pick_the_same(monkeypatch):
    """``exact_degrees=False``: the pairs near the cut inside components whose
    highest-degree member they cannot change keep their products' values (fewer
    canonical values), and the labels and representatives are the exact call's, with
    products moved anywhere within their bound (a wrongly skipped pair would show)."""
    sets_module = importlib.import_module("llava_scissor.core.engine.sets")
    exact = importlib.import_module("llava_scissor.core.engine.exact")
    resolve = exact.resolve_pairs_
    resolved: list[int] = []

    def counting(W, flat, unit, pairs):
        resolved.append(pairs.shape[0])
        return resolve(W, flat, unit, pairs)

    monkeypatch.setattr(sets_module, "resolve_pairs_", counting)
    totals = {}
    for exact_degrees in (True, False):
        resolved.clear()
        x = torch.stack([near_tau_tokens(300, 32, 0.8, s) for s in range(4)])
        sc = components_of_sets(
            x, torch.tensor([300] * 4), tau=0.0, keep=torch.tensor([100, 60, 150, 30]), exact_degrees=exact_degrees
        )
        totals[exact_degrees] = (sum(resolved), sc)
    (n_exact, want), (n_reps, got) = totals[True], totals[False]
    assert n_reps < n_exact
    for name in ("labels", "count", "representatives", "keep_threshold", "cut_threshold"):
        assert torch.equal(getattr(got, name), getattr(want, name)), name


@pytest.mark.parametrize("empty", [True, False])
@pytest.mark.parametrize("rows", [1024, 64, 7])
def test_band_scan_finds_every_band_pair_once_and_counts_the_rest(rows, empty, monkeypatch):
    """The band's scan (``exact._band_pairs``) compares only the upper triangle: it finds
    exactly the pairs i < j with lo <= W <= hi, in (block, graph, row, column) order, the
    pairs above hi likewise (none listed when there are too many), and every row's count
    of entries above hi (both halves of the matrix), for graphs with -inf entries, an
    empty interval (lo > hi) and block sizes that do and do not divide n. Without an empty
    interval the blocks go through one nonzero (``_split_at_level_``) while the pairs
    above hi are listed, and through two masks once there are too many of them."""
    g = torch.Generator().manual_seed(3)
    B, n = 3, 150
    x = torch.nn.functional.normalize(torch.randn(B, n, 8, generator=g), dim=-1)
    W = x @ x.mT
    W = torch.maximum(W, W.mT)
    W.diagonal(dim1=1, dim2=2).fill_(float("-inf"))
    W[:, :, 40:43] = W[:, 40:43, :] = float("-inf")
    lo = torch.tensor([0.2, float("inf") if empty else 0.5, -0.1]).view(B, 1, 1)
    hi = torch.tensor([0.35, float("-inf") if empty else 0.5, 0.0]).view(B, 1, 1)
    above, high = torch.full((B, n), -5, dtype=torch.int32), []
    found = exact_module._band_pairs(W, lo, hi, rows, above, high)
    upper = torch.ones(n, n, dtype=torch.bool).triu(1)
    per_block = rows if B * n * rows <= exact_module._SCAN_ENTRIES else exact_module._SCAN_ENTRIES // (B * n)

    def in_scan_order(mask):
        pairs = (mask & upper).nonzero()
        return pairs[torch.argsort(pairs[:, 1] // per_block, stable=True)]  # blocks of rows first

    want = in_scan_order((W >= lo) & (W <= hi))
    assert want.shape[0] > 0 and torch.equal(found, want)
    assert len(high) == 1 and torch.equal(high[0], in_scan_order(W > hi))
    assert torch.equal(above, (W > hi).sum(-1).to(torch.int32))
    if empty:
        assert above[1, 0] == n - 4  # an empty interval: every finite entry is above hi = -inf
    monkeypatch.setattr(exact_module, "_HIGH_PER_ROW", 1 if empty else 0.3)  # too many above hi
    high, above = [], torch.full((B, n), -5, dtype=torch.int32)
    assert torch.equal(exact_module._band_pairs(W, lo, hi, rows, above, high), want) and high == []
    assert torch.equal(above, (W > hi).sum(-1).to(torch.int32))


def test_components_of_listed_pairs_are_the_union_find_ones():
    """``sets._components_of_pairs``: each vertex's label is the smallest vertex of its
    component in its own graph, as a plain union-find over the pairs gives it."""
    sets_module = importlib.import_module("llava_scissor.core.engine.sets")
    g = torch.Generator().manual_seed(5)
    B, n = 3, 50
    pairs = torch.stack([torch.randint(0, m, (60,), generator=g) for m in (B, n, n)], dim=1)
    labels = sets_module._components_of_pairs(pairs, B, n)
    for b in range(B):
        mine = pairs[pairs[:, 0] == b]
        edges = list(zip(mine[:, 1].tolist(), mine[:, 2].tolist()))
        assert canonical(labels[b]) == _union_find_labels(edges, n)
        assert all(labels[b, v] <= v and labels[b, labels[b, v]] == labels[b, v] for v in range(n))


@pytest.mark.parametrize("seed", range(4))
def test_components_above_the_band_from_listed_pairs_equal_the_search(seed, monkeypatch):
    """The in-memory cut takes the components above its band from the pairs the band's
    scan lists (``sets._components_of_pairs``), or, where there are too many to list,
    from a component search on W: both give the same labels, degrees and levels."""
    sets_module = importlib.import_module("llava_scissor.core.engine.sets")
    n = 300 if seed % 2 else 60
    x = _prototype_sets(seed, 5, n)
    valid = torch.tensor([n, n - 7, n, n - 1, n])
    listed, components_of_pairs = [], sets_module._components_of_pairs
    monkeypatch.setattr(sets_module, "_components_of_pairs", lambda *a: listed.append(1) or components_of_pairs(*a))
    whole, budget_components = [], sets_module.budget_components
    monkeypatch.setattr(sets_module, "budget_components", lambda *a: whole.append(1) or budget_components(*a))
    for keep, group in (([3 * n // 4, n // 3], torch.tensor([0, 0, 0, 1, 1])), ([n // 2] * 5, None)):
        args = dict(tau=0.0, keep=torch.tensor(keep), group=group)
        listed.clear(), whole.clear()
        fast = components_of_sets(x, valid, **args)
        assert listed and not whole, "the listed pairs were not used, or the band's cut fell back"
        with monkeypatch.context() as m:
            m.setattr(exact_module, "_HIGH_PER_ROW", -1)  # none may be listed
            listed.clear()
            searched = components_of_sets(x, valid, **args)
            assert not listed and not whole
        for name in ("labels", "count", "degree", "representatives", "keep_threshold", "cut_threshold"):
            assert torch.equal(getattr(fast, name), getattr(searched, name)), (keep, name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("seed", range(4))
def test_band_graph_cut_equals_the_cut_of_the_resolved_matrix(seed, dtype, monkeypatch):
    """A budget over groups of sets is cut on the band's small graph (``sets._budget_by_band``);
    forcing its fall-back (``budget_components`` on the whole resolved matrix) gives the same
    labels, degrees and levels, with ties, padding and two groups."""
    sets_module = importlib.import_module("llava_scissor.core.engine.sets")
    n = 300 if seed % 2 else 60  # 300 > gram._TILE: bfloat16 products where they are taken
    x = _prototype_sets(seed, 5, n)
    valid = torch.tensor([n, n - 7, n, n - 1, n])
    group = torch.tensor([0, 0, 0, 1, 1])
    cut_groups, tried = sets_module._cut_groups, []
    # Two cuts inside the sets, and one that keeps a component per set (nothing is cut:
    # a level is not finite, so the whole matrix is cut).
    for keep in ([3 * n // 4, n // 3], [n // 2, 5], [3, 2]):
        args = dict(tau=0.0, keep=torch.tensor(keep), group=group, sim_dtype=dtype)
        with monkeypatch.context() as m:
            m.setattr(sets_module, "_cut_groups", lambda *a, keep=keep: tried.append(keep) or cut_groups(*a))
            fast = components_of_sets(x, valid, **args)
        with monkeypatch.context() as m:
            m.setattr(sets_module, "_cut_groups", lambda *a: None)
            whole = components_of_sets(x, valid, **args)
        for name in ("labels", "count", "degree", "representatives", "keep_threshold", "cut_threshold"):
            assert torch.equal(getattr(fast, name), getattr(whole, name)), (keep, name)
    assert len(tried) == 2, "the band graph was not tried on the cuts inside the sets"


def _representatives(degree: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor) -> dict:
    """{(graph, component): its member of highest degree, then smallest index}, by a loop."""
    out: dict = {}
    for b in range(degree.shape[0]):
        for i in range(int(valid[b])):
            key, c = (int(degree[b, i]), -i), (b, int(labels[b, i]))
            if c not in out or key > out[c][0]:
                out[c] = (key, i)
    return {c: v[1] for c, v in out.items()}


def test_a_representative_called_decided_survives_every_side_of_its_uncertain_pairs():
    """``sets._may_move_representatives`` is sound: on small random graphs, every
    component it leaves out (decided) keeps its representative (highest degree, then
    smallest index) for every side of the cut its uncertain pairs can take, and the
    pairs it keeps are exactly those of the other components."""
    sets_module = importlib.import_module("llava_scissor.core.engine.sets")
    g = torch.Generator().manual_seed(0)
    B, n = 2, 7
    decided_seen = undecided_seen = 0
    for _ in range(60):
        valid = torch.tensor([n, n - 2])
        labels = torch.randint(0, 3, (B, n), generator=g)
        labels[1, n - 2 :] = 0  # padding
        pairs = []
        for b in range(B):
            for i in range(int(valid[b])):
                for j in range(i + 1, int(valid[b])):
                    if labels[b, i] == labels[b, j] and torch.rand((), generator=g) < 0.3:
                        pairs.append((b, i, j))
        if not pairs:
            continue
        pairs_t = torch.tensor(pairs)
        before = torch.rand(len(pairs), generator=g) < 0.5
        base = torch.randint(1, 4, (B, n), generator=g)
        base[1, n - 2 :] = 9  # padding ranks nowhere, whatever its degree
        degree = base.clone()
        for (b, i, j), above in zip(pairs, before.tolist()):
            degree[b, i] += above
            degree[b, j] += above
        undecided = sets_module._may_move_representatives(pairs_t, before, degree, labels, valid)

        comp_of = [(b, int(labels[b, i])) for b, i, _ in pairs]
        for c in set(comp_of):
            mine = [p for p, cc in enumerate(comp_of) if cc == c]
            flags = {bool(undecided[p]) for p in mine}
            assert len(flags) == 1  # a component's pairs are kept or left out together
            if flags == {True}:
                undecided_seen += 1
                continue
            decided_seen += 1
            for sides in itertools.product((False, True), repeat=len(mine)):
                deg = base.clone()
                for p, above in enumerate(before.tolist()):
                    side = sides[mine.index(p)] if p in mine else above
                    b, i, j = pairs[p]
                    deg[b, i] += side
                    deg[b, j] += side
                assert _representatives(deg, labels, valid)[c] == _representatives(degree, labels, valid)[c]
    assert decided_seen > 20 and undecided_seen > 20
