"""Extension point for methods that act inside the language model (e.g. FastV).

Such a method (``Method.in_model = True``) cannot work on the video features before the
model runs; it prunes during prefill, from the language model's own attention. The HF
integration leaves the video tokens uncompressed for it and, inside ``apply``, enters a
*prefill hook* around every wrapped call::

    def fastv_prefill_hook(model, prepared) -> ContextManager:
        # prepared: PreparedInputs; prepared.stats[i].row / .start / .tokens_after give
        # each video's span in the sequence the model receives; prepared.method is the
        # Method, prepared.config / .options its resolved budget and options. Install
        # forward hooks on model.model.language_model here (acting only on the prefill
        # call) and remove them on exit.
        ...

    register_prefill_hook("fastv", fastv_prefill_hook)

This registry is the one extension point for in-model methods (``fastv.py`` registers
FastV's hook here).
"""

from __future__ import annotations

from typing import Any, Callable, ContextManager

from ..._errors import ScissorError
from ...methods import Method

__all__ = ["register_prefill_hook", "prefill_hook_for"]

PrefillHook = Callable[[Any, Any], ContextManager[Any]]

_HOOKS: dict[str, PrefillHook] = {}


def register_prefill_hook(method_name: str, hook: PrefillHook) -> None:
    """Register ``hook(model, prepared) -> context manager`` for the method ``method_name``."""
    if not callable(hook):
        raise ScissorError(f"a prefill hook must be callable, got {type(hook).__name__}")
    _HOOKS[method_name] = hook


def prefill_hook_for(method: Method | None) -> PrefillHook | None:
    """The prefill hook registered for ``method``, or None."""
    return None if method is None else _HOOKS.get(method.name)
