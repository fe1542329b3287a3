"""``--method`` and ``--compare METHOD`` on the command line: every registered method runs
where it can, with its options, and is refused in one line where it cannot."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("av")
pytest.importorskip("transformers")
pytest.importorskip("safetensors")

from hf_models import write_tiny_model  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from test_cli import features_file, run  # noqa: E402
from test_video import write_video  # noqa: E402

import llava_scissor  # noqa: E402

FRAMES = 4
OV_TOKENS = 9
K = round(0.25 * FRAMES * OV_TOKENS)  # 9 of 36
METHODS = llava_scissor.available_methods()
ON_FEATURES = [m for m in METHODS if m not in ("fastv", "visionzip")]  # no side inputs


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> str:
    return write_video(str(tmp_path_factory.mktemp("video") / "scene.mp4"), 12, size=(96, 72), pattern="scene")


@pytest.fixture(scope="module")
def ov_model(tmp_path_factory) -> str:
    return str(write_tiny_model("llava_onevision", tmp_path_factory.mktemp("ov") / "tiny-ov"))


def _metadata(path: str) -> dict:
    with safe_open(path, "pt") as fh:
        meta = fh.metadata()
        tokens = fh.get_tensor("tokens")
    return {**{k: v if k == "format" else json.loads(v) for k, v in meta.items()}, "tokens": tokens}


def test_every_method_is_known_to_the_command_line() -> None:
    assert {"scissor", "dycoke", "fastv", "visionzip", "pooling", "uniform"} <= set(METHODS)


@pytest.mark.parametrize("method", ON_FEATURES)
def test_compress_features_with_every_method(capsys, tmp_path, method) -> None:
    feats = features_file(tmp_path, frames=4, tokens=16)
    out = str(tmp_path / "c.safetensors")
    code, _, err = run(capsys, "compress", "--features", feats, "--method", method, "--retention", "0.25", "-o", out)
    assert code == 0, err
    meta = _metadata(out)
    assert meta["method"] == method and meta["tokens_after"] == 16 == meta["tokens"].shape[0]
    want = llava_scissor.compress(load_file(feats)["features"], method=method, retention=0.25)
    assert torch.equal(meta["tokens"], want.tokens.float())


def test_method_options_reach_the_method(capsys, tmp_path) -> None:
    feats = features_file(tmp_path, frames=4, tokens=16)
    outs = {}
    for ratio in ("1", "7"):
        out = str(tmp_path / f"v{ratio}.safetensors")
        code, _, err = run(
            capsys,
            "compress",
            "--features",
            feats,
            "--method",
            "vidcom2",
            "--retention",
            "0.25",
            "--option",
            f"temperature={ratio}",
            "-o",
            out,
        )
        assert code == 0, err
        outs[ratio] = _metadata(out)
    assert outs["1"]["options"] == {"temperature": 1}
    out = str(tmp_path / "bf.safetensors")
    code, _, err = run(capsys, "compress", "--features", feats, "--option", "similarity_dtype=bfloat16", "-o", out)
    assert code == 0, err
    assert _metadata(out)["config"]["similarity_dtype"] == "bfloat16"


def test_visionzip_through_the_model_and_visualize_a_baseline(capsys, tmp_path, video, ov_model) -> None:
    out = str(tmp_path / "vz.safetensors")
    code, _, err = run(
        capsys,
        "compress",
        video,
        "--model",
        ov_model,
        "--frames",
        str(FRAMES),
        "--method",
        "visionzip",
        "--retention",
        "0.25",
        "-o",
        out,
    )
    assert code == 0, err
    assert _metadata(out)["tokens_after"] == K
    png = str(tmp_path / "d.png")
    code, out_text, err = run(
        capsys,
        "visualize",
        video,
        "--model",
        ov_model,
        "--frames",
        str(FRAMES),
        "--method",
        "dycoke",
        "--retention",
        "0.25",
        "-o",
        png,
        "--json",
    )
    assert code == 0, err
    report = json.loads(out_text)
    assert report["method"] == "dycoke" and report["tokens_after"] == K


@pytest.mark.parametrize("method", METHODS)
def test_ask_runs_every_method(capsys, video, ov_model, method) -> None:
    extra = ["--option", "layer=1"] if method == "fastv" else []  # the tiny model has 2 layers
    code, out, err = run(
        capsys,
        "ask",
        video,
        "describe the video",
        "--model",
        ov_model,
        "--frames",
        str(FRAMES),
        "--method",
        method,
        "--retention",
        "0.25",
        "--max-new-tokens",
        "3",
        "--json",
        *extra,
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["method"] == method and report["options"] == ({"layer": 1} if extra else {})
    assert report["tokens_before"] == FRAMES * OV_TOKENS and report["tokens_after"] == K


def test_ask_compare_two_methods_side_by_side(capsys, video, ov_model) -> None:
    argv = [
        "ask",
        video,
        "describe the video",
        "--model",
        ov_model,
        "--frames",
        str(FRAMES),
        "--retention",
        "0.25",
        "--max-new-tokens",
        "3",
        "--compare",
        "dycoke",
    ]
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["method"] == "scissor" and report["compare"]["method"] == "dycoke"
    assert report["compare"]["tokens"] == report["tokens_after"] == K
    assert report["compare"]["timings"]["compression"] is not None
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    assert "scissor (9 video tokens):" in out and "dycoke (9 video tokens):" in out
    assert "(dycoke " in out  # the timing columns name the other method


BAD = {
    "unknown method": (
        ["compress", "--features", "{feats}", "--method", "nope", "-o", "{o}"],
        "unknown method 'nope'; available methods",
    ),
    "baseline without a budget": (
        ["compress", "--features", "{feats}", "--method", "dycoke", "-o", "{o}"],
        "needs a budget: --retention R or --max-tokens K",
    ),
    "baseline with tau": (
        ["compress", "--features", "{feats}", "--method", "uniform", "--tau", "0.5", "-o", "{o}"],
        "needs a budget",
    ),
    "unknown option": (
        [
            "compress",
            "--features",
            "{feats}",
            "--method",
            "dycoke",
            "--retention",
            "0.2",
            "--option",
            "windw=3",
            "-o",
            "{o}",
        ],
        "or option(s) ['windw']",
    ),
    "bad option value": (
        [
            "compress",
            "--features",
            "{feats}",
            "--method",
            "visionzip",
            "--retention",
            "0.2",
            "--option",
            "dominant_ratio=-1",
            "-o",
            "{o}",
        ],
        "dominant_ratio must be > 0",
    ),
    "option not NAME=VALUE": (["compress", "--features", "{feats}", "--option", "dominant", "-o", "{o}"], "NAME=VALUE"),
    "budget as an option": (["compress", "--features", "{feats}", "--option", "tau=0.5", "-o", "{o}"], "use --tau"),
    "in-model method on features": (
        ["compress", "--features", "{feats}", "--method", "fastv", "--retention", "0.2", "-o", "{o}"],
        "'ask --method fastv' runs it",
    ),
    "side input missing from a features file": (
        ["visualize", "{video}", "--features", "{feats}", "--method", "visionzip", "--retention", "0.2", "-o", "{png}"],
        "features file does not hold",
    ),
    "unknown compare method": (
        ["ask", "{video}", "q", "--retention", "0.2", "--compare", "nope"],
        "unknown method 'nope'",
    ),
    "compare baseline with tau": (["ask", "{video}", "q", "--tau", "0.5", "--compare", "dycoke"], "needs a budget"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_method_is_one_line_before_any_work(capsys, monkeypatch, tmp_path, video, case) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import llava_scissor.integrations.hf.session as model_module

    def no_model(*_a, **_k):
        raise AssertionError("a model was loaded before the options were checked")

    monkeypatch.setattr(model_module, "load_model", no_model)
    names = {
        "feats": features_file(tmp_path),
        "o": str(tmp_path / "o.safetensors"),
        "png": str(tmp_path / "o.png"),
        "video": video,
    }
    argv, expected = BAD[case]
    code, out, err = run(capsys, *[a.format(**names) for a in argv])
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and expected in lines[0], err
    assert out == "" and sorted(p.name for p in tmp_path.iterdir()) == ["feats.safetensors"]
