"""Registry of token-compression methods: SCC and the baselines it is compared with.

Every method compresses one video's tokens ``features: [F, N, d]`` to exactly ``K``
tokens, with the same budget meaning as SCC (``retention`` -> ``K = round-half-up(r * F * N)``,
at least 1; ``max_tokens`` -> ``K = min(max_tokens, F * N)``), and returns a
``CompressionResult``. Methods that need more than the features (the vision tower's
attention, the language model's attention) declare it in ``Method.side_inputs`` and
receive it as keyword arguments.

>>> import llava_scissor
>>> llava_scissor.available_methods()          # doctest: +ELLIPSIS
['dycoke', 'fastv', 'l2norm', 'pooling', 'random', 'scissor', 'uniform', 'vidcom2', 'visionzip']
>>> result = llava_scissor.compress(features, method="uniform", retention=0.1)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from .._errors import ScissorError
from ..core.config import ScissorConfig, with_overrides
from ..core.result import CompressionResult
from ._common import token_budget

__all__ = [
    "Method",
    "available_methods",
    "get_method",
    "compress_with",
    "check_settings",
    "resolve_arguments",
    "register_method",
]


@dataclass(frozen=True)
class Method:
    """A registered compression method.

    Attributes:
        name: registry name (``method=`` everywhere).
        compress: ``(features [F, N, d], config: ScissorConfig, *, options=None,
            **side_inputs) -> CompressionResult``; one video at a time.
        side_inputs: names of required keyword inputs besides the features, e.g.
            ``("vision_attention",)``: [F, N] float, the attention each (pooled) token
            receives inside the vision tower.
        in_model: True when the method acts inside the language model (FastV); its
            ``compress`` then needs the language model's attention and is normally
            driven by the model integration (``llava_scissor.prepare/apply``, which
            enters the prefill hook registered for it: ``integrations/hf/hooks.py``).
        options: the frozen dataclass of the method's own hyperparameters (paper
            defaults), or None. Keyword arguments named like its fields are accepted
            by ``compress_with`` / ``llava_scissor.compress``.
    """

    name: str
    compress: Callable[..., CompressionResult]
    side_inputs: tuple[str, ...] = ()
    in_model: bool = False
    options: type | None = None

    def option_names(self) -> tuple[str, ...]:
        """Names of the method's own hyperparameters (fields of ``options``)."""
        if self.options is None:
            return ()
        return tuple(f.name for f in dataclasses.fields(self.options))


_REGISTRY: dict[str, Method] = {}
_BUILTINS_LOADED = False


def register_method(method: Method, *, replace: bool = False) -> Method:
    """Add a method to the registry (``replace=True`` to overwrite one of the same name)."""
    if not isinstance(method, Method):
        raise ScissorError(f"register_method expects a Method, got {type(method).__name__}")
    if not method.name or not method.name.isidentifier():
        raise ScissorError(f"method names must be identifiers, got {method.name!r}")
    if method.name in _REGISTRY and not replace:
        raise ScissorError(f"a method named {method.name!r} is already registered; pass replace=True to overwrite it")
    _REGISTRY[method.name] = method
    return method


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    # Each module registers its method(s) on import.
    from . import ablation, dycoke, fastv, pooling, scissor, vidcom2, visionzip  # noqa: F401  (register)


def available_methods() -> list[str]:
    """Sorted names of all registered methods."""
    _load_builtins()
    return sorted(_REGISTRY)


def get_method(name: str) -> Method:
    """The registered ``Method`` called ``name``; ``ScissorError`` listing the names if unknown."""
    _load_builtins()
    if not isinstance(name, str):
        raise ScissorError(f"method must be a name (str), got {type(name).__name__}")
    key = name.strip().lower()
    if key not in _REGISTRY:
        raise ScissorError(f"unknown method {name!r}; available methods: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[key]


def compress_with(
    name: str,
    features: torch.Tensor | Sequence[torch.Tensor],
    config: ScissorConfig | None = None,
    **overrides_and_side_inputs: Any,
) -> CompressionResult | list[CompressionResult]:
    """Compress one video (``[F, N, d]``) or a list of videos with the method ``name``.

    features: [F, N, d] float tensor, or a list of such tensors (F may differ).
    Keyword arguments are split three ways: names in ``Method.side_inputs`` are side
    inputs (a tensor for one video, a list with one tensor per video for a list);
    names of the method's ``options`` dataclass fields are its hyperparameters (or
    pass ``options=<that dataclass>``); everything else must be a ``ScissorConfig``
    field (``retention``, ``max_tokens``, ``seed``, ...).

    Returns one ``CompressionResult`` per video (a list for a list input).
    """
    method = get_method(name)
    cfg, options, side = resolve_arguments(method, config, overrides_and_side_inputs)

    if isinstance(features, torch.Tensor):
        return method.compress(features, cfg, options=options, **side)
    if not isinstance(features, (list, tuple)):
        raise ScissorError(
            f"features must be a [frames, tokens_per_frame, dim] tensor or a list of them, "
            f"got {type(features).__name__}"
        )
    results = []
    for i, video in enumerate(features):
        video_side: dict[str, Any] = {}
        for key, value in side.items():
            if value is None:
                video_side[key] = None
                continue
            if not isinstance(value, (list, tuple)) or len(value) != len(features):
                raise ScissorError(
                    f"{key} must be a list with one tensor per video ({len(features)} videos) "
                    f"when features is a list, got {type(value).__name__}"
                    + (f" of length {len(value)}" if isinstance(value, (list, tuple)) else "")
                )
            video_side[key] = value[i]
        results.append(method.compress(video, cfg, options=options, **video_side))
    return results


def check_settings(name: str, config: ScissorConfig | None = None, **overrides: Any) -> None:
    """Raise ScissorError now for what ``compress_with(name, ..., config, **overrides)``
    would refuse at its first call: an unknown method, an unknown or bad setting.

    Side inputs (``Method.side_inputs``) are accepted by name and not checked. A method on
    the features (not ``in_model``) other than "scissor" must be given a budget.
    """
    method = get_method(name)
    cfg, _, _ = resolve_arguments(method, config, overrides)
    # Methods on the features need a budget; an in-model method's hook checks its own.
    if method.name != "scissor" and not method.in_model and not cfg.budgeted:
        token_budget(cfg, 1, 1, method.name)  # raises: the baselines have no threshold mode


def resolve_arguments(
    method: Method, config: ScissorConfig | None, kwargs: dict[str, Any]
) -> tuple[ScissorConfig, Any, dict[str, Any]]:
    """Split a call's keyword arguments for ``method``: (config, options, side inputs).

    Names in ``Method.side_inputs`` are side inputs; names of the method's ``options``
    fields are its hyperparameters (or ``options=<that dataclass>``); everything else
    must be a ``ScissorConfig`` field. Everything is validated here.
    """
    side: dict[str, Any] = {}
    option_values: dict[str, Any] = {}
    overrides: dict[str, Any] = {}
    kwargs = dict(kwargs)
    options = kwargs.pop("options", None)
    option_names = set(method.option_names())
    for key, value in kwargs.items():
        if key in method.side_inputs:
            side[key] = value
        elif key in option_names:
            option_values[key] = value
        else:
            overrides[key] = value
    known = {f.name for f in dataclasses.fields(ScissorConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        own = f"its options: {sorted(option_names)}" if option_names else "it has no options of its own"
        raise ScissorError(
            f"unknown ScissorConfig field(s) or option(s) {unknown} for method {method.name!r} ({own}); "
            f"ScissorConfig fields: {sorted(known)}"
        )
    return with_overrides(config, **overrides), _build_options(method, options, option_values), side


def _build_options(method: Method, options: Any, values: dict[str, Any]) -> Any:
    if method.options is None:
        if options is not None:
            raise ScissorError(f"method {method.name!r} takes no options, got {options!r}")
        return None
    if options is None:
        options = method.options()
    elif not isinstance(options, method.options):
        raise ScissorError(
            f"options for method {method.name!r} must be a {method.options.__name__}, got {type(options).__name__}"
        )
    if values:
        try:
            options = dataclasses.replace(options, **values)
        except TypeError as exc:  # a frozen dataclass without validation of its own
            raise ScissorError(f"bad options for method {method.name!r}: {exc}") from None
    return options
