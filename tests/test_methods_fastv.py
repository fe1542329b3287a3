"""FastV inside the language model: after layer K the decoder sees fewer tokens."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from llava_scissor import ScissorError
from llava_scissor.integrations.hf import apply, build_video_inputs, prepare
from llava_scissor.integrations.hf.fastv import decoder_layers, fastv_pruning
from llava_scissor.methods.fastv import attention_received

sys.path.insert(0, str(Path(__file__).parent))
from hf_models import prompt, random_video, tiny_model, tiny_parts  # noqa: E402


def _setup(model_type: str, frames: int = 4):
    model = tiny_model(model_type).eval()
    inputs = build_video_inputs(tiny_parts(model_type, model), prompt(model_type), [random_video(frames)])
    return model, inputs


@pytest.mark.parametrize("model_type", ["llava_onevision", "qwen2_vl"])
def test_language_model_sees_fewer_tokens_after_layer_k(model_type):
    model, inputs = _setup(model_type)
    prepared = prepare(model, inputs, method="fastv")
    s = prepared.stats[0]
    visual = s.frames * s.tokens_per_frame
    length = int(prepared["input_ids"].shape[1])
    with fastv_pruning(model, prepared, max_tokens=3, layer=1) as state, torch.no_grad():
        out = model.generate(**prepared, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == length + 3
    prefill = dict(state.seen_lengths[:2])
    assert prefill == {0: length, 1: length - visual + 3}
    assert all(n == 1 for _, n in state.seen_lengths[2:])  # decoding steps
    # The kept visual positions are the best-scored ones.
    kept_visual = [int(p) - s.start for p in state.keep if s.start <= int(p) < s.start + visual]
    assert sorted(kept_visual) == sorted(torch.topk(state.scores, 3).indices.tolist())


def test_scores_are_layer_k_minus_1_attention_received():
    model, inputs = _setup("llava_onevision")
    prepared = prepare(model, inputs, method="fastv")
    s = prepared.stats[0]
    with fastv_pruning(model, prepared, max_tokens=5, layer=1) as state, torch.no_grad():
        model(**prepared)
    model.set_attn_implementation("eager")
    with torch.no_grad():
        full = model(**prepared, output_attentions=True)
    visual = torch.arange(s.start, s.start + s.frames * s.tokens_per_frame)
    expected = attention_received(full.attentions[0], visual)
    torch.testing.assert_close(state.scores, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_full_budget_changes_nothing_and_decoding_works(attn):
    model, inputs = _setup("llava_onevision")
    model.set_attn_implementation(attn)
    with torch.no_grad():
        reference = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    with apply(model, method="fastv", retention=1.0, layer=1), torch.no_grad():
        same = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert torch.equal(reference[:, -4:], same[:, -4:])
    with apply(model, method="fastv", max_tokens=4, layer=1) as handle, torch.no_grad():
        pruned = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert pruned.shape[1] == reference.shape[1]
    assert handle.stats and handle.stats[0].result.method == "fastv"


def test_sdpa_and_eager_prune_alike():
    outs = []
    for attn in ("sdpa", "eager"):
        model, inputs = _setup("llava_onevision")
        model.set_attn_implementation(attn)
        with apply(model, method="fastv", max_tokens=6, layer=1), torch.no_grad():
            outs.append(model(**inputs).logits[0, -1])
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-4, atol=1e-4)


def test_errors():
    model, inputs = _setup("llava_onevision")
    prepared = prepare(model, inputs, method="fastv")
    with pytest.raises(ScissorError, match="smaller than the number of layers"):
        with fastv_pruning(model, prepared, max_tokens=3, layer=len(decoder_layers(model))):
            pass
    with pytest.raises(ScissorError, match="needs a token budget"):
        with fastv_pruning(model, prepared, layer=1):
            pass
    with pytest.raises(ScissorError, match=">= 1"):
        with fastv_pruning(model, prepared, max_tokens=3, layer=0):
            pass
