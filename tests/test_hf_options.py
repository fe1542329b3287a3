"""Options of the transformers integration: flat layout, baselines with side inputs,
input validation, and our torchvision-free inputs against the model's own processor."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch

pytest.importorskip("transformers")

import hf_models as H  # noqa: E402
from test_hf_integration import _generate, _inputs, lm_calls  # noqa: E402

from llava_scissor import ScissorError  # noqa: E402
from llava_scissor.integrations.hf import apply, build_video_inputs, get_family, prepare  # noqa: E402


@pytest.fixture(scope="module")
def onevision() -> tuple[Any, Any]:
    model = H.tiny_model("llava_onevision")
    return model, H.tiny_parts("llava_onevision", model)


def test_flat_layout_drops_the_newline(onevision: Any) -> None:
    model, parts = onevision
    inputs = _inputs("llava_onevision", parts, [4])
    kept = prepare(model, inputs, retention=0.25)
    flat = prepare(model, inputs, retention=0.25, keep_newline=False)
    assert flat.stats[0].tokens_after == kept.stats[0].tokens_after - 1 == kept.stats[0].result.num_tokens
    assert flat["input_ids"].shape[1] == kept["input_ids"].shape[1] - 1
    with lm_calls(model) as calls, torch.no_grad():
        model(**flat)
    s = flat.stats[0]
    got = calls[0]["inputs_embeds"][0, s.start : s.start + s.tokens_after]
    torch.testing.assert_close(got, s.result.tokens, rtol=0, atol=0)
    _generate(model, flat)  # decodes


@pytest.mark.parametrize("model_type", list(H.MODEL_TYPES))
def test_vision_attention_has_the_token_grid(model_type: str) -> None:
    model = H.tiny_model(model_type)
    parts = H.tiny_parts(model_type, model)
    inputs = _inputs(model_type, parts, [4, 6])
    family = get_family(model)
    with torch.no_grad():
        videos = family.extract(model, inputs)
        attention = family.vision_attention(model, inputs)
    assert len(attention) == len(videos)
    for att, video in zip(attention, videos):
        assert att.shape == video.features.shape[:2]
        assert bool((att > 0).all()) and bool(torch.isfinite(att).all())


def test_qwen_vision_attention_is_a_distribution_per_step() -> None:
    # Before pooling each temporal step's patches share one unit of attention; pooling to
    # merged tokens averages groups of 4, so a step's tokens sum to 1/4.
    model = H.tiny_model("qwen2_vl")
    inputs = _inputs("qwen2_vl", H.tiny_parts("qwen2_vl", model), [4])
    (att,) = get_family(model).vision_attention(model, inputs)
    torch.testing.assert_close(att.sum(dim=1), torch.full((att.shape[0],), 0.25), rtol=1e-5, atol=1e-6)


def test_baseline_with_side_input_through_prepare(onevision: Any) -> None:
    pytest.importorskip("llava_scissor.methods")
    import llava_scissor

    if "visionzip" not in llava_scissor.available_methods():
        pytest.skip("visionzip baseline not registered")
    model, parts = onevision
    inputs = _inputs("llava_onevision", parts, [4])
    prepared = prepare(model, inputs, method="visionzip", retention=0.25)
    s = prepared.stats[0]
    assert s.result.method == "visionzip"
    assert s.tokens_after == round(0.25 * 36) + 1
    _generate(model, prepared)


def test_errors_say_what_was_expected(onevision: Any) -> None:
    model, parts = onevision
    inputs = dict(_inputs("llava_onevision", parts, [4]))
    with pytest.raises(ScissorError, match="unknown ScissorConfig field"):
        prepare(model, inputs, tua=0.5)
    with pytest.raises(ScissorError, match="unknown ScissorConfig field"):
        apply(model, tua=0.5)
    broken = dict(inputs, input_ids=inputs["input_ids"][:, 3:], attention_mask=inputs["attention_mask"][:, 3:])
    with pytest.raises(ScissorError, match="placeholder"):
        prepare(model, broken, retention=0.5)
    with pytest.raises(ScissorError, match="placeholders but 2 videos"):
        build_video_inputs(parts, [H.prompt("llava_onevision")], [H.random_video(2), H.random_video(2)])


def test_own_inputs_match_the_model_processor() -> None:
    """Where transformers' video processor can be built (torchvision present), our
    torchvision-free inputs equal its output; skipped elsewhere (CPU CI)."""
    from transformers.utils import is_torchvision_available

    if not is_torchvision_available():
        pytest.skip("transformers video processors need torchvision")
    from transformers import LlavaOnevisionProcessor, LlavaOnevisionVideoProcessor

    parts = H.tiny_parts("llava_onevision")
    ip = parts.image_processor
    processor = LlavaOnevisionProcessor(
        image_processor=ip,
        tokenizer=parts.tokenizer,
        num_image_tokens=36,
        vision_feature_select_strategy="full",
        video_processor=LlavaOnevisionVideoProcessor(
            size={"height": 84, "width": 84}, image_mean=ip.image_mean, image_std=ip.image_std
        ),
    )
    video = H.random_video(4)
    ours = build_video_inputs(parts, [H.prompt("llava_onevision")], [video])
    theirs = build_video_inputs(processor, [H.prompt("llava_onevision")], [video])
    assert torch.equal(ours["input_ids"], theirs["input_ids"])
    # PIL and torchvision resize differ by rounding only
    torch.testing.assert_close(ours["pixel_values_videos"], theirs["pixel_values_videos"], rtol=0, atol=0.05)


def test_in_model_methods_run_through_a_prefill_hook(onevision: Any) -> None:
    """An in-model method (like FastV) gets the uncompressed video tokens and its prefill
    hook is entered around every wrapped call, with the video spans."""
    import contextlib

    methods = pytest.importorskip("llava_scissor.methods")
    from llava_scissor.integrations.hf import register_prefill_hook

    def never(*_: Any, **__: Any) -> Any:
        raise AssertionError("an in-model method's compress is not called before the model runs")

    methods.register_method(methods.Method(name="probe_in_model", compress=never, in_model=True), replace=True)
    model, parts = onevision
    inputs = _inputs("llava_onevision", parts, [4])
    with pytest.raises(ScissorError, match="prefill hook"):
        prepare(model, inputs, method="probe_in_model")

    seen: list[Any] = []

    @contextlib.contextmanager
    def hook(m: Any, prepared: Any) -> Any:
        seen.append((m, [(s.row, s.start, s.tokens_after) for s in prepared.stats]))
        yield

    register_prefill_hook("probe_in_model", hook)
    reference = _generate(model, inputs)
    with apply(model, method="probe_in_model") as handle:
        out = _generate(model, inputs)
    assert len(seen) == 1 and seen[0][0] is model
    assert seen[0][1] == [(0, handle.stats[0].start, handle.stats[0].tokens_before)]
    assert torch.equal(out, reference)  # the hook did nothing, so nothing changed


def test_positional_arguments_reach_the_wrappers(onevision: Any) -> None:
    model, parts = onevision
    inputs = _inputs("llava_onevision", parts, [4])
    rest = {k: v for k, v in inputs.items() if k != "input_ids"}
    with apply(model, retention=0.25) as handle:
        a = model.generate(inputs["input_ids"], **rest, max_new_tokens=3, do_sample=False)
        b = model.generate(**inputs, max_new_tokens=3, do_sample=False)
        with torch.no_grad():
            logits = model(inputs["input_ids"], **rest).logits
    assert torch.equal(a, b)
    assert logits.shape[1] == handle.last["input_ids"].shape[1] < inputs["input_ids"].shape[1]


def test_releases_without_precomputed_features_are_refused() -> None:
    """transformers releases before precomputed encoder outputs (< 5.18) get a clear error;
    detected from the forward signature, not from version strings."""
    model = H.tiny_model("llava_onevision")
    inputs = _inputs("llava_onevision", H.tiny_parts("llava_onevision", model), [2])
    original = type(model).forward

    def old_forward(input_ids: Any = None, pixel_values_videos: Any = None, attention_mask: Any = None) -> Any:
        return original(
            model, input_ids=input_ids, pixel_values_videos=pixel_values_videos, attention_mask=attention_mask
        )

    model.forward = old_forward
    for fn in (lambda: apply(model), lambda: prepare(model, inputs)):
        with pytest.raises(ScissorError, match="mm_encoder_outputs"):
            fn()


@pytest.fixture(scope="module")
def qwen3() -> tuple[Any, Any]:
    model = H.tiny_model("qwen3_vl")
    return model, H.tiny_parts("qwen3_vl", model)


def _methods() -> list[str]:
    import llava_scissor

    return llava_scissor.available_methods()


@pytest.mark.parametrize("method", _methods())
def test_every_method_on_a_segmented_family(qwen3: Any, method: str) -> None:
    """Every method compresses Qwen3-VL's per-frame segments (deepstack rows reduced alike),
    or says why it cannot."""
    from llava_scissor.core.reduce import reduce_rows

    model, parts = qwen3
    inputs = _inputs("qwen3_vl", parts, [6])
    if method == "fastv":
        with pytest.raises(ScissorError, match="segment"):
            prepare(model, inputs, method=method, retention=0.3)
        return
    prepared = prepare(model, inputs, method=method, retention=0.3)
    s = prepared.stats[0]
    assert s.result.method == method and s.tokens_after == round(0.3 * s.tokens_before)
    with lm_calls(model) as calls, torch.no_grad():
        model(**prepared)
    video = get_family(model).extract(model, inputs)[0]
    torch.testing.assert_close(calls[0]["inputs_embeds"][0, s.positions], s.result.tokens[s.order], rtol=0, atol=0)
    for layer, rows in enumerate(calls[0]["deepstack_visual_embeds"]):
        torch.testing.assert_close(rows, reduce_rows(s.result, video.side[layer], video.features)[s.order])


def test_side_rows_refused_for_tokens_that_are_no_mean_of_their_originals() -> None:
    import llava_scissor
    from llava_scissor.core.reduce import reduce_rows

    features = torch.randn(2, 6, 8)
    result = llava_scissor.compress(features, retention=0.5)
    odd = dataclasses.replace(result, tokens=result.tokens + 1.0)  # made some other way
    with pytest.raises(ScissorError, match="weighted mean"):
        reduce_rows(odd, torch.randn(12, 4), features)
    torch.testing.assert_close(reduce_rows(result, features, features), result.tokens)


def test_append_text_tokens_extends_every_per_token_tensor() -> None:
    from llava_scissor.integrations.hf.prepare import append_text_tokens

    inputs = {
        "input_ids": torch.tensor([[5, 6, 7]]),
        "attention_mask": torch.tensor([[0, 1, 1]]),
        "mm_token_type_ids": torch.tensor([[0, 2, 2]], dtype=torch.int32),
        "labels": torch.tensor([[-100, 6, 7]]),
        "pixel_values_videos": torch.zeros(2, 3),
    }
    out = append_text_tokens(inputs, torch.tensor([[8, 9]]))
    assert out["input_ids"].tolist() == [[5, 6, 7, 8, 9]]
    assert out["attention_mask"].tolist() == [[0, 1, 1, 1, 1]]
    assert out["mm_token_type_ids"].tolist() == [[0, 2, 2, 0, 0]] and out["mm_token_type_ids"].dtype == torch.int32
    assert out["labels"].tolist() == [[-100, 6, 7, -100, -100]]
    assert out["pixel_values_videos"] is inputs["pixel_values_videos"]
    assert inputs["input_ids"].shape == (1, 3)  # the caller's inputs stay as they were
    with pytest.raises(ScissorError, match="position_ids"):
        append_text_tokens({**inputs, "position_ids": torch.arange(3)[None]}, torch.tensor([[8]]))
    with pytest.raises(ScissorError, match=r"\[1, n\]"):
        append_text_tokens(inputs, torch.tensor([8, 9]))
