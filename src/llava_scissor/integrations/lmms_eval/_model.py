"""The ``llava_scissor`` lmms-eval model (imports lmms-eval; see the package docstring).

Requests go through the library's ``apply``: the model's own ``generate`` / ``forward``
run on processor outputs and the installed handle compresses the videos of each call, so
every registered model family and method is served the same way, in-model methods
(FastV) included.

Data parallel (``accelerate launch --num_processes N -m lmms_eval ...``): lmms-eval gives
each rank its share of the documents and gathers scores and logged samples on rank 0.
The plugin puts each rank on its own device (the local rank's GPU, or the CPU, with a
gloo group), exposes ``device`` / ``rank`` / ``world_size`` / ``accelerator`` for the
evaluator's collectives, skips the padding requests lmms-eval adds to even out the ranks,
and gathers its own per-sample records on rank 0 for the sidecar.

Batching: ``generate_until`` requests are grouped by task, generation settings and
whether they carry video, then run ``batch_size`` at a time (left padding; ``prepare``
re-pads after cutting each video's placeholders). Greedy outputs equal those of batch
size 1. Loglikelihood requests run one at a time.

Responses are returned as ``GenerationResult(text, CompressionTokenCounts(...))``:
lmms-eval logs ``token_counts.to_dict()`` with each sample and sums ``input_tokens`` /
``output_tokens`` in its ``efficiency`` block.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lmms_eval.api.instance import GenerationResult, Instance, TokenCounts
from lmms_eval.api.model import lmms
from lmms_eval.api.registry import register_model
from loguru import logger

from ..._errors import ScissorError
from ...video import Clip, read_video
from ..hf.inputs import to_model
from ..hf.prepare import append_text_tokens
from ..hf.session import chat_prompt, load_model
from . import AUTO_BATCH_SIZE, MODEL_NAME
from ._records import (
    SampleRecord,
    find_results_file,
    group_batches,
    sidecar_path,
    summarize,
    write_json_atomic,
)

__all__ = ["CompressionTokenCounts", "LlavaScissor"]


@dataclass
class CompressionTokenCounts(TokenCounts):
    """lmms-eval's per-response ``TokenCounts`` plus what compression did.

    ``input_tokens``: prompt tokens the language model read (after compression);
    ``output_tokens``: tokens generated. ``to_dict`` (what lmms-eval writes into each
    logged sample's ``token_counts``) adds the fields below when set.
    """

    video_tokens_before: int | None = None
    video_tokens_after: int | None = None
    retention: float | None = None
    compression_seconds: float | None = None
    method: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(super().to_dict())
        for key in ("video_tokens_before", "video_tokens_after", "retention", "compression_seconds", "method"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


def _world() -> tuple[int, int, int]:
    """(rank, local rank, world size) from the launcher's environment (accelerate, torchrun)."""
    return (
        int(os.environ.get("RANK", "0")),
        int(os.environ.get("LOCAL_RANK", "0")),
        int(os.environ.get("WORLD_SIZE", "1")),
    )


def _rank_device(device: str, local_rank: int, world_size: int) -> str:
    """The device this process runs on: ``auto`` / ``cuda`` take the local rank's GPU."""
    name = str(device or "auto").strip().lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and world_size > 1:
        return f"cuda:{local_rank}"
    return name


def _batch_size(value: int | str, max_batch_size: int | None) -> int:
    text = str(value).strip().lower()
    if text.startswith("auto"):  # lmms-eval's "auto" and "auto:N"
        size = AUTO_BATCH_SIZE
        return min(size, int(max_batch_size)) if max_batch_size else size
    try:
        size = int(text)
    except ValueError:
        raise ScissorError(f"batch_size must be a positive integer or 'auto', got {value!r}") from None
    if size < 1:
        raise ScissorError(f"batch_size must be a positive integer or 'auto', got {value!r}")
    return size


def _cli_output_path() -> str | None:
    """``--output_path`` of the lmms-eval command line this process runs, if any."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--output_path", default=None)
    known, _ = parser.parse_known_args(sys.argv[1:])
    return known.output_path


class _ProcessGroup:
    """The part of ``accelerate.Accelerator`` that lmms-eval's evaluator calls (``gather``,
    ``wait_for_everyone``), over the default ``torch.distributed`` group."""

    def __init__(self, local_rank: int) -> None:
        self.num_processes = torch.distributed.get_world_size()
        self.process_index = torch.distributed.get_rank()
        self.local_process_index = local_rank
        self.is_main_process = self.process_index == 0
        self.is_local_main_process = local_rank == 0

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank's ``tensor`` concatenated along dim 0 (a 0-d tensor counts as [1])."""
        part = tensor.reshape(1) if tensor.dim() == 0 else tensor.contiguous()
        parts = [torch.empty_like(part) for _ in range(self.num_processes)]
        torch.distributed.all_gather(parts, part)
        return torch.cat(parts)

    def wait_for_everyone(self) -> None:
        torch.distributed.barrier()

    def free_memory(self) -> None:
        pass

    def unwrap_model(self, model: Any) -> Any:
        return model


def _collectives(device: torch.device, world_size: int) -> Any:
    """What the evaluator's collectives go through when ``world_size`` processes run.

    Under ``accelerate launch`` on GPUs, lmms-eval's command line has formed the group and
    ``Accelerator()`` shares it. On CPUs accelerate forms no group (it runs each rank as a
    lone process unless ``ACCELERATE_USE_CPU`` is set), so the ranks form a gloo group here.
    """
    from accelerate import Accelerator

    accelerator = Accelerator()
    if accelerator.num_processes == world_size:
        return accelerator
    if not torch.distributed.is_initialized():
        if not (os.environ.get("MASTER_ADDR") and os.environ.get("MASTER_PORT")):
            raise ScissorError(
                f"WORLD_SIZE is {world_size} but MASTER_ADDR / MASTER_PORT are not set; launch with "
                "accelerate launch --num_processes N (or torchrun --nproc_per_node N)"
            )
        torch.distributed.init_process_group(backend="gloo" if device.type == "cpu" else "nccl")
    if torch.distributed.get_world_size() != world_size:
        raise ScissorError(
            f"WORLD_SIZE is {world_size} but the process group has {torch.distributed.get_world_size()} processes"
        )
    return _ProcessGroup(int(os.environ.get("LOCAL_RANK", "0")))


@register_model(MODEL_NAME)
class LlavaScissor(lmms):  # type: ignore[misc]
    """A transformers video LLM whose video tokens go through a llava-scissor method."""

    is_simple = True

    def __init__(
        self,
        pretrained: str,
        method: str = "scissor",
        max_frames_num: int = 32,
        device: str | None = "auto",
        dtype: str = "auto",
        batch_size: int | str = 1,
        max_batch_size: int | None = None,
        max_new_tokens: int = 128,
        keep_newline: bool = True,
        sidecar: str = "auto",
        **compression: Any,
    ) -> None:
        super().__init__()
        from ...api import resolve_method
        from ...methods import resolve_arguments
        from ..hf import apply

        self.method = str(method).strip().lower()
        self.max_frames_num = int(max_frames_num)
        self.max_new_tokens = int(max_new_tokens)
        self.batch_size_per_gpu = _batch_size(batch_size, max_batch_size)
        self.compression = dict(compression)
        self.sidecar = str(sidecar)
        # Bad names and options fail here, before the model loads, by the library's own rules.
        if self.method == "none":
            if self.compression:
                raise ScissorError(
                    f"method=none keeps every token and takes no compression options; got {sorted(self.compression)}"
                )
        else:
            method_obj = resolve_method(self.method)
            resolve_arguments(method_obj, None, dict(self.compression))
            if method_obj.in_model and self.batch_size_per_gpu > 1:
                # Pruning inside the language model (FastV) runs one sequence per call.
                logger.warning(
                    f"llava_scissor: method {self.method!r} acts inside the language model and runs "
                    f"one request at a time; batch_size {self.batch_size_per_gpu} -> 1"
                )
                self.batch_size_per_gpu = 1
        self.batch_sizes = {"generate_until": self.batch_size_per_gpu}  # lmms-eval logs these

        rank, local_rank, world_size = _world()
        self.loaded = load_model(
            str(pretrained), device=_rank_device(str(device or "auto"), local_rank, world_size), dtype=dtype
        )
        self._device = self.loaded.device
        if world_size > 1:
            self.accelerator = _collectives(self._device, world_size)
            self._rank = rank
            self._world_size = world_size
        self.model = self.loaded.model
        tokenizer = getattr(self.loaded.processor, "tokenizer", None)
        if tokenizer is None:
            raise ScissorError(f"{pretrained}: the processor has no tokenizer")
        self.tokenizer: Any = tokenizer
        self.records: list[SampleRecord] = []
        if self.method == "none":
            self.handle = apply(self.model, enabled=False, keep_newline=bool(keep_newline))
        else:
            self.handle = apply(self.model, method=self.method, keep_newline=bool(keep_newline), **self.compression)

    @property
    def device(self) -> torch.device:
        """Where this rank's model runs (lmms-eval puts its collective tensors here)."""
        return self._device

    @property
    def compression_log(self) -> list[dict[str, Any]]:
        """This rank's per-request records, as dicts."""
        return [r.to_dict() for r in self.records]

    # -- lmms-eval API ---------------------------------------------------------

    def generate_until(self, requests: list[Instance]) -> list[GenerationResult]:
        outputs: list[GenerationResult | None] = [None] * len(requests)
        work: list[int] = []
        for i, request in enumerate(requests):
            if request.metadata.get("__padding_only__"):
                # lmms-eval's copies that even out the ranks; their answers are discarded.
                outputs[i] = GenerationResult(text="")
            else:
                work.append(i)
        visuals = {i: self._video_paths(requests[i]) for i in work}
        keys = []
        for i in work:
            _, gen_kwargs, _, _, task, split = requests[i].args
            keys.append((task, split, json.dumps(gen_kwargs or {}, sort_keys=True, default=str), bool(visuals[i])))
        for batch in group_batches(keys, self.batch_size_per_gpu):
            members = [work[b] for b in batch]
            for i, result in zip(
                members, self._generate([requests[i] for i in members], [visuals[i] for i in members])
            ):
                outputs[i] = result
        done = [o for o in outputs if o is not None]
        if len(done) != len(requests):  # every request answered once, in order
            raise RuntimeError(f"{len(requests) - len(done)} generate_until requests got no answer")
        return done

    def loglikelihood(self, requests: list[Instance]) -> list[Any]:
        """Per request ``GenerationResult(text=(nll, greedy), ...)``.

        nll: the mean negative log-likelihood per continuation token, the convention of
        lmms-eval's own LLaVA and Qwen models (its multiple-choice scoring picks the choice
        with the lowest value). greedy: whether greedy decoding would produce the
        continuation. The pair travels inside a ``GenerationResult`` because lmms-eval
        0.7.3 turns a bare ``(float, bool)`` response into its string, which its
        multiple-choice scoring cannot unpack; the result's ``text`` is passed on as is.
        """
        results: list[Any] = []
        for request in requests:
            if request.metadata.get("__padding_only__"):
                results.append(GenerationResult(text=(0.0, False)))  # type: ignore[arg-type]
                continue
            if len(request.args) != 6:
                raise ScissorError(
                    "llava_scissor loglikelihood requests take (context, continuation, doc_to_visual, doc_id, task, "
                    f"split); got {len(request.args)} arguments (acc_mutual_info is not supported)"
                )
            context, target, _, doc_id, task, split = request.args
            doc = self.task_dict[task][split][doc_id]
            continuation = target(doc) if callable(target) else target
            if isinstance(continuation, list):
                continuation = continuation[0]
            videos = self._read_videos(self._video_paths(request))
            inputs = self._batch_inputs([context], [videos])
            cont_ids = self.tokenizer(str(continuation), add_special_tokens=False, return_tensors="pt")["input_ids"]
            cont_ids = cont_ids.to(inputs["input_ids"].device)
            n = int(cont_ids.shape[1])
            if n == 0:
                raise ScissorError(f"task {task!r} doc {doc_id}: the continuation {continuation!r} has no tokens")
            inputs = append_text_tokens(inputs, cont_ids)
            self.handle.last = None
            with torch.no_grad():
                logits = self.model(**inputs).logits  # [1, L', vocab]
            pred = logits[0, -n - 1 : -1].float().log_softmax(-1)  # [n, vocab]
            target_ids = cont_ids[0]
            nll = -float(pred.gather(1, target_ids[:, None]).mean())
            greedy = bool((pred.argmax(-1) == target_ids).all())
            record = self._record(request, row=0, input_tokens=int(logits.shape[1]) - n, output_tokens=None)
            results.append(GenerationResult(text=(nll, greedy), token_counts=self._counts(record)))  # type: ignore[arg-type]
        return results

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError("llava_scissor does not implement multi-round generation")

    def clean(self) -> None:
        """Called by lmms-eval on every rank once all requests ran: gather the records on
        rank 0 and arrange for the sidecar to be written after lmms-eval's results."""
        records = self.records
        if self.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list[Any] = [None] * self.world_size if self.rank == 0 else []
            torch.distributed.gather_object(records, gathered if self.rank == 0 else None, dst=0)
            if self.rank == 0:
                records = [r for part in gathered for r in part]
        if self.rank == 0:
            self._schedule_sidecar(records)
        # Let lmms-eval's clean() free the model: the handle and the loaded bundle hold it too.
        self.handle.remove()
        self.loaded.model = None
        super().clean()

    # -- batches ---------------------------------------------------------------

    def _generate(self, requests: Sequence[Instance], visuals: Sequence[list[str]]) -> list[GenerationResult]:
        contexts = [r.args[0] for r in requests]
        gen = dict(requests[0].args[1] or {})  # equal within a batch (grouped on it)
        until = gen.pop("until", None)
        stops = [until] if isinstance(until, str) else list(until or [])
        kwargs: dict[str, Any] = {
            "max_new_tokens": int(gen.pop("max_new_tokens", self.max_new_tokens)),
            "pad_token_id": self._pad_id(),
        }
        # lmms-eval's task settings: sampling only with a positive temperature (tasks write
        # temperature 0 for greedy); beams as given.
        temperature = float(gen.pop("temperature", 0) or 0)
        if temperature > 0 and gen.get("do_sample", True):
            kwargs.update(do_sample=True, temperature=temperature)
            if gen.get("top_p") is not None:
                kwargs["top_p"] = float(gen["top_p"])
        else:
            kwargs["do_sample"] = False
        if gen.get("num_beams") is not None:
            kwargs["num_beams"] = int(gen["num_beams"])
        inputs = self._batch_inputs(contexts, [self._read_videos(v) for v in visuals])
        self.handle.last = None
        with torch.no_grad():
            out = self.model.generate(**inputs, **kwargs)  # [B, L + new]: the caller's prompt, then new tokens
        length = int(inputs["input_ids"].shape[1])
        prepared = self.handle.last  # the compressed prompt the model saw, for the token counts
        prompt = prepared if prepared is not None else inputs
        mask = prompt.get("attention_mask")
        results = []
        for row, request in enumerate(requests):
            new = out[row, length:]
            generated = self._generated_length(new)
            text = self.tokenizer.decode(new[:generated], skip_special_tokens=True)
            for stop in stops:
                if stop:
                    text = text.split(stop)[0]
            input_tokens = int(mask[row].sum()) if mask is not None else int(prompt["input_ids"].shape[1])
            record = self._record(request, row=row, input_tokens=input_tokens, output_tokens=generated)
            self.cache_hook.add_partial("generate_until", (request.args[0], request.args[1]), text)
            results.append(GenerationResult(text=text.strip(), token_counts=self._counts(record)))
        return results

    def _generated_length(self, new: torch.Tensor) -> int:
        """Tokens generated for one row: up to and including its first end-of-sequence
        token (later positions are padding added while other rows of the batch ran on)."""
        eos = getattr(self.model.generation_config, "eos_token_id", None)
        if eos is None:
            eos = getattr(self.tokenizer, "eos_token_id", None)
        ids = [eos] if isinstance(eos, int) else list(eos or [])
        if not ids:
            return int(new.numel())
        hits = torch.isin(new, torch.tensor(ids, device=new.device)).nonzero()
        return int(hits[0, 0]) + 1 if hits.numel() else int(new.numel())

    # -- inputs ----------------------------------------------------------------

    def _video_paths(self, request: Instance) -> list[str]:
        doc_to_visual, doc_id, task, split = request.args[2:6]
        visuals = doc_to_visual(self.task_dict[task][split][doc_id]) if doc_to_visual else []
        flat: list[Any] = []
        for v in visuals or []:
            flat.extend(v if isinstance(v, (list, tuple)) else [v])
        for v in flat:
            if not isinstance(v, str):
                raise ScissorError(
                    f"llava_scissor evaluates video tasks (video paths); task {task!r} gave {type(v).__name__}"
                )
        return flat

    def _read_videos(self, paths: list[str]) -> list[Clip]:
        return [read_video(p, self.max_frames_num) for p in paths]

    def _prompt(self, context: str, videos: int) -> str:
        return chat_prompt(self.loaded, context, videos)

    def _batch_inputs(self, contexts: Sequence[str], videos: Sequence[list[Clip]]) -> dict[str, Any]:
        """Processor outputs on this rank's device for prompts with their videos, left-padded."""
        from ..hf import build_video_inputs

        prompts = [self._prompt(c, len(v)) for c, v in zip(contexts, videos)]
        clips = [clip for per_prompt in videos for clip in per_prompt]
        if clips:
            # the decoder's timestamps: temporal positions (Qwen2.5-VL) and time texts (Qwen3-VL, GLM-4V)
            batch = dict(
                build_video_inputs(
                    self.loaded.processor,
                    prompts,
                    [c.frames for c in clips],
                    timestamps=[c.timestamps for c in clips],
                    padding_side="left",
                )
            )
        else:
            self.tokenizer.padding_side = "left"
            batch = dict(self.tokenizer(prompts, return_tensors="pt", padding=True))
        return to_model(batch, self._device, self.model.dtype)

    def _pad_id(self) -> int:
        pad = getattr(self.tokenizer, "pad_token_id", None)
        if pad is None:
            pad = getattr(self.tokenizer, "eos_token_id", 0)
        return int(pad or 0)

    # -- records ---------------------------------------------------------------

    def _record(self, request: Instance, *, row: int, input_tokens: int, output_tokens: int | None) -> SampleRecord:
        stats = [s for s in self.handle.stats if s.row == row] if self.handle.last is not None else []
        before = sum(s.tokens_before for s in stats)
        after = sum(s.tokens_after for s in stats)
        record = SampleRecord(
            task=str(request.task_name),
            doc_id=int(request.doc_id),
            request=int(request.idx),
            method=self.method,
            video_tokens_before=before,
            video_tokens_after=after,
            retention=after / before if before else None,
            compression_seconds=sum(s.seconds for s in stats),
            input_tokens=input_tokens,
            output_tokens=output_tokens,
        )
        self.records.append(record)
        return record

    @staticmethod
    def _counts(record: SampleRecord) -> CompressionTokenCounts:
        return CompressionTokenCounts(
            input_tokens=record.input_tokens,
            output_tokens=record.output_tokens,
            video_tokens_before=record.video_tokens_before,
            video_tokens_after=record.video_tokens_after,
            retention=record.retention,
            compression_seconds=record.compression_seconds,
            method=record.method,
        )

    def _sidecar_payload(self, records: list[SampleRecord], results_file: Path | None) -> dict[str, Any]:
        ordered = sorted(records, key=lambda r: (r.task, r.doc_id, r.request))
        return {
            "model": MODEL_NAME,
            "pretrained": self.loaded.name,
            "method": self.method,
            "compression": {k: v for k, v in self.compression.items()},
            "max_frames_num": self.max_frames_num,
            "batch_size": self.batch_size_per_gpu,
            "world_size": self.world_size,
            "results_file": results_file.name if results_file is not None else None,
            "tasks": summarize(ordered),
            "samples": [r.to_dict() for r in ordered],
        }

    def _schedule_sidecar(self, records: list[SampleRecord]) -> None:
        target = self.sidecar.strip()
        if target.lower() == "none":
            return
        if target.lower() != "auto":
            write_json_atomic(Path(target), self._sidecar_payload(records, None))
            return
        root = _cli_output_path()
        if root is None:
            return  # lmms-eval writes no results file either
        ended = time.time()
        payload = self._sidecar_payload(records, None)

        def write() -> None:
            # lmms-eval writes its results after the evaluation returns, so this runs at exit.
            results = find_results_file(Path(root), ended)
            if results is None:
                return
            try:
                write_json_atomic(sidecar_path(results), {**payload, "results_file": results.name})
            except FileExistsError as exc:
                print(f"llava_scissor: {exc}", file=sys.stderr)

        atexit.register(write)
