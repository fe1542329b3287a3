"""Tiny transformers video models, a tiny tokenizer and processors, built locally.

Shared by the HF integration tests, the CLI tests and the baseline tests. Nothing here
downloads: configs are written in code, weights are random (seeded), the tokenizer is a
``tokenizers`` WordLevel model wrapped in ``PreTrainedTokenizerFast``.

Sizes are chosen so that every layout rule is exercised while the models stay tiny:

* LLaVA-OneVision: SigLIP 84 px / patch 14 -> 6 x 6 patches -> 2x2 bilinear pooling ->
  3 x 3 = 9 tokens per frame, plus one newline per video.
* LLaVA-NeXT-Video: CLIP 84 px / patch 14 -> 6 x 6 (+ CLS, dropped) -> pool stride 2 ->
  9 tokens per frame, no newline.
* Qwen2-VL / Qwen2.5-VL: 56 x 84 px frames -> 4 x 6 patches -> 2x2 merge -> 2 x 3 = 6
  tokens per temporal step of 2 frames.
* Qwen3-VL / Qwen3-VL-MoE / Qwen3.5 / Qwen3.5-MoE / GLM-4.1V: the same 2 x 3 tokens per
  temporal step, each step its own segment (``<t seconds><|vision_start|>`` ... for Qwen,
  ``<|begin_of_image|>`` ... ``<|end_of_image|>t`` inside ``<|begin_of_video|>`` for GLM);
  Qwen3-VL's vision model returns deepstack features from both of its layers.

Main entry points: ``tiny_model(model_type)``, ``tiny_parts(model_type)`` (the
``ProcessorParts`` that ``build_video_inputs`` takes), ``random_video(frames, ...)`` and
``write_tiny_model(model_type, path)`` (a complete folder loadable with
``from_pretrained`` and ``llava_scissor.integrations.hf.load_processor``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

MODEL_TYPES = (
    "llava_onevision",
    "llava_next_video",
    "qwen2_vl",
    "qwen2_5_vl",
    "qwen3_vl",
    "qwen3_vl_moe",
    "qwen3_5",
    "qwen3_5_moe",
    "glm4v",
    "glm46v",
)
#: families whose video is one placeholder segment per temporal step
SEGMENTED = ("qwen3_vl", "qwen3_vl_moe", "qwen3_5", "qwen3_5_moe", "glm4v", "glm46v")
#: 3-D rotary positions (supplied by the integration)
MROPE = ("qwen2_vl", "qwen2_5_vl") + SEGMENTED

SPECIAL_TOKENS = [
    "<|endoftext|>",  # 0: pad and eos
    "<|im_start|>",
    "<|im_end|>",
    "<image>",  # 3
    "<video>",  # 4
    "<|vision_start|>",  # 5
    "<|vision_end|>",  # 6
    "<|image_pad|>",  # 7
    "<|video_pad|>",  # 8
    "<unk>",  # 9
    "<|begin_of_image|>",  # 10: GLM-4V
    "<|end_of_image|>",
    "<|begin_of_video|>",
    "<|end_of_video|>",
    "<|image|>",  # 14
    "<|video|>",  # 15 (GLM's video placeholder before expansion)
]
WORDS = (
    "user assistant system you are a helpful describe the video what happens in this image "
    "and is shown please answer briefly frame color red green blue cat dog runs sits left right"
).split()
VOCAB_SIZE = 64
PAD_ID = 0
_QWEN = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe", "qwen3_5", "qwen3_5_moe")
_GLM = ("glm4v", "glm46v")
IMAGE_ID = {"llava_onevision": 3, "llava_next_video": 3, **{t: 7 for t in _QWEN}, **{t: 14 for t in _GLM}}
VIDEO_ID = {"llava_onevision": 4, "llava_next_video": 4, **{t: 8 for t in _QWEN}, **{t: 14 for t in _GLM}}
VIDEO_TOKEN = {
    "llava_onevision": "<video>",
    "llava_next_video": "<video>",
    **{t: "<|video_pad|>" for t in _QWEN},
    **{t: "<|video|>" for t in _GLM},
}
IMAGE_TOKEN = {
    "llava_onevision": "<image>",
    "llava_next_video": "<image>",
    **{t: "<|image_pad|>" for t in _QWEN},
    **{t: "<|image|>" for t in _GLM},
}
#: what the chat template writes for a video (GLM's real template wraps it in the video markers)
VIDEO_PART = dict(VIDEO_TOKEN, **{t: "<|begin_of_video|><|video|><|end_of_video|>" for t in _GLM})

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }} "
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }} "
    "{% elif part['type'] == 'video' %}{{ video_token }} {% elif part['type'] == 'image' %}{{ image_token }} "
    "{% endif %}{% endfor %}{% endif %}<|im_end|> {% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant {% endif %}"
)


def tiny_tokenizer(model_type: str = "llava_onevision") -> Any:
    """A WordLevel tokenizer with the special tokens of every supported family."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for word in WORDS:
        vocab.setdefault(word, len(vocab))
    assert len(vocab) <= VOCAB_SIZE
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    template = CHAT_TEMPLATE.replace("{{ video_token }}", VIDEO_PART[model_type]).replace(
        "{{ image_token }}", IMAGE_TOKEN[model_type]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        padding_side="left",
        chat_template=template,
    )


def _text_config(**extra: Any) -> dict[str, Any]:
    cfg = dict(
        model_type="qwen2",
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=VOCAB_SIZE,
        max_position_embeddings=1024,
        pad_token_id=PAD_ID,
        eos_token_id=PAD_ID,
        bos_token_id=PAD_ID,
        tie_word_embeddings=False,
    )
    cfg.update(extra)
    return cfg


def _patch14_vision(model_type: str, **extra: Any) -> dict[str, Any]:
    """A tiny 84 x 84 vision tower of 14 x 14 patches (the LLaVA families' SigLIP / CLIP)."""
    return dict(
        model_type=model_type,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=84,
        patch_size=14,
        **extra,
    )


def tiny_config(model_type: str) -> Any:
    """The config of a tiny random model of ``model_type`` (one of ``MODEL_TYPES``)."""
    import transformers as tf

    if model_type == "llava_onevision":
        return tf.LlavaOnevisionConfig(
            text_config=_text_config(),
            vision_config=_patch14_vision("siglip_vision_model"),
            image_token_index=IMAGE_ID[model_type],
            video_token_index=VIDEO_ID[model_type],
            vision_feature_layer=-1,
            vision_feature_select_strategy="full",
            image_grid_pinpoints=[[84, 84], [84, 168], [168, 84]],
            tie_word_embeddings=False,
        )
    if model_type == "llava_next_video":
        return tf.LlavaNextVideoConfig(
            text_config=_text_config(),
            vision_config=_patch14_vision("clip_vision_model", projection_dim=32),
            image_token_index=IMAGE_ID[model_type],
            video_token_index=VIDEO_ID[model_type],
            vision_feature_layer=-2,
            vision_feature_select_strategy="default",
            image_grid_pinpoints=[[84, 84], [84, 168], [168, 84]],
            spatial_pool_stride=2,
            spatial_pool_mode="average",
            image_seq_length=36,
            video_seq_length=9,
            tie_word_embeddings=False,
        )
    text = _text_config(rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]})
    ids = dict(image_token_id=7, video_token_id=8, vision_start_token_id=5, vision_end_token_id=6)
    if model_type == "qwen2_vl":
        text["model_type"] = "qwen2_vl_text"
        return tf.Qwen2VLConfig(
            text_config=text,
            vision_config=dict(
                depth=2,
                embed_dim=32,
                hidden_size=32,
                num_heads=4,
                mlp_ratio=2,
                patch_size=14,
                spatial_merge_size=2,
                temporal_patch_size=2,
            ),
            tie_word_embeddings=False,
            **ids,
        )
    if model_type == "qwen2_5_vl":
        text["model_type"] = "qwen2_5_vl_text"
        return tf.Qwen2_5_VLConfig(
            text_config=text,
            vision_config=dict(
                depth=2,
                hidden_size=32,
                intermediate_size=64,
                num_heads=4,
                out_hidden_size=32,
                patch_size=14,
                spatial_merge_size=2,
                temporal_patch_size=2,
                window_size=56,
                fullatt_block_indexes=[1],
                tokens_per_second=2,
            ),
            tie_word_embeddings=False,
            **ids,
        )
    if model_type in SEGMENTED:
        return _segmented_config(model_type, text, ids)
    raise ValueError(f"unknown model type {model_type!r}; expected one of {MODEL_TYPES}")


def _segmented_config(model_type: str, text: dict[str, Any], ids: dict[str, int]) -> Any:
    import transformers as tf

    vision = {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 4,
        "out_hidden_size": 32,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    }
    text = dict(text, head_dim=8)
    text["rope_parameters"] = dict(text["rope_parameters"], mrope_interleaved=True)
    moe = {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32}
    if model_type in ("qwen3_vl", "qwen3_vl_moe"):
        vision.update(num_position_embeddings=16, deepstack_visual_indexes=[0, 1])
        if model_type == "qwen3_vl":
            return tf.Qwen3VLConfig(text_config=dict(text, model_type="qwen3_vl_text"), vision_config=vision, **ids)
        return tf.Qwen3VLMoeConfig(
            text_config=dict(text, model_type="qwen3_vl_moe_text", decoder_sparse_step=1, **moe),
            vision_config=vision,
            **ids,
        )
    if model_type in ("qwen3_5", "qwen3_5_moe"):
        vision.update(num_position_embeddings=16)
        # one linear-attention (Gated DeltaNet) and one full-attention layer; rotary on all of head_dim
        text.update(
            layer_types=["linear_attention", "full_attention"],
            partial_rotary_factor=1.0,
            linear_conv_kernel_dim=2,
            linear_key_head_dim=8,
            linear_value_head_dim=8,
            linear_num_key_heads=2,
            linear_num_value_heads=4,
        )
        text["rope_parameters"] = dict(text["rope_parameters"], partial_rotary_factor=1.0)
        if model_type == "qwen3_5":
            return tf.Qwen3_5Config(text_config=dict(text, model_type="qwen3_5_text"), vision_config=vision, **ids)
        return tf.Qwen3_5MoeConfig(
            text_config=dict(text, model_type="qwen3_5_moe_text", shared_expert_intermediate_size=32, **moe),
            vision_config=vision,
            **ids,
        )
    vision.update(image_size=56)
    text = {k: v for k, v in text.items() if k not in ("head_dim", "tie_word_embeddings")}
    text["rope_parameters"] = {k: v for k, v in text["rope_parameters"].items() if k != "mrope_interleaved"}
    return (tf.Glm4vConfig if model_type == "glm4v" else tf.Glm46VConfig)(
        text_config=dict(text, model_type="glm4v_text"),
        vision_config=dict(vision, model_type="glm4v_vision"),
        image_token_id=14,
        video_token_id=15,
        image_start_token_id=10,
        image_end_token_id=11,
        video_start_token_id=12,
        video_end_token_id=13,
    )


def tiny_model(model_type: str, seed: int = 0) -> Any:
    """A tiny random ``*ForConditionalGeneration`` in eval mode, float32, on CPU."""
    import transformers as tf

    classes = {
        "llava_onevision": tf.LlavaOnevisionForConditionalGeneration,
        "llava_next_video": tf.LlavaNextVideoForConditionalGeneration,
        "qwen2_vl": tf.Qwen2VLForConditionalGeneration,
        "qwen2_5_vl": tf.Qwen2_5_VLForConditionalGeneration,
        "qwen3_vl": tf.Qwen3VLForConditionalGeneration,
        "qwen3_vl_moe": tf.Qwen3VLMoeForConditionalGeneration,
        "qwen3_5": tf.Qwen3_5ForConditionalGeneration,
        "qwen3_5_moe": tf.Qwen3_5MoeForConditionalGeneration,
        "glm4v": tf.Glm4vForConditionalGeneration,
        "glm46v": tf.Glm46VForConditionalGeneration,
    }
    torch.manual_seed(seed)
    model = classes[model_type](tiny_config(model_type)).eval()
    # Random init gives nearly uniform logits; larger weights make greedy decoding depend
    # on the inputs, so that identity tests can fail.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name and p.dim() >= 2:
                p.mul_(4.0)
    model.generation_config.pad_token_id = PAD_ID
    model.generation_config.eos_token_id = None  # decode the full max_new_tokens
    # a generated placeholder would be one more video token than features without a cache
    model.generation_config.suppress_tokens = sorted({IMAGE_ID[model_type], VIDEO_ID[model_type]})
    return model


def tiny_image_processor(model_type: str) -> Any:
    """The model family's PIL image processor, sized for the tiny vision towers."""
    import transformers as tf
    from transformers.models.glm4v.image_processing_pil_glm4v import Glm4vImageProcessorPil
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    if model_type == "llava_onevision":
        return LlavaOnevisionImageProcessorPil(
            size={"height": 84, "width": 84}, image_grid_pinpoints=[[84, 84], [84, 168], [168, 84]]
        )
    if model_type == "llava_next_video":
        return LlavaNextImageProcessorPil(
            size={"shortest_edge": 84},
            crop_size={"height": 84, "width": 84},
            image_grid_pinpoints=[[84, 84], [84, 168], [168, 84]],
        )
    del tf
    if model_type in _GLM:
        # GLM's resize bounds the pixels of a temporal patch (two frames)
        return Glm4vImageProcessorPil(
            size={"shortest_edge": 2 * 56 * 56, "longest_edge": 2 * 56 * 84},
            patch_size=14,
            merge_size=2,
            temporal_patch_size=2,
        )
    return Qwen2VLImageProcessorPil(
        size={"shortest_edge": 56 * 56, "longest_edge": 56 * 84}, patch_size=14, merge_size=2, temporal_patch_size=2
    )


def tiny_parts(model_type: str, model: Any = None) -> Any:
    """``ProcessorParts`` (config, tokenizer, image processor) for ``build_video_inputs``."""
    from llava_scissor.integrations.hf.inputs import ProcessorParts

    config = model.config if model is not None else tiny_config(model_type)
    return ProcessorParts(config, tiny_tokenizer(model_type), tiny_image_processor(model_type))


def random_video(frames: int, height: int = 84, width: int = 84, seed: int = 0) -> np.ndarray:
    """[frames, height, width, 3] uint8: smooth random colour fields that drift over time,
    so neighbouring tokens and frames are similar (as in real video) but not equal."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 255, size=(4, 4, 3))
    drift = rng.normal(0, 20, size=(4, 4, 3))
    out = []
    for f in range(frames):
        field = np.clip(base + drift * f, 0, 255)
        img = (
            torch.nn.functional.interpolate(
                torch.tensor(field, dtype=torch.float32).permute(2, 0, 1)[None], size=(height, width), mode="bilinear"
            )[0]
            .permute(1, 2, 0)
            .numpy()
        )
        noise = rng.normal(0, 6, size=img.shape)
        out.append(np.clip(img + noise, 0, 255).astype(np.uint8))
    return np.stack(out)


def prompt(model_type: str, question: str = "describe the video", videos: int = 1, images: int = 0) -> str:
    """A chat prompt with ``videos`` video placeholders and ``images`` image placeholders."""
    tok = tiny_tokenizer(model_type)
    content = [{"type": "image"}] * images + [{"type": "video"}] * videos + [{"type": "text", "text": question}]
    return tok.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False)


def write_tiny_model(model_type: str, path: str | Path, seed: int = 0) -> Path:
    """Write a complete tiny model folder: weights + config + generation config, tokenizer
    (with chat template), image processor config, and a processor config when the
    processor class can be saved without a video processor. Loadable with
    ``AutoModelForImageTextToText.from_pretrained(path)`` and
    ``llava_scissor.integrations.hf.load_processor(path)``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model = tiny_model(model_type, seed=seed)
    model.save_pretrained(path)
    tiny_tokenizer(model_type).save_pretrained(path)
    tiny_image_processor(model_type).save_pretrained(path)
    (path / "chat_template.jinja").write_text(tiny_tokenizer(model_type).chat_template)
    if model_type == "llava_onevision":
        # what LlavaOnevisionProcessor reads to count image tokens
        (path / "processor_config.json").write_text(
            json.dumps(
                {
                    "processor_class": "LlavaOnevisionProcessor",
                    "num_image_tokens": 36,
                    "vision_feature_select_strategy": "full",
                    "vision_aspect_ratio": "anyres_max_9",
                }
            )
        )
    return path
