"""Where the time of the bfloat16 path goes: its products, and the exact re-check.

    python benchmarks/bench_bf16_band.py [--dims 896 3584] [--retentions 0.1 0.25 0.4]

The design question behind the reduced-precision path: a bfloat16 product is faster,
but every pair whose bfloat16 similarity lies within the rigorous bfloat16 error bound
of a threshold has to be re-computed exactly. This prints, for the synthetic 32 x 196
x dim video of ``bench_core.py``:

* the bfloat16 / float32 matrix-multiply speed ratio measured here;
* the library's rigorous bound ``delta`` on |bfloat16 product - canonical similarity|
  (``llava_scissor.core.engine.exact.error_bound``: inputs rounded to bfloat16, float32
  accumulation, output rounded to bfloat16);
* per step (spatial, temporal) the pairs within ``delta`` of the step's threshold, the
  time of the step's product in float32 and in bfloat16, and the measured time of the
  library's re-check of that many pairs: float32 dot products of the pairs first
  (``float32_similarity``, "narrow ms"), then canonical values (``canonical_similarity``,
  "canon ms") for those within the float32 bound (column "fp32 band"). (In budget mode
  the library re-checks a band of two bounds around two levels, so more pairs.)

The bfloat16 path pays only where ``bf16 ms + narrow ms + canon ms`` is well below
``fp32 ms``. The library takes bfloat16 products only for sets above 256 tokens (so not
for the spatial step's frames), where that is more often the case.
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _synthetic import synthetic_video  # noqa: E402
from bench_core import best_of, grid_parser  # noqa: E402

import llava_scissor  # noqa: E402
from llava_scissor.core.engine.exact import (  # noqa: E402
    canonical_similarity,
    error_bound,
    float32_similarity,
    product_units,
    unit_vectors,
)

def bf16_bound(x: torch.Tensor, level: float) -> float:
    """x: [n, d] raw tokens -> the library's bound on |bfloat16 product - canonical similarity| near level."""
    _, residual = product_units(unit_vectors(x, torch.float32), torch.bfloat16)
    bound = error_bound(x.shape[-1], torch.bfloat16, x.device, float(residual))
    return float(bound.at(torch.tensor([level]))[0])


def recheck_time(x: torch.Tensor, pairs: int, repeat: int, fn=canonical_similarity) -> float:
    """Seconds to compute ``fn`` (a re-check of the library) for ``pairs`` random pairs of x [n, d]."""
    if pairs == 0:
        return 0.0
    g = torch.Generator().manual_seed(0)
    i = torch.randint(0, x.shape[0], (pairs,), generator=g)
    j = torch.randint(0, x.shape[0], (pairs,), generator=g)
    return best_of(lambda: fn(x, i, x, j), repeat)


def main(argv: list[str] | None = None) -> int:
    args = grid_parser(__doc__).parse_args(argv)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    header = (
        f"{'dim':>5} {'retention':>9} {'step':>8} {'n':>5} {'threshold':>9} {'delta':>7} "
        f"{'band pairs':>10} {'band %':>7} {'fp32 band':>9} {'fp32 ms':>8} {'bf16 ms':>8} {'narrow ms':>9} "
        f"{'canon ms':>8}"
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
                ("spatial", x, res.spatial_threshold),
                ("temporal", res.spatial_tokens.float()[None], res.temporal_threshold),
            ]
            for name, raw, t in steps:
                xn = unit_vectors(raw, torch.float32)
                delta = bf16_bound(raw.reshape(-1, dim), t)
                W = xn @ xn.mT
                band = int(((W - t).abs() <= delta).sum() - ((xn.norm(dim=-1) ** 2 - t).abs() <= delta).sum()) // 2
                fine = float(error_bound(dim, torch.float32, x.device, 0.0).base)
                narrow = int(((W - t).abs() <= fine).sum() - ((xn.norm(dim=-1) ** 2 - t).abs() <= fine).sum()) // 2
                total = xn.shape[0] * xn.shape[1] * (xn.shape[1] - 1) // 2
                xb = xn.to(torch.bfloat16)
                fp32 = best_of(lambda: xn @ xn.mT, args.repeat)
                bf16 = best_of(lambda: xb @ xb.mT, args.repeat)
                nr = recheck_time(raw.reshape(-1, dim), band, args.repeat, float32_similarity)
                rc = recheck_time(raw.reshape(-1, dim), narrow, args.repeat)
                print(
                    f"{dim:>5} {r:>9.2f} {name:>8} {xn.shape[-2]:>5} {t:>9.4f} {delta:>7.4f} {band:>10} "
                    f"{100 * band / total:>7.3f} {narrow:>9} {fp32 * 1e3:>8.1f} {bf16 * 1e3:>8.1f} {nr * 1e3:>9.1f} "
                    f"{rc * 1e3:>8.1f}"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
