"""Invariants of SCC and of the two-step compression: partition, order, budget, determinism."""

from __future__ import annotations

import math

import pytest
import torch

import llava_scissor
from llava_scissor import ScissorConfig


def clustered_video(frames=6, n=49, dim=32, centers=9, noise=0.3, seed=0, dtype=torch.float32):
    """[frames, n, dim] tokens drawn around a few directions (so SCC has work to do)."""
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(centers, dim, generator=g)
    pick = torch.randint(0, centers, (frames, n), generator=g)
    return (c[pick] + noise * torch.randn(frames, n, dim, generator=g)).to(dtype)


def canonical(labels: torch.Tensor) -> list[int]:
    """A partition in a form that ignores label names: first-occurrence numbering."""
    seen: dict[int, int] = {}
    return [seen.setdefault(v, len(seen)) for v in labels.tolist()]


def check_partition(r, frames, n):
    total = frames * n
    S, K = r.num_spatial_tokens, r.num_tokens
    assert r.spatial_labels.shape == (total,) and r.spatial_labels.dtype == torch.int64
    assert r.temporal_labels.shape == (S,)
    assert r.assignment.shape == (total,)
    # Every token in exactly one component, every component non-empty.
    assert torch.equal(torch.unique(r.spatial_labels), torch.arange(S))
    assert torch.equal(torch.unique(r.temporal_labels), torch.arange(K))
    assert int(r.assignment.min()) >= 0 and int(r.assignment.max()) < K
    assert int(r.sizes.sum()) == total
    # Spatial components never cross frames.
    frame_of = torch.arange(total) // n
    per_comp_frames = torch.zeros(S, dtype=torch.int64).scatter_reduce(0, r.spatial_labels, frame_of, "amax")
    per_comp_frames_min = torch.full((S,), total).scatter_reduce(0, r.spatial_labels, frame_of, "amin")
    assert torch.equal(per_comp_frames, per_comp_frames_min)
    # Representatives: one per output token, member of it, in increasing order.
    reps = r.representatives
    assert reps.shape == (K,)
    assert torch.equal(r.temporal_labels[r.spatial_labels[reps]], torch.arange(K))
    assert bool((reps[1:] > reps[:-1]).all())
    assert torch.equal(r.spatial_labels[r.spatial_representatives], torch.arange(S))


@pytest.mark.parametrize("tau", [0.0, 0.5, 0.8, 0.95, 1.0])
def test_partition_threshold_mode(tau):
    x = clustered_video()
    r = llava_scissor.compress(x, tau=tau)
    check_partition(r, 6, 49)
    assert r.tokens.shape == (r.num_tokens, 32)
    assert r.retention == r.num_tokens / (6 * 49)


def test_spatial_tokens_are_component_means_and_merge_formula():
    x = clustered_video(frames=3)
    r = llava_scissor.compress(x, tau=0.7)
    flat = x.reshape(-1, x.shape[-1])
    for s in range(r.num_spatial_tokens):
        torch.testing.assert_close(r.spatial_tokens[s], flat[r.spatial_labels == s].mean(0))
    temporal = torch.stack([r.spatial_tokens[r.temporal_labels == k].mean(0) for k in range(r.num_tokens)])
    # Merge: each original joins its most similar temporal token.
    cos = torch.nn.functional.normalize(flat, dim=-1) @ torch.nn.functional.normalize(temporal, dim=-1).T
    assert torch.equal(r.assignment, cos.argmax(-1))
    for k in range(r.num_tokens):
        members = flat[r.assignment == k]
        torch.testing.assert_close(r.tokens[k], (temporal[k] + members.sum(0)) / (1 + len(members)))


def test_threshold_one_keeps_every_token_in_order():
    x = clustered_video(frames=2, n=16)
    r = llava_scissor.compress(x, tau=1.0)
    assert r.num_tokens == 32
    assert torch.equal(r.representatives, torch.arange(32))
    torch.testing.assert_close(r.tokens, x.reshape(-1, 32), atol=1e-6, rtol=1e-6)


def test_deterministic():
    x = clustered_video(frames=5, seed=3)
    for kw in ({"tau": 0.8}, {"retention": 0.2}, {"tau": 0.8, "approximate": True, "epsilon": 0.9, "seed": 7}):
        a = llava_scissor.compress(x, **kw)
        b = llava_scissor.compress(x.clone(), **kw)
        assert torch.equal(a.tokens, b.tokens)
        assert torch.equal(a.assignment, b.assignment)
        assert torch.equal(a.representatives, b.representatives)


@pytest.mark.parametrize("seed", [0, 1])
def test_budget_exact_for_every_k(seed):
    frames, n = 4, 25
    x = clustered_video(frames=frames, n=n, seed=seed)
    total = frames * n
    for k in range(1, total + 1):
        r = llava_scissor.compress(x, max_tokens=k)
        assert r.num_tokens == k, k
        assert int(r.sizes.sum()) == total
    check_partition(llava_scissor.compress(x, max_tokens=17), frames, n)


def test_budget_exact_with_massive_ties():
    """Identical tokens make every similarity equal: the cut must still be exact."""
    x = torch.ones(3, 16, 8)
    x[1] *= 2.0  # same direction, other norm
    x[2, :8] = -1.0
    for k in range(1, 49):
        r = llava_scissor.compress(x, max_tokens=k)
        assert r.num_tokens == k
        check_partition(r, 3, 16)
    # and it is deterministic under ties
    a, b = llava_scissor.compress(x, max_tokens=11), llava_scissor.compress(x, max_tokens=11)
    assert torch.equal(a.assignment, b.assignment)


def test_retention_rounds_half_up_and_caps():
    x = clustered_video(frames=2, n=25)  # 50 tokens
    assert llava_scissor.compress(x, retention=0.25).num_tokens == 13  # 12.5 -> 13
    assert llava_scissor.compress(x, retention=0.001).num_tokens == 1  # at least one
    assert llava_scissor.compress(x, retention=1.0).num_tokens == 50
    assert llava_scissor.compress(x, max_tokens=10_000).num_tokens == 50  # a cap


def test_budget_split_between_steps():
    x = clustered_video(frames=8, n=36)  # 288 tokens
    r = llava_scissor.compress(x, max_tokens=20)
    assert r.num_spatial_tokens == round(math.sqrt(20 * 288))  # geometric mean
    r = llava_scissor.compress(x, max_tokens=20, spatial_max_tokens=100)
    assert (r.num_spatial_tokens, r.num_tokens) == (100, 20)
    r = llava_scissor.compress(x, max_tokens=20, spatial_retention=0.5)
    assert (r.num_spatial_tokens, r.num_tokens) == (144, 20)


@pytest.mark.parametrize("tau", [0.5, 0.75, 0.9])
def test_threshold_and_budget_give_the_same_components(tau):
    """Asking for the S and K a threshold produced reproduces its partitions and tokens."""
    x = clustered_video(frames=6, n=49, seed=11)
    t = llava_scissor.compress(x, tau=tau)
    b = llava_scissor.compress(x, max_tokens=t.num_tokens, spatial_max_tokens=t.num_spatial_tokens)
    assert (b.num_spatial_tokens, b.num_tokens) == (t.num_spatial_tokens, t.num_tokens)
    assert canonical(b.spatial_labels) == canonical(t.spatial_labels)
    assert canonical(b.temporal_labels[b.spatial_labels]) == canonical(t.temporal_labels[t.spatial_labels])
    # Same tokens up to order (order follows degrees at the implied threshold).
    key = lambda m: m[torch.argsort(m[:, 0])]  # noqa: E731
    torch.testing.assert_close(key(b.spatial_tokens), key(t.spatial_tokens))
    torch.testing.assert_close(key(b.tokens), key(t.tokens))
    assert b.spatial_threshold <= tau


def test_batched_equals_one_by_one():
    videos = [clustered_video(frames=f, seed=f) for f in (3, 7, 1, 5)]
    for kw in ({"tau": 0.8}, {"retention": 0.15}, {"tau": 0.8, "approximate": True, "epsilon": 0.8}):
        batched = llava_scissor.compress(videos, **kw)
        assert isinstance(batched, list) and len(batched) == 4
        for v, rb in zip(videos, batched):
            ro = llava_scissor.compress(v, **kw)
            for field in ("tokens", "assignment", "representatives", "spatial_labels", "temporal_labels", "sizes"):
                assert torch.equal(getattr(rb, field), getattr(ro, field)), (kw, field)


def test_step_switches():
    x = clustered_video(frames=4, n=25)
    no_spatial = llava_scissor.compress(x, tau=0.8, spatial=False)
    assert no_spatial.num_spatial_tokens == 100
    assert torch.equal(no_spatial.spatial_labels, torch.arange(100))
    no_temporal = llava_scissor.compress(x, tau=0.8, temporal=False)
    assert no_temporal.num_tokens == no_temporal.num_spatial_tokens
    no_merge = llava_scissor.compress(x, tau=0.8, merge=False)
    means = torch.stack(
        [no_merge.spatial_tokens[no_merge.temporal_labels == k].mean(0) for k in range(no_merge.num_tokens)]
    )
    torch.testing.assert_close(no_merge.tokens, means)
    assert torch.equal(no_merge.assignment, no_merge.temporal_labels[no_merge.spatial_labels])
    # Budgets with steps switched off are still exact.
    assert llava_scissor.compress(x, max_tokens=30, spatial=False).num_tokens == 30
    assert llava_scissor.compress(x, max_tokens=30, temporal=False).num_tokens == 30
    nothing = llava_scissor.compress(x, spatial=False, temporal=False)
    torch.testing.assert_close(nothing.tokens, x.reshape(100, -1))


def test_zero_vectors_do_not_produce_nan():
    x = clustered_video(frames=2, n=16)
    x[0, :5] = 0.0
    x[1, 3] = 0.0
    r = llava_scissor.compress(x, tau=0.5)
    assert bool(torch.isfinite(r.tokens).all())
    # Zero tokens are equal to each other and orthogonal to the rest (tests/test_core_zero_tokens.py):
    # with 0 <= tau < 1 the zeros of a frame are one spatial component, and all of them one token.
    assert int((r.spatial_labels[:16] == r.spatial_labels[0]).sum()) == 5
    assert int((r.spatial_labels[16:] == r.spatial_labels[16 + 3]).sum()) == 1
    assert int((r.assignment == r.assignment[0]).sum()) == 6
    r = llava_scissor.compress(x, retention=0.1)
    assert bool(torch.isfinite(r.tokens).all())
    # With a negative tau, cos 0 > tau: zero vectors join everything.
    assert llava_scissor.compress(x, tau=-0.5, temporal=False).num_tokens == 2


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_reduced_and_double_precision_inputs(dtype):
    x32 = clustered_video(frames=3, n=25, noise=0.1)
    x = x32.to(dtype)
    r = llava_scissor.compress(x, tau=0.8)
    assert r.tokens.dtype == dtype and r.spatial_tokens.dtype == dtype
    ref = llava_scissor.compress(x.to(torch.float32), tau=0.8)  # similarities are float32 anyway
    assert torch.equal(r.assignment, ref.assignment)
    check_partition(r, 3, 25)


def test_scc_on_any_token_set():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 16, generator=g)
    tokens = torch.cat([base[i] + 0.01 * torch.randn(10, 16, generator=g) for i in (2, 0, 3)])
    res = llava_scissor.scc(tokens, tau=0.9)
    assert res.num_components == 3
    assert canonical(res.labels) == [0] * 10 + [1] * 10 + [2] * 10
    for c in range(3):
        torch.testing.assert_close(res.tokens[c], tokens[res.labels == c].mean(0))
        assert int(res.labels[res.representatives[c]]) == c
        members = (res.labels == c).nonzero().flatten()
        assert int(res.degree[res.representatives[c]]) == int(res.degree[members].max())
    assert bool((res.representatives[1:] > res.representatives[:-1]).all())
    assert llava_scissor.scc(tokens, max_tokens=5).num_components == 5
    assert llava_scissor.scc(tokens, retention=0.5).num_components == 15


def test_representative_is_highest_degree_smallest_index():
    # A chain a - b - c: b has degree 3 and represents; then ties go to the smaller index.
    t = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [-1.0, 0.0]])
    res = llava_scissor.scc(t, tau=0.6)  # cos(a,b) = cos(b,c) = 0.707, cos(a,c) = 0
    assert res.labels.tolist() == [0, 0, 0, 1]
    assert res.representatives.tolist() == [1, 3]
    assert res.degree.tolist() == [2, 3, 2, 1]


def test_approximate_mode_is_seeded_and_partitions():
    x = clustered_video(frames=1, n=200, dim=16, centers=30, noise=0.5)[0]
    # eps = 0.8 -> N' = ceil(ln(200) / 0.64) = 9 sampled vertices.
    a = llava_scissor.scc(x, tau=0.6, approximate=True, epsilon=0.8, seed=1)
    b = llava_scissor.scc(x, tau=0.6, approximate=True, epsilon=0.8, seed=1)
    c = llava_scissor.scc(x, tau=0.6, approximate=True, epsilon=0.8, seed=2)
    exact = llava_scissor.scc(x, tau=0.6)
    assert torch.equal(a.labels, b.labels)
    assert not torch.equal(a.labels, c.labels)
    assert torch.equal(torch.unique(a.labels), torch.arange(a.num_components))
    # Sampling removes edges, never adds them: at least as many components as exact.
    assert a.num_components >= exact.num_components
    # And each sampled component lies inside one exact component.
    for comp in range(a.num_components):
        assert len(set(exact.labels[a.labels == comp].tolist())) == 1


def test_config_replace_and_overrides():
    cfg = ScissorConfig(tau=0.8)
    assert cfg.replace(retention=0.1).retention == 0.1
    assert ScissorConfig(max_tokens=5).replace(retention=0.2).max_tokens is None
    x = clustered_video(frames=2, n=16)
    assert llava_scissor.compress(x, cfg, retention=0.25).num_tokens == 8


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_equals_cpu():
    videos = [clustered_video(frames=f, n=196, dim=64, seed=f) for f in (4, 9)]
    for kw in ({"tau": 0.8}, {"retention": 0.1}):
        cpu = llava_scissor.compress(videos, **kw)
        gpu = llava_scissor.compress([v.cuda() for v in videos], **kw)
        for c, g in zip(cpu, gpu):
            assert g.tokens.device.type == "cuda"
            assert torch.equal(c.assignment, g.assignment.cpu())
            torch.testing.assert_close(c.tokens, g.tokens.cpu(), atol=1e-5, rtol=1e-5)


def _union_find_labels(edges: list[tuple[int, int]], n: int) -> list[int]:
    """Plain union-find over an edge list -> first-occurrence labels (the oracle)."""
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return canonical(torch.tensor([find(a) for a in range(n)]))


def kruskal_kept(edges: list[tuple[int, int]], n: int) -> list[int]:
    """Positions of the edges that a plain Kruskal keeps, taking them in the given order (the oracle)."""
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            a = parent[a]
        return a

    kept = []
    for e, (a, b) in enumerate(edges):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
            kept.append(e)
    return kept


def _random_graphs(seed: int, valid: list[int], n: int = 40):
    from llava_scissor.core.engine.sets import similarity_graph

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(valid), n, 6, generator=g)
    v = torch.tensor(valid)
    return similarity_graph(x, v)[0], v


@pytest.mark.parametrize("seed", range(6))
def test_component_search_matches_union_find(seed):
    """Threshold components (with isolated vertices, padding, a one-vertex graph) equal union-find."""
    from llava_scissor.core.engine.graph import threshold_components

    W, valid = _random_graphs(seed, [40, 23, 1])
    tau = [0.2, 0.5, 0.7, 0.85, 0.95, -1.0][seed]
    comps = threshold_components(W, W.new_full((3,), tau), valid)
    for b, m in enumerate(valid.tolist()):
        edges = [(i, j) for i in range(m) for j in range(i + 1, m) if float(W[b, i, j]) > tau]
        expected = _union_find_labels(edges, m)
        assert canonical(comps.labels[b, :m]) == expected
        assert int(comps.count[b]) == len(set(expected))


@pytest.mark.parametrize("seed", range(6))
def test_budget_cut_matches_kruskal(seed):
    """A group budget over three graphs equals Kruskal on their pooled edges, strongest first."""
    from llava_scissor.core.engine.graph import budget_components

    W, valid = _random_graphs(100 + seed, [40, 31, 17])
    total = int(valid.sum())
    keep = [1, 3, 20, 45, 70, total][seed]
    comps = budget_components(W, valid, torch.tensor([keep]), torch.zeros(3, dtype=torch.int64))
    offset = [0, 40, 71]
    pooled = sorted(
        (
            (float(W[b, i, j]), offset[b] + i, offset[b] + j)
            for b, m in enumerate(valid.tolist())
            for i in range(m)
            for j in range(i + 1, m)
        ),
        reverse=True,
    )
    pairs = [(a, b) for _, a, b in pooled]
    joined = [pairs[e] for e in kruskal_kept(pairs, total)[: total - keep]]
    expected = _union_find_labels(joined, total)
    got = torch.cat([comps.labels[b, :m] + 1000 * b for b, m in enumerate(valid.tolist())])
    assert canonical(got) == expected
    # Graphs of a group are never joined to each other: at least one component each.
    assert int(comps.count.sum()) == max(keep, 3) == len(set(expected))
