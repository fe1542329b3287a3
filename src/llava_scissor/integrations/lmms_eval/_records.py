"""What the plugin records per sample, the per-task summary, and the sidecar file.

Nothing here imports lmms-eval, so the rules are testable without it.

lmms-eval 0.7 keeps, per logged sample, the ``token_counts`` a model returns with each
response, and sums their ``input_tokens`` / ``output_tokens`` into the results file's
``efficiency`` block. Everything else a compressed run should report (video tokens before
and after, retention, compression time, per-task means) has no place there; it goes into
a sidecar JSON written next to lmms-eval's ``<date>_results.json``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "SIDECAR_SUFFIX",
    "SampleRecord",
    "find_results_file",
    "group_batches",
    "sidecar_path",
    "summarize",
    "write_json_atomic",
]

#: the sidecar of ``<date>_results.json`` is ``<date>_llava_scissor.json`` in the same folder
SIDECAR_SUFFIX = "_llava_scissor.json"
_RESULTS_SUFFIX = "_results.json"


@dataclass(frozen=True)
class SampleRecord:
    """One request's compression, as the plugin saw it.

    Attributes:
        task, doc_id: the lmms-eval task and document the request belongs to.
        request: the request's index among the document's requests (a multiple-choice
            document has one loglikelihood request per choice).
        method: the compression method (``none`` for the uncompressed baseline).
        video_tokens_before / video_tokens_after: video placeholder tokens of the request's
            videos before / after compression (0 / 0 without video).
        retention: video_tokens_after / video_tokens_before (None without video).
        compression_seconds: wall time of the compression itself (synchronised on CUDA).
        input_tokens: tokens the language model read for the prompt (after compression).
        output_tokens: tokens generated (None for loglikelihood requests).
    """

    task: str
    doc_id: int
    request: int
    method: str
    video_tokens_before: int
    video_tokens_after: int
    retention: float | None
    compression_seconds: float
    input_tokens: int
    output_tokens: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarize(records: Iterable[SampleRecord]) -> dict[str, dict[str, Any]]:
    """Per task: documents, requests, and the means over requests of every count."""
    by_task: dict[str, list[SampleRecord]] = {}
    for record in records:
        by_task.setdefault(record.task, []).append(record)
    out: dict[str, dict[str, Any]] = {}
    for task in sorted(by_task):
        rows = by_task[task]
        with_video = [r for r in rows if r.retention is not None]
        outputs = [r.output_tokens for r in rows if r.output_tokens is not None]
        out[task] = {
            "docs": len({r.doc_id for r in rows}),
            "requests": len(rows),
            "method": sorted({r.method for r in rows}),
            "mean_video_tokens_before": _mean([r.video_tokens_before for r in with_video]),
            "mean_video_tokens_after": _mean([r.video_tokens_after for r in with_video]),
            "mean_retention": _mean([r.retention for r in with_video if r.retention is not None]),
            "mean_compression_seconds": _mean([r.compression_seconds for r in with_video]),
            "mean_input_tokens": _mean([r.input_tokens for r in rows]),
            "mean_output_tokens": _mean(outputs),
        }
    return out


def group_batches(keys: Sequence[Hashable], batch_size: int) -> list[list[int]]:
    """Indices of ``keys`` in batches of at most ``batch_size`` equal keys.

    Groups appear in the order of their first member and keep the request order inside,
    so batch size 1 runs the requests exactly in the order given.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    groups: dict[Hashable, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return [members[s : s + batch_size] for members in groups.values() for s in range(0, len(members), batch_size)]


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write ``payload`` as JSON to ``path`` through a temporary file in the same folder,
    so a reader never sees a partial file. An existing ``path`` is never replaced."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists; not overwriting it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=2, ensure_ascii=False)
            fh.write("\n")
        try:
            # link(2) fails when the name exists, unlike rename: no race with another writer.
            os.link(tmp, path)
        except FileExistsError:
            raise FileExistsError(f"{path} exists; not overwriting it") from None
        except OSError:  # a file system without hard links
            if path.exists():
                raise FileExistsError(f"{path} exists; not overwriting it") from None
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def find_results_file(root: Path, since: float) -> Path | None:
    """The first ``*_results.json`` under ``root`` written at or after ``since`` (a
    ``time.time()`` value), or None: the file lmms-eval wrote for the run that ended at
    ``since`` (a later run into the same folder writes a later file)."""
    root = Path(root)
    if not root.exists():
        return None
    candidates = [p for p in root.rglob(f"*{_RESULTS_SUFFIX}") if p.is_file() and p.stat().st_mtime >= since]
    return min(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


def sidecar_path(results_file: Path) -> Path:
    """``<dir>/<date>_results.json`` -> ``<dir>/<date>_llava_scissor.json``."""
    name = results_file.name
    stem = name[: -len(_RESULTS_SUFFIX)] if name.endswith(_RESULTS_SUFFIX) else results_file.stem
    return results_file.with_name(stem + SIDECAR_SUFFIX)
