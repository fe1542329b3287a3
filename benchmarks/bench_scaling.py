"""Cost growth of `compress` with video length: time, floor ratio and extra memory.

    python benchmarks/bench_scaling.py [--frames 32 128 512] [--dim 896] [--retention 0.1 | --tau 0.9]
                                       [--generators mixed static] [--modes exact sampled] [--device cpu]
                                       [--repeat 2]

Each (generator, mode, frames) runs in a fresh subprocess, so that its peak memory can be
read: on a CPU the peak resident size (ru_maxrss) over the one right after the input was
built, on CUDA the peak allocated bytes over the input's. The time is the fastest of
``--repeat`` calls. "floor" is the paper's Eq. 10 FLOPs over the float32 matrix-multiply
rate measured in the same process; "ratio" is time / floor.

The growth exponent b of time ~ frames^b is fitted by least squares on log-log over all
lengths, and again over the last two; then the same for ratio x FLOPs, the time each
length would take at one float32 rate (a shared host's rate drifts by several per cent
between processes, which the time's exponent picks up), and for the FLOPs alone.
Default: a budget of 10 % on the corpus's ``mixed`` (regions from tight to loose) and
``static`` (near-duplicate frames) generators.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {here!r})
import torch
from _synthetic import CORPUS
from bench_core import CLOCK, matmul_rate, set_clock
from llava_scissor._timing import synchronize
from llava_scissor.flops import scc_overhead_flops
set_clock({clock!r}, {threads!r})
clock = CLOCK[{clock!r}]
import llava_scissor
device = torch.device({device!r})
cuda = device.type == "cuda"
if cuda:
    torch.backends.cuda.matmul.allow_tf32 = False
x = CORPUS[{generator!r}]({frames}, {dim}).to(device)
rate = matmul_rate({dim}, 3, device=device)
def sync():
    synchronize(device)
if cuda:
    sync()
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.max_memory_allocated(device)
else:
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
cfg = llava_scissor.ScissorConfig(**{kw!r})
llava_scissor.compress(x[:2], cfg)  # one-time costs (first calls of the kernels) apart
elapsed = float("inf")
for _ in range({repeat}):
    t0 = clock()
    r = llava_scissor.compress(x, cfg)
    sync()
    elapsed = min(elapsed, clock() - t0)
peak = torch.cuda.max_memory_allocated(device) if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
rate = max(rate, matmul_rate({dim}, 3, device=device))
flops = scc_overhead_flops({frames}, x.shape[1], r.num_spatial_tokens, r.num_tokens, {dim})
print(json.dumps(dict(time=elapsed, floor=flops / rate, flops=flops, S=r.num_spatial_tokens, K=r.num_tokens, extra=peak - base)))
"""


def run(
    generator: str, frames: int, dim: int, kw: dict, device: str, clock: str, threads: int | None, repeat: int
) -> dict:
    code = CHILD.format(
        here=HERE,
        generator=generator,
        frames=frames,
        dim=dim,
        kw=kw,
        device=device,
        clock=clock,
        threads=threads,
        repeat=repeat,
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def fit_exponent(xs: list[float], ys: list[float]) -> float:
    lx, ly = [math.log(v) for v in xs], [math.log(v) for v in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / sum((a - mx) ** 2 for a in lx)


def growth(frames: list[int], ys: list[float]) -> str:
    """ "frames^b; F1-F2: b2": the fitted exponent over all lengths and over the last two."""
    return f"frames^{fit_exponent(frames, ys):.2f}; {frames[-2]}-{frames[-1]}: {fit_exponent(frames[-2:], ys[-2:]):.2f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, nargs="+", default=[32, 128, 512])
    p.add_argument("--dim", type=int, default=896)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--retention", type=float, default=None, help="a budget (default 0.1)")
    mode.add_argument("--tau", type=float, default=None, help="threshold mode instead of a budget")
    p.add_argument("--generators", nargs="+", default=["mixed", "static"])
    p.add_argument("--modes", nargs="+", default=["exact"], choices=["exact", "sampled"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall", help="cpu: CPU time (with --threads 1)")
    p.add_argument("--repeat", type=int, default=2, help="calls per row; the fastest is reported")
    args = p.parse_args(argv)
    base = {"tau": args.tau} if args.tau is not None else {"retention": args.retention or 0.1}
    what = ", ".join(f"{k} = {v:g}" for k, v in base.items())
    threads = f"{args.threads} threads" if args.threads else "torch's threads"
    print(
        f"{what}, dim {args.dim}, device {args.device}, {threads}, {args.clock} time; extra = peak memory over the input's"
    )
    header = (
        f"{'generator':>11} {'mode':>7} {'frames':>6} {'S':>6} {'K':>6} {'time s':>8} {'floor s':>8} "
        f"{'ratio':>6} {'input MB':>9} {'extra MB':>9}"
    )
    print(header)
    print("-" * len(header))
    for generator in args.generators:
        for mode_name in args.modes:
            kw = dict(base, approximate=mode_name == "sampled", seed=0)
            times, at_rate, flops = [], [], []
            for f in args.frames:
                r = run(generator, f, args.dim, kw, args.device, args.clock, args.threads, args.repeat)
                times.append(r["time"])
                at_rate.append(r["time"] / r["floor"] * r["flops"])  # the time at one common rate
                flops.append(r["flops"])
                input_mb = f * 196 * args.dim * 4 / 2**20
                print(
                    f"{generator:>11} {mode_name:>7} {f:>6} {r['S']:>6} {r['K']:>6} {r['time']:>8.2f} "
                    f"{r['floor']:>8.2f} {r['time'] / r['floor']:>6.2f} {input_mb:>9.0f} {r['extra'] / 2**20:>9.0f}"
                )
            if len(args.frames) > 1:
                print(f"{'':>11} {mode_name:>7} time ~ {growth(args.frames, times)}")
                print(f"{'':>11} {'':>7} at one float32 rate ~ {growth(args.frames, at_rate)}")
                print(f"{'':>11} {'':>7} Eq. 10 FLOPs ~ {growth(args.frames, flops)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
