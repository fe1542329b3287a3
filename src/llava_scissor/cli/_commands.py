"""The subcommands. Each takes the parsed arguments and returns an exit status."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
import warnings
from typing import Any

import torch

from .. import __version__
from .._errors import ScissorError, ScissorWarning
from .._files import check_output
from .._timing import synchronize
from ..core import bfloat16_products
from ..core.config import ScissorConfig
from ..core.result import CompressionResult
from . import DEFAULT_FRAMES, DEFAULT_MODEL, PROG
from ._io import load_features, save_result
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


@dataclasses.dataclass(frozen=True)
class _Method:
    """A method of the command line, checked before any work."""

    name: str
    config: ScissorConfig  # the budget options with the ScissorConfig fields of --option applied
    options: dict[str, Any]  # the method's own hyperparameters (--option)
    in_model: bool  # acts inside the language model (only ``ask`` can run it)
    side_inputs: tuple[str, ...]

    def describe(self) -> dict[str, Any]:
        return {"method": self.name, "options": dict(self.options)}


_MODE_FIELDS = ("tau", "retention", "max_tokens")


def _method(args: argparse.Namespace, name: str | None = None, options: list[tuple[str, Any]] | None = None) -> _Method:
    """--method NAME (or ``name``) with its --option values and the budget options.

    Raises ScissorError, before any file is read, for an unknown method or option, a
    bad value, or a baseline without a budget (only scissor has --tau).
    """
    from ..methods import check_settings, get_method

    method = get_method(args.method if name is None else name)
    pairs = list(args.option if options is None else options)
    values = dict(pairs)
    if len(values) != len(pairs):
        names = [k for k, _ in pairs]
        raise ScissorError(f"--option given twice for {sorted({k for k in names if names.count(k) > 1})}")
    mode = sorted(set(values) & set(_MODE_FIELDS))
    if mode:
        raise ScissorError(f"--option {mode[0]}=... is a budget: use --{mode[0].replace('_', '-')}")
    base = _config(args)
    if method.name != "scissor" and not base.budgeted:
        raise ScissorError(
            f"method {method.name!r} needs a budget: --retention R or --max-tokens K (only scissor has --tau)"
        )
    check_settings(method.name, base, **values)
    fields = {f.name for f in dataclasses.fields(ScissorConfig)}
    config = base.replace(**{k: v for k, v in values.items() if k in fields})
    own = {k: v for k, v in values.items() if k not in fields}
    return _Method(method.name, config, own, method.in_model, tuple(method.side_inputs))


def _compare_method(args: argparse.Namespace) -> _Method | None:
    """The method of ``ask --compare METHOD`` (its default options, the same budget); None
    for the uncompressed answer."""
    if args.compare is None or args.compare.strip().lower() == "none":
        return None
    return _method(args, args.compare, options=[])


def _features_method(method: _Method, command: str, from_file: bool) -> None:
    """Refuse a method that cannot run on features (before any work)."""
    if method.in_model:
        raise ScissorError(
            f"method {method.name!r} prunes inside the language model, so it has no compressed tokens to "
            f"{'write' if command == 'compress' else 'draw'}; 'ask --method {method.name}' runs it"
        )
    unknown = sorted(set(method.side_inputs) - {"vision_attention"})
    if unknown:
        raise ScissorError(f"method {method.name!r} needs {unknown}, which the command line cannot supply")
    if from_file and method.side_inputs:
        raise ScissorError(
            f"method {method.name!r} needs the vision tower's attention, which a features file does not hold; "
            "run it on VIDEO through a model (without --features)"
        )


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")


def _compress(
    features: torch.Tensor, method: _Method, side: dict[str, Any] | None = None
) -> tuple[CompressionResult, float]:
    from ..api import compress as compress_tokens

    synchronize(features.device)
    start = time.perf_counter()
    if method.name == "scissor":
        result = compress_tokens(features, method.config)
    else:
        result = compress_tokens(features, method.config, method=method.name, **method.options, **(side or {}))
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


def _check_video(path: str, frames: int, repeat: bool) -> None:
    """Fail on a missing or unreadable video, or frames over the memory limit, before loading a model."""
    from ..video import check_request, probe

    check_request(probe(path), frames, repeat=repeat, max_side=MAX_SIDE)


def _read_clip(path: str, frames: int, repeat: bool, progress: Progress, *, say: bool = True) -> Any:
    """The sampled clip; with ``say``, its note (if any) as one warning line on stderr."""
    from ..video import read_video

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ScissorWarning)  # said once, as one line, by _say
        with progress.bar("decoding", frames) as bar:
            clip = read_video(path, frames, repeat=repeat, max_side=MAX_SIDE, progress=bar.update)
    if say:
        _say(clip)
    return clip


def _say(clip: Any) -> None:
    """One line on stderr when the clip differs from what was asked."""
    if clip.note is None:
        return
    hint = f" (--repeat-frames repeats frames up to {clip.requested})" if clip.num_frames < clip.requested else ""
    sys.stderr.write(f"{PROG}: warning: {clip.note}{hint}\n")


def _load(args: argparse.Namespace, progress: Progress) -> Any:
    from ..integrations.hf.session import load_model

    return load_model(args.model or DEFAULT_MODEL, device=args.device, dtype=args.dtype, progress=progress)


# --------------------------------------------------------------------------- ask


def ask(args: argparse.Namespace) -> int:
    """Answer QUESTION about VIDEO with compressed video tokens (and, with --compare, without)."""
    from ..integrations.hf.session import answer

    method = _method(args)
    other = _compare_method(args)
    config = method.config
    _check_video(args.video, args.frames, args.repeat_frames)
    progress = Progress(quiet=args.quiet)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    loaded = _load(args, progress)
    timings["load"] = time.perf_counter() - start

    start = time.perf_counter()
    clip = _read_clip(args.video, args.frames, args.repeat_frames, progress)
    timings["decode"] = time.perf_counter() - start

    def run_with(m: _Method | None) -> Any:
        if m is None:
            return answer(
                loaded,
                clip.frames,
                args.question,
                None,
                max_new_tokens=args.max_new_tokens,
                progress=progress,
                timestamps=clip.timestamps,
            )
        return answer(
            loaded,
            clip.frames,
            args.question,
            m.config,
            method=m.name,
            options=m.options,
            max_new_tokens=args.max_new_tokens,
            progress=progress,
            timestamps=clip.timestamps,
        )

    run = run_with(method)
    baseline = run_with(other) if args.compare is not None else None

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
        **method.describe(),
        "config": _config_dict(config),
        "generated_tokens": run.generated_tokens,
        "timings": {"load": timings["load"], "decode": timings["decode"], **run.timings},
        "compare": None,
    }
    if baseline is not None:
        report["compare"] = {
            "method": "none" if other is None else other.name,
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
        other = "uncompressed" if compare["method"] == "none" else compare["method"]
        out.write(
            f"{report['method']} ({report['tokens_after']:,} video tokens):\n  {report['answer'] or '(empty answer)'}\n"
        )
        out.write(f"{other} ({compare['tokens']:,} video tokens):\n  {compare['answer'] or '(empty answer)'}\n\n")
    t = report["timings"]
    rows = [
        ("model", f"{report['model']} ({report['model_type']}, {report['device']})"),
        ("frames", f"{report['frames']}"),
        ("method", report["method"] + "".join(f" {k}={v}" for k, v in report["options"].items())),
        ("video tokens", f"{report['tokens_before']:,} -> {report['tokens_after']:,}"),
        ("retention", f"{report['retention']:.1%}"),
    ]
    stages = {
        "decode": "decode",
        "vision": "vision tower",
        "compression": "compression",
        "prefill": "prefill",
        "generation": "generation",
    }
    if compare is None:
        rows += [(label, _seconds(t.get(key))) for key, label in stages.items()]
    else:
        c = compare["timings"]
        rows += [
            (label, f"{_seconds(t.get(key)):>8}   ({other} {_seconds(c.get(key))})") for key, label in stages.items()
        ]
    generated = f"{report['generated_tokens']} tokens"
    if compare is not None:
        generated = f"{generated:>8}   ({other} {compare['generated_tokens']} tokens)"
    rows.append(("generated", generated))
    out.write(_rows(rows) + "\n")


# --------------------------------------------------------------------------- compress


def compress(args: argparse.Namespace) -> int:
    """Write the compressed tokens of VIDEO (through a model) or of --features to -o."""
    if (args.video is None) == (args.features is None):
        raise ScissorError("give either VIDEO or --features FILE (exactly one)")
    if args.features is not None and args.model is not None:
        raise ScissorError("--model is for VIDEO; a features file needs no model")
    method = _method(args)
    _features_method(method, "compress", from_file=args.features is not None)
    check_output(args.output, (".safetensors",), inputs=(args.video, args.features))
    config = method.config
    progress = Progress(quiet=args.quiet)
    timings: dict[str, float] = {}
    source: dict[str, Any]
    side: dict[str, Any] = {}
    if args.features is not None:
        if args.frames is not None:
            raise ScissorError("--frames is for VIDEO; a features file has its own frame count")
        start = time.perf_counter()
        features = load_features(args.features)  # [F, N, D]
        timings["load"] = time.perf_counter() - start
        source = {"features": args.features}
    else:
        features, source, timings, side = _video_features(args, progress, method)
    with progress.bar(f"compressing ({method.name})"):
        result, timings["compression"] = _compress(features, method, side)
    metadata = {
        "format": "llava-scissor.compressed/1",
        "llava_scissor_version": __version__,
        **method.describe(),
        "config": _config_dict(config),
        "source": source,
        "dim": int(features.shape[-1]),
        **_stats(result),
        "timings": timings,
    }
    tensors = save_result(args.output, result, metadata)
    if args.json:
        _print_json(
            {
                "output": args.output,
                **{k: v for k, v in metadata.items() if k != "format"},
                "tensors": {k: list(v.shape) for k, v in tensors.items()},
            }
        )
        return 0
    sys.stdout.write(f"wrote {args.output}\n")
    sys.stdout.write(_rows(_summary_rows(result, timings, method)) + "\n")
    return 0


def _summary_rows(result: CompressionResult, timings: dict[str, float], method: _Method) -> list[tuple[str, str]]:
    rows = [
        ("method", method.name + "".join(f" {k}={v}" for k, v in method.options.items())),
        ("frames", f"{result.frames}"),
        ("tokens per frame", f"{result.tokens_per_frame}"),
        ("video tokens", f"{result.num_input_tokens:,} -> {result.num_tokens:,}"),
    ]
    if result.num_spatial_tokens is not None:
        rows.append(("after spatial step", f"{result.num_spatial_tokens:,}"))
    rows.append(("retention", f"{result.retention:.1%}"))
    rows += [(name, _seconds(value)) for name, value in timings.items()]
    return rows


def _encode_video(
    args: argparse.Namespace, progress: Progress, timings: dict[str, float], method: _Method
) -> tuple[Any, Any, torch.Tensor, dict[str, Any]]:
    """Load the model, decode VIDEO's sampled frames and run the vision tower.

    Returns (loaded model, clip, features [F, N, D], the method's side inputs); stage
    times go into ``timings``.
    """
    from ..integrations.hf.session import encode, vision_attention

    frames = args.frames or DEFAULT_FRAMES
    _check_video(args.video, frames, args.repeat_frames)
    start = time.perf_counter()
    loaded = _load(args, progress)
    timings["load"] = time.perf_counter() - start
    start = time.perf_counter()
    clip = _read_clip(args.video, frames, args.repeat_frames, progress)
    timings["decode"] = time.perf_counter() - start
    with progress.bar("vision tower"):
        features, timings["vision"] = encode(loaded, clip.frames, clip.timestamps)
    side: dict[str, Any] = {}
    if "vision_attention" in method.side_inputs:
        with progress.bar("vision attention"):
            side["vision_attention"] = vision_attention(loaded, clip.frames)
    return loaded, clip, features, side


def _video_features(
    args: argparse.Namespace, progress: Progress, method: _Method
) -> tuple[torch.Tensor, dict[str, Any], dict[str, float], dict[str, Any]]:
    """[F, N, D] projected tokens of VIDEO's sampled frames, the source record, timings, side inputs."""
    timings: dict[str, float] = {}
    loaded, clip, features, side = _encode_video(args, progress, timings, method)
    source = {
        "video": args.video,
        "model": loaded.name,
        "model_type": loaded.model_type,
        "frame_indices": list(clip.indices),
    }
    return features, source, timings, side


# --------------------------------------------------------------------------- visualize


def visualize(args: argparse.Namespace) -> int:
    """Draw the compression of VIDEO's tokens (from the model or --features) to -o."""
    from ..viz import save
    from ..viz._draw import resolve_grid

    if args.features is not None and args.model is not None:
        raise ScissorError("give --model or --features, not both")
    method = _method(args)
    _features_method(method, "visualize", from_file=args.features is not None)
    check_output(args.output, (".png", ".gif", ".html"), inputs=(args.video, args.features))
    config = method.config
    progress = Progress(quiet=args.quiet)
    timings: dict[str, float] = {}
    side: dict[str, Any] = {}
    grid = args.grid
    if args.features is not None:
        features = load_features(args.features)  # [F, N, D]
        frames = int(features.shape[0])
        if args.frames is not None and args.frames != frames:
            raise ScissorError(f"--frames {args.frames} differs from the {frames} frames of {args.features}")
        resolve_grid(int(features.shape[1]), grid)  # fail before decoding
        _check_video(args.video, frames, args.repeat_frames)
        start = time.perf_counter()
        clip = _read_clip(args.video, frames, args.repeat_frames, progress, say=False)
        if clip.num_frames != frames:
            raise ScissorError(
                f"{args.features} holds {frames} frames but the video gives {clip.num_frames}: {clip.note}"
            )
        _say(clip)
        timings["decode"] = time.perf_counter() - start
        source = f"features {os.path.basename(args.features)}"
    else:
        loaded, clip, features, side = _encode_video(args, progress, timings, method)
        if grid is None:
            grid = loaded.grid
        source = loaded.name
        clip = _frames_per_step(clip, int(features.shape[0]))
    with progress.bar(f"compressing ({method.name})"):
        result, timings["compression"] = _compress(features, method, side)
    start = time.perf_counter()
    with progress.bar("drawing"):
        who = "LLaVA-Scissor" if method.name == "scissor" else method.name
        title = args.title or f"{who} on {os.path.basename(args.video)} ({source})"
        save(args.output, clip.frames, result, grid=grid, timestamps=clip.timestamps, title=title)
    timings["drawing"] = time.perf_counter() - start
    if args.json:
        _print_json(
            {
                "output": args.output,
                "video": args.video,
                "source": source,
                **method.describe(),
                "config": _config_dict(config),
                **_stats(result),
                "timings": timings,
            }
        )
        return 0
    sys.stdout.write(f"wrote {args.output}\n")
    sys.stdout.write(_rows(_summary_rows(result, timings, method)) + "\n")
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
    return dataclasses.replace(
        clip, frames=clip.frames[keep], indices=tuple(clip.indices[i] for i in keep), timestamps=timestamps
    )


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
    out.write(f"methods (--method): {', '.join(report['methods'])}\n")
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
    from ..methods import available_methods

    model_types: list[str] | str
    try:
        from ..integrations.hf import supported_model_types

        model_types = supported_model_types()
    except ImportError as exc:
        model_types = f"{exc} (pip install 'llava-scissor[hf]')"
    optional = {
        "video decoding": f"yes (PyAV {versions['av (PyAV)']})"
        if versions["av (PyAV)"]
        else "no: pip install 'llava-scissor[video]'",
        "pictures": f"yes (Pillow {versions['pillow']})" if versions["pillow"] else "no: pip install pillow",
        "transformers models": f"yes (transformers {versions['transformers']})"
        if versions["transformers"]
        else "no: pip install 'llava-scissor[hf]'",
        "torchvision": f"yes ({versions['torchvision']})"
        if versions["torchvision"]
        else "no (not needed: frames are resized with Pillow)",
    }
    return {
        "llava_scissor": __version__,
        "versions": versions,
        "device": device,
        "model_types": model_types,
        "optional": optional,
        "methods": available_methods(),
        "default_model": DEFAULT_MODEL,
    }
