"""The lmms-eval plugin, offline: a tiny local model, a tiny local video task, the real CLI.

Skipped when lmms-eval is not installed (it is an optional, heavy dependency).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import llava_scissor.integrations.lmms_eval as plugin

av = pytest.importorskip("av")
pytest.importorskip("lmms_eval")

sys.path.insert(0, str(Path(__file__).parent))
from hf_models import write_tiny_model  # noqa: E402


def _write_video(path: Path, frames: int = 6, size: int = 84) -> None:
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=4)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for _ in range(frames):
            array = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _write_task(folder: Path, video: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        {"id": i, "video": str(video), "question": "what happens in the video", "answer": "cat"}
        for i in range(2)
    ]
    (folder / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (folder / "tiny_utils.py").write_text(
        textwrap.dedent(
            """
            def doc_to_visual(doc):
                return [doc["video"]]

            def doc_to_text(doc, lmms_eval_specific_kwargs=None):
                return doc["question"]

            def process_results(doc, results):
                return {"exact": float(results[0].strip() == doc["answer"])}
            """
        )
    )
    (folder / "tiny_video_qa.yaml").write_text(
        textwrap.dedent(
            f"""
            task: tiny_video_qa
            dataset_path: json
            dataset_kwargs:
              data_files:
                test: {folder / 'data.jsonl'}
            test_split: test
            output_type: generate_until
            doc_to_visual: !function tiny_utils.doc_to_visual
            doc_to_text: !function tiny_utils.doc_to_text
            doc_to_target: answer
            process_results: !function tiny_utils.process_results
            generation_kwargs:
              max_new_tokens: 3
              until: ["<|im_end|>"]
            metric_list:
              - metric: exact
                aggregation: mean
                higher_is_better: true
            """
        )
    )


def _entry_point_dist(folder: Path) -> Path:
    """A minimal installed distribution that declares the plugin's entry point, as the
    package's own metadata does (``[project.entry-points."lmms_eval.models"]``)."""
    dist = folder / "llava_scissor_lmms_plugin-0.0.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: llava-scissor-lmms-plugin\nVersion: 0.0\n")
    (dist / "entry_points.txt").write_text(
        "[lmms_eval.models]\nllava_scissor = llava_scissor.integrations.lmms_eval:manifests\n"
    )
    return folder


def _env(extra_path: Path, home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(extra_path), env.get("PYTHONPATH", "")])
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(home / "hf"),
               HF_DATASETS_CACHE=str(home / "datasets"), WANDB_MODE="disabled", TOKENIZERS_PARALLELISM="false")
    return env


def test_registered_through_entry_point(tmp_path):
    env = _env(_entry_point_dist(tmp_path / "ep"), tmp_path)
    code = (
        "from lmms_eval.models import MODEL_REGISTRY_V2 as r;"
        "cls = r.get_model_class('llava_scissor');"
        "print(cls.__module__, cls.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[-2:] == ["llava_scissor.integrations.lmms_eval", "LlavaScissor"]


@pytest.mark.parametrize("method,args", [("scissor", "retention=0.5"), ("visionzip", "max_tokens=7")])
def test_cli_evaluates_tiny_model_offline(tmp_path, method, args):
    model = write_tiny_model("llava_onevision", tmp_path / "model")
    video = tmp_path / "clip.mp4"
    _write_video(video)
    tasks = tmp_path / "tasks"
    _write_task(tasks, video)
    out_dir = tmp_path / "results"
    env = _env(_entry_point_dist(tmp_path / "ep"), tmp_path)
    cmd = [
        sys.executable, "-m", "lmms_eval",
        "--model", "llava_scissor",
        "--model_args", f"pretrained={model},method={method},{args},max_frames_num=4,device=cpu,dtype=float32",
        "--tasks", "tiny_video_qa",
        "--include_path", str(tasks),
        "--batch_size", "1",
        "--output_path", str(out_dir),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, (run.stdout[-3000:], run.stderr[-5000:])
    results = list(out_dir.rglob("*results*.json"))
    assert results, f"no results file under {out_dir}: {list(out_dir.rglob('*'))}"
    data = json.loads(results[0].read_text())
    assert "tiny_video_qa" in data["results"]
    assert "exact,none" in data["results"]["tiny_video_qa"]
    assert f"method={method}" in json.dumps(data.get("config", {}))


def test_in_process_requests_and_compression_log(tmp_path):
    from lmms_eval.api.instance import Instance

    model_dir = write_tiny_model("llava_onevision", tmp_path / "model")
    video = tmp_path / "clip.mp4"
    _write_video(video)
    cls = plugin.build_model_class()
    lm = cls(pretrained=str(model_dir), method="uniform", retention=0.25, max_frames_num=4, device="cpu",
             dtype="float32")
    docs = {0: {"video": str(video)}}
    lm.task_dict = {"t": {"test": docs}}
    meta = {"task": "t", "doc_id": 0, "repeats": 1}
    gen = Instance(request_type="generate_until", doc={}, idx=0, metadata=meta,
                   arguments=("describe the video", {"max_new_tokens": 2}, lambda d: [d["video"]], 0, "t", "test"))
    ll = Instance(request_type="loglikelihood", doc={}, idx=0, metadata=meta,
                  arguments=("describe the video", "cat", lambda d: [d["video"]], 0, "t", "test"))
    (text,) = lm.generate_until([gen])
    ((logprob, greedy),) = lm.loglikelihood([ll])
    assert isinstance(text, str) and logprob < 0 and isinstance(greedy, bool)
    log = lm.compression_log
    assert len(log) == 2 and log[0]["method"] == "uniform"
    # 4 frames x 9 tokens + newline -> 9 kept + newline
    assert log[0]["tokens_before"] == 37 and log[0]["tokens_after"] == 10
    with pytest.raises(ValueError, match="unknown method"):
        cls(pretrained=str(model_dir), method="nope", device="cpu")
