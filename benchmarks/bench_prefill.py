"""Time to first token of a video LLM, uncompressed vs compressed with llava-scissor.

The model is LLaVA-OneVision with the real Qwen2-0.5B language-model dimensions (24
layers, hidden 896, 14 heads, 2 KV heads, FFN 4864; small vocabulary), random weights,
and a one-layer SigLIP-shaped vision tower (378 px, patch 14 -> 27 x 27 patches ->
2x2 pooling -> 196 tokens per frame, as in the paper). Nothing is downloaded.

For each frame count, the uncompressed prompt (F x 196 + 1 video tokens plus text) runs
through ``generate(max_new_tokens=1)``, then the same prompt prepared by
``llava_scissor.prepare`` at each retention (budget mode). Printed per row:

* ttft_s: wall time to the first token (vision encoder + compression + prefill).
* prefill_s: the language model's prefill alone (timed with hooks on it).
* measured: prefill_s / uncompressed prefill_s.
* eq9: the same ratio predicted by the paper's FLOPs model (Eq. 9, prefill term, over
  all prompt tokens); measured/eq9 is their quotient (target <= 1.5).
* arch: the ratio of FLOPs counted for this architecture (grouped K/V projections,
  three-matrix SwiGLU FFN, the paper's 2k^2d attention term). Eq. 9 counts 4kd^2 for
  the projections and 2kdc for the FFN: its per-token part is 40 % of this model's, so
  its quadratic attention term weighs more and its ratio falls faster with k than the
  real cost does. meas/arch for comparison.
* overhead: time of the compression itself / uncompressed prefill_s (target <= 3 % at
  32 frames).

Run::

    python benchmarks/bench_prefill.py                      # 8, 16, 32 frames (minutes on CPU)
    python benchmarks/bench_prefill.py --frames 8 --retention 0.25
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any, Iterator, Sequence

import torch

TEXT_BEFORE = 14  # system + user turn header, as a chat template would write
TEXT_AFTER = 12  # question + assistant header
IMAGE_ID, VIDEO_ID, PAD_ID = 3, 4, 0


def build_model(dtype: torch.dtype) -> Any:
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

    config = LlavaOnevisionConfig(
        text_config=dict(
            model_type="qwen2",
            hidden_size=896,
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
            intermediate_size=4864,
            vocab_size=256,
            max_position_embeddings=32768,
            pad_token_id=PAD_ID,
            eos_token_id=PAD_ID,
            tie_word_embeddings=True,
        ),
        vision_config=dict(
            model_type="siglip_vision_model",
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=378,
            patch_size=14,
        ),
        image_token_index=IMAGE_ID,
        video_token_index=VIDEO_ID,
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
    )
    torch.manual_seed(0)
    model = LlavaOnevisionForConditionalGeneration(config).to(dtype).eval()
    model.generation_config.pad_token_id = PAD_ID
    model.generation_config.eos_token_id = None
    return model


def build_inputs(frames: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """One prompt: text, F x 196 + 1 video placeholders, text; smooth random frames."""
    g = torch.Generator().manual_seed(frames)
    video_tokens = frames * 196 + 1
    text = torch.randint(10, 256, (TEXT_BEFORE + TEXT_AFTER,), generator=g)
    ids = torch.cat([text[:TEXT_BEFORE], torch.full((video_tokens,), VIDEO_ID), text[TEXT_BEFORE:]])[None]
    # low-frequency content drifting over time, so neighbouring tokens are alike
    base = torch.randn(1, 3, 6, 6, generator=g)
    drift = torch.randn(1, 3, 6, 6, generator=g) * 0.1
    fields = torch.cat([base + drift * f for f in range(frames)])
    pixels = torch.nn.functional.interpolate(fields, size=(378, 378), mode="bilinear")
    pixels = pixels + 0.05 * torch.randn(pixels.shape, generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values_videos": pixels[None].to(dtype)}


class PrefillTimer:
    """Times the first language-model call after ``reset`` (the prefill)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.seconds: float | None = None
        self._start = 0.0
        self._handles = [
            module.register_forward_pre_hook(self._pre),
            module.register_forward_hook(self._post),
        ]

    def reset(self) -> None:
        self.seconds = None

    def _pre(self, *_: Any) -> None:
        if self.seconds is None:
            self._start = time.perf_counter()

    def _post(self, *_: Any) -> None:
        if self.seconds is None:
            self.seconds = time.perf_counter() - self._start


def predicted_ratio(kept: int, full: int) -> float:
    from llava_scissor.flops import LMDims, llm_flops

    dims = LMDims(24, 896, 4864, "Qwen2-0.5B")
    return llm_flops(kept, dims, generated=0) / llm_flops(full, dims, generated=0)


def arch_ratio(kept: int, full: int) -> float:
    """Prefill FLOPs ratio for Qwen2-0.5B as built: 14 query heads, 2 K/V heads of 64, SwiGLU."""
    layers, d, c, kv = 24, 896, 4864, 2 * 64

    def flops(k: int) -> float:
        return layers * (k * (4 * d * d + 4 * d * kv + 6 * d * c) + 2 * k * k * d)

    return flops(kept) / flops(full)


def run(frames_list: Sequence[int], retentions: Sequence[float], repeats: int, dtype: torch.dtype) -> Iterator[dict]:
    """Yields one row per (frames, retention); the uncompressed row first per frame count."""
    import llava_scissor

    model = build_model(dtype)
    timer = PrefillTimer(model.model.language_model)

    def best_of(fn: Any) -> tuple[float, float, Any]:
        best = (math.inf, math.inf, None)
        for _ in range(repeats):
            timer.reset()
            t0 = time.perf_counter()
            extra = fn()
            total = time.perf_counter() - t0
            if total < best[0]:
                best = (total, float(timer.seconds or 0.0), extra)
        return best

    with torch.no_grad():
        warm = build_inputs(2, dtype)  # first-call costs out of the way
        model.generate(**warm, max_new_tokens=1, do_sample=False)
        model.generate(**llava_scissor.prepare(model, warm, retention=0.5), max_new_tokens=1, do_sample=False)
        for frames in frames_list:
            inputs = build_inputs(frames, dtype)
            full_tokens = inputs["input_ids"].shape[1]
            ttft, prefill, _ = best_of(lambda: model.generate(**inputs, max_new_tokens=1, do_sample=False))
            yield dict(
                frames=frames,
                retention=1.0,
                tokens=full_tokens,
                ttft=ttft,
                prefill=prefill,
                measured=1.0,
                eq9=1.0,
                arch=1.0,
                overhead=0.0,
            )
            base = prefill
            for r in retentions:

                def compressed() -> float:
                    prepared = llava_scissor.prepare(model, inputs, retention=r)
                    model.generate(**prepared, max_new_tokens=1, do_sample=False)
                    return sum(s.seconds for s in prepared.stats), prepared["input_ids"].shape[1]

                ttft_c, prefill_c, (comp, tokens) = best_of(compressed)
                yield dict(
                    frames=frames,
                    retention=r,
                    tokens=tokens,
                    ttft=ttft_c,
                    prefill=prefill_c,
                    measured=prefill_c / base,
                    eq9=predicted_ratio(tokens, full_tokens),
                    arch=arch_ratio(tokens, full_tokens),
                    overhead=comp / base,
                )


HEADER = (
    f"{'frames':>6} {'retention':>9} {'tokens':>6} {'ttft_s':>8} {'prefill_s':>9} "
    f"{'measured':>8} {'eq9':>6} {'meas/eq9':>8} {'arch':>6} {'meas/arch':>9} {'overhead':>8}"
)


def format_row(r: dict) -> str:
    return (
        f"{r['frames']:>6} {r['retention'] * 100:>8.0f}% {r['tokens']:>6} {r['ttft']:>8.2f} {r['prefill']:>9.2f} "
        f"{r['measured']:>8.3f} {r['eq9']:>6.3f} {r['measured'] / r['eq9']:>8.2f} {r['arch']:>6.3f} "
        f"{r['measured'] / r['arch']:>9.2f} {r['overhead'] * 100:>7.2f}%"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--retention", type=float, nargs="+", default=[0.5, 0.25, 0.1, 0.05])
    parser.add_argument("--repeats", type=int, default=1, help="best of this many runs per row")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers

    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, threads {torch.get_num_threads()}, "
        f"dtype {args.dtype}; LM: Qwen2-0.5B dims, random weights; 196 tokens/frame"
    )
    print(HEADER)
    print("-" * len(HEADER), flush=True)
    for row in run(args.frames, args.retention, args.repeats, getattr(torch, args.dtype)):
        print(format_row(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
