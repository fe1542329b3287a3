"""The transformers integration on tiny random models of every supported family.

What is checked, per family: with compression switched off (and with tau = 1, where
every token is its own component) generation and logits equal the unpatched model's;
compressed, the language model receives exactly the expected video tokens and they
equal core ``compress`` on the same features; Qwen positions are those of the
representatives and decoding continues after them; ``apply`` / ``remove`` restore the
model exactly; a batch equals its prompts run one by one; a saved model works the same.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import pytest
import torch

pytest.importorskip("transformers")

import hf_models as H  # noqa: E402

import llava_scissor  # noqa: E402
from llava_scissor import ScissorError  # noqa: E402
from llava_scissor.integrations.hf import (  # noqa: E402
    apply,
    build_video_inputs,
    get_family,
    get_handle,
    prepare,
    supported_model_types,
)

FAMILIES = list(H.MODEL_TYPES)
NEW = 5  # generated tokens per test


def _height(model_type: str) -> int:
    return 84 if model_type.startswith("llava") else 56


@pytest.fixture(scope="module", params=FAMILIES)
def family_setup(request: Any) -> tuple[str, Any, Any]:
    model_type = request.param
    model = H.tiny_model(model_type)
    return model_type, model, H.tiny_parts(model_type, model)


def _inputs(
    model_type: str, parts: Any, frames: list[int], seeds: list[int] | None = None, questions: list[str] | None = None
) -> Any:
    seeds = seeds or list(range(1, len(frames) + 1))
    questions = questions or ["describe the video", "what happens in this video"][: len(frames)]
    videos = [H.random_video(f, _height(model_type), 84, seed=s) for f, s in zip(frames, seeds)]
    return build_video_inputs(parts, [H.prompt(model_type, q) for q in questions], videos)


def _generate(model: Any, inputs: Any, **kw: Any) -> torch.Tensor:
    return model.generate(**inputs, max_new_tokens=NEW, do_sample=False, **kw)


@contextlib.contextmanager
def lm_calls(model: Any) -> Iterator[list[dict[str, Any]]]:
    """Records the keyword arguments of every language-model call."""
    calls: list[dict[str, Any]] = []

    def hook(_m: Any, _args: Any, kwargs: dict[str, Any]) -> None:
        calls.append({k: v for k, v in kwargs.items()})

    handle = model.model.language_model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()


def test_supported_model_types() -> None:
    assert supported_model_types() == sorted(FAMILIES)


def test_unsupported_model_raises_with_the_list() -> None:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    text_model = Qwen2ForCausalLM(Qwen2Config(**{k: v for k, v in H._text_config().items() if k != "model_type"}))
    for fn in (
        lambda: apply(text_model),
        lambda: prepare(text_model, {"input_ids": torch.ones(1, 3, dtype=torch.long)}),
    ):
        with pytest.raises(ScissorError, match="llava_onevision.*qwen2_vl"):
            fn()


def test_disabled_is_identical_to_unpatched(family_setup: Any) -> None:
    model_type, model, parts = family_setup
    inputs = _inputs(model_type, parts, [4, 4])
    reference = _generate(model, inputs)
    prepared = prepare(model, inputs, enabled=False)
    assert "pixel_values_videos" not in prepared and "mm_encoder_outputs" in prepared
    assert torch.equal(_generate(model, prepared), reference)
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, model(**prepare(model, inputs, enabled=False)).logits)


def test_tau_one_keeps_every_token_and_matches_unpatched(family_setup: Any) -> None:
    model_type, model, parts = family_setup
    inputs = _inputs(model_type, parts, [4])
    prepared = prepare(model, inputs, tau=1.0)
    stats = prepared.stats[0]
    assert stats.tokens_after == stats.tokens_before
    assert torch.equal(stats.result.representatives, torch.arange(stats.result.num_input_tokens))
    assert torch.equal(_generate(model, prepared), _generate(model, inputs))
    with torch.no_grad():
        torch.testing.assert_close(model(**prepared).logits, model(**inputs).logits, rtol=1e-5, atol=1e-5)


def test_compressed_tokens_reach_the_language_model(family_setup: Any) -> None:
    model_type, model, parts = family_setup
    inputs = _inputs(model_type, parts, [4, 6])
    family = get_family(model)
    with torch.no_grad():
        videos = family.extract(model, inputs)
    expected = [llava_scissor.compress(v.features, retention=0.25) for v in videos]
    prepared = prepare(model, inputs, retention=0.25)
    tail = 1 if model_type == "llava_onevision" else 0
    video_id = family.video_token_id(model)
    with lm_calls(model) as calls, torch.no_grad():
        model(**prepared)
    embeds = calls[0]["inputs_embeds"]
    ids = prepared["input_ids"]
    deepstack = calls[0].get("deepstack_visual_embeds")
    visual_rows = []
    for stats, exp, video in zip(prepared.stats, expected, videos):
        assert stats.tokens_after == exp.num_tokens + tail
        assert stats.tokens_before == video.num_placeholders
        assert sum(stats.segment_tokens) == exp.num_tokens
        assert len(stats.segment_tokens) == (video.features.shape[0] if model_type in H.SEGMENTED else 1)
        # the placement rule: every token in its representative's frame segment, in order
        frames = (exp.representatives[stats.order] // video.features.shape[1]).tolist()
        if model_type in H.SEGMENTED:
            assert frames == sorted(frames) and frames == [
                f for f, c in enumerate(stats.segment_tokens) for _ in range(c)
            ]
        at = stats.positions
        assert bool((ids[stats.row, at] == video_id).all())
        got = embeds[stats.row, at]
        torch.testing.assert_close(got[: exp.num_tokens], exp.tokens[stats.order], rtol=0, atol=0)
        if tail:
            torch.testing.assert_close(got[-1], model.model.image_newline, rtol=0, atol=0)
        visual_rows.append((stats.row, at, exp, video, stats.order))
    # exactly the compressed count of video placeholders reaches the model
    assert int(family.video_token_mask(model, prepared).sum()) == sum(s.tokens_after for s in prepared.stats)
    assert int(family.video_token_mask(model, inputs).sum()) == sum(s.tokens_before for s in prepared.stats)
    if model_type in ("qwen3_vl", "qwen3_vl_moe"):
        # deepstack inputs: the same rows as the video tokens, reduced with the same weights
        from llava_scissor.core.reduce import reduce_rows

        mask = calls[0]["visual_pos_masks"]
        assert int(mask.sum()) == sum(s.tokens_after for s in prepared.stats)
        assert len(deepstack) == len(model.config.vision_config.deepstack_visual_indexes) == len(videos[0].side)
        order_in_sequence = sorted(visual_rows, key=lambda r: (r[0], int(r[1][0])))
        for layer, rows in enumerate(deepstack):
            want = torch.cat(
                [
                    reduce_rows(exp, video.side[layer], video.features)[order]
                    for _, _, exp, video, order in order_in_sequence
                ]
            )
            torch.testing.assert_close(rows, want, rtol=0, atol=0)
            assert rows.shape[0] == int(mask.sum())
    else:
        assert deepstack is None


def test_batch_equals_one_by_one(family_setup: Any) -> None:
    model_type, model, parts = family_setup
    frames = [4, 6] if model_type.startswith("qwen") else [3, 5]  # different lengths
    batch = _inputs(model_type, parts, frames)
    out = _generate(model, prepare(model, batch, retention=0.3))
    questions = ["describe the video", "what happens in this video"]
    for i, (f, q) in enumerate(zip(frames, questions)):
        single = _inputs(model_type, parts, [f], seeds=[i + 1], questions=[q])
        alone = _generate(model, prepare(model, single, retention=0.3))
        assert torch.equal(out[i, -NEW:], alone[0, -NEW:]), (i, out[i, -NEW:], alone[0, -NEW:])


def test_apply_remove_restores_exactly(family_setup: Any) -> None:
    model_type, model, parts = family_setup
    inputs = _inputs(model_type, parts, [4, 4])
    reference = _generate(model, inputs)
    with torch.no_grad():
        reference_logits = model(**inputs).logits
    video_id = get_family(model).video_token_id(model)
    handle = apply(model, retention=0.25)
    try:
        assert get_handle(model) is handle
        with lm_calls(model) as calls, torch.no_grad():
            compressed = _generate(model, inputs)
        prefill = calls[0]["inputs_embeds"].shape[1]
        assert prefill < inputs["input_ids"].shape[1]
        assert [s.tokens_after for s in handle.stats] == [
            s.tokens_after for s in prepare(model, inputs, retention=0.25).stats
        ]
        prepared = prepare(model, inputs, retention=0.25)
        direct = _generate(model, prepared)
        # generate under apply: the caller's prompt, then the same new tokens as prepare's
        length = prepared["input_ids"].shape[1]
        assert torch.equal(compressed, torch.cat([inputs["input_ids"], direct[:, length:]], dim=1))
        assert handle.last is not None and int((handle.last["input_ids"] == video_id).sum()) < int(
            (inputs["input_ids"] == video_id).sum()
        )
    finally:
        handle.remove()
    assert "forward" not in model.__dict__ and "generate" not in model.__dict__
    assert get_handle(model) is None
    assert torch.equal(_generate(model, inputs), reference)
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, reference_logits)
    handle.remove()  # twice is harmless


def test_apply_context_manager_replacement_and_isolation() -> None:
    model_type = "llava_onevision"
    model, other = H.tiny_model(model_type), H.tiny_model(model_type)
    parts = H.tiny_parts(model_type, model)
    inputs = _inputs(model_type, parts, [4])
    reference = _generate(other, inputs)
    with apply(model, retention=0.5) as first:
        _generate(model, inputs)
        half = first.stats[0].tokens_after
        second = apply(model, retention=0.1)  # replaces the first configuration
        assert not first.active and get_handle(model) is second
        _generate(model, inputs)
        assert second.stats[0].tokens_after < half
        # another instance of the same class is untouched
        assert torch.equal(_generate(other, inputs), reference)
        second.remove()
    assert "forward" not in model.__dict__
    assert torch.equal(_generate(model, inputs), reference)


def test_text_only_prompts_unchanged(family_setup: Any) -> None:
    model_type, model, parts = family_setup
    tok = parts.tokenizer
    text = tok(["<|im_start|>user what is shown <|im_end|> <|im_start|>assistant"], return_tensors="pt")
    prepared = prepare(model, text, retention=0.1)
    assert prepared.stats == [] and set(prepared) == set(text)
    assert all(prepared[k] is text[k] for k in text)
    reference = _generate(model, text)
    with apply(model, retention=0.1):
        assert torch.equal(_generate(model, text), reference)


def test_mixed_batch_text_and_video(family_setup: Any) -> None:
    model_type, model, parts = family_setup
    video = H.random_video(4, _height(model_type), 84, seed=3)
    texts = [H.prompt(model_type), "<|im_start|>user what is shown <|im_end|> <|im_start|>assistant"]
    batch = build_video_inputs(parts, texts, [video])
    out = _generate(model, prepare(model, batch, retention=0.25))
    text_alone = parts.tokenizer([texts[1]], return_tensors="pt")
    video_alone = build_video_inputs(parts, [texts[0]], [video])
    assert torch.equal(out[1, -NEW:], _generate(model, text_alone)[0, -NEW:])
    assert torch.equal(out[0, -NEW:], _generate(model, prepare(model, video_alone, retention=0.25))[0, -NEW:])


def test_kv_cache_matches_no_cache(family_setup: Any) -> None:
    model_type, model, parts = family_setup
    prepared = prepare(model, _inputs(model_type, parts, [4, 6]), retention=0.25)
    cached = _generate(model, prepared, use_cache=True)
    prepared = prepare(model, _inputs(model_type, parts, [4, 6]), retention=0.25)
    uncached = _generate(model, prepared, use_cache=False)
    assert torch.equal(cached, uncached)


def test_save_and_load_round_trip(tmp_path: Any) -> None:
    from transformers import AutoModelForImageTextToText

    from llava_scissor.integrations.hf import ProcessorParts, load_processor

    for model_type in ("llava_onevision", "qwen2_vl"):
        folder = H.write_tiny_model(model_type, tmp_path / model_type)
        original = H.tiny_model(model_type)
        loaded = AutoModelForImageTextToText.from_pretrained(folder).eval()
        loaded.generation_config.eos_token_id = None
        processor = load_processor(str(folder), local_files_only=True)
        assert isinstance(processor, ProcessorParts) or hasattr(processor, "video_processor")
        video = H.random_video(4, _height(model_type), 84, seed=5)
        inputs = build_video_inputs(processor, [H.prompt(model_type)], [video])
        expected = build_video_inputs(H.tiny_parts(model_type, original), [H.prompt(model_type)], [video])
        assert torch.equal(inputs["input_ids"], expected["input_ids"])
        with apply(loaded, retention=0.25) as handle:
            got = _generate(loaded, inputs)
            stats = handle.stats
        prepared = prepare(original, expected, retention=0.25)
        want = _generate(original, prepared)
        length = prepared["input_ids"].shape[1]
        assert torch.equal(got, torch.cat([inputs["input_ids"], want[:, length:]], dim=1))
        assert stats[0].tokens_after < stats[0].tokens_before
