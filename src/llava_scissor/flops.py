"""The paper's FLOPs model: the language model's cost (Eq. 9) and SCC's overhead (Eq. 10).

Sun et al., "LLaVA-Scissor", arXiv 2506.21862 (2025), Sec. 4 / Table 5; Eq. 9 follows
DyCoke (Tao et al., CVPR 2025, arXiv 2411.15024). The token budgets K and S are the
core's (``core/budget.py``), so a row shows what ``compress`` does at that retention.

Eq. 9, language model with T layers, hidden size d, FFN size c, k visual tokens and R
generated tokens (prefill + decoding with a KV cache)::

    T * (4 k d^2 + 2 k^2 d + 2 k d c) + T * R * ((4 d^2 + 2 d c) + 2 (d k + d (R + 1) / 2))

Eq. 10, SCC's overhead for F frames of N tokens, S spatial tokens and K output tokens::

    F * 2 N^2 d + 2 S^2 d + 2 F N K d

With Qwen2.5-7B (T = 28, d = 3584, c = 18944) and R = 100: 41.4 TFLOPs at 6,272 tokens,
3.9 at 10 %, 2.9 at 7 %, 2.2 at 5 % (Table 5).

Command::

    python -m llava_scissor.flops --config qwen2.5-7b
    python -m llava_scissor.flops --config /path/to/model_dir_or_config.json --frames 32 \\
        --tokens-per-frame 196 --retention 1 0.35 0.1 0.05

The model config may be a Hugging Face ``config.json`` (or its folder); for
vision-language models the language model's sizes are read from ``text_config`` /
``llm_config`` when present.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from typing import Any, Sequence

from ._errors import ScissorError
from .core.budget import budget_sizes, final_budget
from .core.config import ScissorConfig

__all__ = [
    "LMDims",
    "PRESETS",
    "llm_flops",
    "scc_overhead_flops",
    "fastv_flops",
    "spatial_tokens_for",
    "flops_table",
    "main",
]


@dataclass(frozen=True)
class LMDims:
    """Sizes of a language model that Eq. 9 needs.

    Attributes:
        layers: T, number of decoder layers.
        hidden: d, hidden size.
        ffn: c, intermediate (FFN) size.
        name: label for tables.
    """

    layers: int
    hidden: int
    ffn: int
    name: str = ""

    def __post_init__(self) -> None:
        for field in ("layers", "hidden", "ffn"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ScissorError(f"{field} must be an int >= 1, got {value!r}")

    @classmethod
    def from_config(cls, config: dict[str, Any] | str | os.PathLike[str]) -> LMDims:
        """From a preset name, a ``config.json`` path, a model folder, or a config dict."""
        if isinstance(config, (str, os.PathLike)):
            key = str(config).lower()
            if key in PRESETS:
                return PRESETS[key]
            path = os.fspath(config)
            if os.path.isdir(path):
                path = os.path.join(path, "config.json")
            if not os.path.isfile(path):
                raise ScissorError(
                    f"no model config at {os.fspath(config)!r}: give a config.json, a model folder "
                    f"containing one, or a preset ({', '.join(sorted(PRESETS))})"
                )
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
            name = os.path.basename(os.path.dirname(os.path.abspath(path))) or "model"
        elif isinstance(config, dict):
            data, name = config, str(config.get("_name_or_path", "model"))
        else:
            raise ScissorError(f"config must be a dict, a path or a preset name, got {type(config).__name__}")
        for key in ("text_config", "llm_config", "language_config"):
            sub = data.get(key)
            if isinstance(sub, dict) and "hidden_size" in sub:
                data = sub
                break
        try:
            layers = data["num_hidden_layers"]
            hidden = data["hidden_size"]
            ffn = data.get("intermediate_size") or data.get("ffn_dim") or 4 * hidden
        except KeyError as exc:
            raise ScissorError(
                f"model config has no {exc.args[0]!r}; expected num_hidden_layers, hidden_size and "
                "intermediate_size (at the top level or in text_config)"
            ) from None
        return cls(int(layers), int(hidden), int(ffn), name=name)


PRESETS: dict[str, LMDims] = {
    "qwen2.5-7b": LMDims(28, 3584, 18944, "Qwen2.5-7B"),
    "qwen2.5-0.5b": LMDims(24, 896, 4864, "Qwen2.5-0.5B"),
    "qwen2-7b": LMDims(28, 3584, 18944, "Qwen2-7B"),
}


def llm_flops(tokens: float, dims: LMDims, generated: int = 100) -> float:
    """Eq. 9: FLOPs of the language model for ``tokens`` visual tokens and ``generated`` (R) outputs."""
    if tokens < 0 or generated < 0:
        raise ScissorError(f"tokens and generated must be >= 0, got {tokens} and {generated}")
    t, d, c, k, r = dims.layers, dims.hidden, dims.ffn, float(tokens), float(generated)
    prefill = t * (4 * k * d * d + 2 * k * k * d + 2 * k * d * c)
    decode = t * r * ((4 * d * d + 2 * d * c) + 2 * (d * k + d * (r + 1) / 2))
    return prefill + decode


def scc_overhead_flops(frames: int, tokens_per_frame: int, spatial: int, output: int, hidden: int) -> float:
    """Eq. 10: SCC's FLOPs for F frames of N tokens, S spatial and K output tokens of size d."""
    f, n, s, k, d = frames, tokens_per_frame, spatial, output, hidden
    return f * 2.0 * n * n * d + 2.0 * s * s * d + 2.0 * f * n * k * d


def fastv_flops(full: int, kept: int, dims: LMDims, layer: int = 3, generated: int = 100) -> float:
    """Eq. 9 split at FastV's layer K: layers 0..K see ``full`` tokens, the rest ``kept``."""
    layer = min(max(layer, 0), dims.layers)
    head = LMDims(layer, dims.hidden, dims.ffn) if layer else None
    tail = LMDims(dims.layers - layer, dims.hidden, dims.ffn) if layer < dims.layers else None
    total = 0.0
    if head is not None:
        total += llm_flops(full, head, generated)
    if tail is not None:
        total += llm_flops(kept, tail, generated)
    return total


def spatial_tokens_for(frames: int, tokens_per_frame: int, output: int, spatial_retention: float | None = None) -> int:
    """S that ``compress`` uses for a budget of ``output`` tokens (``core.budget``, the one rule).

    By default round(sqrt(K * F * N)) within [max(K, F), F * N]; ``spatial_retention``
    fixes S = round(spatial_retention * F * N) (at least F). Raises ScissorError where
    ``compress`` would: an S below K.
    """
    cfg = ScissorConfig(max_tokens=output, spatial_retention=spatial_retention)
    s, _ = budget_sizes(frames, tokens_per_frame, cfg)
    assert s is not None  # a budget always has an S
    return s


def flops_table(
    dims: LMDims,
    frames: int = 32,
    tokens_per_frame: int = 196,
    retentions: Sequence[float] = (1.0, 0.5, 0.35, 0.25, 0.2, 0.1, 0.07, 0.05, 0.03),
    generated: int = 100,
    fastv_layer: int = 3,
    spatial_retention: float | None = None,
) -> list[dict[str, float]]:
    """One row per retention: tokens K, LLM TFLOPs (Eq. 9), SCC total with Eq. 10, FastV.

    K and S are what ``compress`` uses for that retention (``spatial_tokens_for``);
    ``spatial_retention`` fixes S for every compressed row. A retention of 1 compresses
    nothing: no SCC overhead, S = F * N. In the paper S is an outcome of tau, so its SCC
    rows need not match either choice.
    """
    total = frames * tokens_per_frame
    rows = []
    for r in retentions:
        if not 0 < r <= 1:
            raise ScissorError(f"retention must be in (0, 1], got {r}")
        k = final_budget(total, r, None)
        assert k is not None
        if k < total:
            try:
                s = spatial_tokens_for(frames, tokens_per_frame, k, spatial_retention)
            except ScissorError as exc:
                raise ScissorError(f"retention {r:g}: {exc}") from None
            overhead = scc_overhead_flops(frames, tokens_per_frame, s, k, dims.hidden)
        else:
            s, overhead = total, 0.0
        lm = llm_flops(k, dims, generated)
        rows.append(
            {
                "retention": r,
                "tokens": k,
                "spatial_tokens": s,
                "llm_tflops": lm / 1e12,
                "scc_overhead_tflops": overhead / 1e12,
                "scc_total_tflops": (lm + overhead) / 1e12,
                "fastv_tflops": fastv_flops(total, k, dims, fastv_layer, generated) / 1e12,
            }
        )
    return rows


def _format(rows: list[dict[str, float]], dims: LMDims, frames: int, n: int, generated: int) -> str:
    lines = [
        f"# {dims.name or 'model'}: T={dims.layers} d={dims.hidden} c={dims.ffn}; "
        f"{frames} frames x {n} tokens = {frames * n}; R={generated}",
        "| retention | tokens | LLM TFLOPs (Eq. 9) | SCC overhead (Eq. 10) | SCC total | FastV (K=3) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['retention'] * 100:g} % | {row['tokens']} | {row['llm_tflops']:.1f} | "
            f"{row['scc_overhead_tflops']:.3f} | {row['scc_total_tflops']:.1f} | {row['fastv_tflops']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m llava_scissor.flops",
        description="FLOPs of the language model (paper Eq. 9) and SCC's overhead (Eq. 10).",
    )
    parser.add_argument(
        "--config",
        default="qwen2.5-7b",
        help=f"config.json, model folder, or preset ({', '.join(sorted(PRESETS))}); default qwen2.5-7b",
    )
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--tokens-per-frame", type=int, default=196)
    parser.add_argument(
        "--retention", type=float, nargs="+", default=[1.0, 0.5, 0.35, 0.25, 0.2, 0.1, 0.07, 0.05, 0.03]
    )
    parser.add_argument("--generated", type=int, default=100, help="R, generated tokens (paper: 100)")
    parser.add_argument("--fastv-layer", type=int, default=3)
    parser.add_argument(
        "--spatial-retention",
        type=float,
        default=None,
        help="S / (F*N) for SCC's overhead, at least each retention (default: the core's budget rule, sqrt(K*F*N))",
    )
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    args = parser.parse_args(argv)
    try:
        dims = LMDims.from_config(args.config)
        rows = flops_table(
            dims,
            args.frames,
            args.tokens_per_frame,
            args.retention,
            args.generated,
            args.fastv_layer,
            args.spatial_retention,
        )
    except ScissorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"model": dims.name, "rows": rows}, indent=2))
    else:
        print(_format(rows, dims, args.frames, args.tokens_per_frame, args.generated))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
