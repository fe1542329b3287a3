"""The subcommands. Each takes the parsed arguments and returns an exit status."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from typing import Any

import torch

from .. import __version__
from .._errors import ScissorError
from ..core import bfloat16_products
from ..core.config import ScissorConfig
from ..core.result import CompressionResult
from . import DEFAULT_FRAMES, DEFAULT_MODEL
from ._io import load_features, save_result
from .._timing import synchronize
from ._progress import Progress

__all__ = ["ask", "compress", "visualize", "info"]

#: frames larger than this (longer side, pixels) are scaled down while decoding; the
#: supported models see at most 384 (LLaVA) or about 800 (Qwen, default pixel budget).
MAX_SIDE = 1024


# --------------------------------------------------------------------------- shared


def _config(args: argparse.Namespace) -> ScissorConfig:
    """The compression settings of the options (threshold mode with tau 0.9 by default)."""
    if args.retention is not None:
        return ScissorConfig(retention=args.retention)
    if args.max_tokens is not None:
        return ScissorConfig(max_tokens=args.max_tokens)
    if args.tau is not None:
        return ScissorConfig(tau=args.tau)
    return ScissorConfig()


def _config_dict(config: ScissorConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")


def _check_output(path: str, suffixes: tuple[str, ...]) -> None:
    """Fail before any work when the output path cannot be written."""
    if not path.lower().endswith(suffixes):
        raise ScissorError(f"output must end in {' or '.join(suffixes)}, got {path!r}")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ScissorError(f"output folder does not exist: {parent}")
    if os.path.isdir(path):
        raise ScissorError(f"output is a directory: {path}")


def _compress(features: torch.Tensor, config: ScissorConfig) -> tuple[CompressionResult, float]:
    from ..api import compress as compress_tokens

    synchronize(features.device)
    start = time.perf_counter()
    result = compress_tokens(features, config)
    synchronize(features.device)
    assert isinstance(result, CompressionResult)
    return result, time.perf_counter() - start


def _stats(result: CompressionResult) -> dict[str, Any]:
    return {
        "frames": result.frames,
        "tokens_per_frame": result.tokens_per_frame,
        "tokens_before": result.num_input_tokens,
        "tokens_after": result.num_tokens,
        "spatial_tokens": result.num_spatial_tokens,
        "retention": result.retention,
        "spatial_threshold": result.spatial_threshold,
        "temporal_threshold": result.temporal_threshold,
    }


def _rows(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _check_video(path: str) -> None:
    """Fail on a missing or unreadable video before loading a model."""
    from ..video import probe

    probe(path)


def _read_clip(path: str, frames: int, progress: Progress) -> Any:
    from ..video import read_video

    with progress.bar("decoding", frames) as bar:
        return read_video(path, frames, max_side=MAX_SIDE, progress=bar.update)


def _load(args: argparse.Namespace, progress: Progress) -> Any:
    from ..integrations.hf.session import load_model

    return load_model(args.model or DEFAULT_MODEL, device=args.device, dtype=args.dtype, progress=progress)


# --------------------------------------------------------------------------- ask


def ask(args: argparse.Namespace) -> int:
    """Answer QUESTION about VIDEO with compressed video tokens (and, with --compare, without)."""
    from ..integrations.hf.session import answer

    config = _config(args)
    _check_video(args.video)
    progress = Progress(quiet=args.quiet)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    loaded = _load(args, progress)
    timings["load"] = time.perf_counter() - start

    start = time.perf_counter()
    clip = _read_clip(args.video, args.frames, progress)
    timings["decode"] = time.perf_counter() - start

    run = answer(loaded, clip.frames, args.question, config, max_new_tokens=args.max_new_tokens, progress=progress)
    baseline = None
    if args.compare:
        baseline = answer(loaded, clip.frames, args.question, None, max_new_tokens=args.max_new_tokens, progress=progress)

    report = {
        "model": loaded.name,
        "model_type": loaded.model_type,
        "device": str(loaded.device),
        "video": args.video,
        "question": args.question,
        "answer": run.answer,
        "frames": clip.num_frames,
        "frame_indices": list(clip.indices),
        "tokens_per_frame": run.tokens_per_frame,
        "tokens_before": run.tokens_before,
        "tokens_after": run.tokens_after,
        "spatial_tokens": run.spatial_tokens,
        "retention": run.retention,
        "config": _config_dict(config),
        "generated_tokens": run.generated_tokens,
        "timings": {"load": timings["load"], "decode": timings["decode"], **run.timings},
        "compare": None,
    }
    if baseline is not None:
        report["compare"] = {
            "answer": baseline.answer,
            "tokens": baseline.tokens_after,
            "generated_tokens": baseline.generated_tokens,
            "timings": {"decode": timings["decode"], **baseline.timings},
        }
    if args.json:
        _print_json(report)
        return 0
    _print_ask(report)
    return 0


def _print_ask(report: dict[str, Any]) -> None:
    out = sys.stdout
    compare = report["compare"]
    if compare is None:
        out.write(f"{report['answer'] or '(empty answer)'}\n\n")
    else:
        out.write(f"compressed ({report['tokens_after']:,} video tokens):\n  {report['answer'] or '(empty answer)'}\n")
        out.write(f"uncompressed ({compare['tokens']:,} video tokens):\n  {compare['answer'] or '(empty answer)'}\n\n")
    t = report["timings"]
    rows = [
        ("model", f"{report['model']} ({report['model_type']}, {report['device']})"),
        ("frames", f"{report['frames']}"),
        ("video tokens", f"{report['tokens_before']:,} -> {report['tokens_after']:,}"),
        ("retention", f"{report['retention']:.1%}"),
    ]
    stages = {"decode": "decode", "vision": "vision tower", "compression": "compression",
              "prefill": "prefill", "generation": "generation"}
    if compare is None:
        rows += [(label, _seconds(t.get(key))) for key, label in stages.items()]
    else:
        c = compare["timings"]
        rows += [(label, f"{_seconds(t.get(key)):>8}   (uncompressed {_seconds(c.get(key))})")
                 for key, label in stages.items()]
    generated = f"{report['generated_tokens']} tokens"
    if compare is not None:
        generated = f"{generated:>8}   (uncompressed {compare['generated_tokens']} tokens)"
    rows.append(("generated", generated))
    out.write(_rows(rows) + "\n")


# --------------------------------------------------------------------------- compress


def compress(args: argparse.Namespace) -> int:
    """Write the compressed tokens of VIDEO (through a model) or of --features to -o."""
    if (args.video is None) == (args.features is None):
        raise ScissorError("give either VIDEO or --features FILE (exactly one)")
    if args.features is not None and args.model is not None:
        raise ScissorError("--model is for VIDEO; a features file needs no model")
    _check_output(args.output, (".safetensors",))
    config = _config(args)
    progress = Progress(quiet=args.quiet)
    timings: dict[str, float] = {}
    source: dict[str, Any]
    if args.features is not None:
        if args.frames is not None:
            raise ScissorError("--frames is for VIDEO; a features file has its own frame count")
        start = time.perf_counter()
        features = load_features(args.features)  # [F, N, D]
        timings["load"] = time.perf_counter() - start
        source = {"features": args.features}
    else:
        features, source, timings = _video_features(args, progress)
    with progress.bar("compressing"):
        result, timings["compression"] = _compress(features, config)
    metadata = {
        "format": "llava-scissor.compressed/1",
        "llava_scissor_version": __version__,
        "config": _config_dict(config),
        "source": source,
        "dim": int(features.shape[-1]),
        **_stats(result),
        "timings": timings,
    }
    tensors = save_result(args.output, result, metadata)
    if args.json:
        _print_json({"output": args.output, **{k: v for k, v in metadata.items() if k != "format"},
                     "tensors": {k: list(v.shape) for k, v in tensors.items()}})
        return 0
    sys.stdout.write(f"wrote {args.output}\n")
    sys.stdout.write(_rows(_summary_rows(result, timings)) + "\n")
    return 0


def _summary_rows(result: CompressionResult, timings: dict[str, float]) -> list[tuple[str, str]]:
    rows = [
        ("frames", f"{result.frames}"),
        ("tokens per frame", f"{result.tokens_per_frame}"),
        ("video tokens", f"{result.num_input_tokens:,} -> {result.num_tokens:,}"),
    ]
    if result.num_spatial_tokens is not None:
        rows.append(("after spatial step", f"{result.num_spatial_tokens:,}"))
    rows.append(("retention", f"{result.retention:.1%}"))
    rows += [(name, _seconds(value)) for name, value in timings.items()]
    return rows


def _encode_video(args: argparse.Namespace, progress: Progress, timings: dict[str, float]) -> tuple[Any, Any, torch.Tensor]:
    """Load the model, decode VIDEO's sampled frames and run the vision tower.

    Returns (loaded model, clip, features [F, N, D]); stage times go into ``timings``.
    """
    from ..integrations.hf.session import encode

    _check_video(args.video)
    start = time.perf_counter()
    loaded = _load(args, progress)
    timings["load"] = time.perf_counter() - start
    start = time.perf_counter()
    clip = _read_clip(args.video, args.frames or DEFAULT_FRAMES, progress)
    timings["decode"] = time.perf_counter() - start
    with progress.bar("vision tower"):
        features, timings["vision"] = encode(loaded, clip.frames)
    return loaded, clip, features


def _video_features(args: argparse.Namespace, progress: Progress) -> tuple[torch.Tensor, dict[str, Any], dict[str, float]]:
    """[F, N, D] projected tokens of VIDEO's sampled frames, the source record and timings."""
    timings: dict[str, float] = {}
    loaded, clip, features = _encode_video(args, progress, timings)
    source = {"video": args.video, "model": loaded.name, "model_type": loaded.model_type,
              "frame_indices": list(clip.indices)}
    return features, source, timings


# --------------------------------------------------------------------------- visualize


def visualize(args: argparse.Namespace) -> int:
    """Draw the compression of VIDEO's tokens (from the model or --features) to -o."""
    from ..viz import save
    from ..viz._draw import resolve_grid

    if args.features is not None and args.model is not None:
        raise ScissorError("give --model or --features, not both")
    _check_output(args.output, (".png", ".gif", ".html"))
    config = _config(args)
    progress = Progress(quiet=args.quiet)
    timings: dict[str, float] = {}
    grid = args.grid
    if args.features is not None:
        features = load_features(args.features)  # [F, N, D]
        frames = int(features.shape[0])
        if args.frames is not None and args.frames != frames:
            raise ScissorError(f"--frames {args.frames} differs from the {frames} frames of {args.features}")
        resolve_grid(int(features.shape[1]), grid)  # fail before decoding
        start = time.perf_counter()
        clip = _read_clip(args.video, frames, progress)
        timings["decode"] = time.perf_counter() - start
        source = f"features {os.path.basename(args.features)}"
    else:
        loaded, clip, features = _encode_video(args, progress, timings)
        if grid is None:
            grid = loaded.grid
        source = loaded.name
        clip = _frames_per_step(clip, int(features.shape[0]))
    with progress.bar("compressing"):
        result, timings["compression"] = _compress(features, config)
    start = time.perf_counter()
    with progress.bar("drawing"):
        title = args.title or f"LLaVA-Scissor on {os.path.basename(args.video)} ({source})"
        save(args.output, clip.frames, result, grid=grid, timestamps=clip.timestamps, title=title)
    timings["drawing"] = time.perf_counter() - start
    if args.json:
        _print_json({"output": args.output, "video": args.video, "source": source,
                     "config": _config_dict(config), **_stats(result), "timings": timings})
        return 0
    sys.stdout.write(f"wrote {args.output}\n")
    sys.stdout.write(_rows(_summary_rows(result, timings)) + "\n")
    return 0


def _frames_per_step(clip: Any, steps: int) -> Any:
    """The clip reduced to one frame per temporal token step (Qwen merges 2 frames per step)."""
    if clip.num_frames == steps:
        return clip
    stride = -(-clip.num_frames // steps)
    keep = list(range(0, clip.num_frames, stride))[:steps]
    if len(keep) != steps:
        raise ScissorError(f"the model gave {steps} token steps for {clip.num_frames} frames; cannot draw them")
    timestamps = None if clip.timestamps is None else tuple(clip.timestamps[i] for i in keep)
    return dataclasses.replace(clip, frames=clip.frames[keep], indices=tuple(clip.indices[i] for i in keep),
                               timestamps=timestamps)


# --------------------------------------------------------------------------- info


def info(args: argparse.Namespace) -> int:
    """Versions, device, supported model families, optional pieces."""
    report = _info()
    if args.json:
        _print_json(report)
        return 0
    out = sys.stdout
    out.write(f"llava-scissor {report['llava_scissor']}\n")
    out.write(_rows([(k, v or "not installed") for k, v in report["versions"].items()]) + "\n")
    out.write("device\n")
    out.write(_rows([(k, str(v)) for k, v in report["device"].items()]) + "\n")
    families = report["model_types"]
    out.write("supported model types (config.model_type)\n")
    out.write(("  " + ", ".join(families) if isinstance(families, list) else f"  unavailable: {families}") + "\n")
    out.write("optional pieces\n")
    out.write(_rows([(k, v) for k, v in report["optional"].items()]) + "\n")
    out.write(f"default model: {report['default_model']}\n")
    return 0


def _version(module: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(module)
    except metadata.PackageNotFoundError:
        return None


def _info() -> dict[str, Any]:
    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "av (PyAV)": _version("av"),
        "pillow": _version("pillow"),
        "numpy": _version("numpy"),
        "safetensors": _version("safetensors"),
        "torchvision": _version("torchvision"),
    }
    device: dict[str, Any] = {"cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        device["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    device["mps"] = bool(mps is not None and mps.is_available())
    device["default"] = "cuda" if device["cuda"] else ("mps" if device["mps"] else "cpu")
    # What similarity_dtype="bfloat16" runs here (measured once on a CPU; the output is the same).
    path = bfloat16_products(device["default"])
    device["bfloat16_products"] = f"{str(path.dtype).removeprefix('torch.')} ({path.reason})"
    model_types: list[str] | str
    try:
        from ..integrations.hf import supported_model_types

        model_types = supported_model_types()
    except ImportError as exc:
        model_types = f"{exc} (pip install 'llava-scissor[hf]')"
    optional = {
        "video decoding": f"yes (PyAV {versions['av (PyAV)']})" if versions["av (PyAV)"] else "no: pip install 'llava-scissor[video]'",
        "pictures": f"yes (Pillow {versions['pillow']})" if versions["pillow"] else "no: pip install pillow",
        "transformers models": f"yes (transformers {versions['transformers']})" if versions["transformers"] else "no: pip install 'llava-scissor[hf]'",
        "torchvision": f"yes ({versions['torchvision']})" if versions["torchvision"] else "no (not needed: frames are resized with Pillow)",
    }
    return {
        "llava_scissor": __version__,
        "versions": versions,
        "device": device,
        "model_types": model_types,
        "optional": optional,
        "default_model": DEFAULT_MODEL,
    }
