"""Hugging Face transformers integration.

* ``prepare(model, inputs, config=None, **overrides)``: compressed inputs for
  ``model.generate(**p)`` / ``model(**p)`` plus per-video statistics.
* ``apply(model, config=None, **overrides)``: compress transparently on this instance;
  returns a handle with ``remove()`` (also a context manager).
* ``supported_model_types()``: the ``config.model_type`` values served.
* ``build_video_inputs`` / ``load_processor``: model inputs from decoded frames, with
  the model's own processor when it can be built and without torchvision otherwise.
* ``session``: loading a model from a folder or a hub id, its prompts, encoding,
  answering (what the command line, ``eval`` and the lmms-eval plugin share).
* ``fastv``: FastV's in-model pruning, registered as the ``"fastv"`` prefill hook.
"""

from . import fastv  # noqa: F401  (registers FastV's prefill hook)
from .families import Family, VideoFeatures, get_family, register_family, supported_model_types
from .hooks import register_prefill_hook
from .inputs import ProcessorParts, build_video_inputs, load_processor
from .patch import ScissorHandle, apply, get_handle
from .prepare import PreparedInputs, VideoStats, prepare, supports_precomputed_features

__all__ = [
    "prepare",
    "apply",
    "supported_model_types",
    "PreparedInputs",
    "VideoStats",
    "ScissorHandle",
    "get_handle",
    "Family",
    "VideoFeatures",
    "get_family",
    "register_family",
    "supports_precomputed_features",
    "register_prefill_hook",
    "ProcessorParts",
    "build_video_inputs",
    "load_processor",
]
