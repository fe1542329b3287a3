"""The paper's FLOPs model (Eq. 9 / Eq. 10) reproduces Table 5."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from llava_scissor import ScissorError
from llava_scissor.flops import PRESETS, LMDims, fastv_flops, flops_table, llm_flops, main, scc_overhead_flops

QWEN7B = LMDims(28, 3584, 18944)


@pytest.mark.parametrize("retention,tflops", [(1.0, 41.4), (0.10, 3.9), (0.07, 2.9), (0.05, 2.2)])
def test_table5_llm_rows(retention, tflops):
    k = round(retention * 6272)
    assert round(llm_flops(k, QWEN7B) / 1e12, 1) == tflops


def test_eq9_by_hand_and_monotone():
    d = LMDims(1, 2, 3)
    # T (4 k d^2 + 2 k^2 d + 2 k d c) + T R ((4 d^2 + 2 d c) + 2 (d k + d (R + 1) / 2)), k = 5, R = 1
    assert llm_flops(5, d, generated=1) == (4 * 5 * 4 + 2 * 25 * 2 + 2 * 5 * 2 * 3) + ((16 + 12) + 2 * (10 + 2))
    values = [llm_flops(k, QWEN7B) for k in (100, 1000, 6272)]
    assert values == sorted(values)


def test_eq10_and_scc_rows_include_overhead():
    assert scc_overhead_flops(2, 3, 4, 5, 7) == 2 * 2 * 9 * 7 + 2 * 16 * 7 + 2 * 2 * 3 * 5 * 7
    rows = flops_table(QWEN7B, retentions=(1.0, 0.35, 0.1, 0.05), spatial_retention=0.5)
    by_r = {row["retention"]: row for row in rows}
    assert by_r[1.0]["scc_total_tflops"] == pytest.approx(41.4, abs=0.05)
    assert by_r[1.0]["scc_overhead_tflops"] == 0.0
    for r in (0.35, 0.1, 0.05):
        assert by_r[r]["scc_total_tflops"] > by_r[r]["llm_tflops"]
    # Table 5's SCC rows: 4.0 at 10 %, 2.3 at 5 % (overhead included).
    assert round(by_r[0.1]["scc_total_tflops"], 1) == 4.0
    assert round(by_r[0.05]["scc_total_tflops"], 1) == 2.3


def test_fastv_between_full_and_pruned():
    full, kept = llm_flops(6272, QWEN7B), llm_flops(627, QWEN7B)
    fv = fastv_flops(6272, 627, QWEN7B, layer=3)
    assert kept < fv < full
    assert fastv_flops(6272, 627, QWEN7B, layer=0) == pytest.approx(kept)


def test_config_from_folder_and_text_config(tmp_path):
    cfg = {
        "model_type": "llava_onevision",
        "text_config": {"num_hidden_layers": 28, "hidden_size": 3584, "intermediate_size": 18944},
    }
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    dims = LMDims.from_config(tmp_path)
    assert (dims.layers, dims.hidden, dims.ffn) == (28, 3584, 18944)
    assert LMDims.from_config("Qwen2.5-7B") == PRESETS["qwen2.5-7b"]
    with pytest.raises(ScissorError, match="no model config"):
        LMDims.from_config(tmp_path / "missing")
    with pytest.raises(ScissorError, match="num_hidden_layers"):
        LMDims.from_config({"hidden_size": 4})


def test_command_prints_table(tmp_path, capsys):
    assert main(["--config", "qwen2.5-7b", "--retention", "1", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "| 100 % | 6272 | 41.4 |" in out and "| 10 % | 627 | 3.9 |" in out
    assert main(["--config", str(tmp_path / "nope")]) == 2


def test_module_command_json_output():
    code = "import sys, llava_scissor.flops as f; f.main(['--json']); assert 'transformers' not in sys.modules"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    rows = json.loads(out)["rows"]
    assert rows[0]["tokens"] == 6272 and round(rows[0]["llm_tflops"], 1) == 41.4


@pytest.mark.parametrize(
    "frames, n, retention, spatial_retention",
    [(8, 16, 0.1, None), (8, 16, 0.3, 0.5), (32, 4, 0.02, 0.03), (6, 9, 0.05, None)],
)
def test_spatial_tokens_are_the_cores(frames, n, retention, spatial_retention):
    """The FLOPs table's S is the S that compress keeps (one rule: core/budget.py), the frame clamp included."""
    import torch

    import llava_scissor

    (row,) = flops_table(QWEN7B, frames, n, retentions=(retention,), spatial_retention=spatial_retention)
    x = torch.randn(frames, n, 8, generator=torch.Generator().manual_seed(0))
    r = llava_scissor.compress(x, retention=retention, spatial_retention=spatial_retention)
    assert (row["spatial_tokens"], row["tokens"]) == (r.num_spatial_tokens, r.num_tokens)


def test_spatial_budget_below_the_output_is_refused_like_compress():
    """S < K: compress refuses it, so the FLOPs table does too (it used to raise S to K silently)."""
    import torch

    import llava_scissor

    with pytest.raises(ScissorError, match="retention 0.5: the spatial budget"):
        flops_table(QWEN7B, 8, 16, retentions=(0.5,), spatial_retention=0.25)
    with pytest.raises(ScissorError, match="spatial budget"):
        llava_scissor.compress(torch.randn(8, 16, 8), retention=0.5, spatial_retention=0.25)
