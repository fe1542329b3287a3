"""Sync-free against data-sized compression on one device: time, host syncs, floor.

    python benchmarks/bench_device.py [--device cuda] [--dims 3584] [--retentions 0.1 0.25 0.4] [--repeat 5]

For a synthetic 32 x 196 x dim video on the device (CUDA when there is one, else CPU),
prints per budget (and threshold mode, tau = 0.9) the time of `compress` with
``sync_free=True`` and ``False`` side by side, the host synchronizations of one call
(counted by CUDA's sync debug mode; "-" on a CPU, where a read waits for nothing),
the Eq. 10 floor from the float32 matrix-multiply rate measured on the device in the
same run (TF32 off), and whether both modes gave the same assignment.
"""

from __future__ import annotations

import os
import sys
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _synthetic import synthetic_video  # noqa: E402
from bench_core import best_of, grid_parser, matmul_rate, set_clock  # noqa: E402

import llava_scissor  # noqa: E402
from llava_scissor._timing import synchronize  # noqa: E402
from llava_scissor.flops import scc_overhead_flops  # noqa: E402


def count_syncs(fn, device: torch.device) -> str:
    """Host synchronizations of one call of fn, as CUDA's sync debug mode reports them."""
    if device.type != "cuda":
        return "-"
    synchronize(device)  # the work queued before fn is not counted
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return str(sum("synchroniz" in str(w.message).lower() for w in caught))


def main(argv: list[str] | None = None) -> int:
    p = grid_parser(__doc__)
    p.set_defaults(dims=[3584], repeat=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False  # the floor and the products in float32

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"torch {torch.__version__}, {name}, {set_clock(args.clock, args.threads)}")
    header = (
        f"{'dim':>5} {'mode':>10} {'S':>5} {'K':>5} {'floor ms':>9} {'free ms':>8} {'sized ms':>8} "
        f"{'free/floor':>10} {'syncs free':>10} {'syncs sized':>11} {'same':>5}"
    )
    print(header)
    print("-" * len(header))
    for dim in args.dims:
        x = synthetic_video(frames=args.frames, dim=dim).to(device)
        rate = matmul_rate(dim, args.repeat, device=device, size=4096)
        modes = [(f"r={r:g}", {"retention": r}) for r in args.retentions] + [("tau=0.9", {"tau": 0.9})]
        for label, kw in modes:
            free = llava_scissor.ScissorConfig(sync_free=True, **kw)
            sized = free.replace(sync_free=False)
            a, b = llava_scissor.compress(x, free), llava_scissor.compress(x, sized)
            same = torch.equal(a.assignment, b.assignment) and torch.equal(a.representatives, b.representatives)
            t_free = best_of(lambda: llava_scissor.compress(x, free), args.repeat, device)
            t_sized = best_of(lambda: llava_scissor.compress(x, sized), args.repeat, device)
            syncs_free = count_syncs(lambda: llava_scissor.compress(x, free), device)
            syncs_sized = count_syncs(lambda: llava_scissor.compress(x, sized), device)
            floor = scc_overhead_flops(args.frames, x.shape[1], a.num_spatial_tokens, a.num_tokens, dim) / rate
            print(
                f"{dim:>5} {label:>10} {a.num_spatial_tokens:>5} {a.num_tokens:>5} {floor * 1e3:>9.2f} "
                f"{t_free * 1e3:>8.2f} {t_sized * 1e3:>8.2f} {t_free / floor:>10.2f} {syncs_free:>10} "
                f"{syncs_sized:>11} {'yes' if same else 'NO':>5}"
            )
        print(f"      float32 matmul rate at dim {dim}: {rate / 1e9:.1f} GFLOP/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
