"""Zero (and near-zero) tokens: what they do, and that no output token is ever empty.

The definition (``core/compress.py: zero_axis``): a token whose norm is below 1e-12 is a zero
token; zero tokens are equal to each other (cosine 1) and orthogonal to every other
token (cosine 0). Among exactly equally similar targets the merge step keeps an original
in its own component, so equal targets split by a budget each keep their members.
"""

from __future__ import annotations

import pytest
import torch

import llava_scissor
from llava_scissor.core.engine.exact import zero_tokens

F, N, D = 4, 16, 32
MODES = [dict(tau=0.9), dict(tau=0.5), dict(tau=1.0), dict(retention=0.3), dict(max_tokens=5), dict(retention=1.0)]
PATHS = [dict(), dict(sync_free=True), dict(similarity_dtype="bfloat16"), dict(similarity_dtype="float64")]


def _with_zeros(per_frame: int = 3, scale: float = 0.0, seed: int = 0) -> torch.Tensor:
    x = torch.randn(F, N, D, generator=torch.Generator().manual_seed(seed))
    x[:, :per_frame] *= scale
    return x


def _check_partition(result: llava_scissor.CompressionResult, total: int) -> None:
    assert int(result.sizes.min()) >= 1, result.sizes  # no empty output token
    assert int(result.sizes.sum()) == total
    assert torch.equal(result.sizes, torch.bincount(result.assignment, minlength=result.num_tokens))


@pytest.mark.parametrize("mode", MODES, ids=lambda m: "-".join(f"{k}={v}" for k, v in m.items()))
@pytest.mark.parametrize("path", PATHS, ids=lambda p: "-".join(f"{k}={v}" for k, v in p.items()) or "default")
def test_three_zero_tokens_per_frame(mode: dict, path: dict) -> None:
    x = _with_zeros()
    result = llava_scissor.compress(x, **mode, **path)
    _check_partition(result, F * N)
    assert result.tokens.shape[1] == D and result.spatial_tokens.shape[1] == D
    zero_outputs = result.assignment.view(F, N)[:, :3].unique()
    if mode.get("tau", 0.0) < 1.0 and "max_tokens" not in mode and mode.get("retention") != 1.0:
        # the 12 zero tokens are one output token, which holds them alone and is zero
        assert zero_outputs.numel() == 1
        assert int(result.sizes[zero_outputs[0]]) == 3 * F
        assert torch.equal(result.tokens[zero_outputs[0]], torch.zeros(D))
    plain = llava_scissor.compress(x, **mode)
    assert torch.equal(result.assignment, plain.assignment)  # every path decides alike


@pytest.mark.parametrize("mode", [dict(tau=0.9), dict(retention=0.5), dict(max_tokens=3), dict(tau=1.0)], ids=str)
@pytest.mark.parametrize("sync_free", [False, True])
def test_all_zero_input(mode: dict, sync_free: bool) -> None:
    x = torch.zeros(F, N, D)
    result = llava_scissor.compress(x, **mode, sync_free=sync_free)
    _check_partition(result, F * N)
    if mode == dict(tau=0.9):
        assert result.num_tokens == 1 and int(result.sizes[0]) == F * N  # nothing to tell apart
    assert torch.equal(result.tokens, torch.zeros(result.num_tokens, D))


def test_equal_targets_keep_their_members() -> None:
    """Copies of a token kept apart (a budget of every token) are equal targets: each keeps
    its own original instead of all going to the first copy. (Copies averaged into
    components are not bitwise equal any more: the most similar one wins, as for any data.)"""
    proto = torch.randn(3, D, generator=torch.Generator().manual_seed(1))
    x = proto[torch.arange(F * N) % 3].view(F, N, D)
    for mode in (dict(retention=1.0), dict(max_tokens=F * N, sync_free=True)):
        result = llava_scissor.compress(x, **mode)
        _check_partition(result, F * N)
        assert result.num_tokens == F * N and bool((result.sizes == 1).all())


def test_near_zero_is_zero_and_small_is_not() -> None:
    tiny = _with_zeros(scale=1e-15)  # norm ~ 6e-15: no direction left
    assert bool(zero_tokens(tiny)[:, :3].all()) and not bool(zero_tokens(tiny)[:, 3:].any())
    result = llava_scissor.compress(tiny, tau=0.9)
    _check_partition(result, F * N)
    assert result.assignment.view(F, N)[:, :3].unique().numel() == 1
    small = _with_zeros(scale=1e-6)  # small but with a direction: an ordinary token
    assert not bool(zero_tokens(small).any())
    assert torch.equal(
        llava_scissor.compress(small, tau=0.9).assignment,
        llava_scissor.compress(_with_zeros(scale=1.0), tau=0.9).assignment,
    )


def test_scc_of_one_set_with_zero_tokens() -> None:
    x = torch.randn(20, D, generator=torch.Generator().manual_seed(2))
    x[[3, 7, 11]] = 0
    out = llava_scissor.scc(x, tau=0.9)
    assert out.labels[3] == out.labels[7] == out.labels[11]
    assert int((out.labels == out.labels[3]).sum()) == 3
    assert torch.equal(out.tokens[out.labels[3]], torch.zeros(D))


def test_inputs_without_zero_tokens_are_unchanged_by_the_rule() -> None:
    """The reference cases hold no zero token; a video without one takes the path it took."""
    x = _with_zeros(scale=1.0)
    assert not bool(zero_tokens(x).any())
    a = llava_scissor.compress(x, retention=0.2)
    b = llava_scissor.compress(x.double(), retention=0.2, similarity_dtype="float64")
    assert torch.equal(a.assignment, b.assignment)
