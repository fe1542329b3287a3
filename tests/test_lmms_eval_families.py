"""The lmms-eval plugin on a family whose frames are separate segments (Qwen3-VL: per step a
timestamp, markers and the step's tokens, deepstack features beside them), through the real
lmms-eval command line and the library's prepare / apply path."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("av")
pytest.importorskip("lmms_eval")

sys.path.insert(0, str(Path(__file__).parent))
from hf_models import write_tiny_model
from test_lmms_eval import _entry_point_dist, _env, _write_video


def _task(folder: Path, video: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"id": i, "video": str(video), "question": "what happens in the video", "answer": "cat"} for i in range(2)]
    (folder / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (folder / "seg_utils.py").write_text(
        textwrap.dedent("""
        def doc_to_visual(doc):
            return [doc["video"]]

        def doc_to_text(doc, lmms_eval_specific_kwargs=None):
            return doc["question"]

        def process_results(doc, results):
            return {"exact": float(results[0].strip() == doc["answer"])}
        """)
    )
    (folder / "seg_video_qa.yaml").write_text(
        textwrap.dedent(f"""
        task: seg_video_qa
        dataset_path: json
        dataset_kwargs:
          data_files:
            test: {folder / "data.jsonl"}
        test_split: test
        output_type: generate_until
        doc_to_visual: !function seg_utils.doc_to_visual
        doc_to_text: !function seg_utils.doc_to_text
        doc_to_target: answer
        process_results: !function seg_utils.process_results
        generation_kwargs:
          max_new_tokens: 3
        metric_list:
          - metric: exact
            aggregation: mean
            higher_is_better: true
        """)
    )


def test_plugin_evaluates_a_segmented_family(tmp_path: Path) -> None:
    model = write_tiny_model("qwen3_vl", tmp_path / "model")
    video = tmp_path / "clip.mp4"
    _write_video(video)
    tasks = tmp_path / "tasks"
    _task(tasks, video)
    out_dir = tmp_path / "results"
    cmd = [
        sys.executable,
        "-m",
        "lmms_eval",
        "--model",
        "llava_scissor",
        "--model_args",
        f"pretrained={model},method=scissor,retention=0.5,max_frames_num=4,device=cpu,dtype=float32",
        "--tasks",
        "seg_video_qa",
        "--include_path",
        str(tasks),
        "--batch_size",
        "1",
        "--output_path",
        str(out_dir),
    ]
    env = _env(_entry_point_dist(tmp_path / "ep"), tmp_path)
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path, check=False)
    assert run.returncode == 0, (run.stdout[-3000:], run.stderr[-5000:])
    results = list(out_dir.rglob("*results*.json"))
    assert results, f"no results file under {out_dir}: {list(out_dir.rglob('*'))}"
    data = json.loads(results[0].read_text())
    assert "exact,none" in data["results"]["seg_video_qa"]
