"""Would bfloat16 similarities with an exact float32 re-check pay on this machine?

    python benchmarks/bench_bf16_band.py [--dims 896 3584] [--retentions 0.1 0.25 0.4]

The design question behind the reduced-precision path: a bfloat16 product is faster,
but every pair whose bfloat16 similarity lies within the rigorous bfloat16 error bound
of a threshold has to be re-computed exactly. This prints, for the synthetic 32 x 196
x dim video of ``bench_core.py``:

* the bfloat16 / float32 matrix-multiply speed ratio measured here;
* the rigorous bound ``delta`` of a bfloat16 product of float32 unit vectors (inputs
  rounded to bfloat16, float32 accumulation, output rounded to bfloat16);
* per step (spatial, temporal) the pairs within ``delta`` of the step's threshold, the
  time of the step's product in float32 and in bfloat16, and the measured time of an
  exact (float64) re-check of that many pairs.

A bfloat16 path pays only where ``bf16 ms + recheck ms`` is well below ``fp32 ms``.
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _synthetic import synthetic_video  # noqa: E402
from bench_core import best_of, grid_parser  # noqa: E402

import llava_scissor  # noqa: E402
from llava_scissor.core.scc import normalize  # noqa: E402

_U_BF16 = 2.0**-9  # unit roundoff of bfloat16 (8 significand bits)
_U_FP32 = 2.0**-24


def bf16_bound(xn: torch.Tensor) -> float:
    """xn: [n, d] float32 unit vectors -> rigorous bound on |bf16 product - exact product|.

    x.y - xh.yh = (x - xh).y + xh.(y - yh): at most r * (|y| + |xh|) with r the largest
    rounding residual norm (Cauchy-Schwarz); plus the float32 accumulation of d products
    (d * u32 * |xh| |yh|) and the rounding of the output to bfloat16 (u_bf16 * |value|).
    """
    xh = xn.to(torch.bfloat16).float()
    r = float((xn - xh).norm(dim=-1).max())
    h = float(xh.norm(dim=-1).max())
    d = xn.shape[-1]
    acc = d * _U_FP32 / (1 - d * _U_FP32) * h * h
    return r * (1.0 + h) + acc + _U_BF16 * (h * h + acc)


def recheck_time(xn: torch.Tensor, pairs: int, repeat: int, chunk: int = 256) -> float:
    """Seconds to re-compute ``pairs`` similarities of xn [n, d] exactly (float64 dot products)."""
    if pairs == 0:
        return 0.0
    g = torch.Generator().manual_seed(0)
    i = torch.randint(0, xn.shape[0], (pairs,), generator=g)
    j = torch.randint(0, xn.shape[0], (pairs,), generator=g)

    def run() -> None:
        for s in range(0, pairs, chunk):
            a = xn[i[s : s + chunk]].double()
            b = xn[j[s : s + chunk]].double()
            torch.bmm(a[:, None, :], b[:, :, None])

    return best_of(run, repeat)


def main(argv: list[str] | None = None) -> int:
    args = grid_parser(__doc__).parse_args(argv)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    header = (
        f"{'dim':>5} {'retention':>9} {'step':>8} {'n':>5} {'threshold':>9} {'delta':>7} "
        f"{'band pairs':>10} {'band %':>7} {'fp32 ms':>8} {'bf16 ms':>8} {'recheck ms':>10}"
    )
    for dim in args.dims:
        a = torch.randn(2048, dim)
        b = torch.randn(dim, 2048)
        speed = best_of(lambda: a @ b, args.repeat) / best_of(lambda: a.bfloat16() @ b.bfloat16(), args.repeat)
        print(f"\ndim {dim}: bfloat16 products run {speed:.2f}x as fast as float32 here")
        print(header)
        print("-" * len(header))
        x = synthetic_video(frames=args.frames, dim=dim)
        for r in args.retentions:
            res = llava_scissor.compress(x, retention=r)
            steps = [
                ("spatial", normalize(x, torch.float32), res.spatial_threshold),
                ("temporal", normalize(res.spatial_tokens.float(), torch.float32)[None], res.temporal_threshold),
            ]
            for name, xn, t in steps:
                delta = bf16_bound(xn.reshape(-1, dim))
                W = xn @ xn.mT
                band = int(((W - t).abs() <= delta).sum() - ((xn.norm(dim=-1) ** 2 - t).abs() <= delta).sum()) // 2
                total = xn.shape[0] * xn.shape[1] * (xn.shape[1] - 1) // 2
                xb = xn.to(torch.bfloat16)
                fp32 = best_of(lambda: xn @ xn.mT, args.repeat)
                bf16 = best_of(lambda: xb @ xb.mT, args.repeat)
                rc = recheck_time(xn.reshape(-1, dim), band, args.repeat)
                print(
                    f"{dim:>5} {r:>9.2f} {name:>8} {xn.shape[-2]:>5} {t:>9.4f} {delta:>7.4f} {band:>10} "
                    f"{100 * band / total:>7.3f} {fp32 * 1e3:>8.1f} {bf16 * 1e3:>8.1f} {rc * 1e3:>10.1f}"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
