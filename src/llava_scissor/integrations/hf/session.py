"""A transformers video LLM in one session: loading, prompts, encoding, answering.

What the command line, ``eval.fidelity`` and the lmms-eval plugin share: load a
supported model and its processor from a folder or a hub id (``load_model``), build its
video inputs and chat prompt, run its vision tower (``encode``), answer a question with
compression (``answer``). transformers is imported on first use.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ContextManager, Iterator, Protocol

import numpy as np
import torch

from ..._errors import ScissorError
from ..._timing import synchronize as _sync
from ...core.budget import final_budget
from .families import get_family, supported_model_types
from .hooks import prefill_hook_for
from .inputs import build_video_inputs, load_processor, to_model, video_token_for
from .prepare import prepare

if TYPE_CHECKING:
    from ...core.config import ScissorConfig

__all__ = [
    "Progress",
    "Loaded",
    "Answer",
    "load_model",
    "video_token",
    "chat_prompt",
    "video_inputs",
    "encode",
    "answer",
    "vision_attention",
]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$|^[A-Za-z0-9][\w.-]*$")


class Progress(Protocol):
    """Where a session reports its steps (the command line passes its progress bars).

    ``bar(label, total)`` is a context manager around one step; what it yields has
    ``update(done)``. ``enabled``: whether anything is shown (library progress bars follow it).
    """

    enabled: bool

    def bar(self, label: str, total: int | None = None) -> ContextManager[Any]: ...


class _Silent:
    """No progress shown."""

    enabled = False

    @contextlib.contextmanager
    def bar(self, label: str, total: int | None = None) -> Iterator[Any]:
        yield self

    def update(self, done: int, total: int | None = None) -> None:
        pass


@dataclass
class Loaded:
    """A model ready to answer: the model, its processor (or ``ProcessorParts``), where it runs."""

    name: str
    model: Any
    processor: Any
    model_type: str
    device: torch.device
    chat_template: str | None
    grid: tuple[int, int] | None = None  # token grid of one frame, known after the first encode


@dataclass
class Answer:
    """One generated answer and what it took."""

    answer: str
    tokens_before: int
    tokens_after: int
    tokens_per_frame: int
    spatial_tokens: int | None
    generated_tokens: int
    timings: dict[str, float | None] = field(default_factory=dict)

    @property
    def retention(self) -> float:
        return self.tokens_after / self.tokens_before


def _quiet_libraries(progress: Progress) -> None:
    """transformers / huggingface_hub: warnings off, their progress bars only on a terminal."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    try:
        from huggingface_hub.utils import logging as hub_logging

        hub_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover - huggingface_hub is a transformers dependency
        pass
    if not progress.enabled:
        transformers.utils.logging.disable_progress_bar()
        try:
            from huggingface_hub.utils import disable_progress_bars

            disable_progress_bars()
        except ImportError:  # pragma: no cover
            pass


def _source(name: str) -> tuple[str, bool]:
    """(what to pass to from_pretrained, local_files_only) for a folder or a hub id.

    A hub id is used from the local cache when the Hub cannot be reached (or
    HF_HUB_OFFLINE is set); ``ScissorError`` says how to pass a folder when it is not there.
    """
    expanded = os.path.expanduser(name)
    if os.path.isdir(expanded):
        if not os.path.isfile(os.path.join(expanded, "config.json")):
            raise ScissorError(f"model folder {name} has no config.json; expected a transformers model folder")
        return expanded, True
    if os.path.exists(expanded):
        raise ScissorError(f"--model must be a model folder or a Hugging Face id, got the file {name}")
    if not _HUB_ID.match(name) or name.startswith((".", "~")) or os.sep in name.replace("/", "", 1):
        raise ScissorError(f"model folder not found: {name}")
    offline = _offline_env()
    if not offline:
        offline = not _hub_reachable(name)
    return name, offline


def _offline_env() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _hub_reachable(repo_id: str) -> bool:
    """True when the Hub answers for ``repo_id``; a missing or gated repository is an error."""
    try:
        from huggingface_hub import model_info
        from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError
    except ImportError:  # pragma: no cover - huggingface_hub is a transformers dependency
        return True
    try:
        model_info(repo_id, timeout=10)
    except GatedRepoError:
        raise ScissorError(
            f"model {repo_id} is gated on the Hugging Face Hub; accept its terms and log in (hf auth login), "
            "or pass --model FOLDER with a local copy"
        ) from None
    except RepositoryNotFoundError:
        raise ScissorError(
            f"model {repo_id} does not exist on the Hugging Face Hub (or is private); "
            "check the id, or pass --model FOLDER with a local copy"
        ) from None
    except Exception:  # connection refused, DNS failure, timeout, proxy errors ...
        return False
    return True


def _not_found(name: str) -> ScissorError:
    why = "HF_HUB_OFFLINE is set" if _offline_env() else "the Hub cannot be reached"
    return ScissorError(
        f"cannot find model {name!r}: it is not in the local Hugging Face cache and {why}; run once with internet access to download it, or pass --model FOLDER with a local "
        f"copy (for example made with: hf download {name} --local-dir FOLDER)"
    )


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ScissorError(f"unknown --device {device!r}; expected auto, cpu, cuda, cuda:N or mps") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ScissorError(f"--device {device}: CUDA is not available here (see llava-scissor info)")
    if resolved.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ScissorError(f"--device {device}: MPS is not available here")
    return resolved


def _resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def _chat_template(source: str, local_only: bool, processor: Any) -> str | None:
    """The chat template of the model's processor, read from its files when the processor
    itself could not be built (transformers' video processors need torchvision)."""
    template = getattr(processor, "chat_template", None)
    if isinstance(template, str):
        return template
    from transformers.utils import cached_file

    for filename in ("chat_template.jinja", "chat_template.json", "processor_config.json"):
        try:
            path = cached_file(
                source,
                filename,
                local_files_only=local_only,
                _raise_exceptions_for_missing_entries=False,
                _raise_exceptions_for_connection_errors=False,
            )
        except OSError:
            path = None
        if not path:
            continue
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        if filename.endswith(".jinja"):
            return text
        value = json.loads(text).get("chat_template")
        if isinstance(value, str):
            return value
    tokenizer = getattr(processor, "tokenizer", None)
    template = getattr(tokenizer, "chat_template", None)
    return template if isinstance(template, str) else None


def load_model(name: str, *, device: str = "auto", dtype: str = "auto", progress: Progress | None = None) -> Loaded:
    """Load a supported video LLM and its processor from a hub id or a local folder."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise ScissorError("models need transformers: pip install 'llava-scissor[hf]'") from None
    from transformers import AutoConfig, AutoModelForImageTextToText

    progress = progress or _Silent()
    _quiet_libraries(progress)
    target = _resolve_device(device)
    torch_dtype = _resolve_dtype(dtype, target)
    source, local_only = _source(name)
    with progress.bar(f"loading {name}"):
        try:
            config = AutoConfig.from_pretrained(source, local_files_only=local_only)
        except OSError:
            if local_only and not os.path.isdir(source):
                raise _not_found(name) from None
            raise
        except ValueError as exc:
            raise ScissorError(f"cannot read the config of {name}: {' '.join(str(exc).split())}") from None
        model_type = getattr(config, "model_type", None)
        if model_type not in supported_model_types():
            raise ScissorError(
                f"model type {model_type!r} of {name} is not supported; supported model types: "
                f"{', '.join(supported_model_types())}"
            )
        try:
            processor = load_processor(source, local_files_only=local_only)
            model: Any = AutoModelForImageTextToText.from_pretrained(
                source, dtype=torch_dtype, local_files_only=local_only
            )
        except OSError as exc:
            if local_only and not os.path.isdir(source):
                raise _not_found(name) from None
            raise ScissorError(f"cannot load model {name}: {' '.join(str(exc).split())}") from None
        model.to(target).eval()
    template = _chat_template(source, local_only, processor)
    return Loaded(
        name=name, model=model, processor=processor, model_type=str(model_type), device=target, chat_template=template
    )


def video_token(loaded: Loaded) -> str:
    """The placeholder string of one video in the model's prompts (``<video>``, ``<|video_pad|>``)."""
    token = getattr(loaded.processor, "video_token", None)
    if isinstance(token, str):
        return token
    return video_token_for(loaded.model_type)


def chat_prompt(loaded: Loaded, question: str, videos: int = 1) -> str:
    """The chat prompt with ``videos`` videos and the question, ending where the answer starts."""
    content: list[dict[str, Any]] = [{"type": "video"} for _ in range(videos)]
    content.append({"type": "text", "text": question})
    tokenizer = getattr(loaded.processor, "tokenizer", None)
    if loaded.chat_template is not None and tokenizer is not None:
        return str(
            tokenizer.apply_chat_template(
                [{"role": "user", "content": content}],
                chat_template=loaded.chat_template,
                tokenize=False,
                add_generation_prompt=True,
            )
        )
    # No template anywhere: the Qwen2 chat format that every supported family's LLM uses.
    marks = "".join(video_token(loaded) for _ in range(videos))
    return f"<|im_start|>user\n{marks}\n{question}<|im_end|>\n<|im_start|>assistant\n"


def video_inputs(
    loaded: Loaded, frames: np.ndarray, text: str, timestamps: Sequence[float] | None = None
) -> dict[str, Any]:
    """Model inputs for one video (frames [F, H, W, 3] uint8, taken at ``timestamps``
    seconds when known) and its prompt ``text``, on the model's device."""
    # The decoder's timestamps give the real sampling rate (Qwen2.5-VL's temporal
    # positions, the timestamps Qwen3-VL / GLM-4V write between frames).
    times = None if timestamps is None else [list(timestamps)]
    batch = build_video_inputs(loaded.processor, text, [frames], timestamps=times)
    return to_model(batch, loaded.device, loaded.model.dtype)


def encode(loaded: Loaded, frames: np.ndarray, timestamps: Sequence[float] | None = None) -> tuple[torch.Tensor, float]:
    """([F, N, dim] float32 tokens (on the model's device) after vision tower and projector, seconds).

    frames: [F, H, W, 3] uint8, taken at ``timestamps`` seconds (optional). For Qwen models F is the number of temporal steps (two
    frames each). Sets ``loaded.grid`` to the (h, w) token grid of one frame.
    """
    inputs = video_inputs(loaded, frames, video_token(loaded), timestamps)
    _sync(loaded.device)
    start = time.perf_counter()
    with torch.no_grad():
        videos = get_family(loaded.model).extract(loaded.model, inputs)
    _sync(loaded.device)
    seconds = time.perf_counter() - start
    video = videos[0]
    loaded.grid = (int(video.grid[1]), int(video.grid[2]))
    return video.features.detach().float(), seconds


class _Timer:
    """A generate streamer that timestamps the first new token and counts the others."""

    def __init__(self, bar: Any) -> None:
        self.calls = 0
        self.first: float | None = None
        self.bar = bar

    def put(self, value: torch.Tensor) -> None:
        self.calls += 1
        if self.calls == 1:
            return  # the prompt
        if self.first is None:
            self.first = time.perf_counter()
        self.bar.update(self.calls - 1)

    def end(self) -> None:
        pass


def answer(
    loaded: Loaded,
    frames: np.ndarray,
    question: str,
    config: ScissorConfig | None,
    *,
    method: str = "scissor",
    options: dict[str, Any] | None = None,
    max_new_tokens: int = 128,
    progress: Progress | None = None,
    timestamps: Sequence[float] | None = None,
) -> Answer:
    """Greedy answer to ``question`` about frames [F, H, W, 3] uint8 (taken at
    ``timestamps`` seconds, when known).

    ``config`` None answers without compression (the same code path with every token
    kept as it is). ``method`` / ``options``: a registered method and its settings
    (keyword arguments of ``prepare``). Timings: vision (tower + projector), compression,
    prefill (up to the first new token), generation (the remaining tokens).

    A method that acts inside the language model (FastV) runs in its prefill hook
    during ``generate``: ``tokens_after`` is then the budget it keeps from its layer on,
    and its compression time is part of the prefill.
    """
    progress = progress or _Silent()
    inputs = video_inputs(loaded, frames, chat_prompt(loaded, question), timestamps)
    label = f"compressing ({method})" if config is not None else "encoding (uncompressed)"
    with progress.bar(label):
        prepared = prepare(loaded.model, inputs, config, method=method, enabled=config is not None, **(options or {}))
    stats = prepared.stats[0]
    result = stats.result
    prompt_length = int(prepared["input_ids"].shape[1])  # generate returns prepared's prompt first
    hook = prefill_hook_for(prepared.method)
    tokenizer = getattr(loaded.processor, "tokenizer", None)
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        pad = getattr(tokenizer, "eos_token_id", None)
    label = "generating" + (" (uncompressed)" if config is None else f" ({method})")
    with torch.no_grad(), progress.bar(label, max_new_tokens) as bar:
        timer = _Timer(bar)
        _sync(loaded.device)
        start = time.perf_counter()
        with hook(loaded.model, prepared) if hook is not None else contextlib.nullcontext():
            output = loaded.model.generate(
                **prepared, max_new_tokens=max_new_tokens, do_sample=False, streamer=timer, pad_token_id=pad
            )
        _sync(loaded.device)
        end = time.perf_counter()
    new_tokens = output[0, prompt_length:]
    text = tokenizer.decode(new_tokens, skip_special_tokens=True).strip() if tokenizer is not None else ""
    first = timer.first if timer.first is not None else end
    tokens_after = result.num_tokens
    if prepared.method is not None and prepared.config is not None:  # in the language model
        tokens_after = (
            final_budget(result.num_input_tokens, prepared.config.retention, prepared.config.max_tokens) or tokens_after
        )
    return Answer(
        answer=text,
        tokens_before=result.num_input_tokens,
        tokens_after=tokens_after,
        tokens_per_frame=result.tokens_per_frame,
        spatial_tokens=result.num_spatial_tokens,
        generated_tokens=int(new_tokens.numel()),
        timings={
            "vision": prepared.encode_seconds,
            "compression": stats.seconds if config is not None and prepared.method is None else None,
            "prefill": first - start,
            "generation": end - first,
        },
    )


def vision_attention(loaded: Loaded, frames: np.ndarray) -> torch.Tensor:
    """[F, N] attention each token of ``encode``'s grid receives in the vision tower
    (the side input of VisionZip-like methods)."""
    inputs = video_inputs(loaded, frames, video_token(loaded))
    with torch.no_grad():
        attention = get_family(loaded.model).vision_attention(loaded.model, inputs)
    return attention[0].detach().float()
