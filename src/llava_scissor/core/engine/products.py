"""Which dtype the similarity products run in: bfloat16 only where it pays.

``similarity_dtype="bfloat16"`` asks for faster products, not different results:
every decision near a level is taken on canonical values (``exact.py``), so float32
and bfloat16 products give bitwise the same output. Whether bfloat16 is faster depends
on the device. CUDA devices multiply bfloat16 several times faster than float32. CPUs
differ by far more than that: one with AMX or AVX512-BF16 instructions multiplies
bfloat16 about 6x faster than float32; one with AVX2 only emulates it, about 100x
slower. So on a CPU the two are timed against each other once per process, and
bfloat16 products are taken only when they are clearly faster; elsewhere the float32
products run, with the same output.

The one piece of process state in the core is that measurement: ``_measured_cpu_speedup``
is cached (``functools.cache``; a few milliseconds, the first time a bfloat16 product is
asked for on a CPU). It is read-only afterwards and does not depend on any input.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["ProductPath", "bfloat16_products", "choose_path", "product_dtype"]

# bfloat16 products are taken on a CPU when they run at least this much faster than
# float32 ones. Real CPUs are far from it either way (about 6x faster, or 50-100x slower),
# so the margin only keeps a noisy measurement from picking a path that does not pay.
MIN_SPEEDUP = 1.5

# (rows, dim) of the timed products ``[rows, dim] @ [dim, rows]``. The large one is the
# shape of a temporal step's strip, where a fast bfloat16 kernel shows its real speed
# (AMX is slower than float32 on tiny products). The small one comes first and only
# catches a CPU that emulates bfloat16 (below ``_EMULATED``), in a few milliseconds
# instead of the large product's half second there.
_SMALL, _LARGE = (64, 256), (512, 896)
_EMULATED = 0.2
_REPEAT = 5


@dataclass(frozen=True)
class ProductPath:
    """What ``similarity_dtype="bfloat16"`` runs on one kind of device.

    dtype: torch.bfloat16 or torch.float32 (the products' dtype; the output is the same).
    reason: why, in words (for ``llava-scissor info`` and the benchmarks).
    """

    dtype: torch.dtype
    reason: str


def choose_path(device_type: str, cpu_speedup: Callable[[], float]) -> ProductPath:
    """The decision: bfloat16 products on CUDA (and meta, which stands in for it in the
    tests), on a CPU only when ``cpu_speedup()`` (float32 time / bfloat16 time of the same
    product) is at least ``MIN_SPEEDUP``; other devices keep what was asked for."""
    if device_type == "cpu":
        speedup = cpu_speedup()
        measured = f"bfloat16 matmul measured {speedup:.2g}x as fast as float32 on this CPU"
        if speedup >= MIN_SPEEDUP:
            return ProductPath(torch.bfloat16, measured)
        return ProductPath(torch.float32, measured + f" (below {MIN_SPEEDUP}x; same output)")
    if device_type == "cuda":
        return ProductPath(torch.bfloat16, "CUDA multiplies bfloat16 faster than float32")
    return ProductPath(torch.bfloat16, f"{device_type}: bfloat16 as asked (not measured)")


def speedup_of(time_float32: Callable[[], float], time_bfloat16: Callable[[], float], repeat: int = _REPEAT) -> float:
    """float32 time / bfloat16 time, each the best of ``repeat`` interleaved timings (so
    that a slow moment of a shared machine hits both alike)."""
    t32 = t16 = float("inf")
    for _ in range(repeat):
        t32 = min(t32, time_float32())
        t16 = min(t16, time_bfloat16())
    return t32 / max(t16, 1e-12)


def _timer(a: torch.Tensor, b: torch.Tensor) -> Callable[[], float]:
    def run() -> float:
        t0 = time.perf_counter()
        torch.mm(a, b)
        return time.perf_counter() - t0

    return run


@functools.cache
def _measured_cpu_speedup() -> float:
    """float32 / bfloat16 time of a CPU product of the temporal step's shape (of a small
    one where bfloat16 is emulated). Own generator: the global RNG is untouched."""
    g = torch.Generator().manual_seed(0)
    speedup = float("inf")
    for rows, dim in (_SMALL, _LARGE):
        with torch.no_grad():
            a = torch.randn(rows, dim, generator=g)
            b = torch.randn(dim, rows, generator=g)
            a16, b16 = a.bfloat16(), b.bfloat16()
            torch.mm(a, b), torch.mm(a16, b16)  # warm-up (first-call costs)
            speedup = speedup_of(_timer(a, b), _timer(a16, b16))
        if speedup < _EMULATED:
            break
    return speedup


def bfloat16_products(device: torch.device | str) -> ProductPath:
    """Which products ``similarity_dtype="bfloat16"`` runs on ``device``, and why."""
    return choose_path(torch.device(device).type, _measured_cpu_speedup)


def product_dtype(requested: torch.dtype, device: torch.device) -> torch.dtype:
    """The dtype the products asked for as ``requested`` run in on ``device``."""
    if requested != torch.bfloat16:
        return requested
    return bfloat16_products(device).dtype
