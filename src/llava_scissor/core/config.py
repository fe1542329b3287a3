"""Frozen configuration of the SCC compressor."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch

from .._errors import ScissorError

__all__ = ["ScissorConfig", "DEFAULT_TAU"]

#: the paper's similarity threshold, used in threshold mode when ``tau`` is not given
DEFAULT_TAU = 0.9

_SIM_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}


@dataclass(frozen=True)
class ScissorConfig:
    """How to compress one video's tokens with Semantic Connected Components.

    Two ways to size the output, never both (giving ``tau`` together with
    ``retention`` or ``max_tokens`` raises ScissorError):

    * threshold mode (default, the paper): ``tau`` decides which tokens are similar
      (cosine > tau, strict); the number of tokens is an outcome of the video.
    * budget mode: ``retention`` (fraction of ``frames * tokens_per_frame``) or
      ``max_tokens`` (a cap) gives exactly ``K`` output tokens, by cutting the
      single-linkage (maximum spanning tree) hierarchy, the same family of
      components a threshold gives. ``tau`` is then None.

    ``replace`` (and the keyword overrides of ``compress`` / ``apply``) switch modes:
    a budget given there clears ``tau``, a ``tau`` clears the budget.

    Attributes:
        tau: similarity threshold in [-1, 1] (threshold mode); 0.9 (the paper's
            default, ``DEFAULT_TAU``) when neither tau nor a budget is given, None
            in budget mode.
        epsilon: approximation parameter of the paper's sampled components (Eq. 2);
            only used when ``approximate`` is True. Must be > 0.
        approximate: use the epsilon-sampled components (seeded) instead of exact ones.
        seed: seed of the sampling in approximate mode. Same seed, same output.
        retention: fraction of tokens to keep, in (0, 1]; ``K = round(r * F * N)``
            (half rounds up), at least 1.
        max_tokens: keep exactly ``min(max_tokens, F * N)`` tokens; must be >= 1.
        spatial_retention / spatial_max_tokens: budget of the spatial step (S) in
            budget mode; by default S is the geometric mean of K and F * N.
        spatial / temporal / merge: switches of the three steps (the paper's ablation).
        similarity_dtype: dtype of the similarity products: "float32" (default),
            "bfloat16" (faster products for token sets above 256 tokens where the
            device multiplies bfloat16 faster: CUDA, or a CPU measured once per process,
            ``llava_scissor.core.bfloat16_products``; float32 products elsewhere; the same
            result as "float32") or "float64".
            With float32 and bfloat16 every similarity close enough to a decision
            (tau, a budget's cut, the merge step's best target) to be on the wrong side
            of it is re-computed exactly, so both give identical outputs; float64
            products decide on their own. Inputs in float16 / bfloat16 are compared
            from their float32 values.
        max_matrix_bytes: the largest similarity matrix held in memory at once. A
            bigger token set (a long video's temporal step) is processed in column
            strips with the same result: in one pass in threshold mode, in one pass
            per Borůvka round (about log2 S) for a budget. A sampled budget
            (``approximate``) needs the whole matrix, so beyond the cap it is refused
            with a ScissorError before any work. The merge step's product buffer (kept
            tokens x 256 originals) is capped by it too.
        sync_free: run without reading intermediate results back to the host, so a GPU
            never waits on the CPU inside a call: fixed-size buffers and a fixed number
            of rounds. A call then reads the device once, at the end; twice when,
            with S unknown in advance (threshold mode, ``approximate``), F * N x F * N
            similarities would exceed ``max_matrix_bytes`` (the spatial step's output
            size then shapes the temporal step). Same outputs either way; on the rare input with
            more near-ties than the fixed buffers hold, the call detects it and runs
            again with data-sized buffers. None (default): on CUDA devices only (on a
            CPU a read costs nothing and the data-sized path does less work). Token
            sets beyond ``max_matrix_bytes`` (strips) are never sync-free.
    """

    tau: float | None = None
    epsilon: float = 0.05
    approximate: bool = False
    seed: int = 0
    retention: float | None = None
    max_tokens: int | None = None
    spatial_retention: float | None = None
    spatial_max_tokens: int | None = None
    spatial: bool = True
    temporal: bool = True
    merge: bool = True
    similarity_dtype: str = "float32"
    max_matrix_bytes: int = 1 << 30
    sync_free: bool | None = None

    def __post_init__(self) -> None:
        if self.tau is not None and self.budgeted:
            budget = f"retention={self.retention}" if self.retention is not None else f"max_tokens={self.max_tokens}"
            raise ScissorError(
                f"give tau (threshold mode) or a budget (retention / max_tokens), not both: got tau={self.tau} "
                f"and {budget}; a budget fixes the token count, so tau would be ignored"
            )
        if self.tau is None and not self.budgeted:
            object.__setattr__(self, "tau", DEFAULT_TAU)  # threshold mode, the paper's default
        if self.tau is not None:
            _check_real("tau", self.tau)
            if not -1.0 <= self.tau <= 1.0:
                raise ScissorError(f"tau must be in [-1, 1], got {self.tau}")
        _check_real("epsilon", self.epsilon)
        if not self.epsilon > 0 or math.isinf(self.epsilon):
            raise ScissorError(f"epsilon must be a finite number > 0, got {self.epsilon}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ScissorError(f"seed must be an int, got {self.seed!r}")
        if self.retention is not None and self.max_tokens is not None:
            raise ScissorError(
                "give either retention or max_tokens, not both "
                f"(got retention={self.retention}, max_tokens={self.max_tokens})"
            )
        if self.spatial_retention is not None and self.spatial_max_tokens is not None:
            raise ScissorError("give either spatial_retention or spatial_max_tokens, not both")
        for name in ("retention", "spatial_retention"):
            value = getattr(self, name)
            if value is not None:
                _check_real(name, value)
                if not 0.0 < value <= 1.0:
                    raise ScissorError(f"{name} must be in (0, 1], got {value}")
        for name in ("max_tokens", "spatial_max_tokens"):
            value = getattr(self, name)
            if value is not None:
                if not isinstance(value, int) or isinstance(value, bool):
                    raise ScissorError(f"{name} must be an int >= 1, got {value!r}")
                if value < 1:
                    raise ScissorError(f"{name} must be >= 1, got {value}")
        for name in ("spatial", "temporal", "merge", "approximate"):
            if not isinstance(getattr(self, name), bool):
                raise ScissorError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.sync_free is not None and not isinstance(self.sync_free, bool):
            raise ScissorError(f"sync_free must be True, False or None, got {self.sync_free!r}")
        if not isinstance(self.max_matrix_bytes, int) or self.max_matrix_bytes < 1 << 20:
            raise ScissorError(f"max_matrix_bytes must be an int >= 1 MiB (1048576), got {self.max_matrix_bytes!r}")
        if self.similarity_dtype not in _SIM_DTYPES:
            raise ScissorError(f"similarity_dtype must be one of {sorted(_SIM_DTYPES)}, got {self.similarity_dtype!r}")

    @property
    def budgeted(self) -> bool:
        """True when the output size is fixed by ``retention`` or ``max_tokens``."""
        return self.retention is not None or self.max_tokens is not None

    def replace(self, **overrides: Any) -> ScissorConfig:
        """A copy with some fields replaced (validated like the constructor)."""
        return with_overrides(self, **overrides)


def _check_real(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ScissorError(f"{name} must be a real number, got {value!r}")
    if math.isnan(value):
        raise ScissorError(f"{name} must not be NaN")


def with_overrides(config: ScissorConfig | None, **overrides: Any) -> ScissorConfig:
    """``config`` (or the defaults) with ``overrides`` applied; unknown names raise."""
    base = ScissorConfig() if config is None else config
    if not isinstance(base, ScissorConfig):
        raise ScissorError(f"config must be a ScissorConfig, got {type(base).__name__}")
    if not overrides:
        return base
    known = {f.name for f in dataclasses.fields(ScissorConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ScissorError(f"unknown ScissorConfig field(s) {unknown}; known fields: {sorted(known)}")
    # An override of the mode replaces the base config's mode: a budget clears tau and
    # the other budget, a tau clears the budget. Both in one call are refused by
    # the constructor (which names them).
    budget_given = overrides.get("retention") is not None or overrides.get("max_tokens") is not None
    tau_given = overrides.get("tau") is not None
    if budget_given and not tau_given:
        overrides.setdefault("tau", None)
        overrides.setdefault("retention", None)
        overrides.setdefault("max_tokens", None)
    if tau_given and not budget_given:
        overrides.setdefault("retention", None)
        overrides.setdefault("max_tokens", None)
    return dataclasses.replace(base, **overrides)


def threshold(config: ScissorConfig) -> float:
    """The tau the steps are given: the config's in threshold mode; unused (the default) with a budget."""
    return DEFAULT_TAU if config.tau is None else config.tau


def similarity_dtype(config: ScissorConfig) -> torch.dtype:
    return _SIM_DTYPES[config.similarity_dtype]
