"""Time `compress` against the matrix-multiply floor of the paper's Eq. 10, over a corpus.

    python benchmarks/bench_core.py [--dims 896 3584] [--retentions 0.1 0.25 0.4] [--taus 0.9 0.8]
                                    [--generators uniform mixed ...] [--similarity-dtypes float32 bfloat16]
                                    [--repeat 3]

For every synthetic 32 x 196 x dim video of the corpus (``_synthetic.CORPUS``), similarity
dtype and mode (a retention, or a tau), times `llava_scissor.compress` (best of --repeat
after a warm-up) and divides by the video's floor = Eq. 10 FLOPs (F*2*N^2*d + 2*S^2*d +
2*F*N*K*d) over the float32 matrix-multiply rate measured in the same run. One row per
(dim, dtype, mode): the median and the worst ratio over the corpus, the generator of the
worst, and the spread of S and K over the corpus (a budget fixes them; a tau does not).
The column "= fp32" says whether every output is bitwise the float32 one; "/ fp32" is, for
the other dtypes, the largest ratio of a video's time to its float32 time (above 1: slower
than float32 products on some video), the two timed in turn, call by call; "A/A" is the
same measurement of float32 against float32 (a third call in turn), the largest ratio
either way: the noise a "/ fp32" above 1 is to be read against.

bfloat16 rows are timed where this machine takes bfloat16 products (see the header line);
elsewhere ``similarity_dtype="bfloat16"`` runs the float32 products, and one row compares
the two dtypes' times on one video instead. ``--similarity-dtypes float32 bfloat16`` times
both everywhere.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _synthetic import CORPUS

import llava_scissor
from llava_scissor._timing import synchronize
from llava_scissor.core import bfloat16_products
from llava_scissor.flops import scc_overhead_flops

# The clock of best_of: wall time, or this process's CPU time (``--clock cpu``: with
# ``--threads 1`` a shared machine's other work then does not count, where wall time
# counts the moments this process waited for a core).
CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = CLOCK["wall"]


def best_of(fn, repeat: int, device: torch.device | None = None, warm: bool = True) -> float:
    """Best time of ``repeat`` calls after a warm-up (``warm``: the caller made one);
    on a GPU, with the work finished."""

    def sync() -> None:
        if device is not None:
            synchronize(device)

    if warm:
        fn()  # warm-up (and CUDA initialisation)
    times = []
    for _ in range(repeat):
        sync()
        t0 = _clock()
        fn()
        sync()
        times.append(_clock() - t0)
    return min(times)


def best_interleaved(fns, repeat: int, device: torch.device | None = None) -> list[float]:
    """Best time of each of ``fns`` over ``repeat`` rounds that call each once, in turn
    (after one warm-up round): a slow moment of a shared machine hits them alike, so
    their ratios are side by side."""
    best = [float("inf")] * len(fns)
    for r in range(repeat + 1):
        for k, fn in enumerate(fns):
            t = best_of(fn, 1, device, warm=False)
            if r:
                best[k] = min(best[k], t)
    return best


def set_clock(clock: str, threads: int | None) -> str:
    """Use ``clock`` ("wall" or "cpu") in best_of and ``threads`` torch threads; -> a header line."""
    global _clock
    if threads:
        torch.set_num_threads(threads)
    _clock = CLOCK[clock]
    return f"{torch.get_num_threads()} threads, {clock} time"


def matmul_rate(
    dim: int, repeat: int, dtype: torch.dtype = torch.float32, device: torch.device | None = None, size: int = 2048
) -> float:
    """FLOP/s of a (size x dim) @ (dim x size) product in ``dtype``."""
    a = torch.randn(size, dim, dtype=dtype, device=device)
    b = torch.randn(dim, size, dtype=dtype, device=device)
    t = best_of(lambda: a @ b, repeat, device)
    return 2 * size * size * dim / t


def grid_parser(doc: str | None) -> argparse.ArgumentParser:
    """Options shared by the benchmarks over synthetic frames x 196 x dim videos and retentions."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--dims", type=int, nargs="+", default=[896, 3584])
    p.add_argument("--retentions", type=float, nargs="+", default=[0.10, 0.25, 0.40])
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument(
        "--clock",
        choices=sorted(CLOCK),
        default="wall",
        help="wall (default), or cpu: this process's CPU time (for a shared machine, with --threads 1)",
    )
    return p


def huge_pages() -> str:
    """Whether this process's large CPU buffers are backed by transparent huge pages, and why.

    torch backs CPU buffers of 2 MB and more with them when ``THP_MEM_ALLOC_ENABLE=1`` is
    set before it starts and the kernel's THP mode is ``madvise`` or ``always``; in
    ``always`` mode the kernel may back large buffers on its own. A fresh 4 KB page costs a
    fault on first touch, a fresh huge page one fault per 512 of them.
    """
    env = os.environ.get("THP_MEM_ALLOC_ENABLE")
    try:
        found = re.search(r"\[(\w+)\]", Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text())
        kernel = found.group(1) if found else "unknown"
    except OSError:
        kernel = "unknown"
    on = kernel == "always" or (kernel == "madvise" and env == "1")
    return f"huge pages {'on' if on else 'off'} (THP_MEM_ALLOC_ENABLE={env or 'unset'}, kernel THP {kernel})"


def machine_line(device: torch.device) -> str:
    """Which products ``similarity_dtype="bfloat16"`` takes on ``device``, and why."""
    path = bfloat16_products(device)
    return f"similarity_dtype='bfloat16' on {device.type}: {path.dtype} products ({path.reason})"


def span(values: list[int]) -> str:
    lo, hi = min(values), max(values)
    return f"{lo}" if lo == hi else f"{lo}-{hi}"


def main(argv: list[str] | None = None) -> int:
    p = grid_parser(__doc__)
    p.add_argument("--taus", type=float, nargs="+", default=[0.9, 0.8])
    p.add_argument("--generators", nargs="+", default=list(CORPUS), choices=list(CORPUS))
    p.add_argument(
        "--similarity-dtypes",
        nargs="+",
        default=None,
        help="float32, bfloat16, float64 (default: float32, and bfloat16 where its products run here)",
    )
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    fast_bf16 = bfloat16_products(device).dtype == torch.bfloat16
    dtypes = args.similarity_dtypes or (["float32", "bfloat16"] if fast_bf16 else ["float32"])

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    capability = torch.backends.cpu.get_cpu_capability()
    clock = set_clock(args.clock, args.threads)
    print(f"torch {torch.__version__}, {clock}, {name} (cpu capability {capability}), {huge_pages()}")
    print(machine_line(device))
    print(f"corpus: {', '.join(args.generators)}; {args.frames} x 196 x dim; best of {args.repeat}")
    header = (
        f"{'dim':>5} {'sim':>8} {'mode':>8} {'S':>9} {'K':>9} {'median':>7} {'worst':>6} {'worst on':>11} "
        f"{'= fp32':>6} {'/ fp32':>6} {'A/A':>5}"
    )
    print(header)
    print("-" * len(header))
    modes = [(f"r={r:g}", {"retention": r}) for r in args.retentions] + [(f"tau={t:g}", {"tau": t}) for t in args.taus]
    for dim in args.dims:
        videos = {g: CORPUS[g](args.frames, dim).to(device) for g in args.generators}
        rate = matmul_rate(dim, args.repeat, device=device)
        outputs: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}  # float32 results
        for sim in sorted(dtypes, key=lambda s: s != "float32"):
            for label, kw in modes:
                cfg = llava_scissor.ScissorConfig(similarity_dtype=sim, **kw)
                ratios: dict[str, float] = {}
                s_sizes, k_sizes, same, slower, noise = [], [], True, 0.0, 0.0
                # The rate is re-measured beside every row and the best one kept: on a
                # shared machine a slow moment must not lower the floor.
                rate = max(rate, matmul_rate(dim, args.repeat, device=device))
                for g, x in videos.items():
                    res = llava_scissor.compress(x, cfg)  # also the warm-up
                    if (g, label) not in outputs:
                        ref = (
                            res
                            if sim == "float32"
                            else llava_scissor.compress(x, cfg.replace(similarity_dtype="float32"))
                        )
                        outputs[g, label] = (ref.tokens, ref.assignment)
                    tokens, assignment = outputs[g, label]
                    same &= torch.equal(res.tokens, tokens) and torch.equal(res.assignment, assignment)
                    fns = [lambda x=x, cfg=cfg: llava_scissor.compress(x, cfg)]
                    if sim != "float32":
                        c32 = cfg.replace(similarity_dtype="float32")
                        fns += [lambda x=x, c32=c32: llava_scissor.compress(x, c32)] * 2
                    t, *t32 = best_interleaved(fns, args.repeat, device)
                    s, k = res.num_spatial_tokens, res.num_tokens
                    s_sizes.append(s)
                    k_sizes.append(k)
                    ratios[g] = t / (scc_overhead_flops(args.frames, x.shape[1], s, k, dim) / rate)
                    if t32:
                        slower = max(slower, t / t32[0])
                        noise = max(noise, t32[0] / t32[1], t32[1] / t32[0])
                worst = max(ratios, key=ratios.__getitem__)
                print(
                    f"{dim:>5} {sim:>8} {label:>8} {span(s_sizes):>9} {span(k_sizes):>9} "
                    f"{statistics.median(ratios.values()):>7.2f} {ratios[worst]:>6.2f} {worst:>11} "
                    f"{'yes' if same else 'NO':>6} {'-' if sim == 'float32' or not slower else f'{slower:.2f}':>6} "
                    f"{'-' if not noise else f'{noise:.2f}':>5}"
                )
        print(f"      float32 matmul rate at dim {dim}: {rate / 1e9:.1f} GFLOP/s")
        if "bfloat16" not in dtypes:
            # bfloat16 runs the float32 products here: show that it costs the same.
            x, cfg = videos[args.generators[0]], llava_scissor.ScissorConfig(retention=args.retentions[0])
            c16 = cfg.replace(similarity_dtype="bfloat16")
            t32, t16 = best_interleaved(
                [lambda: llava_scissor.compress(x, cfg), lambda: llava_scissor.compress(x, c16)], args.repeat, device
            )
            print(f"      bfloat16 / float32 time at dim {dim}, r={args.retentions[0]:g}: {t16 / t32:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
