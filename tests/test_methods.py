"""Every registered method: exact budget, determinism, shapes, and one behaviour of its own."""

from __future__ import annotations

import math

import pytest
import torch

import llava_scissor
from llava_scissor import ScissorError
from llava_scissor.methods import Method, available_methods, compress_with, get_method, register_method
from llava_scissor.methods._common import allocate, even_split, evenly_spaced

ALL = ["dycoke", "fastv", "l2norm", "pooling", "random", "scissor", "uniform", "vidcom2", "visionzip"]
BASELINES = [m for m in ALL if m != "scissor"]


def video(frames: int = 6, n: int = 16, dim: int = 24, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(frames, n, dim, generator=g).to(dtype)


def side_inputs(name: str, frames: int, n: int, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    method = get_method(name)
    return {key: torch.rand(frames, n, generator=g) for key in method.side_inputs}


def run(name: str, x: torch.Tensor, **kw):
    return llava_scissor.compress(x, method=name, **side_inputs(name, x.shape[0], x.shape[1]), **kw)


def budget(r: float, total: int) -> int:
    return max(1, min(total, math.floor(r * total + 0.5)))


# ---------------------------------------------------------------- registry


def test_registry_lists_every_method():
    names = available_methods()
    assert names == sorted(names) and set(ALL) <= set(names)  # other tests may register more
    assert llava_scissor.available_methods() == names
    for name in ALL:
        m = get_method(name)
        assert isinstance(m, Method) and m.name == name
    assert get_method("visionzip").side_inputs == ("vision_attention",)
    assert get_method("fastv").in_model and get_method("fastv").side_inputs == ("llm_attention",)
    assert not any(get_method(n).in_model for n in ALL if n != "fastv")


def test_unknown_method_lists_names():
    with pytest.raises(ScissorError, match="available methods: dycoke, fastv"):
        get_method("tome")
    with pytest.raises(ScissorError, match="unknown method"):
        llava_scissor.compress(video(), method="nope", retention=0.5)


def test_register_duplicate_refused():
    with pytest.raises(ScissorError, match="already registered"):
        register_method(get_method("uniform"))


@pytest.mark.parametrize("name", BASELINES)
def test_baselines_need_a_budget(name):
    with pytest.raises(ScissorError, match="needs a token budget"):
        run(name, video())


@pytest.mark.parametrize("name", ["visionzip", "fastv"])
def test_missing_side_input_is_a_clear_error(name):
    key = get_method(name).side_inputs[0]
    with pytest.raises(ScissorError, match=f"needs {key}"):
        llava_scissor.compress(video(), method=name, retention=0.5)
    with pytest.raises(ScissorError, match="shape"):
        llava_scissor.compress(video(), method=name, retention=0.5, **{key: torch.rand(3, 3)})


def test_bad_features_and_options():
    with pytest.raises(ScissorError, match=r"\[frames, tokens_per_frame, dim\]"):
        llava_scissor.compress(torch.randn(4, 8), method="uniform", retention=0.5)
    with pytest.raises(ScissorError, match="unknown ScissorConfig field"):
        llava_scissor.compress(video(), method="uniform", retention=0.5, dominant_ratio=2.0)
    with pytest.raises(ScissorError, match="dominant_ratio must be > 0"):
        run("visionzip", video(), retention=0.5, dominant_ratio=-1.0)
    with pytest.raises(ScissorError, match="takes no options"):
        compress_with("uniform", video(), retention=0.5, options=object())


# ---------------------------------------------------------------- common properties


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("frames,n", [(6, 16), (5, 9), (1, 12)])
@pytest.mark.parametrize("r", [1.0, 0.5, 0.35, 0.1, 0.05, 0.03])
def test_exact_budget_and_shapes(name, frames, n, r):
    x = video(frames, n)
    res = run(name, x, retention=r)
    k = budget(r, frames * n)
    assert res.num_tokens == k
    assert res.tokens.shape == (k, x.shape[-1]) and res.tokens.dtype == x.dtype
    assert res.assignment.shape == (frames * n,) and res.assignment.dtype == torch.long
    assert res.representatives.shape == (k,) and res.sizes.shape == (k,)
    assert res.frames == frames and res.tokens_per_frame == n and res.method == name
    a = res.assignment
    assert int(a.min()) >= -1 and int(a.max()) < k
    assert torch.equal(res.sizes, torch.bincount(a[a >= 0], minlength=k))
    if name != "scissor":
        # Every output token stands for at least one original; LLM order is frame-major.
        assert bool((res.sizes >= 1).all())
        assert bool((res.representatives[1:] > res.representatives[:-1]).all())
        assert torch.equal(a[res.representatives], torch.arange(k))


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("cap", [1, 7, 40, 10_000])
def test_max_tokens(name, cap):
    x = video(4, 16)
    res = run(name, x, max_tokens=cap)
    assert res.num_tokens == min(cap, 64)


@pytest.mark.parametrize("name", ALL)
def test_deterministic_and_list_input(name):
    xs = [video(4, 16, seed=s) for s in range(3)]
    side = {k: [side_inputs(name, 4, 16, seed=s)[k] for s in range(3)] for k in get_method(name).side_inputs}
    batch = llava_scissor.compress(xs, method=name, retention=0.2, **side)
    assert isinstance(batch, list) and len(batch) == 3
    for s, (x, res) in enumerate(zip(xs, batch)):
        one = llava_scissor.compress(x, method=name, retention=0.2, **{k: v[s] for k, v in side.items()})
        again = llava_scissor.compress(x, method=name, retention=0.2, **{k: v[s] for k, v in side.items()})
        for r in (one, again):
            assert torch.equal(r.tokens, res.tokens)
            assert torch.equal(r.assignment, res.assignment)
            assert torch.equal(r.representatives, res.representatives)


@pytest.mark.parametrize("name", ALL)
def test_low_precision_input_keeps_dtype(name):
    x = video(3, 16, dtype=torch.bfloat16)
    res = run(name, x, retention=0.25)
    assert res.tokens.dtype == torch.bfloat16 and res.num_tokens == 12
    assert bool(torch.isfinite(res.tokens.float()).all())


def test_list_side_input_must_match_videos():
    with pytest.raises(ScissorError, match="one tensor per video"):
        llava_scissor.compress(
            [video(), video()], method="visionzip", retention=0.5, vision_attention=torch.rand(6, 16)
        )


# ---------------------------------------------------------------- helpers


def test_allocation_helpers():
    assert sum(even_split(10, 4, 5)) == 10 and max(even_split(10, 4, 5)) - min(even_split(10, 4, 5)) <= 1
    assert even_split(100, 3, 5) == [5, 5, 5]
    shares = allocate(torch.tensor([1.0, 1.0, 10.0]), 12, 5)
    assert shares == [3, 4, 5] or shares == [4, 3, 5]
    assert sum(allocate(torch.rand(7), 23, 4)) == 23
    idx = evenly_spaced(4, 16)
    assert idx.tolist() == [2, 6, 10, 14]
    assert evenly_spaced(16, 16).tolist() == list(range(16))


# ---------------------------------------------------------------- behaviour of each method


def test_scissor_entry_is_the_core():
    x = video(4, 16)
    a = llava_scissor.compress(x, method="scissor", retention=0.25)
    b = llava_scissor.core.compress(x, retention=0.25)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.assignment, b.assignment)


def _check_merge_formula(x: torch.Tensor, res) -> None:
    flat = x.reshape(-1, x.shape[-1])
    for j in range(res.num_tokens):
        members = flat[res.assignment == j]
        expect = (flat[res.representatives[j]] + members.sum(0)) / (1 + members.shape[0])
        torch.testing.assert_close(res.tokens[j], expect, rtol=1e-5, atol=1e-5)


def test_uniform_evenly_spaced_then_merge():
    x = video(4, 16)
    res = llava_scissor.compress(x, method="uniform", max_tokens=8)
    assert res.representatives.tolist() == [4, 12, 20, 28, 36, 44, 52, 60]
    _check_merge_formula(x, res)
    # Every original joins its most similar representative.
    flat = torch.nn.functional.normalize(x.reshape(-1, x.shape[-1]), dim=-1)
    sim = flat @ flat[res.representatives].T
    assert torch.equal(res.assignment, sim.argmax(1))
    raw = llava_scissor.compress(x, method="uniform", max_tokens=8, merge=False)
    assert torch.equal(raw.tokens, x.reshape(-1, x.shape[-1])[raw.representatives])
    assert int((raw.assignment == -1).sum()) == 64 - 8


def test_random_depends_on_seed_only():
    x = video(4, 16)
    a = llava_scissor.compress(x, method="random", max_tokens=10, seed=1)
    b = llava_scissor.compress(x, method="random", max_tokens=10, seed=1)
    c = llava_scissor.compress(x, method="random", max_tokens=10, seed=2)
    assert torch.equal(a.representatives, b.representatives)
    assert not torch.equal(a.representatives, c.representatives)
    _check_merge_formula(x, a)


def test_l2norm_keeps_highest_norms():
    x = video(4, 16)
    scale = torch.ones(4, 16)
    picks = [(0, 3), (1, 5), (2, 7), (3, 11)]
    for f, p in picks:
        scale[f, p] = 10.0
    x = x * scale[..., None]
    res = llava_scissor.compress(x, method="l2norm", max_tokens=4)
    assert res.representatives.tolist() == [f * 16 + p for f, p in picks]
    _check_merge_formula(x, res)


def test_pooling_matches_adaptive_average_pooling():
    x = video(3, 36, dim=8)  # 6 x 6 grid
    res = llava_scissor.compress(x, method="pooling", max_tokens=27)  # 9 cells = 3 x 3 per frame
    grid = x.permute(0, 2, 1).reshape(3, 8, 6, 6)
    pooled = torch.nn.functional.adaptive_avg_pool2d(grid, (3, 3)).reshape(3, 8, 9).permute(0, 2, 1)
    torch.testing.assert_close(res.tokens, pooled.reshape(27, 8))
    assert bool((res.sizes == 4).all())
    # Each cell's representative is inside the cell; cells of one frame stay in that frame.
    assert torch.equal(res.representatives // 36, torch.arange(3).repeat_interleave(9))
    # Fewer tokens than frames: frames are pooled over time.
    tiny = llava_scissor.compress(x, method="pooling", max_tokens=2)
    assert tiny.sizes.tolist() == [72, 36]
    torch.testing.assert_close(tiny.tokens[0], x[:2].reshape(72, 8).mean(0))
    torch.testing.assert_close(tiny.tokens[1], x[2].mean(0))


def test_dycoke_merges_a_frame_identical_to_the_previous_one():
    x = video(2, 16)
    x[1] = x[0]
    res = llava_scissor.compress(x, method="dycoke", retention=0.5)
    assert res.representatives.tolist() == list(range(16))
    assert res.assignment[16:].tolist() == list(range(16))  # same position in frame 0
    assert bool((res.sizes == 2).all())
    torch.testing.assert_close(res.tokens, x[0])  # DyCoke keeps tokens unchanged
    # A few changed positions are exactly what the compared frame keeps.
    y = x.clone()
    y[1, [3, 7]] = video(1, 2, seed=9)[0]
    res = llava_scissor.compress(y, method="dycoke", max_tokens=18)
    assert res.representatives.tolist() == list(range(16)) + [16 + 3, 16 + 7]


def test_dycoke_window_structure():
    from llava_scissor.methods.dycoke import reference_frames

    assert reference_frames(9) == [-1, 0, 0, 2, 0, 4, 4, 6, 4]
    x = video(8, 16)
    res = llava_scissor.compress(x, method="dycoke", max_tokens=32)  # exactly the windows' first frames
    assert sorted(set((res.representatives // 16).tolist())) == [0, 4]
    # Frame 3 is merged into frame 2, which is merged into frame 0: same position, frame 0.
    assert res.assignment[3 * 16 : 4 * 16].tolist() == list(range(16))


def test_visionzip_keeps_the_highest_attention_tokens():
    frames, n = 2, 100
    x = video(frames, n, dim=16)
    attention = torch.rand(frames, n, generator=torch.Generator().manual_seed(3))
    res = llava_scissor.compress(x, method="visionzip", max_tokens=128, vision_attention=attention)
    flat = x.reshape(-1, 16)
    for f in range(frames):
        top = torch.topk(attention[f], 54).indices + f * n  # 64 per frame: 54 dominant + 10 contextual
        in_frame = res.representatives[(res.representatives // n) == f]
        assert in_frame.numel() == 64
        assert set(top.tolist()) <= set(in_frame.tolist())
        for t in top.tolist():
            j = int(res.assignment[t])
            assert int(res.sizes[j]) == 1
            torch.testing.assert_close(res.tokens[j], flat[t])
    # The contextual tokens absorb everything else: nothing is dropped.
    assert int((res.assignment < 0).sum()) == 0
    assert int(res.sizes.sum()) == frames * n
    # The ratio is an option.
    res2 = llava_scissor.compress(x, method="visionzip", max_tokens=128, vision_attention=attention, dominant_ratio=1.0)
    assert int((res2.sizes == 1).sum()) < int((res.sizes == 1).sum())


def test_vidcom2_gives_unique_frames_more_tokens():
    base = video(1, 16, seed=4)
    x = base.repeat(6, 1, 1) + 0.05 * video(6, 16, seed=5)
    x[4] = video(1, 16, seed=6)[0]  # the one distinct frame
    res = llava_scissor.compress(x, method="vidcom2", retention=0.25)
    per_frame = torch.bincount(res.representatives // 16, minlength=6)
    assert int(per_frame.sum()) == 24
    assert int(per_frame[4]) == int(per_frame.max()) and int(per_frame[4]) > 24 // 6
    assert int((res.assignment == -1).sum()) == 96 - 24  # pruned, not merged
    # Within a frame, an outlier token is the one kept.
    y = base[0, :1].repeat(2, 16, 1) + 0.1 * video(2, 16, seed=7)  # near-identical tokens
    y[1, 9] = video(1, 1, seed=8)[0, 0]
    kept = llava_scissor.compress(y, method="vidcom2", max_tokens=2).representatives.tolist()
    assert 16 + 9 in kept


def test_fastv_selection_keeps_most_attended():
    x = video(2, 8)
    scores = torch.arange(16, dtype=torch.float32).flip(0).reshape(2, 8)
    res = llava_scissor.compress(x, method="fastv", max_tokens=5, llm_attention=scores)
    assert res.representatives.tolist() == [0, 1, 2, 3, 4]
    assert int((res.assignment == -1).sum()) == 11
    torch.testing.assert_close(res.tokens, x.reshape(16, -1)[:5])
