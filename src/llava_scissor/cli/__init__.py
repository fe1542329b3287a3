"""The ``llava-scissor`` command line (also ``python -m llava_scissor``).

    llava-scissor ask VIDEO QUESTION [--model ID_OR_FOLDER] [--method NAME] [--retention R | --tau T]
                      [--frames N] [--compare [METHOD]] [--json]
    llava-scissor compress (VIDEO [--model ...] | --features FILE) [--method NAME] [--retention R | --tau T]
                      -o OUT.safetensors
    llava-scissor visualize VIDEO [--model ... | --features FILE] [--method NAME] [--retention R | --tau T]
                      -o OUT.png|.gif|.html
    llava-scissor info

Every error is one line on stderr, ``llava-scissor: error: ...``, and exit status 2
(1 for an unexpected failure; set LLAVA_SCISSOR_DEBUG=1 to see its traceback). A video
read differently from what was asked (its stream ends early, or it has fewer frames than
``--frames``) gives one line ``llava-scissor: warning: ...`` and the command goes on.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Any, Callable, NoReturn, Sequence

from .._errors import ScissorError

__all__ = ["main", "build_parser", "DEFAULT_MODEL"]

PROG = "llava-scissor"
DEFAULT_MODEL = "llava-hf/llava-onevision-qwen2-0.5b-ov-hf"
DEFAULT_FRAMES = 32


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error instead of usage plus message."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{PROG}: error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(2)


def _fraction(text: str) -> float:
    value = _number(text, "retention")
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"retention must be in (0, 1], got {text}")
    return value


def _tau(text: str) -> float:
    value = _number(text, "tau")
    if not -1.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"tau must be in [-1, 1], got {text}")
    return value


def _number(text: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from None
    if value != value:  # NaN
        raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}")
    return value


def _positive_int(name: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a whole number >= 1, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{name} must be >= 1, got {text}")
        return value

    return parse


def _option(text: str) -> tuple[str, object]:
    """NAME=VALUE -> (name, value): an int, a float, true/false, or the text as it is."""
    name, sep, value = text.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"option must look like NAME=VALUE (e.g. dominant_ratio=3), got {text!r}")
    lowered = value.strip().lower()
    if lowered in ("true", "false"):
        return name, lowered == "true"
    for kind in (int, float):
        try:
            return name, kind(value)
        except ValueError:
            pass
    return name, value


def _grid(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    try:
        h, w = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"grid must look like HxW (e.g. 14x14), got {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"grid sides must be >= 1, got {text!r}")
    return h, w


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of all subcommands."""
    from .. import __version__

    parser = _Parser(
        prog=PROG,
        description="Compress the video tokens of a video LLM with LLaVA-Scissor's semantic connected components.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    common, budget, model = _shared_options()
    _add_ask(sub, [common, budget, model])
    _add_compress(sub, [common, budget, model])
    _add_visualize(sub, [common, budget, model])
    _add_info(sub, [common])
    return parser


def _shared_options() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser, argparse.ArgumentParser]:
    """The option groups several subcommands take: (progress, method and budget, model)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

    budget = argparse.ArgumentParser(add_help=False)
    budget.add_argument(
        "--method",
        default="scissor",
        metavar="NAME",
        help="compression method (default scissor; the others: baselines, which need "
        "--retention or --max-tokens); 'llava-scissor info' lists them",
    )
    budget.add_argument(
        "--option",
        action="append",
        type=_option,
        default=[],
        metavar="NAME=VALUE",
        help="a hyperparameter of --method (repeatable), e.g. dominant_ratio=3 for visionzip, "
        "layer=2 for fastv, or a ScissorConfig field such as similarity_dtype=bfloat16",
    )
    group = budget.add_mutually_exclusive_group()
    group.add_argument(
        "--retention", type=_fraction, metavar="R", help="keep this fraction of the video tokens, in (0, 1]"
    )
    group.add_argument(
        "--tau",
        type=_tau,
        metavar="T",
        help="similarity threshold in [-1, 1] (default 0.9, the paper's); the token count follows from the video",
    )
    group.add_argument(
        "--max-tokens", type=_positive_int("max-tokens"), metavar="K", help="keep exactly K video tokens"
    )

    model = argparse.ArgumentParser(add_help=False)
    mg = model.add_argument_group("model")
    mg.add_argument(
        "--model", metavar="ID_OR_FOLDER", help=f"Hugging Face model id or local folder (default: {DEFAULT_MODEL})"
    )
    mg.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, mps")
    mg.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", "float32", "bfloat16", "float16"),
        help="auto: bfloat16 on a GPU, float32 on the CPU",
    )
    return common, budget, model


def _add_frames(p: argparse.ArgumentParser, default: int | None, help_text: str) -> None:
    """``--frames N``: frames sampled from the video."""
    p.add_argument("--frames", type=_positive_int("frames"), default=default, metavar="N", help=help_text)


def _add_repeat_frames(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--repeat-frames",
        action="store_true",
        help="repeat frames of a video shorter than N to give N (default: each frame once)",
    )


def _add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def _add_ask(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    ask = sub.add_parser(
        "ask",
        parents=parents,
        help="answer a question about a video with compressed video tokens",
        description="Sample frames, compress the video tokens, generate an answer, and print the numbers.",
    )
    ask.add_argument("video", metavar="VIDEO")
    ask.add_argument("question", metavar="QUESTION")
    _add_frames(ask, DEFAULT_FRAMES, f"frames sampled uniformly (default {DEFAULT_FRAMES})")
    ask.add_argument(
        "--compare",
        nargs="?",
        const="none",
        default=None,
        metavar="METHOD",
        help="also answer without compression (no METHOD, or 'none'), or with METHOD at the same "
        "budget (its default options), and show both answers side by side",
    )
    _add_json(ask)
    ask.add_argument(
        "--max-new-tokens",
        type=_positive_int("max-new-tokens"),
        default=128,
        metavar="T",
        help="answer length limit (default 128)",
    )
    _add_repeat_frames(ask)


def _add_compress(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    comp = sub.add_parser(
        "compress",
        parents=parents,
        help="write the compressed tokens of a video or a features file",
        description="Compress the tokens of VIDEO (through the model's vision tower and projector) or of a "
        "features file [frames, tokens, dim] (no model needed), and write them with labels and statistics.",
    )
    comp.add_argument("video", metavar="VIDEO", nargs="?")
    comp.add_argument(
        "--features", metavar="FILE", help=".safetensors (tensor 'features'), .pt or .npy, shaped [frames, tokens, dim]"
    )
    _add_frames(comp, None, f"frames sampled from VIDEO (default {DEFAULT_FRAMES})")
    _add_repeat_frames(comp)
    comp.add_argument("-o", "--output", required=True, metavar="OUT.safetensors")
    _add_json(comp)


def _add_visualize(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    vis = sub.add_parser(
        "visualize",
        parents=parents,
        help="draw which tokens were merged into which",
        description="Tint each token cell of the sampled frames by its output token, draw component borders, "
        "and plot tokens per frame. The tokens come from the model or from a features file.",
    )
    vis.add_argument("video", metavar="VIDEO")
    vis.add_argument(
        "--features",
        metavar="FILE",
        help="features [frames, tokens, dim] of VIDEO's uniformly sampled frames (no model)",
    )
    _add_frames(vis, None, f"frames sampled (default {DEFAULT_FRAMES}; with --features, its frame count)")
    _add_repeat_frames(vis)
    vis.add_argument("--grid", type=_grid, metavar="HxW", help="token grid of one frame when it is not square")
    vis.add_argument("--title", help="heading of the picture (default: the video and the model or features file)")
    vis.add_argument("-o", "--output", required=True, metavar="OUT.png|.gif|.html")
    _add_json(vis)


def _add_info(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    info = sub.add_parser("info", parents=parents, help="versions, device, supported models, optional pieces")
    _add_json(info)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 bad input, 1 unexpected failure)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    from . import _commands

    handler = {
        "ask": _commands.ask,
        "compress": _commands.compress,
        "visualize": _commands.visualize,
        "info": _commands.info,
    }[args.command]
    previous = _exit_on_sigterm()
    try:
        return handler(args)
    except KeyboardInterrupt:
        sys.stderr.write(f"\n{PROG}: interrupted\n")
        return 130
    except BrokenPipeError:
        return 0
    except ScissorError as exc:
        return _fail(_one_line(exc))
    except (OSError, ValueError, ImportError) as exc:
        if os.environ.get("LLAVA_SCISSOR_DEBUG"):
            raise
        return _fail(_one_line(exc))
    except Exception as exc:  # a bug or an unexpected library failure: still one line
        if os.environ.get("LLAVA_SCISSOR_DEBUG"):
            raise
        return _fail(
            f"unexpected {type(exc).__name__}: {_one_line(exc)} (set LLAVA_SCISSOR_DEBUG=1 for the traceback)", 1
        )
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _exit_on_sigterm() -> Any:
    """Make SIGTERM raise SystemExit(143), so that ``finally`` blocks run (a half-written
    output's temporary file is removed); returns the previous handler (None: unchanged)."""
    if threading.current_thread() is not threading.main_thread():
        return None  # signal handlers can only be set from the main thread

    def terminate(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    return signal.signal(signal.SIGTERM, terminate)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 600 else text[:597] + "..."


def _fail(message: str, code: int = 2) -> int:
    sys.stderr.write(f"{PROG}: error: {message}\n")
    return code
