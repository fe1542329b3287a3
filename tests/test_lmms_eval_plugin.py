"""The lmms-eval plugin package without lmms-eval: lean import, a clear error, the record rules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

import llava_scissor.integrations.lmms_eval as plugin
from llava_scissor.integrations.lmms_eval._records import (
    SampleRecord,
    find_results_file,
    group_batches,
    sidecar_path,
    summarize,
    write_json_atomic,
)


def test_plugin_module_imports_without_lmms_eval():
    code = (
        "import sys, llava_scissor.integrations.lmms_eval as p, llava_scissor.integrations.lmms_eval._records;"
        "assert 'lmms_eval' not in sys.modules; print(p.MODEL_NAME)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "llava_scissor"


def test_missing_lmms_eval_is_a_clear_error(monkeypatch):
    # A None entry in sys.modules makes `import lmms_eval` raise ImportError, as when it is not installed.
    for name in [m for m in sys.modules if m == "lmms_eval" or m.startswith("lmms_eval.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "lmms_eval", None)
    with pytest.raises(ValueError, match="pip install lmms-eval"):
        plugin.model_class()
    with pytest.raises(ValueError, match="pip install lmms-eval"):
        plugin.LlavaScissor  # noqa: B018


def test_group_batches_keeps_order_and_groups():
    keys = ["a", "b", "a", "a", "b", "c", "a"]
    assert group_batches(keys, 1) == [[0], [2], [3], [6], [1], [4], [5]]
    assert group_batches(keys, 2) == [[0, 2], [3, 6], [1, 4], [5]]
    assert group_batches(keys, 8) == [[0, 2, 3, 6], [1, 4], [5]]
    assert sorted(i for b in group_batches(keys, 3) for i in b) == list(range(len(keys)))  # each request once
    with pytest.raises(ValueError, match="batch_size"):
        group_batches(keys, 0)


def _record(task: str, doc: int, before: int, after: int, out: int | None = 3) -> SampleRecord:
    return SampleRecord(
        task=task,
        doc_id=doc,
        request=0,
        method="scissor",
        video_tokens_before=before,
        video_tokens_after=after,
        retention=after / before if before else None,
        compression_seconds=0.5,
        input_tokens=after + 10,
        output_tokens=out,
    )


def test_summarize_means_per_task():
    records = [
        _record("a", 0, 100, 10),
        _record("a", 1, 100, 30),
        _record("b", 0, 50, 25, out=None),
        _record("a", 2, 0, 0),
    ]  # a text-only request: no retention
    s = summarize(records)
    assert list(s) == ["a", "b"]
    assert s["a"]["docs"] == 3 and s["a"]["requests"] == 3
    assert s["a"]["mean_retention"] == pytest.approx(0.2)
    assert s["a"]["mean_video_tokens_after"] == pytest.approx(20)
    assert s["a"]["mean_input_tokens"] == pytest.approx((20 + 40 + 10) / 3)
    assert s["b"]["mean_output_tokens"] is None and s["b"]["mean_retention"] == pytest.approx(0.5)


def test_sidecar_written_atomically_next_to_results(tmp_path):
    start = time.time()
    old = tmp_path / "model" / "2026-01-01T00-00-00_results.json"
    old.parent.mkdir()
    old.write_text("{}")
    os.utime(old, (start - 100, start - 100))  # an earlier run's results
    assert find_results_file(tmp_path, start) is None
    new = tmp_path / "model" / "2026-12-01T09-00-00.123_results.json"
    new.write_text("{}")
    later = tmp_path / "model" / "2026-12-01T09-05-00.456_results.json"  # the next run's, into the same folder
    later.write_text("{}")
    os.utime(later, (start + 300, start + 300))
    assert find_results_file(tmp_path, start) == new
    assert find_results_file(tmp_path, start + 200) == later
    side = sidecar_path(new)
    assert side == new.with_name("2026-12-01T09-00-00.123_llava_scissor.json")
    write_json_atomic(side, {"x": 1})
    assert json.loads(side.read_text()) == {"x": 1}
    assert sorted(p.name for p in side.parent.iterdir()) == sorted(
        [old.name, new.name, later.name, side.name]
    )  # no temp left
    with pytest.raises(FileExistsError):
        write_json_atomic(side, {"x": 2})
    assert json.loads(side.read_text()) == {"x": 1}
