"""The fidelity benchmark: every method x retention x metric, on synthetic or real videos.

Synthetic (no model, seconds on a CPU)::

    python -m llava_scissor.eval.fidelity                 # or: python benchmarks/fidelity.py
    python -m llava_scissor.eval.fidelity --retention 0.1 0.05 --videos 8 --json

Real vision features (a supported model folder or hub id, and a video file)::

    python -m llava_scissor.eval.fidelity --model /models/llava-onevision-qwen2-0.5b-ov-hf \\
        --video clip.mp4 --frames 32

On synthetic videos the regions are known (see ``llava_scissor.eval.synthetic``); on real
features they are pseudo-regions from k-means (``metrics.pseudo_regions``). VisionZip gets
the vision tower's attention from the model in real mode and a synthetic saliency stand-in
in synthetic mode; FastV (an in-model method) gets a synthetic stand-in in synthetic mode
and is left out in real mode, where its scores exist only inside the language model.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Sequence

import torch

from .._errors import ScissorError
from ..core.config import ScissorConfig
from ..methods import available_methods, get_method
from .metrics import Regions, fidelity, pseudo_regions
from .synthetic import make_video

__all__ = ["METRICS", "DEFAULT_RETENTIONS", "run_synthetic", "run_features", "format_tables", "main"]

METRICS = ("region_coverage", "event_coverage", "reconstruction")
DEFAULT_RETENTIONS = (0.5, 0.35, 0.1, 0.05, 0.03)


def _evaluate(
    features: torch.Tensor,
    regions: Regions,
    side: dict[str, torch.Tensor],
    methods: Sequence[str],
    retentions: Sequence[float],
    threshold: float,
    sums: dict[tuple[str, float], dict[str, float]],
    seconds: dict[str, float],
) -> None:
    for name in methods:
        method = get_method(name)
        missing = [key for key in method.side_inputs if key not in side]
        if missing:
            continue
        kwargs = {key: side[key] for key in method.side_inputs}
        for r in retentions:
            start = time.perf_counter()
            result = method.compress(features, _config(r), **kwargs)
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start
            scores = fidelity(result, features, regions, threshold)
            acc = sums.setdefault((name, r), {m: 0.0 for m in METRICS} | {"count": 0.0})
            for m in METRICS:
                acc[m] += scores[m]
            acc["count"] += 1


def _config(retention: float) -> ScissorConfig:
    return ScissorConfig(retention=retention)


def _average(sums: dict[tuple[str, float], dict[str, float]]) -> dict[str, dict[float, dict[str, float]]]:
    table: dict[str, dict[float, dict[str, float]]] = {}
    for (name, r), acc in sums.items():
        table.setdefault(name, {})[r] = {m: acc[m] / acc["count"] for m in METRICS}
    return table


def run_synthetic(
    methods: Sequence[str] | None = None,
    retentions: Sequence[float] = DEFAULT_RETENTIONS,
    videos: int = 4,
    seed: int = 0,
    threshold: float = 0.8,
    **video_kwargs: Any,
) -> dict[str, dict[float, dict[str, float]]]:
    """Mean metrics over ``videos`` synthetic videos: ``table[method][retention][metric]``."""
    methods = list(methods or available_methods())
    for name in methods:
        get_method(name)  # unknown names fail early
    sums: dict[tuple[str, float], dict[str, float]] = {}
    seconds: dict[str, float] = {}
    for v in range(videos):
        video = make_video(seed=seed + v, **video_kwargs)
        regions = Regions(video.prototypes, video.labels, tuple(video.regions_of("event")))
        _evaluate(video.features, regions, video.side_inputs(), methods, retentions, threshold, sums, seconds)
    return _average(sums)


def run_features(
    features: torch.Tensor,
    side: dict[str, torch.Tensor] | None = None,
    methods: Sequence[str] | None = None,
    retentions: Sequence[float] = DEFAULT_RETENTIONS,
    threshold: float = 0.8,
    clusters: int = 64,
) -> dict[str, dict[float, dict[str, float]]]:
    """Metrics on real features ``[F, N, d]`` against k-means pseudo-regions.

    Methods whose side inputs are not in ``side`` are skipped.
    """
    methods = list(methods or available_methods())
    regions = pseudo_regions(features, clusters=clusters)
    sums: dict[tuple[str, float], dict[str, float]] = {}
    _evaluate(features, regions, side or {}, methods, retentions, threshold, sums, {})
    return _average(sums)


def format_tables(table: dict[str, dict[float, dict[str, float]]], title: str = "") -> str:
    """One markdown table per metric: methods as rows, retentions as columns."""
    if not table:
        return "(no results)"
    retentions = sorted({r for rows in table.values() for r in rows}, reverse=True)
    out = [f"# {title}"] if title else []
    for metric in METRICS:
        out.append(f"\n## {metric}\n")
        out.append("| method | " + " | ".join(f"{r * 100:g} %" for r in retentions) + " |")
        out.append("|---|" + "---|" * len(retentions))
        for name in sorted(table):
            cells = [f"{table[name][r][metric]:.3f}" if r in table[name] else "-" for r in retentions]
            out.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def _real_features(
    model: str, video: str, frames: int, device: str, dtype: str
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """[F, N, d] projected tokens of ``video`` and, when the family can, its vision attention."""
    from ..integrations.hf import get_family
    from ..integrations.hf.session import encode, load_model, video_inputs, video_token
    from ..video import read_video

    loaded = load_model(model, device=device, dtype=dtype)
    clip = read_video(video, frames)
    features, _ = encode(loaded, clip.frames)
    side: dict[str, torch.Tensor] = {}
    try:
        inputs = video_inputs(loaded, clip.frames, video_token(loaded))
        with torch.no_grad():
            attention = get_family(loaded.model).vision_attention(loaded.model, inputs)
        side["vision_attention"] = attention[0].detach().float().cpu()
    except ScissorError:
        pass  # this family has no vision attention: VisionZip is skipped
    return features, side


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m llava_scissor.eval.fidelity",
        description="Fidelity of every compression method: region coverage, event coverage, reconstruction.",
    )
    parser.add_argument("--methods", nargs="+", default=None, help="default: all registered methods")
    parser.add_argument("--retention", type=float, nargs="+", default=list(DEFAULT_RETENTIONS))
    parser.add_argument("--videos", type=int, default=4, help="synthetic videos to average over")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--grid", type=int, nargs=2, default=[14, 14], metavar=("H", "W"), help="synthetic token grid")
    parser.add_argument("--dim", type=int, default=128, help="synthetic feature size")
    parser.add_argument("--threshold", type=float, default=0.8, help="cosine needed to represent a region")
    parser.add_argument("--model", default=None, help="model folder or hub id: measure on real vision features")
    parser.add_argument("--video", default=None, help="video file (with --model)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args(argv)
    try:
        if (args.model is None) != (args.video is None):
            raise ScissorError("--model and --video go together (real features need both)")
        if args.model is not None:
            features, side = _real_features(args.model, args.video, args.frames, args.device, args.dtype)
            table = run_features(features, side, args.methods, args.retention, args.threshold)
            title = (
                f"fidelity on {args.video} with {args.model}: {features.shape[0]} x {features.shape[1]} "
                f"tokens, pseudo-regions from k-means"
            )
        else:
            table = run_synthetic(
                args.methods,
                args.retention,
                args.videos,
                args.seed,
                args.threshold,
                frames=args.frames,
                height=args.grid[0],
                width=args.grid[1],
                dim=args.dim,
            )
            title = (
                f"fidelity on {args.videos} synthetic videos ({args.frames} frames x "
                f"{args.grid[0]}x{args.grid[1]} tokens, dim {args.dim}, seed {args.seed})"
            )
    except ScissorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(
            json.dumps(
                {"title": title, "table": {m: {str(r): v for r, v in rows.items()} for m, rows in table.items()}},
                indent=2,
            )
        )
    else:
        print(format_tables(table, title))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
