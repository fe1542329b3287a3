"""Cost growth of `compress` with video length: time and peak memory, exact vs sampled.

    python benchmarks/bench_scaling.py [--frames 32 128 512 1024] [--dim 896] [--retention R] [--modes exact sampled]

Each (frames, mode) runs in a fresh subprocess so that its peak resident memory can be
read (ru_maxrss) and compared with the resident size right after the input was built;
the difference is the extra peak memory of compression. Threshold mode (tau = 0.9) by
default, a budget with --retention, on a synthetic video whose regions have varied
noise (so the spatial step keeps ~15 % at tau = 0.9).
The growth exponent b of time ~ frames^b is fitted by least squares on log-log.
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
from _synthetic import synthetic_video
import llava_scissor
x = synthetic_video(frames={frames}, dim={dim}, noise=(0.2, 0.4))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
r = llava_scissor.compress(x, tau=0.9, retention={retention}, approximate={approximate}, seed=0)
elapsed = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(dict(time=elapsed, S=r.num_spatial_tokens, K=r.num_tokens, base_kb=base, peak_kb=peak)))
"""


def run(frames: int, dim: int, approximate: bool, retention: float | None = None) -> dict:
    code = CHILD.format(here=HERE, frames=frames, dim=dim, approximate=approximate, retention=retention)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def fit_exponent(xs: list[float], ys: list[float]) -> float:
    lx, ly = [math.log(v) for v in xs], [math.log(v) for v in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, nargs="+", default=[32, 128, 512, 1024])
    p.add_argument("--dim", type=int, default=896)
    p.add_argument("--retention", type=float, default=None, help="a budget instead of tau = 0.9")
    p.add_argument("--modes", nargs="+", default=["exact", "sampled"], choices=["exact", "sampled"])
    args = p.parse_args(argv)
    header = f"{'frames':>6} {'mode':>8} {'tokens':>8} {'S':>6} {'K':>6} {'time s':>8} {'input MB':>9} {'extra peak MB':>14}"
    print(header)
    print("-" * len(header))
    for mode in args.modes:
        approximate = mode == "sampled"
        times = []
        for f in args.frames:
            r = run(f, args.dim, approximate, args.retention)
            times.append(r["time"])
            input_mb = f * 196 * args.dim * 4 / 2**20
            extra = (r["peak_kb"] - r["base_kb"]) / 1024
            print(f"{f:>6} {mode:>8} {f * 196:>8} {r['S']:>6} {r['K']:>6} {r['time']:>8.2f} {input_mb:>9.0f} {extra:>14.0f}")
        if len(args.frames) > 1:
            print(f"{'':>6} {mode:>8} time ~ frames^{fit_exponent(args.frames, times):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
