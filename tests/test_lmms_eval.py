"""The lmms-eval plugin, offline: a tiny local model, tiny local video tasks, the real CLI.

Skipped only when lmms-eval is not installed (CI installs it: see the README's test command).
What is shown here:

* the plugin is found through its entry point and scores a generation task from the CLI,
  with token counts in the logged samples, lmms-eval's ``efficiency`` block and the sidecar;
* ``accelerate launch`` with 2 CPU processes (gloo) gives, sample by sample, what one
  process gives;
* batched generation (batch size 4) gives the greedy outputs of batch size 1;
* a multiple-choice (loglikelihood) task through the CLI, which lmms-eval 0.7.3 cannot score
  for a model that returns bare ``(float, bool)`` pairs (its own ``dummy`` model shows it).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import llava_scissor.integrations.lmms_eval as plugin

av = pytest.importorskip("av")
pytest.importorskip("lmms_eval")

sys.path.insert(0, str(Path(__file__).parent))
from hf_models import write_tiny_model  # noqa: E402

#: documents of the generation task: odd, so 2 ranks get 4 and 3 and lmms-eval pads the second
DOCS = 7
QUESTIONS = [
    "what happens in the video",
    "describe the video",
    "what is shown",
    "is the cat left or right",
    "what color is the dog",
    "please answer briefly what runs",
]


def _write_video(path: Path, frames: int = 6, size: int = 84, seed: int = 0, still: int = 1) -> Path:
    """Random frames; the first ``still`` frames are one image (so videos differ in how
    much a threshold-mode compressor can merge)."""
    rng = np.random.default_rng(seed)
    first = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=4)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for f in range(frames):
            array = first if f < still else rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _write_videos(folder: Path, count: int) -> list[Path]:
    """``count`` different 6-frame clips, 1 to 4 of their first frames still."""
    folder.mkdir(parents=True, exist_ok=True)
    return [_write_video(folder / f"clip{i}.mp4", seed=i, still=1 + i % 4) for i in range(count)]


_UTILS = """
def doc_to_visual(doc):
    return [doc["video"]]

def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]

def process_results(doc, results):
    return {"exact": float(results[0].strip() == doc["answer"]), "length": float(len(results[0].split()))}
"""


def _write_task(folder: Path, videos: list[Path]) -> None:
    """``tiny_video_qa``: one document per video, a short greedy answer, two metrics."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        {"id": i, "video": str(v), "question": QUESTIONS[i % len(QUESTIONS)], "answer": "cat"}
        for i, v in enumerate(videos)
    ]
    (folder / "qa.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (folder / "tiny_utils.py").write_text(_UTILS)
    (folder / "tiny_video_qa.yaml").write_text(
        textwrap.dedent(f"""
        task: tiny_video_qa
        dataset_path: json
        dataset_kwargs:
          data_files:
            test: {folder / "qa.jsonl"}
        test_split: test
        output_type: generate_until
        doc_to_visual: !function tiny_utils.doc_to_visual
        doc_to_text: !function tiny_utils.doc_to_text
        doc_to_target: answer
        process_results: !function tiny_utils.process_results
        generation_kwargs:
          max_new_tokens: 4
          until: ["<|im_end|>"]
        metric_list:
          - metric: exact
            aggregation: mean
            higher_is_better: true
          - metric: length
            aggregation: mean
            higher_is_better: true
        """)
    )


def _write_mc_task(folder: Path, videos: list[Path]) -> None:
    """``tiny_video_mc``: lmms-eval's own multiple-choice scoring (loglikelihood per choice)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "id": i,
            "video": str(v),
            "question": "what runs in the video",
            "choices": ["cat", "dog", "red"],
            "label": i % 3,
        }
        for i, v in enumerate(videos)
    ]
    (folder / "mc.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (folder / "tiny_utils.py").write_text(_UTILS)
    (folder / "tiny_video_mc.yaml").write_text(
        textwrap.dedent(f"""
        task: tiny_video_mc
        dataset_path: json
        dataset_kwargs:
          data_files:
            test: {folder / "mc.jsonl"}
        test_split: test
        output_type: multiple_choice
        doc_to_visual: !function tiny_utils.doc_to_visual
        doc_to_text: !function tiny_utils.doc_to_text
        doc_to_choice: choices
        doc_to_target: label
        metric_list:
          - metric: acc
            aggregation: mean
            higher_is_better: true
        """)
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
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HOME=str(home / "hf"),
        HF_DATASETS_CACHE=str(home / "datasets"),
        WANDB_MODE="disabled",
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS="1",
    )
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


class Run:
    """What one lmms-eval CLI run wrote: results, logged samples per task, the sidecar."""

    def __init__(self, out_dir: Path) -> None:
        results = sorted(out_dir.rglob("*_results.json"))
        assert len(results) == 1, f"expected one results file under {out_dir}: {list(out_dir.rglob('*'))}"
        self.results_file = results[0]
        self.results: dict[str, Any] = json.loads(results[0].read_text())
        self.samples: dict[str, list[dict[str, Any]]] = {}
        for path in out_dir.rglob("*_samples_*.jsonl"):
            task = path.stem.split("_samples_", 1)[1]
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            self.samples[task] = sorted(rows, key=lambda r: r["doc_id"])
        sidecars = list(out_dir.rglob("*_llava_scissor.json"))
        self.sidecar: dict[str, Any] | None = json.loads(sidecars[0].read_text()) if sidecars else None
        self.sidecar_file = sidecars[0] if sidecars else None


def _lmms_eval(
    tmp: Path,
    name: str,
    model_args: str,
    tasks: str,
    include: Path,
    *,
    batch_size: str = "1",
    processes: int = 1,
    model: str = "llava_scissor",
    check: bool = True,
) -> Run | subprocess.CompletedProcess:
    out_dir = tmp / name
    env = _env(_entry_point_dist(tmp / "ep"), tmp)
    args = [
        "--model",
        model,
        "--model_args",
        model_args,
        "--tasks",
        tasks,
        "--include_path",
        str(include),
        "--batch_size",
        batch_size,
        "--log_samples",
        "--output_path",
        str(out_dir),
    ]
    if processes == 1:
        cmd = [sys.executable, "-m", "lmms_eval", *args]
    else:
        cmd = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--multi_gpu",
            "--num_processes",
            str(processes),
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            str(29500 + os.getpid() % 1000),
            "-m",
            "lmms_eval",
            *args,
        ]
    run = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=420, cwd=tmp)
    if not check:
        return run
    assert run.returncode == 0, (run.stdout[-3000:], run.stderr[-6000:])
    assert out_dir.exists(), ("lmms-eval wrote nothing", run.stderr[-6000:])
    return Run(out_dir)


def _model_args(model: Path, method: str, extra: str = "") -> str:
    args = f"pretrained={model},method={method},max_frames_num=6,device=cpu,dtype=float32"
    return f"{args},{extra}" if extra else args


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("lmms")
    videos = _write_videos(tmp / "videos", DOCS)
    _write_task(tmp / "tasks", videos)
    _write_mc_task(tmp / "mc_tasks", videos[:3])
    # seed 2: a tiny model whose greedy answers differ between prompts (seed 0 stops at once)
    return {
        "tmp": tmp,
        "model": write_tiny_model("llava_onevision", tmp / "model", seed=2),
        "tasks": tmp / "tasks",
        "mc_tasks": tmp / "mc_tasks",
    }


@pytest.fixture(scope="module")
def single(setup) -> Run:
    """One process, batch size 2: the reference for the 2-process run."""
    run = _lmms_eval(
        setup["tmp"],
        "single",
        _model_args(setup["model"], "scissor", "retention=0.5"),
        "tiny_video_qa",
        setup["tasks"],
        batch_size="2",
    )
    assert isinstance(run, Run)
    return run


def test_registered_through_entry_point(tmp_path):
    env = _env(_entry_point_dist(tmp_path / "ep"), tmp_path)
    code = (
        "from lmms_eval.models import MODEL_REGISTRY_V2 as r;"
        "cls = r.get_model_class('llava_scissor');"
        "print(cls.__module__, cls.__name__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[-2:] == ["llava_scissor.integrations.lmms_eval._model", "LlavaScissor"]


def test_cli_scores_with_token_counts(single):
    """Scores, per-sample token counts, lmms-eval's efficiency block and the sidecar."""
    res = single.results
    assert set(res["results"]["tiny_video_qa"]) >= {"exact,none", "length,none"}
    assert "method=scissor" in json.dumps(res["config"])
    samples = single.samples["tiny_video_qa"]
    assert [s["doc_id"] for s in samples] == list(range(DOCS))
    for s in samples:
        (counts,) = s["token_counts"]
        assert counts["video_tokens_before"] == 6 * 9 + 1  # 6 frames x 9 tokens + the newline
        assert counts["video_tokens_after"] == 27 + 1  # K = round-half-up(0.5 x 54) + the newline
        assert counts["retention"] == pytest.approx(counts["video_tokens_after"] / counts["video_tokens_before"])
        assert counts["method"] == "scissor" and counts["compression_seconds"] >= 0
        assert 1 <= counts["output_tokens"] <= 4
        assert counts["input_tokens"] > counts["video_tokens_after"]
    eff = res["efficiency"]["by_task"]["tiny_video_qa"]
    assert eff["docs_with_token_counts"] == DOCS
    assert eff["total_input_tokens"] == sum(s["token_counts"][0]["input_tokens"] for s in samples)
    assert eff["total_output_tokens"] == sum(s["token_counts"][0]["output_tokens"] for s in samples)

    side = single.sidecar
    assert side is not None, "no sidecar next to the results file"
    assert single.sidecar_file.parent == single.results_file.parent
    assert side["results_file"] == single.results_file.name
    assert side["method"] == "scissor" and side["compression"] == {"retention": 0.5} and side["batch_size"] == 2
    rows = side["samples"]
    assert [(r["task"], r["doc_id"]) for r in rows] == [("tiny_video_qa", i) for i in range(DOCS)]
    for row, s in zip(rows, samples):
        for key, value in s["token_counts"][0].items():
            assert row[key] == pytest.approx(value)
    summary = side["tasks"]["tiny_video_qa"]
    assert summary["docs"] == DOCS
    assert summary["mean_retention"] == pytest.approx(np.mean([r["retention"] for r in rows]))
    assert summary["mean_video_tokens_after"] == pytest.approx(np.mean([r["video_tokens_after"] for r in rows]))


def test_data_parallel_two_processes_match_one(setup, single):
    """accelerate launch, 2 CPU processes (gloo): lmms-eval shards the documents (4 and 3,
    plus one padding request on rank 1), gathers on rank 0; every sample's answer, score and
    token counts equal the 1-process run's."""
    dp = _lmms_eval(
        setup["tmp"],
        "dp2",
        _model_args(setup["model"], "scissor", "retention=0.5"),
        "tiny_video_qa",
        setup["tasks"],
        batch_size="2",
        processes=2,
    )
    assert isinstance(dp, Run)
    one, two = single.samples["tiny_video_qa"], dp.samples["tiny_video_qa"]
    assert [s["doc_id"] for s in two] == [s["doc_id"] for s in one] == list(range(DOCS))
    for a, b in zip(one, two):
        assert (a["filtered_resps"], a["exact"], a["length"]) == (b["filtered_resps"], b["exact"], b["length"])
        strip = [{k: v for k, v in c.items() if k != "compression_seconds"} for c in a["token_counts"]]
        assert strip == [{k: v for k, v in c.items() if k != "compression_seconds"} for c in b["token_counts"]]
    for metric in ("exact,none", "length,none"):
        assert dp.results["results"]["tiny_video_qa"][metric] == single.results["results"]["tiny_video_qa"][metric]
    assert dp.results["efficiency"]["overall"]["docs_with_token_counts"] == DOCS
    assert dp.sidecar is not None and dp.sidecar["world_size"] == 2
    assert [r["doc_id"] for r in dp.sidecar["samples"]] == list(range(DOCS))  # both ranks' records, on rank 0


def test_multiple_choice_through_cli(setup):
    """A multiple-choice task (one loglikelihood request per choice) scored by lmms-eval
    itself, uncompressed and compressed."""
    for method, extra in (("none", ""), ("scissor", "retention=0.25")):
        run = _lmms_eval(
            setup["tmp"], f"mc_{method}", _model_args(setup["model"], method, extra), "tiny_video_mc", setup["mc_tasks"]
        )
        assert isinstance(run, Run)
        assert 0.0 <= run.results["results"]["tiny_video_mc"]["acc,none"] <= 1.0
        samples = run.samples["tiny_video_mc"]
        assert len(samples) == 3
        for s in samples:
            assert len(s["token_counts"]) == 3  # one request per choice
            nll = [float(pair[0]) for pair in s["filtered_resps"]]  # lmms-eval writes them as strings
            assert all(v > 0 for v in nll)  # mean negative log-likelihood
            assert s["acc"] == float(int(np.argmin(nll)) == s["doc_id"] % 3)  # lowest nll = the answer
            counts = s["token_counts"][0]
            ratio = 1.0 if method == "none" else 0.25
            assert counts["video_tokens_after"] == math.floor(ratio * (counts["video_tokens_before"] - 1) + 0.5) + 1
        assert run.results["efficiency"]["by_task"]["tiny_video_mc"]["docs_with_token_counts"] == 3


def test_lmms_eval_cannot_score_bare_loglikelihood_pairs(setup):
    """Why the plugin wraps its (nll, greedy) pairs: lmms-eval 0.7.3 turns a bare pair into
    its string before scoring, so its own ``dummy`` model fails on the same task."""
    from lmms_eval.api.instance import GenerationResult, unwrap_generation_output

    assert unwrap_generation_output(GenerationResult(text=(1.5, True)))[0] == (1.5, True)  # type: ignore[arg-type]
    if unwrap_generation_output((1.5, True))[0] == (1.5, True):
        pytest.skip("this lmms-eval passes bare loglikelihood pairs through")
    run = _lmms_eval(setup["tmp"], "mc_dummy", "", "tiny_video_mc", setup["mc_tasks"], model="dummy", check=False)
    assert isinstance(run, subprocess.CompletedProcess)
    written = list((setup["tmp"] / "mc_dummy").rglob("*_results.json"))
    assert not written
    assert "values to unpack" in run.stderr + run.stdout, run.stderr[-3000:]  # zip(*results) over strings


def _instances(videos: list[Path], gen: dict[str, Any]) -> tuple[dict[int, dict[str, Any]], list[Any]]:
    from lmms_eval.api.instance import Instance

    docs = {i: {"video": str(v)} for i, v in enumerate(videos)}
    reqs = [
        Instance(
            request_type="generate_until",
            doc={},
            idx=0,
            metadata={"task": "t", "doc_id": i, "repeats": 1},
            arguments=(QUESTIONS[i % len(QUESTIONS)], dict(gen), lambda d: [d["video"]], i, "t", "test"),
        )
        for i in docs
    ]
    return docs, reqs


@pytest.mark.parametrize(
    "model_type,method,extra",
    [
        ("llava_onevision", "scissor", {"tau": 0.95}),
        ("llava_onevision", "none", {}),
        ("qwen2_5_vl", "scissor", {"retention": 0.5}),
    ],
)
def test_batch_of_4_equals_batch_of_1(setup, model_type, method, extra):
    """Greedy answers and token counts at batch size 4 are those of batch size 1: prompts
    of different lengths, (threshold mode) videos compressed to different lengths in one
    left-padded batch, and (Qwen2.5-VL) 3-D positions gathered per row."""
    videos = sorted((setup["tmp"] / "videos").glob("clip*.mp4"))
    folder = setup["model"] if model_type == "llava_onevision" else setup["tmp"] / model_type
    if not folder.exists():
        write_tiny_model(model_type, folder, seed=2)
    outputs = {}
    for bs in (1, 4):
        lm = plugin.model_class()(
            pretrained=str(folder),
            method=method,
            max_frames_num=6,
            device="cpu",
            dtype="float32",
            batch_size=bs,
            **extra,
        )
        docs, reqs = _instances(videos, {"max_new_tokens": 6, "until": ["<|im_end|>"]})
        lm.task_dict = {"t": {"test": docs}}
        outputs[bs] = [
            (r.text, {k: v for k, v in r.token_counts.to_dict().items() if k != "compression_seconds"})
            for r in lm.generate_until(reqs)
        ]
    assert outputs[4] == outputs[1]
    assert len({text for text, _ in outputs[1]}) > 1  # the answers differ, so the check has teeth
    if "tau" in extra:
        assert len({counts["video_tokens_after"] for _, counts in outputs[1]}) > 1


def test_in_process_requests_and_records(setup):
    from lmms_eval.api.instance import GenerationResult, Instance

    video = sorted((setup["tmp"] / "videos").glob("clip*.mp4"))[1]  # 4 of its 6 frames are read
    cls = plugin.model_class()
    lm = cls(
        pretrained=str(setup["model"]),
        method="uniform",
        retention=0.25,
        max_frames_num=4,
        device="cpu",
        dtype="float32",
        batch_size="auto",
    )
    assert lm.batch_size_per_gpu == plugin.AUTO_BATCH_SIZE
    lm.task_dict = {"t": {"test": {0: {"video": str(video)}}}}
    meta = {"task": "t", "doc_id": 0, "repeats": 1}
    gen = Instance(
        request_type="generate_until",
        doc={},
        idx=0,
        metadata=meta,
        arguments=("describe the video", {"max_new_tokens": 2}, lambda d: [d["video"]], 0, "t", "test"),
    )
    ll = Instance(
        request_type="loglikelihood",
        doc={},
        idx=1,
        metadata=meta,
        arguments=("describe the video", " cat", lambda d: [d["video"]], 0, "t", "test"),
    )
    pad = Instance(
        request_type="generate_until",
        doc={},
        idx=0,
        metadata={**meta, "__padding_only__": True},
        arguments=gen.arguments,
    )
    (text, padded) = lm.generate_until([gen, pad])
    (scored,) = lm.loglikelihood([ll])
    assert isinstance(text, GenerationResult) and isinstance(text.text, str)
    assert padded.text == "" and padded.token_counts is None  # lmms-eval's rank padding is not run
    assert isinstance(scored, GenerationResult)
    nll, greedy = scored.text
    assert nll > 0 and isinstance(greedy, bool)
    log = lm.compression_log
    assert [r["request"] for r in log] == [0, 1] and {r["method"] for r in log} == {"uniform"}
    # 4 frames x 9 tokens + newline -> 9 kept + newline
    assert (log[0]["video_tokens_before"], log[0]["video_tokens_after"]) == (37, 10)
    assert log[1]["output_tokens"] is None and log[1]["input_tokens"] == scored.token_counts.input_tokens
    # bad settings fail before the model loads (the folder here does not exist)
    with pytest.raises(ValueError, match="unknown method"):
        cls(pretrained="/nonexistent", method="nope", device="cpu")
    with pytest.raises(ValueError, match="takes no compression options"):
        cls(pretrained="/nonexistent", method="none", retention=0.1)
    with pytest.raises(ValueError, match="retension"):
        cls(pretrained="/nonexistent", method="visionzip", retension=0.1)
    with pytest.raises(ValueError, match="batch_size"):
        cls(pretrained=str(setup["model"]), device="cpu", batch_size="big")


def test_each_rank_takes_its_own_device(monkeypatch):
    from llava_scissor.integrations.lmms_eval import _model

    monkeypatch.setattr(_model.torch.cuda, "is_available", lambda: True)
    assert [_model._rank_device("auto", r, 4) for r in range(4)] == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    assert _model._rank_device("cuda", 1, 2) == "cuda:1"
    assert _model._rank_device("auto", 0, 1) == "cuda"
    assert _model._rank_device("cpu", 1, 2) == "cpu"
    monkeypatch.setattr(_model.torch.cuda, "is_available", lambda: False)
    assert _model._rank_device("auto", 1, 2) == "cpu"
    assert _model._batch_size("auto", None) == plugin.AUTO_BATCH_SIZE
    assert _model._batch_size("auto:4", 3) == 3 and _model._batch_size("4", None) == 4
    with pytest.raises(ValueError, match="batch_size"):
        _model._batch_size(0, None)


def test_in_model_method_runs_one_request_at_a_time(setup):
    """FastV prunes inside the language model, one sequence per call: batch size 4 falls
    back to 1 (the evaluation runs instead of failing at the first batch)."""
    video = setup["tmp"] / "videos" / "clip0.mp4"
    lm = plugin.model_class()(
        pretrained=str(setup["model"]),
        method="fastv",
        retention=0.5,
        layer=1,
        max_frames_num=4,
        device="cpu",
        dtype="float32",
        batch_size=4,
    )
    assert lm.batch_size_per_gpu == 1 and lm.batch_sizes == {"generate_until": 1}
    docs, reqs = _instances([video, video], {"max_new_tokens": 2})
    lm.task_dict = {"t": {"test": docs}}
    assert len(lm.generate_until(reqs)) == 2
