"""Pictures: tints follow the final components, borders sit between them, files load."""

from __future__ import annotations

import base64
import re

import numpy as np
import pytest
import torch

PIL = pytest.importorskip("PIL.Image")

import llava_scissor  # noqa: E402
from llava_scissor import ScissorError  # noqa: E402
from llava_scissor.viz import component_colors, frame_labels, render, render_frames, save, spatial_counts  # noqa: E402


def halves(frames: int = 2, side: int = 4, dim: int = 8) -> torch.Tensor:
    """[frames, side*side, dim]: left half of every frame is e0, right half e1."""
    feats = torch.zeros(frames, side, side, dim)
    feats[:, :, : side // 2, 0] = 1.0
    feats[:, :, side // 2 :, 1] = 1.0
    return feats.reshape(frames, side * side, dim)


def grey(frames: int = 2, h: int = 40, w: int = 40, value: int = 128) -> np.ndarray:
    return np.full((frames, h, w, 3), value, np.uint8)


def test_colors_are_distinct_and_stable():
    colors = component_colors(300)
    assert colors.shape == (300, 3) and colors.dtype == np.uint8
    assert len({tuple(c) for c in colors}) == 300
    np.testing.assert_array_equal(colors[:10], component_colors(10))


def test_labels_and_counts_follow_the_result():
    result = llava_scissor.compress(halves(), tau=0.9)
    assert result.num_tokens == 2
    labels = frame_labels(result)  # [F, 4, 4]
    assert labels.shape == (2, 4, 4)
    left, right = labels[0, 0, 0], labels[0, 0, 3]
    assert left != right
    assert (labels[:, :, :2] == left).all() and (labels[:, :, 2:] == right).all()  # same colour in both frames
    counts = spatial_counts(result)
    assert counts.tolist() == [2, 2] and counts.sum() == result.num_spatial_tokens


def test_tint_and_borders():
    result = llava_scissor.compress(halves(), tau=0.9)
    colors = component_colors(2).astype(float)
    labels = frame_labels(result)
    cell = 10
    tiles = render_frames(grey(), result, cell=cell)
    assert len(tiles) == 2 and tiles[0].size == (4 * cell, 4 * cell)
    px = np.asarray(tiles[1], dtype=float)
    inside_left = px[5, 5]  # centre of cell (0, 0)
    inside_right = px[5, 35]  # centre of cell (0, 3)
    expect_left = 128 * 0.55 + colors[labels[1, 0, 0]] * 0.45
    expect_right = 128 * 0.55 + colors[labels[1, 0, 3]] * 0.45
    np.testing.assert_allclose(inside_left, expect_left, atol=1.5)
    np.testing.assert_allclose(inside_right, expect_right, atol=1.5)
    border = px[5, 2 * cell]  # first pixel right of the left/right boundary
    assert border.mean() < 0.5 * min(inside_left.mean(), inside_right.mean())
    no_border = px[5, cell]  # between two cells of the same component
    np.testing.assert_allclose(no_border, expect_left, atol=1.5)


def test_render_picture_size_and_panel():
    result = llava_scissor.compress(torch.randn(6, 16, 12, generator=torch.Generator().manual_seed(0)), tau=0.3)
    img = render(grey(6), result, columns=3, cell=14, timestamps=[0.5 * i for i in range(6)])
    assert img.mode == "RGB"
    assert img.size[0] >= 3 * 56 and img.size[1] > 2 * 56 + 150


def test_save_png_gif_html(tmp_path):
    result = llava_scissor.compress(halves(frames=3), tau=0.9)
    frames = grey(3)
    png = save(tmp_path / "p.png", frames, result)
    gif = save(tmp_path / "p.gif", frames, result)
    page = save(tmp_path / "p.html", frames, result, title="three frames")
    with PIL.open(png) as img:
        assert img.format == "PNG" and img.size[0] >= 760
    with PIL.open(gif) as img:
        assert img.format == "GIF" and img.n_frames == 3
    text = open(page, encoding="utf-8").read()
    assert "<title>three frames</title>" in text
    assert "http" not in text.replace("http-equiv", "")  # self-contained: nothing fetched
    images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", text)
    assert len(images) == 1 + 3 + 1  # the shown frame, one per frame, the overview
    assert base64.b64decode(images[0])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<th>tokens after</th><td>2</td>" in text


def test_errors():
    result = llava_scissor.compress(torch.randn(2, 12, 8), tau=0.5)
    with pytest.raises(ScissorError, match="not a square grid"):
        frame_labels(result)
    assert frame_labels(result, grid=(3, 4)).shape == (2, 3, 4)
    with pytest.raises(ScissorError, match="grid 2x5 has 10 cells"):
        frame_labels(result, grid=(2, 5))
    square = llava_scissor.compress(halves(), tau=0.9)
    with pytest.raises(ScissorError, match="got 3 video frames"):
        render(grey(3), square)
    with pytest.raises(ScissorError, match="must end in one of"):
        save("picture.jpg", grey(2), square)


def test_the_committed_picture():
    import os

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "visualize.png")
    with PIL.open(path) as img:
        assert img.format == "PNG" and img.size[0] > 1000 and img.size[1] > 500
    assert os.path.getsize(path) < 1024 * 1024


@pytest.mark.parametrize("h,w", [(30, 40), (36, 64), (64, 36), (40, 40)])
def test_frames_keep_their_aspect_ratio_under_the_grid(h, w):
    """4:3, 16:9 and 9:16 frames are drawn at their own shape, the token grid stretched over them."""
    result = llava_scissor.compress(halves(), tau=0.9)  # 4 x 4 grid, left and right halves
    colors = component_colors(2).astype(float)
    labels = frame_labels(result)
    tiles = render_frames(grey(2, h, w), result, cell=10)
    tw, th = tiles[0].size
    assert max(tw, th) == 40
    assert abs(tw / th - w / h) < 0.05, (tw, th)
    px = np.asarray(tiles[0], dtype=float)  # [th, tw, 3]
    for row in range(4):
        y = int((row + 0.5) * th / 4)
        for col, x in ((0, int(0.5 * tw / 4)), (3, int(3.5 * tw / 4))):
            np.testing.assert_allclose(px[y, x], 128 * 0.55 + colors[labels[0, row, col]] * 0.45, atol=1.5)
    middle = tw // 2  # the border between the halves runs down the middle of the frame
    assert px[th // 2, middle].mean() < 0.5 * px[th // 2, 1].mean()


def test_rectangular_grid_over_a_wide_frame():
    result = llava_scissor.compress(torch.randn(2, 12, 8, generator=torch.Generator().manual_seed(1)), tau=0.5)
    tiles = render_frames(grey(2, 36, 64), result, grid=(3, 4), cell=12)
    assert tiles[0].size == (48, 27)


def test_png_has_a_legend():
    from llava_scissor.viz import legend

    result = llava_scissor.compress(halves(), tau=0.9)
    marks = dict(legend(result))
    assert set(marks) == {"colour", "line", "tokens"}  # nothing dropped: no grey entry
    assert "output token" in marks["colour"] and "border" in marks["line"]
    assert marks["tokens"] == "tokens before -> after: 32 -> 2 (6.2% kept)"
    pruned = llava_scissor.compress(torch.randn(2, 16, 8), method="vidcom2", retention=0.25)
    assert (pruned.assignment < 0).any() and "dropped" in dict(legend(pruned))["grey"]
    img = np.asarray(render(grey(2), result), dtype=int)
    first = component_colors(2)[0].astype(int)
    legend_rows = img[62 : 62 + 15 * len(marks)]  # under the title and the summary line
    assert (np.abs(legend_rows - first).sum(-1) == 0).sum() >= 40  # the colour swatch
    assert (np.abs(legend_rows - np.array([16, 16, 16])).sum(-1) == 0).sum() >= 10  # the border line
