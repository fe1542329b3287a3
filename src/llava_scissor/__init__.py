"""llava-scissor: training-free video-token compression with Semantic Connected Components.

Importing this package imports torch and the pure-tensor core only; the Hugging Face
integration, the baselines, video I/O and the command line load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._errors import ScissorError
from .api import compress
from .core import CompressionResult, SCCResult, ScissorConfig, scc

if TYPE_CHECKING:  # what __getattr__ below loads on first use, typed for type checkers
    from .integrations.hf import apply, prepare
    from .methods import available_methods

__version__ = "0.1.0"

__all__ = [
    "ScissorError",
    "ScissorConfig",
    "CompressionResult",
    "SCCResult",
    "compress",
    "scc",
    "available_methods",
    "prepare",
    "apply",
    "__version__",
]

# Heavier pieces are imported lazily so that `import llava_scissor` stays lean
# (no transformers, no video decoder).
_LAZY = {
    "available_methods": ("llava_scissor.methods", "available_methods"),
    "prepare": ("llava_scissor.integrations.hf", "prepare"),
    "apply": ("llava_scissor.integrations.hf", "apply"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib  # only when a lazy name is first used

        module_name, attr = _LAZY[name]
        return getattr(importlib.import_module(module_name), attr)
    raise AttributeError(f"module 'llava_scissor' has no attribute {name!r}")
