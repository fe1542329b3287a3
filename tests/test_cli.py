"""The command line end to end: a generated video, tiny local model folders, no download."""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("av")
pytest.importorskip("transformers")
pytest.importorskip("safetensors")

from hf_models import MODEL_TYPES, write_tiny_model  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from test_video import write_video  # noqa: E402

from llava_scissor.cli import main  # noqa: E402
from llava_scissor.cli._progress import Progress  # noqa: E402

FRAMES = 6
OV_TOKENS = 9  # tiny LLaVA-OneVision: 3 x 3 tokens per frame
ASK_KEYS = {
    "model",
    "model_type",
    "device",
    "video",
    "question",
    "answer",
    "frames",
    "frame_indices",
    "tokens_per_frame",
    "tokens_before",
    "tokens_after",
    "spatial_tokens",
    "retention",
    "config",
    "generated_tokens",
    "timings",
    "compare",
    "method",
    "options",
}
STAGES = ("decode", "vision", "compression", "prefill", "generation")


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> str:
    return write_video(str(tmp_path_factory.mktemp("video") / "scene.mp4"), 24, size=(96, 72), pattern="scene")


@pytest.fixture(scope="module")
def ov_model(tmp_path_factory) -> str:
    return str(write_tiny_model("llava_onevision", tmp_path_factory.mktemp("ov") / "tiny-ov"))


@pytest.fixture(scope="module")
def qwen_model(tmp_path_factory) -> str:
    return str(write_tiny_model("qwen2_vl", tmp_path_factory.mktemp("qwen") / "tiny-qwen"))


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def features_file(
    tmp_path, frames: int = 4, tokens: int = 16, dim: int = 24, suffix: str = ".safetensors", key: str = "features"
) -> str:
    torch.manual_seed(0)
    feats = torch.randn(frames, tokens, dim)
    feats[:, : tokens // 2] += 3 * torch.randn(dim)  # one large similar region per frame
    path = str(tmp_path / f"feats{suffix}")
    if suffix == ".safetensors":
        save_file({key: feats}, path)
    elif suffix == ".pt":
        torch.save(feats, path)
    else:
        np.save(path, feats.numpy())
    return path


# --------------------------------------------------------------------------- ask


def test_ask_prints_answer_and_table(capsys, video, ov_model):
    code, out, err = run(
        capsys,
        "ask",
        video,
        "describe the video",
        "--model",
        ov_model,
        "--frames",
        str(FRAMES),
        "--max-new-tokens",
        "5",
    )
    assert code == 0, err
    assert err == ""  # no progress output when stdout is not a terminal
    lines = out.splitlines()
    assert lines[0].strip()  # the answer comes first
    rows = [line.strip() for line in lines if line.startswith("  ") and "video tokens" not in line]
    table = dict(row.replace("vision tower", "vision").split(None, 1) for row in rows)
    assert table["frames"] == str(FRAMES)
    tokens_line = next(line for line in lines if "video tokens" in line)
    before, after = tokens_line.split("video tokens")[1].split("->")
    assert int(before) == FRAMES * OV_TOKENS and 1 <= int(after) <= FRAMES * OV_TOKENS
    assert table["retention"].endswith("%")
    for stage in STAGES:
        assert stage in table and table[stage].endswith(("ms", " s")), stage
    assert table["generated"] == "5 tokens"


def test_ask_json_schema(capsys, video, ov_model):
    code, out, err = run(
        capsys,
        "ask",
        video,
        "what happens",
        "--model",
        ov_model,
        "--frames",
        str(FRAMES),
        "--retention",
        "0.25",
        "--max-new-tokens",
        "3",
        "--json",
    )
    assert code == 0, err
    report = json.loads(out)
    assert set(report) == ASK_KEYS
    assert report["frames"] == FRAMES and len(report["frame_indices"]) == FRAMES
    assert report["frame_indices"] == [0, 4, 9, 13, 18, 23]
    assert report["tokens_per_frame"] == OV_TOKENS
    assert report["tokens_before"] == FRAMES * OV_TOKENS
    assert report["tokens_after"] == round(0.25 * FRAMES * OV_TOKENS)  # budget mode is exact
    assert report["retention"] == pytest.approx(report["tokens_after"] / report["tokens_before"])
    assert report["config"]["retention"] == 0.25
    assert report["generated_tokens"] == 3 and isinstance(report["answer"], str)
    assert set(STAGES) <= set(report["timings"]) and all(v >= 0 for v in report["timings"].values())
    assert report["compare"] is None


def test_ask_compare(capsys, video, ov_model):
    code, out, err = run(
        capsys,
        "ask",
        video,
        "describe the video",
        "--model",
        ov_model,
        "--frames",
        str(FRAMES),
        "--tau",
        "0.5",
        "--compare",
        "--json",
        "--max-new-tokens",
        "4",
    )
    assert code == 0, err
    report = json.loads(out)
    compare = report["compare"]
    assert compare["tokens"] == FRAMES * OV_TOKENS  # every token
    assert report["tokens_after"] < compare["tokens"]
    assert compare["generated_tokens"] == 4 and isinstance(compare["answer"], str)
    assert compare["timings"]["compression"] is None and compare["timings"]["prefill"] >= 0
    code, out, err = run(
        capsys,
        "ask",
        video,
        "describe the video",
        "--model",
        ov_model,
        "--frames",
        str(FRAMES),
        "--tau",
        "0.5",
        "--compare",
        "--max-new-tokens",
        "4",
    )
    assert code == 0 and "uncompressed (54 video tokens):" in out and "(uncompressed" in out


def test_ask_qwen(capsys, video, qwen_model):
    code, out, err = run(
        capsys,
        "ask",
        video,
        "what happens",
        "--model",
        qwen_model,
        "--frames",
        "4",
        "--max-tokens",
        "3",
        "--json",
        "--max-new-tokens",
        "3",
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["model_type"] == "qwen2_vl"
    assert report["tokens_after"] == 3
    assert report["tokens_before"] == 2 * report["tokens_per_frame"]  # 4 frames = 2 temporal steps


@pytest.mark.parametrize("model_type", list(MODEL_TYPES))
def test_every_family_from_a_saved_folder(capsys, tmp_path, video, model_type):
    """Each family saved as a folder (no video_preprocessor_config.json, as the tiny writer
    saves it) loads and runs ask / compress / visualize from the command line."""
    folder = str(write_tiny_model(model_type, tmp_path / model_type))
    code, out, err = run(
        capsys,
        "ask",
        video,
        "what happens",
        "--model",
        folder,
        "--frames",
        "4",
        "--retention",
        "0.5",
        "--max-new-tokens",
        "2",
        "--json",
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["model_type"] == model_type and report["generated_tokens"] == 2
    assert report["tokens_after"] < report["tokens_before"]
    tokens = str(tmp_path / "tokens.safetensors")
    code, out, err = run(
        capsys, "compress", video, "--model", folder, "--frames", "4", "--retention", "0.5", "-o", tokens
    )
    assert code == 0, err
    assert load_file(tokens)["tokens"].shape[0] == report["tokens_after"]
    picture = str(tmp_path / "tokens.png")
    code, out, err = run(capsys, "visualize", video, "--model", folder, "--frames", "4", "-o", picture)
    assert code == 0, err
    assert os.path.getsize(picture) > 1000


# --------------------------------------------------------------------------- compress


def test_compress_video_through_the_model(capsys, tmp_path, video, ov_model):
    out_path = str(tmp_path / "tokens.safetensors")
    code, out, err = run(
        capsys, "compress", video, "--model", ov_model, "--frames", str(FRAMES), "--tau", "0.6", "-o", out_path
    )
    assert code == 0, err
    assert out.startswith(f"wrote {out_path}")
    tensors = load_file(out_path)
    k = tensors["tokens"].shape[0]
    assert tensors["tokens"].shape == (k, 32)  # the tiny LLM's hidden size
    assert tensors["assignment"].shape == (FRAMES * OV_TOKENS,)
    assert sorted(tensors["assignment"].unique().tolist()) == list(range(k))
    assert tensors["sizes"].sum() == FRAMES * OV_TOKENS
    assert tensors["spatial_labels"].shape == (FRAMES * OV_TOKENS,)
    s = tensors["spatial_tokens"].shape[0]
    assert tensors["temporal_labels"].shape == (s,) and tensors["representatives"].shape == (k,)
    with safe_open(out_path, "pt") as fh:
        meta = {key: json.loads(value) for key, value in fh.metadata().items() if key != "format"}
    assert meta["frames"] == FRAMES and meta["tokens_per_frame"] == OV_TOKENS
    assert meta["tokens_after"] == k and meta["retention"] == pytest.approx(k / (FRAMES * OV_TOKENS))
    assert meta["config"]["tau"] == 0.6
    assert meta["source"]["model_type"] == "llava_onevision" and len(meta["source"]["frame_indices"]) == FRAMES
    assert {"decode", "vision", "compression"} <= set(meta["timings"])
    assert f"{FRAMES * OV_TOKENS} -> {k}" in out


@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ".npy"])
def test_compress_features_without_a_model(capsys, tmp_path, suffix):
    feats = features_file(tmp_path, suffix=suffix)
    out_path = str(tmp_path / "out.safetensors")
    code, out, err = run(capsys, "compress", "--features", feats, "--retention", "0.25", "-o", out_path, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["frames"] == 4 and report["tokens_per_frame"] == 16 and report["dim"] == 24
    assert report["tokens_after"] == 16 and report["retention"] == 0.25
    assert report["tensors"]["tokens"] == [16, 24] and report["tensors"]["assignment"] == [64]
    tensors = load_file(out_path)
    assert tensors["tokens"].shape == (16, 24) and tensors["tokens"].dtype == torch.float32
    assert tensors["sizes"].sum() == 64


def test_compress_features_single_tensor_of_any_name(capsys, tmp_path):
    feats = features_file(tmp_path, key="video_tokens")
    code, out, err = run(capsys, "compress", "--features", feats, "-o", str(tmp_path / "o.safetensors"))
    assert code == 0, err
    assert "video tokens        64 -> " in out


# --------------------------------------------------------------------------- visualize


@pytest.mark.parametrize("suffix", [".png", ".gif", ".html"])
def test_visualize_from_features(capsys, tmp_path, video, suffix):
    from PIL import Image

    feats = features_file(tmp_path, frames=4, tokens=16)
    out_path = str(tmp_path / f"picture{suffix}")
    code, out, err = run(capsys, "visualize", video, "--features", feats, "--tau", "0.5", "-o", out_path, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["frames"] == 4 and report["output"] == out_path
    assert os.path.getsize(out_path) > 1000
    if suffix == ".html":
        assert open(out_path, encoding="utf-8").read().startswith("<!DOCTYPE html>")
    else:
        with Image.open(out_path) as img:
            assert img.size[0] >= 400
            assert getattr(img, "n_frames", 1) == (4 if suffix == ".gif" else 1)


def test_visualize_non_square_grid(capsys, tmp_path, video):
    feats = features_file(tmp_path, frames=3, tokens=12)
    out_path = str(tmp_path / "p.png")
    code, _, err = run(capsys, "visualize", video, "--features", feats, "-o", out_path)
    assert code == 2 and "not a square grid" in err
    code, out, err = run(capsys, "visualize", video, "--features", feats, "--grid", "3x4", "-o", out_path)
    assert code == 0, err
    assert os.path.exists(out_path) and "video tokens        36 -> " in out


def test_visualize_through_the_model(capsys, tmp_path, video, ov_model):
    from PIL import Image

    out_path = str(tmp_path / "model.png")
    code, out, err = run(capsys, "visualize", video, "--model", ov_model, "--frames", "4", "-o", out_path)
    assert code == 0, err
    with Image.open(out_path) as img:
        assert img.format == "PNG"
    assert "tokens per frame    9" in out


# --------------------------------------------------------------------------- info


def test_info(capsys):
    code, out, err = run(capsys, "info")
    assert code == 0, err
    assert "torch" in out and "llava_onevision" in out and "video decoding" in out and "torchvision" in out
    code, out, _ = run(capsys, "info", "--json")
    report = json.loads(out)
    assert {"llava_scissor", "versions", "device", "model_types", "optional", "default_model"} <= set(report)
    assert "qwen2_5_vl" in report["model_types"]
    assert report["device"]["default"] in ("cpu", "cuda", "mps")
    # Which products similarity_dtype="bfloat16" takes on this machine, and why.
    assert report["device"]["bfloat16_products"].split()[0] in ("bfloat16", "float32")
    assert "bfloat16_products" in out and "bfloat16_products" in run(capsys, "info")[1]


# --------------------------------------------------------------------------- errors


@pytest.fixture(scope="module")
def broken(tmp_path_factory, video) -> dict[str, str]:
    import av

    root = tmp_path_factory.mktemp("broken")
    corrupt = root / "corrupt.mp4"
    corrupt.write_bytes(random.Random(0).randbytes(2048))  # seeded: the same bytes every run
    zero = str(root / "zero.mp4")
    with av.open(zero, "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        container.start_encoding()
    bert = root / "bert"
    bert.mkdir()
    (bert / "config.json").write_text('{"model_type": "bert"}')
    flat = root / "flat.safetensors"
    save_file({"features": torch.randn(4, 16)}, str(flat))
    return {"corrupt": str(corrupt), "zero": zero, "bert": str(bert), "flat": str(flat), "root": str(root)}


BAD = {
    "missing video": (["ask", "{root}/nope.mp4", "q", "--model", "{ov}"], "video file not found"),
    "directory as video": (["ask", "{root}", "q", "--model", "{ov}"], "directory"),
    "corrupt video": (["compress", "{corrupt}", "--model", "{ov}", "-o", "{root}/o.safetensors"], "cannot read video"),
    "zero-frame video": (["visualize", "{zero}", "--model", "{ov}", "-o", "{root}/o.png"], "zero frames"),
    "retention out of range": (["ask", "{video}", "q", "--retention", "0"], "retention must be in (0, 1]"),
    "tau out of range": (["ask", "{video}", "q", "--tau", "1.5"], "tau must be in [-1, 1]"),
    "tau not a number": (["ask", "{video}", "q", "--tau", "high"], "tau must be a number"),
    "frames zero": (["ask", "{video}", "q", "--frames", "0"], "frames must be >= 1"),
    "retention and tau": (["ask", "{video}", "q", "--tau", "0.9", "--retention", "0.1"], "not allowed with"),
    "bad grid": (["visualize", "{video}", "--features", "{flat}", "--grid", "3by4", "-o", "{root}/o.png"], "HxW"),
    "unknown option": (["ask", "{video}", "q", "--budget", "3"], "unrecognized arguments"),
    "unknown model type": (["ask", "{video}", "q", "--model", "{bert}"], "model type 'bert'"),
    "model folder missing": (["ask", "{video}", "q", "--model", "{root}/no-model"], "model folder not found"),
    "model not available offline": (
        ["ask", "{video}", "q", "--model", "llava-hf/no-such-model-here"],
        "--model FOLDER",
    ),
    "features wrong shape": (
        ["compress", "--features", "{flat}", "-o", "{root}/o.safetensors"],
        "[frames, tokens, dim]",
    ),
    "features missing": (["compress", "--features", "{root}/none.npy", "-o", "{root}/o.safetensors"], "not found"),
    "video and features": (
        ["compress", "{video}", "--features", "{flat}", "-o", "{root}/o.safetensors"],
        "exactly one",
    ),
    "bad output suffix": (["compress", "--features", "{flat}", "-o", "{root}/o.bin"], ".safetensors"),
    "bad picture suffix": (["visualize", "{video}", "--features", "{flat}", "-o", "{root}/o.jpg"], ".png"),
    "no command": ([], "required"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line(capsys, monkeypatch, case, broken, video, ov_model):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # never touch the network
    argv, expected = BAD[case]
    names = dict(broken, video=video, ov=ov_model)
    code, out, err = run(capsys, *[a.format(**names) for a in argv])
    assert code == 2
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("llava-scissor: error: ")
    assert expected in lines[0], lines[0]
    assert "Traceback" not in err


def test_frames_must_match_features(capsys, tmp_path, video):
    feats = features_file(tmp_path, frames=4, tokens=16)
    code, _, err = run(capsys, "visualize", video, "--features", feats, "--frames", "5", "-o", str(tmp_path / "p.png"))
    assert code == 2 and "differs from the 4 frames" in err


def test_console_entry_points_exit_codes(tmp_path, video):
    """The real process: ``python -m llava_scissor``; exit status and a single stderr line."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    ok = subprocess.run(
        [sys.executable, "-m", "llava_scissor", "info", "--json"], capture_output=True, text=True, env=env, timeout=120
    )
    assert ok.returncode == 0 and json.loads(ok.stdout)["default_model"].startswith("llava-hf/")
    bad = subprocess.run(
        [sys.executable, "-m", "llava_scissor", "ask", str(tmp_path / "x.mp4"), "q"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
    assert "video file not found" in bad.stderr
    script = shutil.which("llava-scissor")
    if script is not None:  # the console script of an installed checkout
        version = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=120)
        assert version.returncode == 0 and version.stdout.startswith("llava-scissor ")


# --------------------------------------------------------------------------- progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_only_on_a_terminal(monkeypatch):
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert not Progress(stream=_Terminal()).enabled  # stdout piped: nothing
    monkeypatch.setattr(sys, "stdout", _Terminal())
    assert not Progress(quiet=True, stream=_Terminal()).enabled
    stream = _Terminal()
    progress = Progress(stream=stream)
    assert progress.enabled
    with progress.bar("decoding", 4) as bar:
        for i in range(1, 5):
            bar.update(i)
    text = stream.getvalue()
    assert "decoding" in text and "4/4" in text and text.endswith("\n")
    with progress.bar("loading") as bar:  # no count: the label and the elapsed time
        pass
    assert stream.getvalue()[len(text) :].startswith("\rloading ... 00:00")
    quiet = _Terminal()
    with Progress(quiet=True, stream=quiet).bar("decoding", 4) as bar:
        bar.update(4)
    assert quiet.getvalue() == ""


def test_quiet_flag_is_accepted(capsys, tmp_path):
    feats = features_file(tmp_path)
    code, _, err = run(capsys, "compress", "--features", feats, "-o", str(tmp_path / "o.safetensors"), "--quiet")
    assert code == 0 and err == ""


# --------------------------------------------------------------------------- the README's first command

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(ROOT, "docs", "sample.mp4")


def test_first_command_on_the_sample_video(capsys, ov_model):
    """``llava-scissor ask docs/sample.mp4 ...`` with a local folder instead of the download."""
    code, out, err = run(
        capsys, "ask", SAMPLE, "What happens in this video?", "--model", ov_model, "--max-new-tokens", "4", "--json"
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["frames"] == 32 and report["tokens_before"] == 32 * OV_TOKENS
    assert report["frame_indices"][0] == 0 and report["frame_indices"][-1] == 119  # 120-frame sample


def test_first_command_offline_says_how_to_pass_a_folder(tmp_path):
    """The default model, not in an (empty) cache, Hub off: one actionable line, exit 2."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf-home"))
    env.pop("HF_HUB_CACHE", None)
    env.pop("TRANSFORMERS_CACHE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "llava_scissor", "ask", SAMPLE, "What happens in this video?"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "llava-hf/llava-onevision-qwen2-0.5b-ov-hf" in proc.stderr and "--model FOLDER" in proc.stderr
