"""Render docs/sample.mp4: a short cartoon video made only of drawn shapes (no third-party images).

Scene 1 (0-5 s, day): a red ball bounces across a meadow under a blue sky while a
cloud drifts by and the sun shines. Scene 2 (5-10 s, night): a yellow car drives along
a road under the moon and stars. A hard cut between the two scenes gives the
temporal step of the compression something to find.

    python scripts/make_sample_video.py [-o docs/sample.mp4] [--seconds 10] [--fps 12]

Needs PyAV, numpy and Pillow (``pip install 'llava-scissor[video]'``). The drawing
is deterministic; the encoded bytes depend on the libx264 inside PyAV.
"""

from __future__ import annotations

import argparse
import math
import os

import av
import numpy as np
from PIL import Image, ImageDraw

WIDTH, HEIGHT = 384, 288
SCALE = 2  # draw at 2x and downsample: smooth edges without an anti-aliasing renderer


def _canvas(
    top: tuple[int, int, int], bottom: tuple[int, int, int], horizon: int
) -> tuple[Image.Image, ImageDraw.ImageDraw, int]:
    """A frame at drawing scale with a sky graded from ``top`` to ``bottom`` down to the
    horizon (``horizon`` in output pixels); returns (image, its drawer, horizon scaled)."""
    img = Image.new("RGB", (WIDTH * SCALE, HEIGHT * SCALE))
    draw = ImageDraw.Draw(img)
    horizon *= SCALE
    for y in range(horizon):
        t = y / max(horizon - 1, 1)
        color = tuple(int(round(a + (b - a) * t)) for a, b in zip(top, bottom))
        draw.line((0, y, WIDTH * SCALE, y), fill=color)
    return img, draw, horizon


def _day(t: float) -> Image.Image:
    """Day scene at time t seconds from its start."""
    s = SCALE
    img, d, horizon = _canvas((90, 150, 230), (185, 215, 245), 190)
    d.ellipse((300 * s, 24 * s, 350 * s, 74 * s), fill=(255, 214, 70))  # sun
    cx = (40 + 28 * t) * s  # cloud drifts right
    for dx, dy, r in ((0, 0, 22), (24, -10, 26), (50, 0, 20), (26, 8, 20)):
        d.ellipse((cx + (dx - r) * s, (60 + dy - r) * s, cx + (dx + r) * s, (60 + dy + r) * s), fill=(250, 250, 252))
    d.rectangle((0, horizon, WIDTH * s, HEIGHT * s), fill=(88, 170, 72))  # meadow
    for i in range(14):  # tufts of grass
        gx = (i * 29 + 7) % WIDTH
        gy = 205 + (i * 37) % 70
        d.polygon([((gx - 4) * s, gy * s), (gx * s, (gy - 12) * s), ((gx + 4) * s, gy * s)], fill=(60, 135, 52))
    # The ball: moves right, bounces with |sin|, squashes a little at the ground.
    bx = 30 + 64 * t
    height = abs(math.sin(t * math.pi * 1.2)) * 110
    r = 22
    by = 232 - height
    squash = 1.0 if height > 6 else 0.85
    d.ellipse(((bx - 12) * s, 238 * s, (bx + 12) * s, 246 * s), fill=(62, 120, 52))  # shadow
    d.ellipse(
        ((bx - r / squash) * s, (by - r * squash) * s, (bx + r / squash) * s, (by + r * squash) * s), fill=(220, 40, 40)
    )
    d.ellipse(((bx - 9) * s, (by - 13) * s, (bx - 1) * s, (by - 6) * s), fill=(250, 150, 150))  # highlight
    return img


def _night(t: float) -> Image.Image:
    """Night scene at time t seconds from its start."""
    s = SCALE
    img, d, horizon = _canvas((12, 18, 48), (40, 52, 100), 170)
    rng = np.random.default_rng(7)  # the same stars in every frame
    for x, y in zip(rng.integers(0, WIDTH, 40), rng.integers(0, 160, 40)):
        twinkle = 1 + int((x + y + int(t * 6)) % 3 == 0)
        d.ellipse(((x - twinkle) * s, (y - twinkle) * s, (x + twinkle) * s, (y + twinkle) * s), fill=(240, 240, 210))
    d.ellipse((40 * s, 30 * s, 86 * s, 76 * s), fill=(245, 240, 215))  # moon
    d.ellipse((56 * s, 24 * s, 100 * s, 68 * s), fill=(20, 28, 63))  # crescent cut
    d.rectangle((0, horizon, WIDTH * s, HEIGHT * s), fill=(30, 60, 40))  # dark grass
    d.rectangle((0, 205 * s, WIDTH * s, 255 * s), fill=(60, 60, 66))  # road
    for i in range(8):
        lx = (i * 56 - int(t * 40)) % (WIDTH + 56) - 28
        d.rectangle((lx * s, 228 * s, (lx + 26) * s, 232 * s), fill=(230, 230, 230))
    cx = -70 + 70 * t  # the car drives right
    d.rectangle((cx * s, 200 * s, (cx + 96) * s, 228 * s), fill=(240, 200, 30))  # body
    d.polygon(
        [((cx + 20) * s, 200 * s), ((cx + 34) * s, 180 * s), ((cx + 70) * s, 180 * s), ((cx + 84) * s, 200 * s)],
        fill=(230, 185, 20),
    )
    d.rectangle(((cx + 38) * s, 184 * s, (cx + 66) * s, 198 * s), fill=(150, 200, 235))  # window
    for wx in (cx + 20, cx + 76):
        d.ellipse(((wx - 11) * s, 218 * s, (wx + 11) * s, 240 * s), fill=(20, 20, 20))
    d.polygon(
        [((cx + 96) * s, 206 * s), ((cx + 150) * s, 196 * s), ((cx + 150) * s, 226 * s)], fill=(250, 240, 170)
    )  # headlight
    return img


def render(seconds: float, fps: int) -> list[np.ndarray]:
    """[T] frames of [HEIGHT, WIDTH, 3] uint8: first half day, second half night."""
    frames = []
    count = int(round(seconds * fps))
    half = count // 2
    for i in range(count):
        t = i / fps
        img = _day(t) if i < half else _night(t - half / fps)
        frames.append(np.asarray(img.resize((WIDTH, HEIGHT), Image.Resampling.LANCZOS)))
    return frames


def write(path: str, frames: list[np.ndarray], fps: int, crf: int) -> None:
    with av.open(path, "w", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = WIDTH, HEIGHT
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "slow"}
        stream.codec_context.gop_size = 2 * fps
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default=os.path.join(here, "..", "docs", "sample.mp4"))
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--fps", type=int, default=12)
    parser.add_argument("--crf", type=int, default=26)
    args = parser.parse_args()
    frames = render(args.seconds, args.fps)
    write(args.output, frames, args.fps, args.crf)
    print(f"wrote {os.path.normpath(args.output)}: {len(frames)} frames, {os.path.getsize(args.output) / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
