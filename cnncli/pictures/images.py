"""Picture primitives: colours, tiles, labelled grids (Pillow), and terminal previews.

`cnncli.pictures.figures` builds the PNGs of ``eval`` and ``inspect-filters`` from these;
`save` writes one. `terminal_image` turns an RGB array into rich `Text` of upper half blocks (``▀``: the
foreground colours the top pixel, the background the bottom one), two pixels per
character cell; `cnncli.report.eval` prints it only when stdout is a terminal.

Conventions: filter tiles are mid-gray at a zero weight (`cnncli.pictures.kernels.FilterGrid`);
raw inputs are scaled by the run's raw value range (``data.json``), so the digits'
0..16 fill black to white; pixels outside the input (a receptive field reaching into
the padding) are drawn in `OUTSIDE`. 1-D kernels and signals are drawn as line plots.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BG = (255, 255, 255)
FG = (20, 20, 20)
OUTSIDE = (70, 70, 110)  # receptive field beyond the input (padding)
BOX = (255, 40, 40)
# A few anchors of matplotlib's viridis (perceptually uniform, colour-blind safe).
_VIRIDIS = np.array([
    [68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142],
    [31, 158, 137], [53, 183, 121], [109, 205, 89], [180, 222, 44], [253, 231, 37],
], np.float32) / 255.0  # fmt: skip


def font(size: int = 12) -> ImageFont.FreeTypeFont:
    """Pillow's bundled scalable font (no system fonts needed)."""
    return ImageFont.load_default(size=size)


def text_size(text: str, fnt) -> tuple[int, int]:
    """Width and height in pixels of ``text`` drawn in ``fnt``."""
    box = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), text, font=fnt)
    return box[2] - box[0], box[3] - box[1]


def save(img: Image.Image, path: str | Path) -> Path:
    """Write a PNG, creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG")
    return path


# ------------------------------------------------------------- colours
def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """Float RGB in [0, 1] -> uint8; NaN pixels become `OUTSIDE`."""
    rgb = np.asarray(rgb, np.float32)
    nan = np.isnan(rgb).any(axis=-1)
    out = (np.clip(np.nan_to_num(rgb), 0, 1) * 255 + 0.5).astype(np.uint8)
    out[nan] = OUTSIDE
    return out


def viridis(v: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> RGB in [0, 1] (NaN stays NaN)."""
    v = np.asarray(v, np.float32)
    pos = np.clip(np.nan_to_num(v, nan=0.0), 0, 1) * (len(_VIRIDIS) - 1)
    i = np.minimum(pos.astype(int), len(_VIRIDIS) - 2)
    t = (pos - i)[..., None]
    rgb = _VIRIDIS[i] * (1 - t) + _VIRIDIS[i + 1] * t
    rgb[np.isnan(v)] = np.nan
    return rgb


def diverging(v: np.ndarray) -> np.ndarray:
    """Values in [0, 1], 0.5 = zero -> blue (negative), white, red (positive)."""
    d = (np.asarray(v, np.float32) - 0.5) * 2
    neg, pos = np.clip(-d, 0, 1)[..., None], np.clip(d, 0, 1)[..., None]
    white = np.ones(3, np.float32)
    return white - neg * np.array([0.85, 0.55, 0.0]) - pos * np.array([0.0, 0.6, 0.75])


def gray_rgb(v: np.ndarray) -> np.ndarray:
    """``(..., 1)`` or ``(..., 3)`` in [0, 1] -> ``(..., 3)``."""
    v = np.asarray(v, np.float32)
    return np.repeat(v, 3, axis=-1) if v.shape[-1] == 1 else v[..., :3]


def input_rgb(x: np.ndarray, value_range) -> np.ndarray:
    """A raw 2-D input ``(H, W, C)`` -> RGB in [0, 1] by the raw value range (C other than 3: channel 0)."""
    lo, hi = (float(v) for v in value_range)
    v = (np.asarray(x, np.float32) - lo) / ((hi - lo) or 1.0)
    return gray_rgb(v if v.shape[-1] in (1, 3) else v[..., :1])


def upscale(rgb: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscaling of ``(H, W, 3)`` by an integer factor."""
    return np.repeat(np.repeat(rgb, factor, axis=0), factor, axis=1) if factor > 1 else rgb


def fit_factor(shape: tuple[int, ...], target: int) -> int:
    """The integer upscaling that brings the longer side near ``target`` pixels."""
    return max(1, int(round(target / max(max(shape[:2]), 1))))


# ----------------------------------------------------------- line plots
def line_tile(values: np.ndarray, size: tuple[int, int], *, vrange=(0.0, 1.0), zero: float | None = 0.5,
              span: tuple[int, int] | None = None, colors=None) -> np.ndarray:  # fmt: skip
    """A small line plot of ``values (L, C)`` (one line per channel, at most 3) as uint8 RGB.

    Args:
        size: (width, height) in pixels.
        vrange: the value mapped to the bottom and the top.
        zero: draw a faint horizontal line at this value.
        span: shade the inclusive index range ``(lo, hi)`` (a receptive field).
    """
    w, h = size
    img = Image.new("RGB", (w, h), BG)
    draw = ImageDraw.Draw(img)
    values = np.asarray(values, np.float32).reshape(len(values), -1)
    n = len(values)
    lo, hi = vrange
    xs = [int(round(2 + i * (w - 5) / max(n - 1, 1))) for i in range(n)]

    def y(v):
        return int(round(h - 3 - (np.clip((v - lo) / ((hi - lo) or 1.0), 0, 1)) * (h - 6)))

    if span is not None:
        a, b = max(span[0], 0), min(span[1], n - 1)
        if a <= b:
            draw.rectangle([xs[a] - 1, 0, xs[b] + 1, h - 1], fill=(255, 225, 225), outline=BOX)
    if zero is not None:
        draw.line([(0, y(zero)), (w, y(zero))], fill=(190, 190, 190))
    draw.rectangle([0, 0, w - 1, h - 1], outline=(215, 215, 215))
    colors = colors or [(30, 80, 200), (220, 80, 30), (40, 160, 60)]
    for c in range(min(values.shape[1], 3)):
        col = values[:, c]
        if np.isnan(col).all():
            continue
        pts = [(xs[i], y(v)) for i, v in enumerate(col) if not np.isnan(v)]
        if len(pts) == 1:
            draw.ellipse([pts[0][0] - 1, pts[0][1] - 1, pts[0][0] + 1, pts[0][1] + 1], fill=colors[c])
        else:
            draw.line(pts, fill=colors[c], width=2)
    return np.asarray(img)


# -------------------------------------------------------------- layout
def grid_image(tiles: list[np.ndarray], cols: int, *, labels: list[str] | None = None, title: str | None = None,
               row_labels: list[str] | None = None, col_labels: list[str] | None = None, gap: int = 4,
               font_size: int = 12) -> Image.Image:  # fmt: skip
    """Lay out equal-sized uint8 RGB tiles in a grid, with optional text.

    Args:
        tiles: ``(h, w, 3)`` uint8 arrays, all the same size, in row-major order.
        cols: tiles per row.
        labels: one caption under each tile (may hold a newline).
        title: one line above the grid.
        row_labels, col_labels: text left of each row, above each column.
    """
    fnt = font(font_size)
    th, tw = tiles[0].shape[:2]
    rows = -(-len(tiles) // cols)
    line_h = text_size("Ag", fnt)[1] + 3
    cap_h = (max(lab.count("\n") + 1 for lab in labels) * line_h + 2) if labels else 0
    left = (max(text_size(t, fnt)[0] for t in row_labels) + 8) if row_labels else 0
    head = line_h + 2 if col_labels else 0
    top = (line_h + 8) if title else 0
    cell_w = max(tw, max((text_size(s, fnt)[0] for lab in labels or [] for s in lab.split("\n")), default=0) + 4)
    width = max(left + cols * (cell_w + gap) + gap, (text_size(title, fnt)[0] + 2 * gap) if title else 0)
    height = top + head + rows * (th + cap_h + gap) + gap
    img = Image.new("RGB", (width, height), BG)
    draw = ImageDraw.Draw(img)
    if title:
        draw.text((gap, 4), title, fill=FG, font=fnt)
    for c, text in enumerate(col_labels or []):
        x = left + gap + c * (cell_w + gap) + (cell_w - text_size(text, fnt)[0]) // 2
        draw.text((x, top), text, fill=FG, font=fnt)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        x0 = left + gap + c * (cell_w + gap) + (cell_w - tw) // 2
        y0 = top + head + gap + r * (th + cap_h + gap)
        img.paste(Image.fromarray(tile), (x0, y0))
        if labels:
            for j, line in enumerate(labels[i].split("\n")):
                lx = left + gap + c * (cell_w + gap) + (cell_w - text_size(line, fnt)[0]) // 2
                draw.text((lx, y0 + th + 2 + j * line_h), line, fill=FG, font=fnt)
    for r, text in enumerate(row_labels or []):
        y0 = top + head + gap + r * (th + cap_h + gap) + (th - line_h) // 2
        draw.text((4, y0), text, fill=FG, font=fnt)
    return img


def square_cols(n: int, max_cols: int = 16) -> int:
    """Columns for a near-square grid of ``n`` tiles."""
    return max(1, min(max_cols, int(np.ceil(np.sqrt(n)))))


# ------------------------------------------------------------ terminal
def terminal_image(rgb: np.ndarray, max_width: int = 100):
    """uint8 ``(H, W, 3)`` -> rich `Text` of ``▀`` cells (truecolor); shrunk to ``max_width`` columns."""
    from rich.style import Style
    from rich.text import Text

    rgb = np.asarray(rgb, np.uint8)
    if rgb.shape[1] > max_width:
        h = max(1, int(rgb.shape[0] * max_width / rgb.shape[1]))
        rgb = np.asarray(Image.fromarray(rgb).resize((max_width, h), Image.Resampling.NEAREST))
    if rgb.shape[0] % 2:
        rgb = np.concatenate([rgb, np.zeros((1, *rgb.shape[1:]), np.uint8)])
    text = Text()
    styles: dict[tuple, Style] = {}
    for r in range(0, rgb.shape[0], 2):
        for top, bottom in zip(rgb[r], rgb[r + 1]):
            key = (*top, *bottom)
            if key not in styles:
                styles[key] = Style.parse(f"rgb({top[0]},{top[1]},{top[2]}) on rgb({bottom[0]},{bottom[1]},{bottom[2]})")
            text.append("▀", style=styles[key])
        text.append("\n")
    return text


# --------------------------------------------------------------- inputs
def input_tile(x: np.ndarray, value_range, target: int = 96, *, box=None) -> np.ndarray:
    """A raw input (2-D ``(H, W, C)`` or 1-D ``(L, C)``) as uint8, with a receptive-field box drawn."""
    x = np.asarray(x, np.float32)
    if x.ndim == 2:
        span = (box.lo[0], box.hi[0]) if box is not None else None
        return line_tile(x, (int(target * 1.6), target), vrange=value_range, zero=None, span=span)
    rgb = input_rgb(x, value_range)
    factor = fit_factor(rgb.shape, target)
    img = Image.fromarray(to_uint8(upscale(rgb, factor)))
    if box is not None:
        (r0, c0), (r1, c1) = box.clip_lo, box.clip_hi
        width = max(1, factor // 4)
        ImageDraw.Draw(img).rectangle([c0 * factor, r0 * factor, (c1 + 1) * factor - 1, (r1 + 1) * factor - 1],
                                      outline=BOX, width=width)  # fmt: skip
    return np.asarray(img)


def short(name: str, n: int = 10) -> str:
    return name if len(name) <= n else name[: n - 1] + "…"


def side_by_side(left: Image.Image, right: Image.Image, gap: int = 12) -> Image.Image:
    """Two pictures next to each other, tops aligned."""
    img = Image.new("RGB", (left.width + gap + right.width, max(left.height, right.height)), BG)
    img.paste(left, (0, 0))
    img.paste(right, (left.width + gap, 0))
    return img
