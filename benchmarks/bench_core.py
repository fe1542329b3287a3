"""Time `compress` against the matrix-multiply floor of the paper's Eq. 10.

    python benchmarks/bench_core.py [--dims 896 3584] [--retentions 0.1 0.25 0.4] [--repeat 3]

For each synthetic 32 x 196 x dim video, similarity dtype (float32 and the reduced-
precision bfloat16 path by default) and retention, prints the time of
`llava_scissor.compress` beside the floor = Eq. 10 FLOPs (F*2*N^2*d + 2*S^2*d + 2*F*N*K*d)
divided by the float32 matrix-multiply rate measured in the same run, and their ratio.
Absolute times on shared machines are noise; the ratio is the figure to read. The
last column says whether the output is bitwise the float32 one.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _synthetic import synthetic_video  # noqa: E402

import llava_scissor  # noqa: E402


def best_of(fn, repeat: int, device: torch.device | None = None) -> float:
    """Best wall time of ``repeat`` calls after a warm-up; on a GPU, with the work finished."""

    def sync() -> None:
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()  # warm-up (and CUDA initialisation)
    times = []
    for _ in range(repeat):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return min(times)


def matmul_rate(
    dim: int, repeat: int, dtype: torch.dtype = torch.float32, device: torch.device | None = None, size: int = 2048
) -> float:
    """FLOP/s of a (size x dim) @ (dim x size) product in ``dtype``."""
    a = torch.randn(size, dim, dtype=dtype, device=device)
    b = torch.randn(dim, size, dtype=dtype, device=device)
    t = best_of(lambda: a @ b, repeat, device)
    return 2 * size * size * dim / t


def eq10_flops(frames: int, n: int, d: int, s: int, k: int) -> float:
    """SCC overhead FLOPs of the paper's Eq. 10."""
    return frames * 2 * n * n * d + 2 * s * s * d + 2 * frames * n * k * d


def grid_parser(doc: str | None) -> argparse.ArgumentParser:
    """Options shared by the benchmarks over synthetic frames x 196 x dim videos and retentions."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--dims", type=int, nargs="+", default=[896, 3584])
    p.add_argument("--retentions", type=float, nargs="+", default=[0.10, 0.25, 0.40])
    p.add_argument("--repeat", type=int, default=3)
    return p


def main(argv: list[str] | None = None) -> int:
    p = grid_parser(__doc__)
    p.add_argument(
        "--similarity-dtypes", nargs="+", default=["float32", "bfloat16"], help="float32, bfloat16, float64"
    )
    args = p.parse_args(argv)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    header = (
        f"{'dim':>5} {'sim':>8} {'retention':>9} {'S':>5} {'K':>5} {'GFLOP':>7} {'floor ms':>9} "
        f"{'time ms':>8} {'ratio':>6} {'= fp32':>6}"
    )
    print(header)
    print("-" * len(header))
    for dim in args.dims:
        x = synthetic_video(frames=args.frames, dim=dim)
        rate = matmul_rate(dim, args.repeat)
        for sim in args.similarity_dtypes:
            for r in args.retentions:
                cfg = llava_scissor.ScissorConfig(retention=r, similarity_dtype=sim)
                res = llava_scissor.compress(x, cfg)
                # Whether the output is bitwise the float32 one (bfloat16 must be).
                ref = llava_scissor.compress(x, cfg.replace(similarity_dtype="float32"))
                same = torch.equal(res.tokens, ref.tokens) and torch.equal(res.assignment, ref.assignment)
                t = best_of(lambda: llava_scissor.compress(x, cfg), args.repeat)
                # The rate is re-measured beside every row and the best one kept: on a
                # shared machine a slow moment must not lower the floor.
                rate = max(rate, matmul_rate(dim, args.repeat))
                flops = eq10_flops(args.frames, x.shape[1], dim, res.num_spatial_tokens, res.num_tokens)
                floor = flops / rate
                print(
                    f"{dim:>5} {sim:>8} {res.retention:>9.3f} {res.num_spatial_tokens:>5} {res.num_tokens:>5} "
                    f"{flops / 1e9:>7.1f} {floor * 1e3:>9.1f} {t * 1e3:>8.1f} {t / floor:>6.2f} {'yes' if same else 'NO':>6}"
                )
        print(f"      float32 matmul rate at dim {dim}: {rate / 1e9:.1f} GFLOP/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
