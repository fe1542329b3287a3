"""The README's Python examples run as written (the model id swapped for a tiny local folder)."""

from __future__ import annotations

import os
import re

import pytest

pytest.importorskip("av")
pytest.importorskip("transformers")

from hf_models import write_tiny_model  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODEL = "llava-hf/llava-onevision-qwen2-0.5b-ov-hf"


def _readme_python() -> list[str]:
    """The ```python blocks of README.md (which must hold the apply example)."""
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert any("llava_scissor.apply(" in b for b in blocks), "README.md lost its apply example"
    return blocks


def test_readme_python_examples_run(tmp_path, monkeypatch, capsys):
    blocks = _readme_python()
    folder = str(write_tiny_model("llava_onevision", tmp_path / "tiny-ov"))
    monkeypatch.chdir(ROOT)  # the examples use docs/sample.mp4
    for block in blocks:
        code = block.replace(DEFAULT_MODEL, folder)
        exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    assert "video tokens" in out
    before, after = re.search(r"(\d+) -> (\d+) video tokens", out).groups()
    assert int(before) == 32 * 9 + 1 and 1 < int(after) < int(before)  # tiny model: 9 tokens per frame + newline
