"""The library beside a straightforward implementation of the paper's algorithm.

    python benchmarks/bench_reference.py [--frames 32 256] [--dim 896] [--tau 0.9] [--generator mixed] [--repeat 3]

``_reference.py`` is the obvious implementation (dense cosine matrices, union-find over
the edge list, a dense merge matrix), written from the paper. Each (frames,
implementation) runs in a fresh process, on the same synthetic video in threshold mode:
its time (best of --repeat after a warm-up, at 256 frames and above one timed call) and
its extra peak resident memory (ru_maxrss after the call over ru_maxrss with the input
built). The ratio columns are reference / library. "same" says whether both found the
same S, K and partition of the original tokens (the library decides near-ties on exact
values, the reference on float32 products, so a rare near-tie may differ).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {here!r})
import torch
from _synthetic import CORPUS
from bench_core import CLOCK, set_clock
set_clock({clock!r}, {threads!r})
clock = CLOCK[{clock!r}]
x = CORPUS[{generator!r}]({frames}, {dim})
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if {impl!r} == "library":
    import llava_scissor
    def call():
        r = llava_scissor.compress(x, tau={tau})
        return r.assignment, r.num_spatial_tokens, r.num_tokens
else:
    from _reference import compress_dense
    def call():
        tokens, assignment, s = compress_dense(x, {tau})
        return assignment, s, tokens.shape[0]
times = []
for _ in range({calls}):
    t0 = clock()
    assignment, s, k = call()
    times.append(clock() - t0)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
torch.save(assignment, {out!r})
best = min(times[1:]) if len(times) > 1 else times[0]
print(json.dumps(dict(time=best, S=s, K=k, extra_mb=(peak - base) / 1024)))
"""


def run(impl: str, frames: int, args: argparse.Namespace, calls: int, out: str) -> dict:
    code = CHILD.format(
        here=HERE,
        impl=impl,
        frames=frames,
        dim=args.dim,
        tau=args.tau,
        generator=args.generator,
        calls=calls,
        out=out,
        clock=args.clock,
        threads=args.threads,
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def same_partition(a, b) -> bool:
    """Whether two assignments [m] split the tokens alike (up to the labels' names)."""
    import torch

    pairs = torch.unique(a * (int(b.max()) + 1) + b).numel()
    return pairs == torch.unique(a).numel() == torch.unique(b).numel()


def main(argv: list[str] | None = None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, nargs="+", default=[32, 256])
    p.add_argument("--dim", type=int, default=896)
    p.add_argument("--tau", type=float, default=0.9)
    p.add_argument("--generator", default="mixed")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall", help="cpu: CPU time (with --threads 1)")
    args = p.parse_args(argv)
    threads = f"{args.threads} threads" if args.threads else "torch's threads"
    print(f"threshold mode, tau = {args.tau}, generator {args.generator}, dim {args.dim}, {threads}, {args.clock} time")
    header = (
        f"{'frames':>6} {'S':>6} {'K':>6} {'lib s':>7} {'ref s':>7} {'time ref/lib':>12} "
        f"{'lib MB':>7} {'ref MB':>7} {'memory ref/lib':>14} {'same':>5}"
    )
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as tmp:
        for f in args.frames:
            calls = 1 + args.repeat if f < 256 else 1
            res, parts = {}, {}
            for impl in ("library", "reference"):
                out = os.path.join(tmp, f"{impl}.pt")
                res[impl] = run(impl, f, args, calls, out)
                parts[impl] = torch.load(out)
            lib, ref = res["library"], res["reference"]
            same = (lib["S"], lib["K"]) == (ref["S"], ref["K"]) and same_partition(parts["library"], parts["reference"])
            print(
                f"{f:>6} {lib['S']:>6} {lib['K']:>6} {lib['time']:>7.2f} {ref['time']:>7.2f} "
                f"{ref['time'] / lib['time']:>12.2f} {lib['extra_mb']:>7.0f} {ref['extra_mb']:>7.0f} "
                f"{ref['extra_mb'] / max(lib['extra_mb'], 1.0):>14.1f} {'yes' if same else 'NO':>5}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
