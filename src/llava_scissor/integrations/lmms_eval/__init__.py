"""lmms-eval model plugin: evaluate any supported video LLM with any compression method.

    lmms-eval --model llava_scissor \\
        --model_args pretrained=llava-hf/llava-onevision-qwen2-7b-ov-hf,method=scissor,retention=0.1 \\
        --tasks mvbench,videomme --batch_size 4 --log_samples --output_path ./logs

lmms-eval (>= 0.7) finds the plugin through the entry-point group ``lmms_eval.models``
(``llava_scissor = "llava_scissor.integrations.lmms_eval:manifests"``), so no fork of
lmms-eval is needed. The model class lives in ``._model``, which imports lmms-eval; this
package imports it only when lmms-eval asks for the class, so importing llava-scissor never
requires lmms-eval.

``model_args`` (all optional except ``pretrained``):

* ``pretrained``: a Hugging Face model id or folder of a supported family
  (``llava_scissor.integrations.hf.supported_model_types()``).
* ``method``: a registered method (``llava_scissor.available_methods()``) or ``none``
  for the uncompressed model (the same code path, every token kept). Default ``scissor``.
* ``retention`` / ``max_tokens`` / ``tau`` / ``seed`` / any ``ScissorConfig`` field, and
  the method's own options (e.g. ``dominant_ratio`` for VisionZip, ``layer`` for FastV).
* ``max_frames_num`` (32): frames sampled uniformly from each video.
* ``keep_newline`` (True): keep LLaVA-OneVision's video newline token.
* ``device`` (``auto``: the local rank's GPU under ``accelerate launch``, else ``cuda``
  when there is one, else ``cpu``), ``dtype`` (``auto``), ``max_new_tokens`` (default for
  tasks that set none: 128).
* ``batch_size`` (also ``--batch_size``): generation requests per ``generate`` call;
  ``auto`` is ``AUTO_BATCH_SIZE`` (capped by ``--max_batch_size``). Methods that act inside
  the language model (FastV) run one request at a time.
* ``sidecar`` (``auto``): where the per-sample compression records and per-task means go;
  ``auto`` writes ``<date>_llava_scissor.json`` next to lmms-eval's ``<date>_results.json``
  (under ``--output_path``), a path writes there, ``none`` writes nothing.
"""

from __future__ import annotations

from typing import Any

__all__ = ["AUTO_BATCH_SIZE", "MODEL_NAME", "manifests", "model_class"]

MODEL_NAME = "llava_scissor"
#: what ``batch_size=auto`` means: a fixed default, not a search for the largest batch
#: that fits (lmms-eval's probing needs a model that can be run on dummy inputs).
AUTO_BATCH_SIZE = 8
_CLASS_NAME = "LlavaScissor"
_CLASS_MODULE = f"{__name__}._model"


def manifests() -> list[Any]:
    """Entry-point payload for lmms-eval's ``lmms_eval.models`` group."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [
        ModelManifest(
            model_id=MODEL_NAME,
            simple_class_path=f"{_CLASS_MODULE}.{_CLASS_NAME}",
            aliases=("llava-scissor",),
        )
    ]


def model_class() -> type:
    """The ``lmms`` subclass ``LlavaScissor`` (imports lmms-eval)."""
    import importlib

    try:
        import lmms_eval  # noqa: F401
    except ImportError as exc:
        from ..._errors import ScissorError

        raise ScissorError(f"the lmms-eval plugin needs lmms-eval (pip install lmms-eval): {exc}") from None
    return getattr(importlib.import_module(_CLASS_MODULE), _CLASS_NAME)  # type: ignore[no-any-return]


def __getattr__(name: str) -> Any:
    if name == _CLASS_NAME:
        return model_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
