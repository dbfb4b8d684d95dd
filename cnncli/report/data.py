"""Printing and pictures for ``cnncli data``: the info table, PNG grids, terminal previews.

Images arrive in unit scale (floats in [0, 1], ``(N, H, W, C)``, C = 1 or 3). PNG
grids are drawn with Pillow: each tile is enlarged by a whole factor (nearest
neighbour, so pixels stay sharp) to at least `MIN_TILE` pixels, with its label
underneath. The terminal preview packs two image rows into one text row: the upper
half block ``▀`` takes the top pixel as its foreground colour and the bottom pixel
as its background (24-bit ANSI colour).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from cnncli.report import console as report

MIN_TILE = 64  # pixels: smallest side of a tile in a PNG grid
LABEL_HEIGHT = 14  # pixels of text under each tile
GAP = 2  # pixels between tiles
BACKGROUND = (255, 255, 255)


def to_rgb8(images: np.ndarray) -> np.ndarray:
    """Unit-scale ``(N, H, W, C)`` floats -> uint8 RGB ``(N, H, W, 3)`` (grey repeated, extra channels dropped)."""
    rgb = np.clip(np.rint(np.asarray(images, np.float32) * 255), 0, 255).astype(np.uint8)
    if rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
    elif rgb.shape[-1] == 2:
        rgb = np.concatenate([rgb, rgb[..., :1]], axis=-1)
    return rgb[..., :3]


def image_grid(images: np.ndarray, labels: list[str], columns: int) -> "Image.Image":  # noqa: F821
    """A labelled grid of unit-scale images as a Pillow image (row-major, ``columns`` wide)."""
    from PIL import Image, ImageDraw

    rgb = to_rgb8(images)
    n, h, w, _ = rgb.shape
    zoom = max(1, math.ceil(MIN_TILE / max(1, min(h, w))))
    th, tw = h * zoom, w * zoom
    columns = max(1, min(columns, n))
    rows = math.ceil(n / columns)
    canvas = Image.new("RGB", (columns * (tw + GAP) + GAP, rows * (th + LABEL_HEIGHT + GAP) + GAP), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for i in range(n):
        x0 = GAP + (i % columns) * (tw + GAP)
        y0 = GAP + (i // columns) * (th + LABEL_HEIGHT + GAP)
        canvas.paste(Image.fromarray(rgb[i]).resize((tw, th), Image.NEAREST), (x0, y0))
        draw.text((x0, y0 + th + 1), _fit(draw, labels[i] if i < len(labels) else "", tw), fill=(0, 0, 0))
    return canvas


def _fit(draw, text: str, width: int) -> str:
    """Shorten ``text`` with an ellipsis until it fits ``width`` pixels."""
    if draw.textlength(text) <= width:
        return text
    while text and draw.textlength(text + "…") > width:
        text = text[:-1]
    return text + "…"


def save_grid(images: np.ndarray, labels: list[str], columns: int, path: Path) -> Path:
    """Write a labelled PNG grid and return its path (parent folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image_grid(images, labels, columns).save(path, format="PNG")
    return path


def half_blocks(images: np.ndarray, max_columns: int) -> str:
    """A row of unit-scale images as truecolor half-block text, at most ``max_columns`` wide."""
    from PIL import Image

    rgb = to_rgb8(images)
    n, h, w, _ = rgb.shape
    strip = np.full((h, n * (w + 1) - 1, 3), 0, np.uint8)  # one black column between images
    for i in range(n):
        strip[:, i * (w + 1) : i * (w + 1) + w] = rgb[i]
    width = min(strip.shape[1], max_columns)
    height = max(2, round(strip.shape[0] * width / strip.shape[1]))
    height += height % 2  # two pixel rows per text row
    pixels = np.asarray(Image.fromarray(strip).resize((width, height), Image.BOX))
    lines = []
    for top, bottom in zip(pixels[0::2], pixels[1::2]):
        cells = "".join(
            f"\x1b[38;2;{t[0]};{t[1]};{t[2]}m\x1b[48;2;{b[0]};{b[1]};{b[2]}m▀" for t, b in zip(top, bottom)
        )  # fmt: skip
        lines.append(cells + "\x1b[0m")
    return "\n".join(lines)


def show_in_terminal(images: np.ndarray, labels: list[str], max_images: int = 8) -> None:
    """Print a small preview of the first images and their labels on stdout (terminals only)."""
    import shutil
    import sys

    count = min(max_images, len(images))
    columns = min(shutil.get_terminal_size((80, 24)).columns - 1, 16 * count)
    sys.stdout.write(half_blocks(images[:count], columns) + "\n")
    sys.stdout.write("  ".join(f"{i + 1}: {label}" for i, label in enumerate(labels[:count])) + "\n")
    sys.stdout.flush()


def print_info(info: dict, json_mode: bool) -> None:
    """``cnncli data info`` results: one JSON object, or a table on a terminal."""
    if json_mode:
        report.print_json(info)
        return
    from rich.table import Table

    console = report.stdout_console()
    sizes = ", ".join(f"{k} {v:,}" for k, v in info["split_sizes"].items())
    shape = "x".join(map(str, info["image_shape"]))
    console.print(f"[bold]{info['source']}[/]: {len(info['classes'])} classes; splits: {sizes}; "
                  f"images {shape} {info['dtype']}, values {info['value_range'][0]:g}..{info['value_range'][1]:g}")  # fmt: skip
    stats = " ".join(f"{m:.2f}/{s:.2f}" for m, s in zip(info["mean"], info["std"]))
    sampled = f" (a sample of {info['statistics_from']:,})" if info.get("statistics_from") else ""
    console.print(f"per-channel mean/std on {info['split']}{sampled} (raw pixel units): {stats}")
    if info.get("pipeline"):
        plan = info["pipeline"]
        workers = f" with {plan['workers']} workers" if plan.get("workers") is not None else ""
        console.print(f"pipeline: {plan['kind']}{workers} ({plan['reason']})")
    table = Table("class", "name", f"{info['split']} examples", box=None, pad_edge=False)
    for i, (name, count) in enumerate(zip(info["classes"], info["class_counts"])):
        table.add_row(str(i), name, f"{count:,}")
    console.print(table)
    if info.get("grid"):
        console.print(f"samples per class: {info['grid']}")


def print_written(what: str, path: Path, json_mode: bool, extra: dict | None = None) -> None:
    """Say where a file was written (stdout), or one JSON object with ``extra``."""
    if json_mode:
        report.print_json({what: str(path), **(extra or {})})
    else:
        report.stdout_console().print(f"{what}: {path}")


def target_label(weights: np.ndarray, names: list[str]) -> str:
    """``cat``, or ``cat 62% + dog 38%`` for a mixed target row.

    Args:
        weights: one target row ``(K,)``: one-hot, or mixed by mixup/cutmix.
        names: the class names (a class past the end is shown by its index).
    """
    order = weights.argsort()[::-1]
    if weights[order[0]] >= 0.995:
        return names[order[0]] if order[0] < len(names) else str(order[0])
    parts = [f"{names[i] if i < len(names) else i} {weights[i]:.0%}" for i in order[:2] if weights[i] > 0.005]
    return " + ".join(parts)
