"""Samples per second of the lmms-eval plugin at batch size 1 vs 4 (or any sizes).

The plugin (``llava_scissor.integrations.lmms_eval``) answers ``generate_until`` requests
the way lmms-eval hands them over, on a tiny random LLaVA-OneVision model (the one the
tests build, ``tests/hf_models.py``) and generated videos; nothing is downloaded. Every
request reads its video, encodes, compresses and generates, so the figure covers what a
user's evaluation pays per sample on this machine. The answers of every batch size are
checked to be those of the first (greedy).

Printed: seconds and samples/s per batch size (best of ``--repeat`` runs after a warm-up
run), and each batch size's samples/s over the first one's.

Run (needs lmms-eval and PyAV)::

    python benchmarks/bench_eval.py                         # batch 1 vs 4, 16 requests
    python benchmarks/bench_eval.py --batch-sizes 1 2 4 8 --requests 32 --method visionzip
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

QUESTIONS = ["what happens in the video", "describe the video", "what is shown", "is the cat left or right"]


def _write_video(path: Path, frames: int, seed: int, size: int = 84) -> Path:
    import av

    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=4)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for _ in range(frames):
            array = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _requests(videos: list[Path], max_new_tokens: int) -> tuple[dict[int, dict[str, str]], list[Any]]:
    from lmms_eval.api.instance import Instance

    docs = {i: {"video": str(v)} for i, v in enumerate(videos)}
    gen = {"max_new_tokens": max_new_tokens, "until": ["<|im_end|>"]}
    reqs = [
        Instance(
            request_type="generate_until",
            doc={},
            idx=0,
            metadata={"task": "bench", "doc_id": i, "repeats": 1},
            arguments=(QUESTIONS[i % len(QUESTIONS)], dict(gen), lambda d: [d["video"]], i, "bench", "test"),
        )
        for i in docs
    ]
    return docs, reqs


def run(args: argparse.Namespace) -> None:
    from hf_models import write_tiny_model

    from llava_scissor.integrations.lmms_eval import model_class

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model_dir = write_tiny_model("llava_onevision", folder / "model", seed=2)
        videos = [_write_video(folder / f"clip{i}.mp4", args.frames, seed=i) for i in range(args.requests)]
        extra: dict[str, Any] = {} if args.method == "none" else {"retention": args.retention}
        print(
            f"plugin on a tiny LLaVA-OneVision (tests/hf_models.py), method={args.method} {extra}, "
            f"{args.requests} requests, {args.frames} frames, max_new_tokens={args.max_new_tokens}, "
            f"torch threads={torch.get_num_threads()}"
        )
        print(f"{'batch':>5} {'seconds':>8} {'samples/s':>10} {'ratio':>6}")
        reference = None
        first_rate = None
        for bs in args.batch_sizes:
            lm = model_class()(
                pretrained=str(model_dir),
                method=args.method,
                max_frames_num=args.frames,
                device=args.device,
                dtype="float32",
                batch_size=bs,
                sidecar="none",
                **extra,
            )
            docs, reqs = _requests(videos, args.max_new_tokens)
            lm.task_dict = {"bench": {"test": docs}}
            lm.generate_until(reqs)  # warm-up
            best = float("inf")
            texts: list[str] = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                texts = [r.text for r in lm.generate_until(reqs)]
                best = min(best, time.perf_counter() - start)
            if reference is None:
                reference = texts
            elif texts != reference:
                raise SystemExit(f"batch size {bs} changed greedy answers")
            rate = args.requests / best
            first_rate = first_rate or rate
            print(f"{bs:>5} {best:>8.3f} {rate:>10.2f} {rate / first_rate:>6.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--method", default="scissor")
    parser.add_argument("--retention", type=float, default=0.25)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
