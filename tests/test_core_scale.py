"""Long-video path: strips instead of the full matrix give the same result."""

from __future__ import annotations

import importlib

import pytest
import torch
from test_core_invariants import kruskal_kept

import llava_scissor
from llava_scissor import ScissorError
from llava_scissor.core.engine.exact import unit_vectors
from llava_scissor.core.engine.sets import components_of_sets
from llava_scissor.core.engine.tiled import tiled_threshold_components

SMALL = 1 << 20  # 1 MiB: forces strips for sets of more than 512 tokens


def video(frames=12, n=64, dim=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(20, dim, generator=g)
    pick = torch.randint(0, 20, (frames, n), generator=g)
    noise = 0.2 + 0.4 * torch.rand(20, generator=g)[pick][..., None]
    return centers[pick] + noise * torch.randn(frames, n, dim, generator=g)


@pytest.mark.parametrize("approximate", [False, True])
def test_strips_equal_full_matrix(approximate):
    x = video()
    kw = dict(tau=0.95, approximate=approximate, epsilon=0.6, seed=5)
    full = llava_scissor.compress(x, **kw)
    assert full.num_spatial_tokens**2 * 4 > SMALL  # the strip path is really taken
    tiled = llava_scissor.compress(x, max_matrix_bytes=SMALL, **kw)
    for field in ("tokens", "assignment", "representatives", "spatial_labels", "temporal_labels"):
        assert torch.equal(getattr(full, field), getattr(tiled, field)), field


def test_tiled_components_match_in_memory_on_one_set():
    xn = unit_vectors(video(frames=1, n=1500, dim=16, seed=2)[0], torch.float32)
    comps, degree = tiled_threshold_components(xn, 0.8, tile=256)
    ref = components_of_sets(xn[None], torch.tensor([1500]), tau=0.8)
    assert int(comps.count) == int(ref.count)
    assert torch.equal(degree, ref.degree)
    # Same partition (labels may be named differently before ordering).
    pair = comps.labels[0] * 10_000 + ref.labels[0]
    assert torch.unique(pair).numel() == int(ref.count)


def test_merge_in_chunks_equals_merge_at_once():
    x = video(frames=30, n=64)  # 1920 originals
    a = llava_scissor.compress(x, tau=0.8, spatial=False)  # K large enough to chunk
    b = llava_scissor.compress(x, tau=0.8, spatial=False, max_matrix_bytes=SMALL)
    assert torch.equal(a.assignment, b.assignment)
    assert torch.equal(a.tokens, b.tokens)


@pytest.mark.parametrize("n", [50, 150])  # one full product; strips of 64 columns and their mirror
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_chunked_normalization_is_bitwise_the_plain_one(dtype, n, monkeypatch):
    """The spatial gram normalizes a few frames at a time and the merge a chunk at a time;
    both must see exactly the unit vectors (and so the similarities) of one normalize call."""
    sets_module = importlib.import_module("llava_scissor.core.engine.sets")

    x = video(frames=7, n=n, dim=24, seed=3)
    x[2, 5] = 0.0  # a zero vector stays zero, in chunks too
    monkeypatch.setattr(sets_module, "_CHUNK_BYTES", 1)  # one frame per chunk
    g, _, _ = sets_module.similarity_graph(x, torch.full((7,), n), dtype)
    u = unit_vectors(x, dtype)
    ref = sets_module.symmetric_gram(u)
    assert torch.equal(ref, ref.mT)  # exactly symmetric, every entry written
    torch.testing.assert_close(ref, u @ u.mT)
    ref.diagonal(dim1=1, dim2=2).fill_(float("-inf"))
    assert torch.equal(g, ref)
    buf = torch.empty(64, 24, dtype=dtype)
    flat = x.reshape(-1, 24)
    for start in (0, 37, 300):
        got = unit_vectors(flat[start : start + 50], buf.dtype, out=buf)
        assert torch.equal(got, unit_vectors(flat[start : start + 50], dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_wide_products_in_column_blocks_fill_every_column_in_place(dtype, monkeypatch):
    """The merge step's wide products go in column blocks of targets on a CPU
    (``gram.wide_product_into``): every block lands in its own columns of the caller's
    buffer, with the values of one product."""
    gram_module = importlib.import_module("llava_scissor.core.engine.gram")
    monkeypatch.setattr(gram_module, "_WIDE_BLOCK", 16)
    monkeypatch.setattr(gram_module, "_WIDE_COLUMNS", 16)
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(30, 24, generator=g).to(dtype), torch.randn(40, 24, generator=g).to(dtype)
    buf = torch.full((30 * 40 + 7,), float("nan"), dtype=dtype)
    out = buf[: 30 * 40].view(30, 40)
    gram_module.wide_product_into(a, b, out)  # blocks of 16, 16 and 8 columns
    torch.testing.assert_close(out.float(), a.float() @ b.float().T, rtol=1e-2, atol=1e-2)  # in the caller's buffer
    assert torch.isnan(buf[30 * 40 :]).all()  # nothing written past the product


def test_products_pad_their_columns_to_sixteen_where_that_adds_little():
    """``gram.padded_columns``: on a CPU up to a multiple of 16 where that adds at most a
    sixteenth of the columns; elsewhere (a GPU, here the meta device) never."""
    from llava_scissor.core.engine.gram import padded_columns

    cpu, meta = torch.device("cpu"), torch.device("meta")
    got = {k: padded_columns(k, cpu) for k in (1, 4, 100, 127, 128, 188, 191, 300, 627, 2509)}
    assert got == {1: 1, 4: 4, 100: 100, 127: 128, 128: 128, 188: 192, 191: 192, 300: 304, 627: 640, 2509: 2512}
    assert [padded_columns(k, meta) for k in (127, 627)] == [127, 627]


def test_a_narrow_last_strip_runs_padded_and_keeps_only_its_columns():
    """700 = 2 x 256 + 188: on a CPU the last strip's product runs over 192 columns
    (``gram.padded_columns``: zero rows added to its right-hand side) and its 188 columns
    are copied into place; every entry is the product's, and the gram exactly symmetric."""
    from torch.overrides import TorchFunctionMode

    from llava_scissor.core.engine.gram import gram_strips, symmetric_gram

    xn = unit_vectors(video(frames=2, n=700, dim=16, seed=4), torch.float32)
    widths = []

    class Widths(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if getattr(func, "__name__", None) == "matmul":
                widths.append(args[1].shape[-1])
            return func(*args, **(kwargs or {}))

    out = torch.full((2, 700, 700), float("nan"))
    with Widths():
        strips = [(i, s.shape[2]) for i, s in gram_strips(xn, out=out)]
    assert strips == [(0, 256), (256, 256), (512, 188)]
    assert sorted(set(widths)) == [192, 256]  # 188 columns ran as 192
    full = xn @ xn.mT
    upper = torch.ones(700, 700, dtype=torch.bool).triu()
    torch.testing.assert_close(out[:, upper], full[:, upper])  # every upper entry written, none shifted
    g = symmetric_gram(xn)
    assert torch.equal(g, g.mT)
    torch.testing.assert_close(g, full)


def test_strips_written_in_place_equal_strips_returned():
    from llava_scissor.core.engine.gram import gram_strips

    xn = unit_vectors(video(frames=2, n=700, dim=16, seed=4), torch.float32)
    out = torch.full((2, 700, 700), float("nan"))
    for (i, fresh), (j, view) in zip(gram_strips(xn), gram_strips(xn, out=out)):
        assert i == j and torch.equal(fresh, view)
        assert view.data_ptr() == out[:, :, i:].data_ptr()  # really a view of out


def test_sampled_budget_beyond_the_matrix_cap_is_refused_before_any_work(monkeypatch):
    """A sampled budget holds the temporal step's S x S matrix: above the cap it fails early and says why."""

    def no_work(*args, **kwargs):
        raise AssertionError("components were computed before the refusal")

    compress_module = importlib.import_module("llava_scissor.core.compress")
    monkeypatch.setattr(compress_module, "components_of_sets", no_work)
    x = torch.randn(40, 196, 8)  # K = 784, S = round(sqrt(784 * 7840)) = 2479: 23 MiB in float32
    kw = dict(retention=0.1, approximate=True)
    with pytest.raises(ScissorError, match=r"S = 2,479 spatial tokens, a 23 MiB .* above max_matrix_bytes = 1 MiB"):
        llava_scissor.compress(x, max_matrix_bytes=1 << 20, **kw)
    with pytest.raises(ScissorError, match="approximate=False"):
        llava_scissor.compress(x, max_matrix_bytes=20 << 20, **kw)
    monkeypatch.undo()
    assert llava_scissor.compress(x, max_matrix_bytes=24 << 20, **kw).num_spatial_tokens >= 2479


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float64"])
@pytest.mark.parametrize("kw", [dict(retention=0.1), dict(retention=0.3), dict(max_tokens=1), dict(retention=0.8)])
def test_budget_in_strips_equals_in_memory(kw, dtype):
    x = video(frames=12, n=64)
    kw = dict(kw, spatial_retention=0.8)  # S = 614: a 1.5 MB matrix, strips under a 1 MiB cap
    whole = llava_scissor.compress(x, similarity_dtype=dtype, **kw)
    assert whole.num_spatial_tokens**2 * 4 > SMALL
    tiled = llava_scissor.compress(x, similarity_dtype=dtype, max_matrix_bytes=SMALL, **kw)
    for name in ("tokens", "assignment", "representatives", "sizes", "spatial_labels", "temporal_labels"):
        assert torch.equal(getattr(whole, name), getattr(tiled, name)), name
    assert whole.temporal_threshold == tiled.temporal_threshold


@pytest.mark.parametrize("keep", [1, 2, 3, 5, 8, 9, 50, 299, 300])
def test_budget_in_strips_splits_ties_like_in_memory(keep):
    """Tokens copied from 8 prototypes: similarities take a few values, ties everywhere."""
    g = torch.Generator().manual_seed(0)
    protos = torch.randint(-2, 3, (8, 16), generator=g).float()
    x = protos[torch.randint(0, 8, (300,), generator=g)][None]
    args = dict(tau=0.9, keep=torch.tensor([keep]))
    whole = components_of_sets(x, torch.tensor([300]), **args)
    tiled = components_of_sets(x, torch.tensor([300]), max_matrix_bytes=1000, **args)
    for name in ("labels", "count", "degree", "keep_threshold", "cut_threshold"):
        assert torch.equal(getattr(whole, name), getattr(tiled, name)), name


@pytest.mark.parametrize("few", [0, 2, 16, 1000])
@pytest.mark.parametrize("tile", [5, 64, 256])
@pytest.mark.parametrize("data", ["ties", "repeats", "drift"])
def test_neighbour_lists_are_the_exact_top_k(data, tile, few, monkeypatch):
    """The first pass of a budget in strips keeps each token's k strongest edges, ties to
    the smaller end: with rows' new candidates taken whole (few = 0), through the padded
    top-k (few = 1000) or both, and strips narrower than a list (tile 5 < k = 8)."""
    tiled = importlib.import_module("llava_scissor.core.engine.tiled")
    monkeypatch.setattr(tiled, "_FEW", few)
    g = torch.Generator().manual_seed(1)
    if data == "ties":  # ties everywhere, the k-th weight too
        protos = torch.randint(-2, 3, (6, 16), generator=g).float()
        raw = protos[torch.randint(0, 6, (700,), generator=g)]
    elif data == "repeats":  # 3 exact copies of each token: ties inside the lists, not at their end
        raw = torch.randn(175, 16, generator=g)[torch.randperm(700, generator=g) % 175]
    else:  # drifting tokens: a row's late strips bring it a few new neighbours at most
        raw = torch.randn(700, 16, generator=g).cumsum(dim=0) + 0.3 * torch.randn(700, 16, generator=g)
    x = unit_vectors(raw, torch.float32)
    w, u = tiled._neighbour_lists(x, tile, 8)
    full = torch.empty(700, 700)
    for i, strip in tiled.gram_strips(x[None], tile):  # the similarities the pass sees, both triangles
        full[: strip.shape[1], i : i + strip.shape[2]] = strip[0]
        full[i : i + strip.shape[2], : strip.shape[1]] = strip[0].T
    full.fill_diagonal_(float("-inf"))
    # Reference order: weight descending, then index ascending (a stable sort of the columns).
    order = full.argsort(dim=1, descending=True, stable=True)[:, :8]
    assert torch.equal(u, order)
    assert torch.equal(w, full.gather(1, order))


def test_budget_in_strips_falls_back_to_the_exact_forest(monkeypatch):
    """Neighbour lists too short to estimate the cut: the exact forest (a pass per round) decides."""
    tiled = importlib.import_module("llava_scissor.core.engine.tiled")
    exact_forest = []
    strips_choice = tiled._strips_choice

    def spy(*args, **kwargs):
        exact_forest.append(True)
        return strips_choice(*args, **kwargs)

    monkeypatch.setattr(tiled, "_strips_choice", spy)
    x = video(frames=12, n=64)
    kw = dict(retention=0.1, spatial_retention=0.8)
    whole = llava_scissor.compress(x, **kw)
    for k, fell_back in ((32, False), (1, True)):
        monkeypatch.setattr(tiled, "_NEIGHBOURS", k)
        exact_forest.clear()
        tiled_result = llava_scissor.compress(x, max_matrix_bytes=SMALL, **kw)
        assert bool(exact_forest) == fell_back
        assert torch.equal(whole.assignment, tiled_result.assignment)
        assert torch.equal(whole.tokens, tiled_result.tokens)


def test_band_check_accepts_the_true_levels_and_refuses_far_ones():
    """The band pass is exact around the true levels, and refuses an estimate whose band misses them."""
    from llava_scissor.core.engine.exact import error_bound

    tiled = importlib.import_module("llava_scissor.core.engine.tiled")
    raw = video(frames=1, n=300)[0]
    xn = unit_vectors(raw, torch.float32)
    bound = error_bound(32, torch.float32, raw.device, 0.0)
    whole = components_of_sets(raw[None], torch.tensor([300]), tau=0.9, keep=torch.tensor([150]))
    true = torch.stack([whole.keep_threshold, whole.cut_threshold], dim=1).double()  # [1, 2]
    comps, degree = tiled._band_pass(raw, xn, 256, true, bound, 150)
    assert torch.equal(comps.keep_threshold, whole.keep_threshold)
    assert torch.equal(degree, whole.degree)
    for shift in (0.05, -0.05):
        assert tiled._band_pass(raw, xn, 256, true + shift, bound, 150) is None


@pytest.mark.parametrize("k", [2, 5, 32])
def test_budget_in_strips_with_short_neighbour_lists(k, monkeypatch):
    """Groups of two tight halves: each token's k list edges stay inside its half, so the
    edges that join the halves are in no list. They join "full" tokens (k list edges above
    the band), are unioned strip by strip, and the cut is the in-memory one."""
    tiled = importlib.import_module("llava_scissor.core.engine.tiled")
    monkeypatch.setattr(tiled, "_NEIGHBOURS", k)
    g = torch.Generator().manual_seed(7)
    groups, dim = 20, 64
    centre = torch.randn(groups, dim, generator=g)
    half = centre[:, None] + 0.35 * torch.randn(groups, 2, dim, generator=g)  # cos(halves) about 0.9
    pick = torch.randint(0, 2, (groups, 30), generator=g)
    x = half[torch.arange(groups)[:, None], pick] + 0.02 * torch.randn(groups, 30, dim, generator=g)
    x = x.reshape(1, groups * 30, dim)[:, torch.randperm(groups * 30, generator=g)]
    args = dict(tau=0.0, keep=torch.tensor([groups]))
    whole = components_of_sets(x, torch.tensor([groups * 30]), **args)
    strips = components_of_sets(x, torch.tensor([groups * 30]), max_matrix_bytes=SMALL, **args)
    assert int(whole.count[0]) == groups
    for name in ("labels", "count", "degree", "keep_threshold", "cut_threshold"):
        assert torch.equal(getattr(whole, name), getattr(strips, name)), name


@pytest.mark.parametrize("keep", [40, 120])
def test_band_pass_recomputes_only_dense_tokens(keep, monkeypatch):
    """Clusters of 1-39 tokens with lists of 8: a token of a small cluster has every pair
    near the cut in its list ("sparse"), so the band pass computes the products of the
    other tokens only. The band pairs with a sparse end come from the lists, each once,
    and the cut (labels, degrees, levels) is the in-memory one."""
    tiled = importlib.import_module("llava_scissor.core.engine.tiled")
    monkeypatch.setattr(tiled, "_NEIGHBOURS", 8)
    g = torch.Generator().manual_seed(0)
    sizes = torch.randint(1, 40, (40,), generator=g)
    sup = torch.randn(8, 48, generator=g)
    centre = sup[torch.randint(0, 8, (40,), generator=g)] + 0.5 * torch.randn(40, 48, generator=g)
    x = torch.cat([c + 0.15 * torch.randn(int(s), 48, generator=g) for c, s in zip(centre, sizes)])
    x = x[torch.randperm(x.shape[0], generator=g)][None]
    n = x.shape[1]
    seen: dict[str, int] = {}
    sparse_pairs, cut, strips_of = tiled._sparse_pairs, tiled.cut_band_graph, tiled.gram_strips

    def spy_pairs(*args):
        parent, full, dense, pairs = sparse_pairs(*args)
        seen.update(dense=dense.shape[0], from_lists=pairs.shape[0])
        return parent, full, dense, pairs

    def spy_cut(root, ends, *args):
        seen["band"] = ends.shape[0]
        return cut(root, ends, *args)

    def spy_strips(xn, *args, **kwargs):
        seen.setdefault("rows", []).append(xn.shape[1])
        return strips_of(xn, *args, **kwargs)

    monkeypatch.setattr(tiled, "_sparse_pairs", spy_pairs)
    monkeypatch.setattr(tiled, "cut_band_graph", spy_cut)
    monkeypatch.setattr(tiled, "gram_strips", spy_strips)
    args = dict(tau=0.0, keep=torch.tensor([keep]))
    whole = components_of_sets(x, torch.tensor([n]), **args)
    strips = components_of_sets(x, torch.tensor([n]), max_matrix_bytes=SMALL, **args)
    assert seen["rows"] == [n, seen["dense"]]  # the lists' pass, then the dense tokens' pass
    assert 0 < seen["dense"] < n and 0 < seen["from_lists"] < seen["band"]
    for name in ("labels", "count", "degree", "keep_threshold", "cut_threshold"):
        assert torch.equal(getattr(whole, name), getattr(strips, name)), name


@pytest.mark.parametrize("seed", range(4))
def test_band_forest_is_the_kruskal_forest(seed):
    """The band's spanning forest (``tiled._forest_edges``, Borůvka's rounds on the edge
    list) keeps exactly the edges a host Kruskal keeps in the same order: with repeated
    weights, parallel edges, edges inside one vertex and vertices that no edge reaches."""
    tiled = importlib.import_module("llava_scissor.core.engine.tiled")
    g = torch.Generator().manual_seed(seed)
    C, E = 60, 400
    a, b = torch.randint(0, C - 5, (E,), generator=g), torch.randint(0, C - 5, (E,), generator=g)
    values = torch.randint(0, 12, (E,), generator=g).float()  # many equal weights
    order = values.sort(descending=True, stable=True).indices
    a, b = a[order], b[order]
    kept = kruskal_kept(list(zip(a.tolist(), b.tolist())), C)
    assert len(kept) < C - 5  # a forest of several trees
    assert tiled._forest_edges(C, a, b).tolist() == kept
    assert tiled._forest_edges(C, a[:0], b[:0]).tolist() == []
