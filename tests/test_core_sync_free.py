"""Sync-free compression (the GPU path): no host reads inside a call, the same results.

A host read is any value a tensor hands back to Python (``tolist``, ``item``, ``bool``,
a data-dependent shape such as ``nonzero``'s). On a GPU each one waits for the device.
Meta tensors have no data, so every such read raises on them: a call that completes
on meta tensors, with the one sanctioned read (``_read_back``) stubbed, reads nothing
else.
"""

from __future__ import annotations

import dataclasses
import importlib
import warnings

import pytest
import torch
from test_core_invariants import canonical, clustered_video
from torch.utils._python_dispatch import TorchDispatchMode

import llava_scissor
from llava_scissor import ScissorConfig, ScissorError
from llava_scissor.core.engine.graph import budget_components, rounds, threshold_components
from llava_scissor.core.engine.reads import DATA_SIZED, SYNC_FREE, HostReads

compress_module = importlib.import_module("llava_scissor.core.compress")
sets_module = importlib.import_module("llava_scissor.core.engine.sets")
merge_module = importlib.import_module("llava_scissor.core.engine.merge")
graph_module = importlib.import_module("llava_scissor.core.engine.graph")

CONFIGS = [
    dict(tau=0.8),
    dict(tau=0.95),
    dict(retention=0.1),
    dict(max_tokens=7),
    dict(retention=0.25, spatial_retention=0.5),
    dict(retention=0.3, approximate=True, epsilon=0.6),
    dict(tau=0.8, approximate=True, epsilon=0.6),
    dict(tau=0.8, similarity_dtype="bfloat16"),
    dict(retention=0.2, similarity_dtype="bfloat16"),
    dict(tau=0.8, similarity_dtype="float64"),
    dict(tau=0.8, spatial=False),
    dict(tau=0.8, temporal=False),
    dict(tau=0.8, merge=False),
    dict(retention=0.2, temporal=False),
    dict(retention=0.2, spatial=False),
]


def assert_same(a, b) -> None:
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, torch.Tensor):
            assert x.shape == y.shape and x.dtype == y.dtype, f.name
            assert torch.equal(x, y), f.name
        else:
            assert x == y, f.name


def videos():
    return [clustered_video(frames=f, n=49, dim=32, noise=0.5, seed=f) for f in (5, 3, 7)]


@pytest.mark.parametrize("kw", CONFIGS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_sync_free_equals_data_sized(kw):
    vids = videos()
    free = llava_scissor.compress(vids, sync_free=True, **kw)
    sized = llava_scissor.compress(vids, sync_free=False, **kw)
    for a, b in zip(free, sized):
        assert_same(a, b)


class HostCopies(TorchDispatchMode):
    """Records host-to-device copies made outside ``to_device``.

    On a GPU a plain copy from pageable host memory makes the host wait for the device
    (a synchronization); ``to_device`` queues it instead. Meta tensors stand in for
    the device.
    """

    def __init__(self, monkeypatch):
        super().__init__()
        self.unqueued: list[str] = []
        self.allowed = 0
        for module in (sets_module, compress_module):
            monkeypatch.setattr(module, "to_device", self._allowed(sets_module.to_device))

    def _allowed(self, inner):
        def to_device(t, device):
            self.allowed += 1
            try:
                return inner(t, device)
            finally:
                self.allowed -= 1

        return to_device

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func in (torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default) and not self.allowed:
            src = args[1] if func is torch.ops.aten.copy_.default else args[0]
            dst = args[0] if func is torch.ops.aten.copy_.default else out
            if isinstance(src, torch.Tensor) and src.device.type == "cpu" and dst.device.type == "meta":
                self.unqueued.append(str(func))
        return out


def _stub_read(calls):
    """A ``_read_back`` for meta tensors: records what was asked, answers harmless values."""

    def read(**parts):
        calls.append(sorted(parts))
        answers = {"flag_finite": 1.0, "sizes": 5.0, "k": 3.0}
        return {name: [answers.get(name, 0.0)] * t.numel() for name, t in parts.items()}

    return read


@pytest.mark.parametrize(
    "kw, reads, frames",
    [
        (dict(retention=0.2), 1, 6),
        (dict(max_tokens=9, similarity_dtype="bfloat16"), 1, 6),
        (dict(tau=0.8), 1, 6),
        (dict(tau=0.8, similarity_dtype="bfloat16", temporal=False), 1, 6),
        # F N x F N (12 x 49 rows) over the cap: the temporal step waits for S instead.
        (dict(tau=0.8, max_matrix_bytes=1 << 20), 2, 12),
        (dict(retention=0.2, approximate=True), 1, 6),
        (dict(tau=0.8, similarity_dtype="bfloat16", approximate=True), 1, 6),
        (dict(tau=0.8, approximate=True, max_matrix_bytes=1 << 20), 2, 12),
    ],
)
def test_one_host_read_per_call(monkeypatch, kw, reads, frames):
    calls: list = []
    monkeypatch.setattr(compress_module, "_read_back", _stub_read(calls))
    x = torch.empty(frames, 49, 32, device="meta")
    with HostCopies(monkeypatch) as copies:
        result = llava_scissor.compress([x, x[:4]], sync_free=True, **kw)
    assert copies.unqueued == []  # every host-to-device copy went through to_device
    assert len(calls) == reads
    # The last read carries every flag and threshold of the call.
    assert {"flag_finite", "flag_spatial", "flag_temporal", "flag_merge"} <= set(calls[-1])
    assert result[0].tokens.device.type == "meta"


def test_sample_drawn_without_reading_sizes_is_the_same():
    """The device-side sizes (valid never read) are the host's N', and a set drawn alone takes a
    prefix of its stream: a wider padding samples the same vertices."""
    valid = torch.tensor([0, 1, 7, 40, 300, 301])
    host = [int(m.sum()) for m in sets_module.sample_mask(valid, 301, 0.3, 5)]
    assert sets_module.sample_sizes_unread(valid, 301, 0.3).tolist() == host == [0, 0, 7, 40, 64, 64]
    narrow = sets_module.sample_mask(valid, 301, 0.3, 5)
    wide = sets_module.sample_mask(valid, 640, 0.3, 5)
    assert torch.equal(wide[:, :301], narrow) and not bool(wide[:, 301:].any())
    meta = sets_module.sample_mask(valid.to("meta"), 301, 0.3, 5)  # reads nothing, or it would raise
    assert meta.shape == (6, 301) and meta.device.type == "meta"


def test_meta_tensors_catch_host_reads(monkeypatch):
    """The check above can fail: the data-sized path reads inside the call and so raises."""
    calls: list = []
    monkeypatch.setattr(compress_module, "_read_back", _stub_read(calls))
    x = torch.empty(6, 49, 32, device="meta")
    for kw in (dict(retention=0.2), dict(tau=0.8)):
        with pytest.raises((RuntimeError, NotImplementedError)):
            llava_scissor.compress(x, sync_free=False, **kw)


def test_full_buffers_fall_back_to_the_data_sized_path(monkeypatch):
    """More near-ties than the fixed buffers hold: detected, and the call starts over."""
    monkeypatch.setattr(sets_module, "band_capacity", lambda pairs, halfwidth: 1)
    monkeypatch.setattr(merge_module, "_MERGE_CANDIDATES", 0)
    runs = []
    inner = compress_module._compress_videos

    def counting(vids, cfg, *rest):
        runs.append(cfg.sync_free)
        return inner(vids, cfg, *rest)

    monkeypatch.setattr(compress_module, "_compress_videos", counting)
    vids = videos()
    for kw in (dict(tau=0.8, similarity_dtype="bfloat16"), dict(retention=0.2, similarity_dtype="bfloat16")):
        runs.clear()
        free = llava_scissor.compress(vids, sync_free=True, **kw)
        assert runs == [True, False]
        runs.clear()
        for a, b in zip(free, llava_scissor.compress(vids, sync_free=False, **kw)):
            assert_same(a, b)


def test_sync_free_rejects_non_finite_input_after_the_call():
    x = clustered_video(frames=3, n=16)
    x[1, 2, 3] = float("nan")
    messages = []
    for free in (True, False):
        with pytest.raises(ScissorError, match="contains 1 NaN or Inf") as err:
            llava_scissor.compress(x, retention=0.2, sync_free=free)
        messages.append(str(err.value))
    assert messages[0] == messages[1]


def test_sync_free_config_is_validated():
    assert ScissorConfig().sync_free is None
    with pytest.raises(ScissorError, match="sync_free must be True, False or None"):
        ScissorConfig(sync_free="yes")


def _halving_path(n: int) -> torch.Tensor:
    """[1, n, n]: a path whose edge (i, i+1) weighs -(trailing zeros of i+1).

    Borůvka pairs its components and nothing more in every round, so it needs exactly
    log2(n) rounds of joins: the worst case of the fixed round count.
    """
    W = torch.full((1, n, n), float("-inf"))
    for i in range(n - 1):
        tz = ((i + 1) & -(i + 1)).bit_length() - 1
        W[0, i, i + 1] = W[0, i + 1, i] = -float(tz)
    return W


def test_fixed_round_count_is_enough_and_tight(monkeypatch):
    n = 256
    W, valid, below = _halving_path(n), torch.tensor([n]), torch.tensor([-100.0])
    assert threshold_components(W, below, valid, reads=SYNC_FREE).count.tolist() == [1]
    assert threshold_components(W, below, valid).count.tolist() == [1]
    # log2(n) rounds join; the last round only closes what is left. One join round
    # fewer leaves the last pair of halves apart: the bound is not loose.
    monkeypatch.setattr(graph_module, "rounds", lambda m: rounds(m) - 1)
    assert threshold_components(W, below, valid, reads=SYNC_FREE).count.tolist() == [1]
    monkeypatch.setattr(graph_module, "rounds", lambda m: rounds(m) - 2)
    assert threshold_components(W, below, valid, reads=SYNC_FREE).count.tolist() == [2]


@pytest.mark.parametrize("seed", range(6))
def test_graph_level_partitions_agree_with_ties(seed):
    """Quantized similarities (many exact ties), padding and groups: the same partitions."""
    g = torch.Generator().manual_seed(seed)
    B, n = 5, 40
    W = (torch.rand(B, n, n, generator=g) * 8).floor() / 8
    W = torch.maximum(W, W.mT)
    valid = torch.tensor([40, 33, 40, 12, 27])
    pad = torch.arange(n) >= valid[:, None]
    W.masked_fill_(pad[:, :, None] | pad[:, None, :], float("-inf"))
    W.diagonal(dim1=1, dim2=2).fill_(float("-inf"))
    group = torch.tensor([0, 0, 1, 1, 1])
    for keep in (torch.tensor([9, 20]), torch.tensor([1, 60])):
        a = budget_components(W, valid, keep, group, reads=SYNC_FREE)
        b = budget_components(W, valid, keep, group)
        assert torch.equal(a.count, b.count)
        for i in range(B):
            m = int(valid[i])
            assert canonical(a.labels[i, :m]) == canonical(b.labels[i, :m])
    tau = torch.full((B,), 0.5)
    a, b = threshold_components(W, tau, valid, reads=SYNC_FREE), threshold_components(W, tau, valid)
    assert torch.equal(a.count, b.count)
    assert all(canonical(a.labels[i, : int(valid[i])]) == canonical(b.labels[i, : int(valid[i])]) for i in range(B))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kw", [dict(retention=0.1), dict(tau=0.9), dict(tau=0.9, approximate=True, epsilon=0.3)])
def test_cuda_synchronizes_once_per_call(kw):
    x = clustered_video(frames=8, n=196, dim=64, seed=3).cuda()
    llava_scissor.compress(x, **kw)  # warm-up: lazy CUDA initialisation synchronizes
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = llava_scissor.compress(x, **kw)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
    assert len(syncs) <= 1, [str(w.message) for w in syncs]
    cpu = llava_scissor.compress(x.cpu(), **kw)
    for name in ("assignment", "representatives", "sizes", "spatial_labels", "temporal_labels"):
        assert torch.equal(getattr(result, name).cpu(), getattr(cpu, name)), name
    torch.testing.assert_close(result.tokens.cpu(), cpu.tokens, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kw", [dict(tau=0.95), dict(retention=0.2, spatial_retention=0.95)])
def test_strips_in_a_sync_free_call(kw):
    """A temporal step too big for max_matrix_bytes goes strip by strip, also when sync-free."""
    x = clustered_video(frames=12, n=49, dim=32, noise=2.0, seed=4)
    kw = dict(kw, max_matrix_bytes=1 << 20)
    free = llava_scissor.compress(x, sync_free=True, **kw)
    assert free.num_spatial_tokens**2 * 4 > 1 << 20  # the strips did run
    assert_same(free, llava_scissor.compress(x, sync_free=False, **kw))


def test_host_read_policy_of_a_call():
    """Sync-free by default on CUDA only; an explicit setting wins on any device."""
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert HostReads.for_device(None, cpu) == DATA_SIZED and HostReads.for_device(None, cuda) == SYNC_FREE
    assert HostReads.for_device(True, cpu) == SYNC_FREE and HostReads.for_device(False, cuda) == DATA_SIZED
    # Data-sized: the value is read; sync-free: the bound, and the value is never computed.
    assert DATA_SIZED.read(7, lambda: 3) == 3 and DATA_SIZED.capacity(lambda: 5) is None
    assert SYNC_FREE.read(7, lambda: 1 // 0) == 7 and SYNC_FREE.capacity(lambda: 5) == 5
    assert SYNC_FREE.iterations(4, 9) == 4 and DATA_SIZED.iterations(4, 9) == 9
