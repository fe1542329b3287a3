"""bfloat16 products only where they pay: the decision, not the timing (``core/engine/products.py``)."""

import importlib

import pytest
import torch
from torch.overrides import TorchFunctionMode

import llava_scissor
from llava_scissor.core import bfloat16_products
from llava_scissor.core.compress import merge_into
from llava_scissor.core.engine import products as _products
from llava_scissor.core.engine.products import (
    MIN_SPEEDUP,
    choose_path,
    product_dtype,
    speedup_of,
)

# The real probe, before the suite's fixture (conftest.py) replaces it in each test.
_REAL_PROBE = _products._measured_cpu_speedup


def _never() -> float:
    raise AssertionError("the CPU probe must not run for this device")


def test_cuda_and_meta_take_bfloat16_without_measuring():
    assert choose_path("cuda", _never).dtype == torch.bfloat16
    assert choose_path("meta", _never).dtype == torch.bfloat16


@pytest.mark.parametrize(
    ("speedup", "dtype"),
    [(6.0, torch.bfloat16), (MIN_SPEEDUP, torch.bfloat16), (MIN_SPEEDUP * 0.99, torch.float32), (0.01, torch.float32)],
)
def test_cpu_takes_bfloat16_only_when_measurably_faster(speedup, dtype):
    path = choose_path("cpu", lambda: speedup)
    assert path.dtype == dtype
    assert "measured" in path.reason


def test_other_dtypes_are_never_changed():
    for requested in (torch.float32, torch.float64):
        assert product_dtype(requested, torch.device("cpu")) == requested


def test_speedup_is_the_ratio_of_interleaved_minima():
    t32 = iter([3.0, 1.0, 2.0])
    t16 = iter([0.5, 0.6, 9.0])
    assert speedup_of(lambda: next(t32), lambda: next(t16), repeat=3) == 2.0


def test_probe_runs_once_per_process_and_leaves_the_global_rng_alone():
    _REAL_PROBE.cache_clear()
    state = torch.get_rng_state()
    first = _REAL_PROBE()
    assert _REAL_PROBE() == first > 0
    assert _REAL_PROBE.cache_info().misses == 1
    assert torch.equal(torch.get_rng_state(), state)


class _Dtypes(TorchFunctionMode):
    """Records the dtypes of the matrix products' inputs."""

    def __init__(self):
        super().__init__()
        self.seen: set[torch.dtype] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", None) in ("mm", "matmul", "bmm", "__matmul__", "__rmatmul__"):
            self.seen |= {a.dtype for a in args if isinstance(a, torch.Tensor)}
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("speedup", [0.01, float("inf")])
def test_compress_follows_the_decision_with_the_same_output(monkeypatch, speedup):
    monkeypatch.setattr(_products, "_measured_cpu_speedup", lambda: speedup)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 196, 64, generator=g)  # S above 256 tokens: the temporal step may take bfloat16
    cfg = llava_scissor.ScissorConfig(retention=0.25, similarity_dtype="bfloat16")
    with _Dtypes() as mode:
        res = llava_scissor.compress(x, cfg)
    assert (torch.bfloat16 in mode.seen) == (bfloat16_products("cpu").dtype == torch.bfloat16)
    assert (torch.bfloat16 in mode.seen) == (speedup >= MIN_SPEEDUP)
    ref = llava_scissor.compress(x, cfg.replace(similarity_dtype="float32"))
    assert torch.equal(res.tokens, ref.tokens) and torch.equal(res.assignment, ref.assignment)


@pytest.mark.parametrize("sampled_cost", [0, 10**9])  # narrowing always sampled / always dense
@pytest.mark.parametrize("kw", [{"retention": 0.1}, {"retention": 0.3}, {"tau": 0.9}])
def test_band_narrowing_sampled_or_dense_gives_the_float32_output(monkeypatch, sampled_cost, kw):
    # A bfloat16 band is narrowed by float32 values of its pairs, sampled or from the dense
    # float32 product (a dense band); either way the decisions are the canonical ones.
    from llava_scissor.core.engine import exact

    monkeypatch.setattr(exact, "SAMPLED_COST", sampled_cost)
    g = torch.Generator().manual_seed(1)
    protos = torch.randn(6, 48, generator=g)
    # Tokens near a few prototypes: many pairs crowd near the levels, the band is dense.
    x = protos[torch.randint(0, 6, (6, 196), generator=g)] + 0.3 * torch.randn(6, 196, 48, generator=g)
    cfg = llava_scissor.ScissorConfig(similarity_dtype="bfloat16", **kw)
    res = llava_scissor.compress(x, cfg)
    ref = llava_scissor.compress(x, cfg.replace(similarity_dtype="float32"))
    assert torch.equal(res.tokens, ref.tokens) and torch.equal(res.assignment, ref.assignment)


# The real estimate, before the suite's fixture (conftest.py) replaces it in each test.
_REAL_CROWDED = importlib.import_module("llava_scissor.core.engine.sets")._crowded


def _packed(n: int, dim: int, spread: float, seed: int = 0) -> torch.Tensor:
    """[1, n, dim]: tokens around one direction, pairwise cosines within a few ``spread`` of each other."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(dim, generator=g)
    return (base + spread * torch.randn(n, dim, generator=g) * base.norm() / dim**0.5)[None]


def test_crowded_band_estimate():
    crowded = _packed(600, 256, 0.05)  # cosines about 0.9975, most within a bfloat16 bound of any cut
    spread = torch.randn(1, 600, 256, generator=torch.Generator().manual_seed(1))
    valid = torch.tensor([600])
    for keep in (60, 300):
        assert _REAL_CROWDED(crowded, valid, None, torch.tensor([keep]), None)
        assert not _REAL_CROWDED(spread, valid, None, torch.tensor([keep]), None)
    assert _REAL_CROWDED(crowded, valid, 0.9975, None, None)
    assert not _REAL_CROWDED(crowded, valid, 0.8, None, None)  # tau far below every cosine
    two = torch.cat([crowded, crowded])  # one budget over two sets: no per-set cut to estimate
    assert not _REAL_CROWDED(two, torch.tensor([600, 600]), None, torch.tensor([5]), torch.tensor([0, 0]))
    assert _REAL_CROWDED(two, torch.tensor([600, 600]), None, torch.tensor([5, 5]), torch.tensor([0, 1]))


@pytest.mark.parametrize("crowded", [False, True])
def test_a_crowded_band_takes_float32_products_with_the_same_output(monkeypatch, crowded):
    sets_module = importlib.import_module("llava_scissor.core.engine.sets")
    monkeypatch.setattr(sets_module, "_crowded", _REAL_CROWDED)
    x = _packed(600, 256, 0.05) if crowded else torch.randn(1, 600, 256, generator=torch.Generator().manual_seed(1))
    video = x.reshape(3, 200, 256)  # 600 spatial tokens with the spatial step off
    cfg = llava_scissor.ScissorConfig(retention=0.1, spatial=False, similarity_dtype="bfloat16")
    res = llava_scissor.compress(video, cfg)
    seen_temporal = []
    original = sets_module.similarity_graph
    monkeypatch.setattr(
        sets_module, "similarity_graph", lambda x, v, dt, *rest: seen_temporal.append(dt) or original(x, v, dt, *rest)
    )
    llava_scissor.compress(video, cfg)
    assert seen_temporal == [torch.float32 if crowded else torch.bfloat16]
    ref = llava_scissor.compress(video, cfg.replace(similarity_dtype="float32"))
    assert torch.equal(res.tokens, ref.tokens) and torch.equal(res.assignment, ref.assignment)


@pytest.mark.parametrize(("targets", "bfloat16"), [(16, False), (300, True)])
def test_merge_takes_bfloat16_products_only_for_enough_targets(targets, bfloat16):
    g = torch.Generator().manual_seed(2)
    originals, kept = torch.randn(500, 64, generator=g), torch.randn(targets, 64, generator=g)
    with _Dtypes() as mode:
        merged, assignment = merge_into([originals], [kept], torch.float32, torch.bfloat16)
    assert (torch.bfloat16 in mode.seen) == bfloat16
    ref = merge_into([originals], [kept], torch.float32, torch.float32)
    assert torch.equal(assignment[0], ref[1][0]) and torch.equal(merged[0], ref[0][0])


@pytest.mark.parametrize(
    ("n", "dim", "bfloat16"), [(600, 256, False), (1100, 256, True), (1100, 64, False), (2100, 64, True)]
)
def test_bfloat16_products_only_for_sets_of_1024_tokens_and_enough_work(monkeypatch, n, dim, bfloat16):
    """At least 1024 tokens, and at least _BF16_MIN_WORK / dim (here scaled down: 2048 at dim 64)."""
    sets_module = importlib.import_module("llava_scissor.core.engine.sets")
    monkeypatch.setattr(sets_module, "_BF16_MIN_TOKENS", 1024)  # the library's, not the suite's
    monkeypatch.setattr(sets_module, "_BF16_MIN_WORK", 2048 * 64)
    x = torch.randn(1, n, dim, generator=torch.Generator().manual_seed(4))
    seen = []
    original = sets_module.similarity_graph
    monkeypatch.setattr(
        sets_module, "similarity_graph", lambda x, v, dt, *rest: seen.append(dt) or original(x, v, dt, *rest)
    )
    args = dict(tau=0.0, keep=torch.tensor([n // 10]))
    got = sets_module.components_of_sets(x, torch.tensor([n]), sim_dtype=torch.bfloat16, **args)
    assert seen == [torch.bfloat16 if bfloat16 else torch.float32]
    ref = sets_module.components_of_sets(x, torch.tensor([n]), sim_dtype=torch.float32, **args)
    assert torch.equal(got.labels, ref.labels) and torch.equal(got.degree, ref.degree)
