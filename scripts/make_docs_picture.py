"""Make docs/visualize.png from docs/sample.mp4 without any model download.

The tokens are stand-ins for a vision tower's: each frame is cut into the same
14 x 14 grid of cells that LLaVA-OneVision gives after pooling (196 tokens per frame),
and a cell's token is its 8 x 8 RGB pixels, centred (192 numbers). The picture is then
drawn by the real command line (``llava-scissor visualize --features``), the same code
that draws a model's tokens. With the model instead (downloads about 2 GB once):

    llava-scissor visualize docs/sample.mp4 --frames 16 --retention 0.1 -o docs/visualize.png

    python scripts/make_docs_picture.py [--frames 16] [--retention 0.1] [-o docs/visualize.png]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import torch

from llava_scissor.cli import main as cli
from llava_scissor.video import read_video

GRID = 14  # tokens per side after LLaVA-OneVision's pooling
CELL = 8  # pixels per token side in the stand-in features


def pixel_tokens(frames: torch.Tensor) -> torch.Tensor:
    """frames: [F, H, W, 3] uint8 -> [F, GRID*GRID, CELL*CELL*3] centred pixel patches."""
    x = frames.permute(0, 3, 1, 2).float() / 255  # [F, 3, H, W]
    x = torch.nn.functional.interpolate(x, size=(GRID * CELL, GRID * CELL), mode="area")  # [F, 3, 112, 112]
    patches = x.unfold(2, CELL, CELL).unfold(3, CELL, CELL)  # [F, 3, 14, 14, 8, 8]
    tokens = patches.permute(0, 2, 3, 1, 4, 5).reshape(x.shape[0], GRID * GRID, -1)  # [F, 196, 192]
    return tokens - 0.5


def main() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    docs = os.path.normpath(os.path.join(here, "..", "docs"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", default=os.path.join(docs, "sample.mp4"))
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--retention", default="0.1")
    parser.add_argument("-o", "--output", default=os.path.join(docs, "visualize.png"))
    args = parser.parse_args()
    from safetensors.torch import save_file

    clip = read_video(args.video, args.frames)
    tokens = pixel_tokens(torch.from_numpy(clip.frames)).contiguous()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "pixel_tokens.safetensors")
        save_file({"features": tokens}, path)
        return cli(
            [
                "visualize",
                args.video,
                "--features",
                path,
                "--retention",
                args.retention,
                "--title",
                "LLaVA-Scissor on docs/sample.mp4 (stand-in tokens: 8x8 pixel patches, 196 per frame)",
                "-o",
                args.output,
                "--quiet",
            ]
        )


if __name__ == "__main__":
    sys.exit(main())
