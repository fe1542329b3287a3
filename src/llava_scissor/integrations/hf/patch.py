"""``apply``: make one model instance compress its videos on every call.

The instance's ``forward`` and ``generate`` are shadowed by wrappers (instance
attributes; the class is untouched, so other instances are unaffected). A wrapper runs
``prepare`` when the call carries ``pixel_values_videos`` and passes everything else
through. ``functools.wraps`` keeps the originals' signatures visible to ``inspect``,
which ``generate`` relies on (it checks which arguments ``forward`` accepts).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from typing import Any, Callable

from ..._errors import ScissorError
from ...api import resolve_method
from ...core.config import ScissorConfig
from ...methods import resolve_arguments
from .families import get_family
from .hooks import prefill_hook_for
from .prepare import PreparedInputs, VideoStats, prepare, supports_precomputed_features

__all__ = ["apply", "ScissorHandle", "get_handle"]

_MISSING = object()
_PATCHED = ("forward", "generate")
_MARK = "__llava_scissor_handle__"


class ScissorHandle:
    """The compression installed on one model by ``apply``.

    ``remove()`` restores the model's original ``forward`` / ``generate`` exactly; the
    handle is also a context manager that removes itself on exit. ``last`` holds the
    ``PreparedInputs`` of the most recent call that carried video (its ``stats`` say
    tokens before / after and time spent per video).
    """

    def __init__(self, model: Any, options: dict[str, Any]) -> None:
        self.model = model
        self.options = options
        self.last: PreparedInputs | None = None
        self._saved: dict[str, Any] = {}
        self._active = False

    @property
    def active(self) -> bool:
        """True until ``remove()``."""
        return self._active

    @property
    def stats(self) -> list[VideoStats]:
        """Per-video statistics of the last call with video (empty before any)."""
        return [] if self.last is None else self.last.stats

    def _install(self) -> None:
        state = self.model.__dict__
        for name in _PATCHED:
            self._saved[name] = state.get(name, _MISSING)
            original = getattr(self.model, name)
            state[name] = self._wrap(original, name)
        self._active = True

    def _wrap(self, original: Callable[..., Any], name: str) -> Callable[..., Any]:
        signature = inspect.signature(original)
        handle = self

        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if args:
                kwargs = _named(signature, args, kwargs, name)
            if kwargs.get("pixel_values_videos") is None:
                return original(**kwargs)
            prepared = prepare(handle.model, kwargs, **handle.options)
            handle.last = prepared
            with _in_model_hook(handle.model, prepared):
                return original(**prepared)

        setattr(wrapper, _MARK, self)
        return wrapper

    def remove(self) -> None:
        """Restore the original behaviour; calling it twice is harmless."""
        if not self._active:
            return
        state = self.model.__dict__
        for name in _PATCHED:
            current = state.get(name)
            if getattr(current, _MARK, None) is not self:
                raise ScissorError(
                    f"model.{name} was replaced after llava_scissor.apply; undo that change before remove()"
                )
        for name in _PATCHED:
            saved = self._saved[name]
            if saved is _MISSING:
                del state[name]
            else:
                state[name] = saved
        self._active = False

    def __enter__(self) -> "ScissorHandle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()

    def __repr__(self) -> str:
        state = "active" if self._active else "removed"
        return f"ScissorHandle({type(self.model).__name__}, {state}, {self.options})"


def _named(signature: inspect.Signature, args: tuple, kwargs: dict[str, Any], name: str) -> dict[str, Any]:
    """Positional arguments turned into keywords (``generate(ids)`` -> ``input_ids=ids``)."""
    bound = signature.bind_partial(*args, **kwargs).arguments
    out: dict[str, Any] = {}
    for key, value in bound.items():
        kind = signature.parameters[key].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            out.update(value)
        elif kind is inspect.Parameter.VAR_POSITIONAL:
            if value:
                raise ScissorError(f"model.{name} got unexpected extra positional arguments")
        else:
            out[key] = value
    if name == "generate" and "inputs" in out:
        out["input_ids"] = out.pop("inputs")
    return out


@contextlib.contextmanager
def _in_model_hook(model: Any, prepared: PreparedInputs) -> Any:
    """Enter the prefill hook of an in-model method (see ``hooks.py``) around a call."""
    hook = prefill_hook_for(prepared.method)
    if hook is None:
        yield
        return
    with hook(model, prepared):
        yield


def get_handle(model: Any) -> ScissorHandle | None:
    """The active handle ``apply`` installed on ``model``, or None."""
    return getattr(model.__dict__.get("forward"), _MARK, None)


def apply(
    model: Any,
    config: ScissorConfig | None = None,
    *,
    method: str | None = None,
    keep_newline: bool = True,
    enabled: bool = True,
    **overrides: Any,
) -> ScissorHandle:
    """Make ``model.generate(**inputs)`` and ``model(**inputs)`` compress videos.

    Takes the options of ``prepare`` (``config`` / ScissorConfig overrides, ``method``,
    ``keep_newline``, ``enabled``). Only this instance is affected; applying again
    replaces the previous configuration; ``handle.remove()`` (or leaving a ``with``
    block) restores the original methods exactly.
    """
    get_family(model)
    if not supports_precomputed_features(model):
        raise ScissorError(
            f"{type(model).__name__}.forward does not accept mm_encoder_outputs; llava-scissor needs a "
            "transformers release with precomputed multimodal encoder outputs (5.18 or later; tested 5.18.0 and 5.23.0)"
        )
    resolve_arguments(resolve_method(method), config, overrides)  # validate now rather than at the first call
    previous = get_handle(model)
    if previous is not None:
        previous.remove()
    options: dict[str, Any] = dict(
        config=config, method=method, keep_newline=keep_newline, enabled=enabled, **overrides
    )
    handle = ScissorHandle(model, options)
    handle._install()
    return handle
