"""The lmms-eval plugin module stays importable without lmms-eval (a heavy, optional dependency)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import llava_scissor.integrations.lmms_eval as plugin


def test_plugin_module_imports_without_lmms_eval():
    code = (
        "import sys, llava_scissor.integrations.lmms_eval as p;"
        "assert 'lmms_eval' not in sys.modules; print(p.MODEL_NAME)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "llava_scissor"


def test_missing_lmms_eval_is_a_clear_error(monkeypatch):
    # A None entry in sys.modules makes `import lmms_eval` raise ImportError, as when it is not installed.
    for name in [m for m in sys.modules if m == "lmms_eval" or m.startswith("lmms_eval.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "lmms_eval", None)
    monkeypatch.setattr(plugin, "_CLASS", None)  # built by an earlier test in this process
    with pytest.raises(ValueError, match="pip install lmms-eval"):
        plugin.build_model_class()
