"""Drawing with Pillow: tinted token cells, component borders and a statistics panel."""

from __future__ import annotations

import base64
import colorsys
import html
import io
import math
import os
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .._errors import ScissorError
from .._files import atomic_output

if TYPE_CHECKING:
    from ..core.result import CompressionResult

__all__ = ["component_colors", "frame_labels", "legend", "render", "render_frames", "save", "spatial_counts"]

_TINT = 0.45  # weight of the component colour over the frame
_BORDER = (16, 16, 16)
_BORDER_ALPHA = 0.8
_BACKGROUND = (250, 250, 248)
_INK = (34, 34, 34)
_MUTED = (110, 110, 110)
_SPATIAL_BAR = (150, 190, 230)
_FINAL_BAR = (40, 90, 160)
_FORMATS = (".png", ".gif", ".html")


def component_colors(count: int) -> np.ndarray:
    """[count, 3] uint8, a distinct colour per output token; the same count gives the same colours.

    Hues step by the golden angle so neighbours in output order differ strongly;
    saturation and brightness cycle so that many components stay distinguishable.
    """
    if count < 0:
        raise ScissorError(f"count must be >= 0, got {count}")
    golden = (math.sqrt(5) - 1) / 2
    out = np.empty((count, 3), dtype=np.uint8)
    for j in range(count):
        hue = (0.07 + j * golden) % 1.0
        sat = (0.80, 0.55, 0.95)[j % 3]
        val = (0.95, 0.80, 0.65)[(j // 3) % 3]
        out[j] = [round(255 * c) for c in colorsys.hsv_to_rgb(hue, sat, val)]
    return out


def frame_labels(result: CompressionResult, grid: tuple[int, int] | None = None) -> np.ndarray:
    """[F, gh, gw] int64: the output token each original token went to (-1: dropped).

    ``grid`` is (gh, gw) with gh * gw = tokens per frame; by default the square root
    (196 -> 14 x 14), which fails with a ``ScissorError`` for a non-square count.
    """
    gh, gw = resolve_grid(result.tokens_per_frame, grid)
    labels = result.assignment.detach().cpu().to(dtype=_int64()).numpy()  # [F*N]
    return labels.reshape(result.frames, gh, gw)


def resolve_grid(tokens_per_frame: int, grid: tuple[int, int] | None) -> tuple[int, int]:
    """(gh, gw) of the token grid of one frame; checks gh * gw == tokens_per_frame."""
    if grid is None:
        side = math.isqrt(tokens_per_frame)
        if side * side != tokens_per_frame:
            raise ScissorError(
                f"{tokens_per_frame} tokens per frame is not a square grid; give the grid as HxW (e.g. --grid 12x16)"
            )
        return side, side
    gh, gw = (int(v) for v in grid)
    if gh < 1 or gw < 1 or gh * gw != tokens_per_frame:
        raise ScissorError(f"grid {gh}x{gw} has {gh * gw} cells but there are {tokens_per_frame} tokens per frame")
    return gh, gw


def spatial_counts(result: CompressionResult) -> np.ndarray:
    """[F] int64, tokens of each frame after the spatial step.

    For results without a spatial step (other methods) it counts the distinct output
    tokens each frame's tokens went to.
    """
    frames, n = result.frames, result.tokens_per_frame
    labels = result.spatial_labels if result.spatial_labels is not None else result.assignment
    per_frame = labels.detach().cpu().to(dtype=_int64()).numpy().reshape(frames, n)  # [F, N]
    return np.array([np.unique(row[row >= 0]).size for row in per_frame], dtype=np.int64)


def final_counts(result: CompressionResult) -> np.ndarray:
    """[F] int64, output tokens whose representative token lies in each frame."""
    reps = result.representatives.detach().cpu().to(dtype=_int64()).numpy()  # [K]
    return np.bincount(reps // result.tokens_per_frame, minlength=result.frames).astype(np.int64)


def render_frames(
    frames: np.ndarray,
    result: CompressionResult,
    *,
    grid: tuple[int, int] | None = None,
    cell: int | None = None,
    side: int = 196,
) -> list[Any]:
    """One tinted ``PIL.Image`` per frame; frames: [F, H, W, 3] uint8 RGB.

    Each frame keeps its own aspect ratio (a 16:9 frame stays 16:9) and the token grid
    (gh x gw) is laid over the whole of it, so a cell covers the part of the frame that
    the vision tower turned into that token (SigLIP resizes the frame to a square, which
    is why a square grid over a wide frame has wide cells). The longer side is
    ``cell * max(gh, gw)`` pixels (by default ``cell`` makes it about ``side``); every
    cell is tinted by its output token's colour and borders between different output
    tokens are drawn.
    """
    Image = _pil().Image
    frames = _check_frames(frames, result)
    labels = frame_labels(result, grid)  # [F, gh, gw]
    gh, gw = labels.shape[1:]
    if cell is None:
        cell = max(4, math.ceil(side / max(gh, gw)))
    tw, th = _tile_size(frames.shape[2], frames.shape[1], gh, gw, cell)
    rows = np.arange(th) * gh // th  # [th] grid row under each pixel row
    cols = np.arange(tw) * gw // tw  # [tw] grid column under each pixel column
    colors = component_colors(result.num_tokens).astype(np.float32)  # [K, 3]
    out = []
    for frame, lab in zip(frames, labels):
        pixels = Image.fromarray(frame).resize((tw, th), Image.Resampling.BICUBIC)
        base = np.asarray(pixels, dtype=np.float32)  # [th, tw, 3]
        big = lab[rows][:, cols]  # [th, tw]
        kept = big >= 0
        tint = colors[np.clip(big, 0, None)]
        img = np.where(kept[..., None], base * (1 - _TINT) + tint * _TINT, base.mean(-1, keepdims=True) * 0.5)
        edge = np.zeros(big.shape, dtype=bool)
        dx = big[:, 1:] != big[:, :-1]
        dy = big[1:, :] != big[:-1, :]
        edge[:, 1:] |= dx
        edge[:, :-1] |= dx
        edge[1:, :] |= dy
        edge[:-1, :] |= dy
        border = np.array(_BORDER, dtype=np.float32)
        img[edge] = img[edge] * (1 - _BORDER_ALPHA) + border * _BORDER_ALPHA
        out.append(Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8)))
    return out


def _tile_size(width: int, height: int, gh: int, gw: int, cell: int) -> tuple[int, int]:
    """(width, height) of a drawn frame: the frame's aspect ratio, the longer side
    ``cell * max(gh, gw)``, and at least one pixel per grid cell each way."""
    longest = cell * max(gh, gw)
    if width >= height:
        return longest, max(gh, round(longest * height / width))
    return max(gw, round(longest * width / height)), longest


def legend(result: CompressionResult) -> list[tuple[str, str]]:
    """What the picture's marks mean, as (mark, text) pairs, one legend row each:
    ``colour``, ``line``, ``grey`` (only when tokens were dropped) and ``tokens``."""
    items = [
        ("colour", "colour: the output token a cell was merged into (one colour per token, the same in every frame)"),
        ("line", "dark line: a border between cells of different output tokens"),
    ]
    if bool((result.assignment < 0).any()):
        items.append(("grey", "dark grey: dropped, merged into no output token"))
    items.append(
        (
            "tokens",
            f"tokens before -> after: {result.num_input_tokens:,} -> {result.num_tokens:,} "
            f"({result.retention:.1%} kept)",
        )
    )
    return items


_LEGEND_ROW = 15  # pixels per legend row


def _draw_legend(draw: Any, x: int, y: int, result: CompressionResult, font: Any) -> None:
    """The legend rows at (x, y): a mark (swatches, a border between two cells, a grey
    cell, an arrow) then its meaning."""
    colors = component_colors(min(max(result.num_tokens, 1), 3))
    for row, (mark, text) in enumerate(legend(result)):
        top = y + row * _LEGEND_ROW
        if mark == "colour":
            for j, c in enumerate(colors):
                draw.rectangle((x + 9 * j, top + 2, x + 9 * j + 8, top + 11), fill=tuple(int(v) for v in c))
        elif mark == "line":
            draw.rectangle((x, top + 2, x + 12, top + 11), fill=tuple(int(v) for v in colors[0]))
            draw.rectangle((x + 13, top + 2, x + 25, top + 11), fill=tuple(int(v) for v in colors[-1]))
            draw.line((x + 12, top, x + 12, top + 13), fill=_BORDER, width=2)
        elif mark == "grey":
            draw.rectangle((x, top + 2, x + 25, top + 11), fill=(64, 64, 64))
        else:
            draw.line((x, top + 7, x + 22, top + 7), fill=_INK, width=2)
            draw.polygon(((x + 25, top + 7), (x + 19, top + 3), (x + 19, top + 11)), fill=_INK)
        draw.text((x + 34, top + 1), text, font=font, fill=_INK if mark == "tokens" else _MUTED)


def render(
    frames: np.ndarray,
    result: CompressionResult,
    *,
    grid: tuple[int, int] | None = None,
    timestamps: Sequence[float] | None = None,
    title: str | None = None,
    columns: int = 8,
    cell: int | None = None,
) -> Any:
    """The whole picture as one ``PIL.Image``; frames: [F, H, W, 3] uint8 RGB.

    A grid of tinted frames (``columns`` per row, a caption under each with its
    spatial token count), then a panel: bars of tokens per frame after the spatial
    step and of output tokens represented in each frame, and the overall numbers.
    """
    PIL = _pil()
    tiles = render_frames(frames, result, grid=grid, cell=cell)
    counts = spatial_counts(result)
    finals = final_counts(result)
    f = len(tiles)
    columns = max(1, min(columns, f))
    rows = math.ceil(f / columns)
    tw, th = tiles[0].size
    margin, gap, caption = 20, 10, 18
    title_font, font, small = _font(20), _font(13), _font(11)
    width = max(2 * margin + columns * tw + (columns - 1) * gap, 760)
    header = 64 + _LEGEND_ROW * len(legend(result)) + 6
    panel_h = 200
    height = header + rows * (th + caption + gap) + panel_h + margin
    canvas = PIL.Image.new("RGB", (width, height), _BACKGROUND)
    draw = PIL.ImageDraw.Draw(canvas)
    draw.text((margin, 14), title or "LLaVA-Scissor: semantic connected components", font=title_font, fill=_INK)
    draw.text((margin, 40), _summary(result), font=font, fill=_MUTED)
    _draw_legend(draw, margin, 62, result, small)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        x = margin + c * (tw + gap)
        y = header + r * (th + caption + gap)
        canvas.paste(tile, (x, y))
        when = f" · {timestamps[i]:.1f}s" if timestamps is not None else ""
        draw.text((x, y + th + 3), f"#{i}{when} · {counts[i]} tok", font=small, fill=_MUTED)
    top = header + rows * (th + caption + gap) + 6
    _bars(draw, (margin, top, width - margin, top + panel_h - 20), counts, finals, result, font, small)
    return canvas


def save(
    path: str | os.PathLike[str],
    frames: np.ndarray,
    result: CompressionResult,
    *,
    grid: tuple[int, int] | None = None,
    timestamps: Sequence[float] | None = None,
    title: str | None = None,
) -> str:
    """Write the picture to ``path``: ``.png`` (one image), ``.gif`` (one frame per
    sampled frame), or ``.html`` (self-contained page with both). Returns the path."""
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in _FORMATS:
        raise ScissorError(f"picture must end in one of {', '.join(_FORMATS)}, got {path!r}")
    # Drawn first, then written whole to a temporary file renamed over ``path``.
    if suffix == ".png":
        image = render(frames, result, grid=grid, timestamps=timestamps, title=title)
        with atomic_output(path) as tmp:
            image.save(tmp, format="PNG", optimize=True)
    elif suffix == ".gif":
        pages = _gif_pages(frames, result, grid=grid, timestamps=timestamps)
        with atomic_output(path) as tmp:
            pages[0].save(
                tmp, format="GIF", save_all=True, append_images=pages[1:], duration=600, loop=0, optimize=True
            )
    else:
        page = _html(frames, result, grid=grid, timestamps=timestamps, title=title)
        with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
            fh.write(page)
    return path


# --------------------------------------------------------------------------- internals


def _int64() -> Any:
    import torch

    return torch.int64


def _pil() -> Any:
    try:
        import PIL.Image
        import PIL.ImageDraw
        import PIL.ImageFont
    except ImportError:
        raise ScissorError("pictures need Pillow: pip install 'llava-scissor[video]'") from None
    return PIL


def _font(size: int) -> Any:
    return _pil().ImageFont.load_default(size=size)


def _check_frames(frames: Any, result: CompressionResult) -> np.ndarray:
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ScissorError(f"frames must be [frames, height, width, 3] RGB, got shape {tuple(arr.shape)}")
    if arr.shape[0] != result.frames:
        raise ScissorError(f"got {arr.shape[0]} video frames but the compression covers {result.frames} frames")
    if arr.dtype != np.uint8:
        raise ScissorError(f"frames must be uint8, got {arr.dtype}")
    return arr


def _summary(result: CompressionResult) -> str:
    total = result.num_input_tokens
    parts = [f"{result.frames} frames x {result.tokens_per_frame} tokens = {total:,}"]
    if result.num_spatial_tokens is not None:
        parts.append(f"spatial step {result.num_spatial_tokens:,}")
    parts.append(f"{result.num_tokens:,} tokens kept ({result.retention:.1%})")
    line = "  ->  ".join(parts)
    taus = []
    if result.spatial_threshold is not None:
        taus.append(f"spatial tau {result.spatial_threshold:.3f}")
    if result.temporal_threshold is not None:
        taus.append(f"temporal tau {result.temporal_threshold:.3f}")
    return line + ("   |   " + ", ".join(taus) if taus else "")


def _bars(
    draw: Any,
    box: tuple[int, int, int, int],
    counts: np.ndarray,
    finals: np.ndarray,
    result: CompressionResult,
    font: Any,
    small: Any,
    highlight: int | None = None,
) -> None:
    """Bars per frame: spatial tokens (light) and output tokens represented there (dark)."""
    x0, y0, x1, y1 = box
    draw.text((x0, y0), "tokens per frame", font=font, fill=_INK)
    legend_x = x0 + 140
    draw.rectangle((legend_x, y0 + 3, legend_x + 10, y0 + 13), fill=_SPATIAL_BAR)
    draw.text((legend_x + 14, y0 + 1), "after the spatial step", font=small, fill=_MUTED)
    legend_x += 160
    draw.rectangle((legend_x, y0 + 3, legend_x + 10, y0 + 13), fill=_FINAL_BAR)
    draw.text((legend_x + 14, y0 + 1), "final tokens represented in the frame", font=small, fill=_MUTED)
    top, bottom = y0 + 24, y1 - 16
    left = x0 + 36
    peak = max(int(counts.max()), int(finals.max()), 1)
    draw.line((left, top, left, bottom), fill=_MUTED)
    draw.line((left, bottom, x1, bottom), fill=_MUTED)
    draw.text((x0, top - 6), str(peak), font=small, fill=_MUTED)
    draw.text((x0, bottom - 8), "0", font=small, fill=_MUTED)
    f = len(counts)
    slot = (x1 - left - 4) / f
    bar = max(1.0, slot * 0.8)
    for i in range(f):
        bx = left + 4 + i * slot
        for value, color, shrink in ((counts[i], _SPATIAL_BAR, 0.0), (finals[i], _FINAL_BAR, 0.25)):
            h = (bottom - top) * float(value) / peak
            pad = bar * shrink
            draw.rectangle((bx + pad, bottom - h, bx + bar - pad, bottom), fill=color)
        if highlight == i:
            draw.rectangle((bx - 2, top, bx + bar + 2, bottom), outline=(220, 60, 40), width=2)
        if f <= 32 or i % math.ceil(f / 32) == 0:
            draw.text((bx + bar / 2 - 4, bottom + 2), str(i), font=small, fill=_MUTED)


def _gif_pages(
    frames: np.ndarray,
    result: CompressionResult,
    *,
    grid: tuple[int, int] | None,
    timestamps: Sequence[float] | None,
) -> list[Any]:
    PIL = _pil()
    tiles = render_frames(frames, result, grid=grid, side=336)
    counts, finals = spatial_counts(result), final_counts(result)
    tw, th = tiles[0].size
    margin = 16
    width = max(tw + 2 * margin, 640)
    font, small = _font(13), _font(11)
    extra = _LEGEND_ROW * len(legend(result)) + 4
    pages = []
    for i, tile in enumerate(tiles):
        page = PIL.Image.new("RGB", (width, th + 230 + extra), _BACKGROUND)
        draw = PIL.ImageDraw.Draw(page)
        page.paste(tile, ((width - tw) // 2, margin))
        when = f" at {timestamps[i]:.1f} s" if timestamps is not None else ""
        draw.text(
            (margin, th + margin + 6),
            f"frame {i}{when}: {counts[i]} tokens after the spatial step",
            font=font,
            fill=_INK,
        )
        draw.text((margin, th + margin + 24), _summary(result), font=small, fill=_MUTED)
        _draw_legend(draw, margin, th + margin + 42, result, small)
        box = (margin, th + margin + 46 + extra, width - margin, th + 222 + extra)
        _bars(draw, box, counts, finals, result, font, small, highlight=i)
        pages.append(page)
    return pages


def _data_uri(image: Any, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    image.save(buf, format=fmt, optimize=True)
    mime = "image/png" if fmt == "PNG" else "image/jpeg"
    return f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _html(
    frames: np.ndarray,
    result: CompressionResult,
    *,
    grid: tuple[int, int] | None,
    timestamps: Sequence[float] | None,
    title: str | None,
) -> str:
    overview = _data_uri(render(frames, result, grid=grid, timestamps=timestamps, title=title))
    pages = [_data_uri(p) for p in _gif_pages(frames, result, grid=grid, timestamps=timestamps)]
    counts = spatial_counts(result)
    rows = [
        ("frames", f"{result.frames}"),
        ("tokens per frame", f"{result.tokens_per_frame}"),
        ("tokens before", f"{result.num_input_tokens:,}"),
        ("after the spatial step", "-" if result.num_spatial_tokens is None else f"{result.num_spatial_tokens:,}"),
        ("tokens after", f"{result.num_tokens:,}"),
        ("retention", f"{result.retention:.2%}"),
        ("spatial threshold", "-" if result.spatial_threshold is None else f"{result.spatial_threshold:.4f}"),
        ("temporal threshold", "-" if result.temporal_threshold is None else f"{result.temporal_threshold:.4f}"),
        ("spatial tokens per frame", ", ".join(str(int(c)) for c in counts)),
    ]
    table = "\n".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    heading = html.escape(title or "LLaVA-Scissor: semantic connected components")
    sources = ",".join(f'"{p}"' for p in pages)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{heading}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #222; background: #fafaf8; }}
table {{ border-collapse: collapse; margin: 12px 0; }}
th, td {{ text-align: left; padding: 3px 12px 3px 0; vertical-align: top; }}
th {{ color: #666; font-weight: normal; }}
img {{ max-width: 100%; }}
#frame {{ display: block; margin-top: 8px; }}
</style></head><body>
<h1>{heading}</h1>
<p>Each token cell is tinted by the output token it was merged into (one colour per output token,
the same in every frame); dark lines separate different output tokens.</p>
<table>{table}</table>
<h2>Frame by frame</h2>
<input id="slider" type="range" min="0" max="{len(pages) - 1}" value="0" style="width: 480px">
<span id="label">frame 0</span>
<img id="frame" alt="tinted frame" src="{pages[0]}">
<h2>All frames</h2>
<img alt="all frames" src="{overview}">
<script>
const pages = [{sources}];
const slider = document.getElementById("slider");
slider.addEventListener("input", () => {{
  document.getElementById("frame").src = pages[slider.value];
  document.getElementById("label").textContent = "frame " + slider.value;
}});
</script>
</body></html>
"""
