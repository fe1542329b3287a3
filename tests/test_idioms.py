"""The transformers idioms after ``apply`` / ``prepare``, and settings refused at the call.

* ``out = model.generate(**inputs)`` under ``apply`` returns the caller's prompt ids
  followed by the new tokens, so ``out[:, inputs["input_ids"].shape[1]:]`` is the answer
  (also with ``return_dict_in_generate`` and ``num_return_sequences``); ``handle.last``
  keeps the compressed inputs.
* ``model.generate(**prepared)`` returns the *prepared* prompt followed by the new
  tokens: slice with ``prepared["input_ids"].shape[1]``.
* ``apply(model, method="nope")``, a bad method option, a baseline without a budget and
  ``tau`` mixed with a budget fail at the call, with a ScissorError naming the fix.
* Inputs that require grad are compressed (under no_grad) by every method.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import llava_scissor
from llava_scissor import ScissorConfig, ScissorError

NEW = 4


def _features(frames: int = 4, n: int = 16, d: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(frames, n, d, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    "kwargs, fix",
    [
        (dict(retention=0.1, tau=0.5), "not both"),
        (dict(max_tokens=8, tau=0.9), "not both"),
        (dict(retention=0.1, max_tokens=8), "not both"),
    ],
)
def test_tau_and_a_budget_are_refused(kwargs: dict[str, Any], fix: str) -> None:
    with pytest.raises(ScissorError, match=fix):
        llava_scissor.compress(_features(), **kwargs)
    with pytest.raises(ScissorError, match=fix):
        ScissorConfig(**kwargs)


def test_modes_switch_through_overrides() -> None:
    assert ScissorConfig().tau == 0.9 and not ScissorConfig().budgeted
    budget = ScissorConfig(tau=0.5).replace(retention=0.1)
    assert budget.tau is None and budget.retention == 0.1
    threshold = ScissorConfig(retention=0.1).replace(tau=0.5)
    assert threshold.tau == 0.5 and not threshold.budgeted
    # a config's budget replaced by a call's tau: the call's mode wins, nothing ignored
    x = _features()
    by_tau = llava_scissor.compress(x, ScissorConfig(retention=0.1), tau=0.5)
    assert by_tau.num_tokens == llava_scissor.compress(x, tau=0.5).num_tokens


def test_baselines_refuse_tau_and_unknown_settings() -> None:
    x = _features()
    with pytest.raises(ScissorError, match="needs a token budget"):
        llava_scissor.compress(x, method="uniform", tau=0.5)
    with pytest.raises(ScissorError, match="unknown method 'nope'; available methods: .*scissor"):
        llava_scissor.compress(x, method="nope", retention=0.1)
    with pytest.raises(ScissorError, match="unknown ScissorConfig field.*'dominant_ration'.*dominant_ratio"):
        llava_scissor.compress(x, method="visionzip", retention=0.1, dominant_ration=2.0)


@pytest.mark.parametrize("method", ["scissor", "uniform", "random", "l2norm", "pooling", "dycoke", "vidcom2"])
def test_inputs_that_require_grad_are_compressed(method: str) -> None:
    x = _features().requires_grad_()
    result = llava_scissor.compress(x, method=method, retention=0.25)
    plain = llava_scissor.compress(x.detach(), method=method, retention=0.25)
    assert torch.equal(result.tokens, plain.tokens)
    assert not result.tokens.requires_grad  # not differentiable, and says so
    assert x.grad is None


def test_scc_accepts_inputs_that_require_grad() -> None:
    x = _features()[0].requires_grad_()
    out = llava_scissor.scc(x, tau=0.3)
    assert not out.tokens.requires_grad
    with pytest.raises(ScissorError, match="not both"):
        llava_scissor.scc(x, 0.3, retention=0.5)


# --------------------------------------------------------------------------- transformers

transformers = pytest.importorskip("transformers")
import hf_models as H  # noqa: E402

from llava_scissor.integrations.hf import apply, build_video_inputs, prepare  # noqa: E402


@pytest.fixture(scope="module", params=["llava_onevision", "qwen2_vl"])
def setup(request: Any) -> tuple[Any, Any]:
    model_type = request.param
    model = H.tiny_model(model_type)
    parts = H.tiny_parts(model_type, model)
    height = 84 if model_type.startswith("llava") else 56
    videos = [H.random_video(4, height, 84, seed=s) for s in (1, 2)]
    prompts = [H.prompt(model_type, q) for q in ("describe the video", "what happens in this video")]
    return model, build_video_inputs(parts, prompts, videos)


def _gen(model: Any, inputs: Any, **kw: Any) -> Any:
    return model.generate(**inputs, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False, **kw)


def test_generate_under_apply_returns_the_callers_prompt(setup: Any) -> None:
    model, inputs = setup
    prepared = prepare(model, inputs, retention=0.25)
    length = prepared["input_ids"].shape[1]
    assert length < inputs["input_ids"].shape[1]  # the model sees fewer tokens
    direct = _gen(model, prepared)
    # prepare users: generate returns the prepared prompt, then the new tokens
    assert torch.equal(direct[:, :length], prepared["input_ids"])
    answer = direct[:, length:]
    assert answer.shape[1] == NEW
    with apply(model, retention=0.25) as handle:
        out = _gen(model, inputs)
        assert torch.equal(handle.last["input_ids"], prepared["input_ids"])
    # the idiom every transformers user writes
    assert torch.equal(out[:, : inputs["input_ids"].shape[1]], inputs["input_ids"])
    assert torch.equal(out[:, inputs["input_ids"].shape[1] :], answer)


def test_generate_under_apply_dict_output_and_several_sequences(setup: Any) -> None:
    model, inputs = setup
    with apply(model, retention=0.25):
        out = _gen(model, inputs, return_dict_in_generate=True, output_scores=True)
        beams = _gen(model, inputs, num_beams=2, num_return_sequences=2)
    length = inputs["input_ids"].shape[1]
    assert torch.equal(out.sequences[:, :length], inputs["input_ids"])
    assert out.sequences.shape[1] == length + NEW and len(out.scores) == NEW
    assert beams.shape[0] == 4
    assert torch.equal(beams[:, :length], inputs["input_ids"].repeat_interleave(2, dim=0))


def test_apply_refuses_bad_settings_at_the_call(setup: Any) -> None:
    model, inputs = setup
    with pytest.raises(ScissorError, match="unknown method 'nope'; available methods"):
        apply(model, method="nope")
    with pytest.raises(ScissorError, match="not both"):
        apply(model, retention=0.1, tau=0.5)
    with pytest.raises(ScissorError, match="needs a token budget"):
        apply(model, method="dycoke")
    with pytest.raises(ScissorError, match="unknown ScissorConfig field.*'windw'"):
        apply(model, method="fastv", retention=0.1, windw=3)
    with pytest.raises(ScissorError, match="dominant_ratio must be > 0"):
        apply(model, method="visionzip", retention=0.1, dominant_ratio=-1.0)
    assert "generate" not in model.__dict__  # nothing was installed
    text = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
    with pytest.raises(ScissorError, match="unknown method 'nope'"):
        prepare(model, text, method="nope")  # refused even where there is no video to compress
