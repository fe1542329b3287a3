"""Where one `compress` call's time goes: a cProfile of it on one thread, in CPU time.

    python benchmarks/profile_core.py [--generator mixed] [--dim 896] [--retention 0.1 | --tau 0.9]
                                      [--similarity-dtype float32] [--rows 25]

Prints the call's CPU time beside its Eq. 10 floor (float32 rate measured in CPU time on one
thread, the same way); the minor page faults of one call (fresh pages the C library hands
out: ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` in the environment change how
many); the time spent in the matrix products themselves (torch's profiler: the mm / bmm
kernels' own time, best of 3) and the rest of the call's time; then the functions of the
call by cumulative time.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _synthetic import CORPUS
from bench_core import best_of, huge_pages, matmul_rate, set_clock

import llava_scissor
from llava_scissor.flops import scc_overhead_flops


def product_time(fn) -> float:
    """Seconds one call of fn spends in the matrix-product kernels (their own time in torch's profiler)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as p:
        fn()
    return (
        sum(e.self_cpu_time_total for e in p.key_averages() if e.key in ("aten::mm", "aten::bmm", "aten::addmm")) / 1e6
    )


def minor_faults(fn) -> int:
    """Minor page faults of this process during one call of fn (first touches of fresh pages)."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    fn()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generator", default="mixed", choices=list(CORPUS))
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--dim", type=int, default=896)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--retention", type=float, default=None, help="a budget (default 0.1)")
    mode.add_argument("--tau", type=float, default=None)
    p.add_argument("--similarity-dtype", default="float32")
    p.add_argument("--rows", type=int, default=25)
    args = p.parse_args(argv)
    set_clock("cpu", 1)
    kw = {"tau": args.tau} if args.tau is not None else {"retention": args.retention or 0.1}
    x = CORPUS[args.generator](args.frames, args.dim)
    cfg = llava_scissor.ScissorConfig(similarity_dtype=args.similarity_dtype, **kw)
    res = llava_scissor.compress(x, cfg)
    t = best_of(lambda: llava_scissor.compress(x, cfg), 3, warm=False)
    rate = matmul_rate(args.dim, 3)
    floor = scc_overhead_flops(args.frames, x.shape[1], res.num_spatial_tokens, res.num_tokens, args.dim) / rate
    print(
        f"{args.generator}, {args.frames} x 196 x {args.dim}, {kw}, {args.similarity_dtype}: "
        f"S = {res.num_spatial_tokens}, K = {res.num_tokens}; one thread, CPU time: "
        f"{t * 1e3:.0f} ms, floor {floor * 1e3:.0f} ms ({rate / 1e9:.0f} GFLOP/s), ratio {t / floor:.2f}; {huge_pages()}"
    )
    # Fresh pages of the call's buffers (the C library maps large ones anew, or returns a
    # freed heap top to the system) are faulted in on first touch: time no product shows.
    faults = minor_faults(lambda: llava_scissor.compress(x, cfg))
    print(
        f"minor page faults in one call: {faults} ({faults * resource.getpagesize() / 2**20:.1f} MB of fresh pages); "
        f"MALLOC_MMAP_THRESHOLD_={os.environ.get('MALLOC_MMAP_THRESHOLD_', 'unset')}, "
        f"MALLOC_TRIM_THRESHOLD_={os.environ.get('MALLOC_TRIM_THRESHOLD_', 'unset')}"
    )
    # The profiler's own cost per kernel inflates the many small ones, not the few products:
    # the rest is the call's time less the products.
    products = min(product_time(lambda: llava_scissor.compress(x, cfg)) for _ in range(3))
    print(
        f"matrix products {products * 1e3:.0f} ms ({products / floor:.2f} x the floor), "
        f"everything else {(t - products) * 1e3:.0f} ms ({(t - products) / floor:.2f} x the floor)"
    )
    prof = cProfile.Profile(time.process_time)
    prof.enable()
    llava_scissor.compress(x, cfg)
    prof.disable()
    pstats.Stats(prof).sort_stats("cumulative").print_stats(args.rows)
    return 0


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    raise SystemExit(main())
