"""The pictures ``eval`` and ``inspect-filters`` write: confusion matrix, worst examples,
filter grids, feature maps, maximally activating patches.

Built from `cnncli.pictures.images` primitives (tiles, grids, colours, line plots); every
``*_image`` returns an RGB `PIL.Image.Image`, and ``write_*`` save a result's PNGs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from cnncli.pictures.images import (
    BG,
    FG,
    diverging,
    fit_factor,
    font,
    gray_rgb,
    grid_image,
    input_tile,
    line_tile,
    save,
    short,
    side_by_side,
    square_cols,
    text_size,
    to_uint8,
    upscale,
    viridis,
)


# -------------------------------------------------------------- filters
def _kernel_rgb(tile: np.ndarray) -> np.ndarray:
    """One filter tile ``(*k, B)`` in [0, 1] -> a 2-D RGB picture (3-D: depth slices side by side)."""
    if tile.ndim == 3:
        return gray_rgb(tile)
    if tile.ndim == 4:
        sep = np.ones((tile.shape[1], 1, tile.shape[-1]), np.float32)
        parts = []
        for d in range(tile.shape[0]):
            parts += [tile[d], sep]
        return gray_rgb(np.concatenate(parts[:-1], axis=1))
    raise ValueError(f"no 2-D picture for a {tile.ndim - 1}-D kernel")


def _each_tile(grid, one_d, two_d) -> list[np.ndarray]:
    """Render every (filter, channel) kernel, filters major: ``one_d(kernel)`` for 1-D
    kernels, ``two_d(rgb)`` with the kernel as an RGB picture otherwise."""
    f, c = grid.values.shape[:2]
    is_1d = grid.values.ndim - 3 == 1
    return [one_d(grid.values[i, j]) if is_1d else two_d(_kernel_rgb(grid.values[i, j]))
            for i in range(f) for j in range(c)]  # fmt: skip


def filter_tiles(grid, *, min_tile: int = 48) -> list[np.ndarray]:
    """uint8 tiles of a `cnncli.pictures.kernels.FilterGrid`, filters major, channels minor."""
    return _each_tile(
        grid,
        lambda k: line_tile(k, (int(min_tile * 1.5), min_tile)),
        lambda rgb: to_uint8(upscale(rgb, fit_factor(rgb.shape, min_tile))),
    )


def filter_grid_image(grid, *, min_tile: int = 48) -> Image.Image:
    """The PNG of a layer's filters: one tile per filter (RGB or one channel) or rows of channels."""
    f, c = grid.values.shape[:2]
    tiles = filter_tiles(grid, min_tile=min_tile)
    k = "x".join(map(str, grid.kernel_shape[:-2]))
    shown = f"{f} of {grid.total_filters}" if f < grid.total_filters else f"{f}"
    scale = "each filter on its own scale" if grid.scale == "filter" else "one shared scale"
    zero = "gray line = 0" if grid.values.ndim == 4 else "mid-gray = 0"
    title = f"{grid.layer}: {shown} filters {k} x {grid.total_channels} in; {scale}, {zero}"
    if c == 1:
        return grid_image(tiles, square_cols(f), labels=[str(i) for i in range(f)], title=title)
    more = f" (of {grid.total_channels})" if c < grid.total_channels else ""
    return grid_image(tiles, c, title=title + f"; rows: filters, columns: input channels{more}",
                      row_labels=[f"f{i}" for i in range(f)], col_labels=[f"c{j}" for j in range(c)])  # fmt: skip


def filter_grid_terminal(grid, max_width: int = 100) -> np.ndarray:
    """A compact uint8 picture of the filters for `terminal_image` (1-D kernels as colour strips)."""
    f, c = grid.values.shape[:2]
    tiles = _each_tile(
        grid,
        lambda k: to_uint8(np.repeat(diverging(k[:, 0])[None], 2, axis=0)),
        lambda rgb: to_uint8(upscale(rgb, max(1, 6 // max(rgb.shape[:2])))),
    )
    th, tw = tiles[0].shape[:2]
    cols = square_cols(f, max_cols=max(1, max_width // (tw + 1))) if c == 1 else min(c, max(1, max_width // (tw + 1)))
    if c > 1:
        tiles = [t for n, t in enumerate(tiles) if n % c < cols]
    rows = -(-len(tiles) // cols)
    canvas = np.full((rows * (th + 1) + 1, cols * (tw + 1) + 1, 3), 0, np.uint8)
    for n, t in enumerate(tiles):
        r, col = divmod(n, cols)
        canvas[1 + r * (th + 1): 1 + r * (th + 1) + th, 1 + col * (tw + 1): 1 + col * (tw + 1) + tw] = t
    return canvas


# ------------------------------------------------------------- confusion
def _blues(v: float) -> tuple[int, int, int]:
    """0 -> near white, 1 -> dark blue."""
    a, b = np.array([247, 251, 255]), np.array([8, 48, 107])
    return tuple(int(x) for x in a + (b - a) * float(np.clip(v, 0, 1)))


def _rotated(text: str, fnt) -> Image.Image:
    tile = Image.new("RGB", (text_size(text, fnt)[0] + 4, text_size("Ag", fnt)[1] + 6), BG)
    ImageDraw.Draw(tile).text((2, 0), text, fill=FG, font=fnt)
    return tile.rotate(90, expand=True)


def confusion_image(confusion, class_names: list[str], *, title: str = "") -> Image.Image:
    """The confusion matrix: rows true, columns predicted; colour = row fraction, text = count.

    Counts are written when cells are large enough (up to about 40 classes); class
    names are rotated above the columns when they do not fit a cell.
    """
    cm = np.asarray(confusion, np.int64)
    k = len(cm)
    cell = int(np.clip(720 // max(k, 1), 8, 44))
    fnt, small = font(12), font(max(8, min(12, cell // 3)))
    names = [n if len(n) <= 14 else n[:13] + "…" for n in class_names] if cell >= 12 else [""] * k
    wide = max(text_size(n, fnt)[0] for n in names) > cell - 2
    col_h = (max(text_size(n, fnt)[0] for n in names) + 8) if wide else text_size("Ag", fnt)[1] + 6
    left = max(text_size(n, fnt)[0] for n in names) + 34
    top = 46 + col_h
    width = max(left + k * cell + 16, text_size(title, fnt)[0] + 20)
    img = Image.new("RGB", (width, top + k * cell + 16), BG)
    draw = ImageDraw.Draw(img)
    draw.text((8, 6), title, fill=FG, font=fnt)
    draw.text((left + (k * cell - text_size("predicted", fnt)[0]) // 2, 26), "predicted", fill=FG, font=fnt)
    img.paste(_rotated("true", fnt), (4, top + (k * cell) // 2 - 14))
    rows = cm.sum(axis=1, keepdims=True)
    frac = cm / np.where(rows > 0, rows, 1)
    for i in range(k):
        y0 = top + i * cell
        draw.text((left - 6 - text_size(names[i], fnt)[0], y0 + (cell - 14) // 2), names[i], fill=FG, font=fnt)
        for j in range(k):
            x0 = left + j * cell
            draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=_blues(frac[i, j]), outline=(225, 225, 225))
            if cell >= 18 and cm[i, j]:
                text = str(cm[i, j])
                tw, th = text_size(text, small)
                ink = (255, 255, 255) if frac[i, j] > 0.5 else FG
                draw.text((x0 + (cell - tw) // 2, y0 + (cell - th) // 2 - 1), text, fill=ink, font=small)
    for j, name in enumerate(names):
        x0 = left + j * cell
        if wide:
            rot = _rotated(name, fnt)
            img.paste(rot, (x0 + (cell - rot.width) // 2, top - 4 - rot.height))
        else:
            draw.text((x0 + (cell - text_size(name, fnt)[0]) // 2, top - col_h + 2), name, fill=FG, font=fnt)
    return img


def worst_image(xs: list[np.ndarray], mistakes, class_names: list[str], value_range, *, title: str = "") -> Image.Image:
    """A grid of wrongly classified inputs: true -> predicted, confidence and example index."""
    tiles = [input_tile(x, value_range, 80) for x in xs]
    labels = [f"{short(class_names[m.true])} -> {short(class_names[m.predicted])}\n{m.confidence:.0%}  #{m.index}"
              for m in mistakes]  # fmt: skip
    return grid_image(tiles, square_cols(len(tiles), 8), labels=labels, title=title)


def _map_tile(m: np.ndarray, lo: float, hi: float, target: int) -> np.ndarray:
    if m.ndim == 1:  # a 1-D map: a line plot on the shared scale
        return line_tile(m[:, None], (int(target * 2.5), target), vrange=(lo, hi), zero=None)
    v = (np.asarray(m, np.float32) - lo) / ((hi - lo) or 1.0)
    return to_uint8(upscale(viridis(v), fit_factor(v.shape, target)))


def feature_maps_image(fm, value_range, class_names: list[str], *, max_maps: int = 64) -> Image.Image:
    """The input with the receptive field of the most active position, then the maps (largest mean first)."""
    maps = fm.maps[:max_maps]
    lo, hi = float(maps.min()), float(maps.max())
    tiles = [_map_tile(m, lo, hi, 56) for m in maps]
    labels = [f"c{c}  {mean:.2f}" for c, mean in zip(fm.channels, fm.means)]
    rf = "x".join(str(int(v)) for v in fm.box.rf)
    title = f"{fm.shown} (from {fm.layer}): {len(fm.maps)} maps by mean, one scale {lo:.2f}..{hi:.2f}"
    cols = square_cols(len(tiles), 8) if maps.ndim > 2 else min(4, len(tiles))
    right = grid_image(tiles, cols, labels=labels, title=title)
    caption = [short(Path(fm.input).name, 28)]
    if fm.predicted is not None:
        caption.append(f"predicted {short(class_names[fm.predicted])} ({fm.probability:.0%})")
    if fm.label is not None:
        caption.append(f"label {short(class_names[fm.label])}")
    caption.append(f"peak c{fm.peak_channel} at {tuple(fm.box.position)}: RF {rf}")
    left = grid_image([input_tile(fm.x, value_range, 160, box=fm.box)], 1, labels=["\n".join(caption)], title="input")
    return side_by_side(left, right)


def patches_image(ap, value_range) -> Image.Image:
    """Rows: filters; columns: the inputs' receptive-field patches that excite each most."""
    tiles, labels = [], []
    for row in ap.patches:
        for p in row:
            tiles.append(input_tile(p.pixels, value_range, 48))
            labels.append(f"{p.value:.2f}")
    k = max(len(r) for r in ap.patches)
    rf = "x".join(str(int(v)) for v in ap.patches[0][0].box.rf)
    title = f"{ap.shown} (from {ap.layer}): top {k} of {ap.num_examples} inputs per filter, receptive field {rf}"
    rows = [f"f{f}" + ("\n(dead)" if max(p.value for p in row) <= 0 else "") for f, row in zip(ap.filters, ap.patches)]
    return grid_image(tiles, k, labels=labels, title=title, row_labels=rows)


# ------------------------------------------------------------- writing
def write_eval_pngs(result, x: np.ndarray, value_range, out_dir: str | Path) -> dict[str, Path]:
    """``confusion.png`` and, with mistakes asked for, ``worst.png`` of an `EvalResult` (x: the split's inputs)."""
    out_dir = Path(out_dir)
    title = (f"{result.source} [{result.split}], step {result.checkpoint_step}: accuracy {100 * result.accuracy:.1f}% "
             f"of {result.num_examples}; colour = fraction of the true class")  # fmt: skip
    confusion = confusion_image(result.confusion, result.class_names, title=title)
    pngs = {"confusion": save(confusion, out_dir / "confusion.png")}
    if result.worst:
        xs = [x[m.index] for m in result.worst]
        title = f"{len(xs)} most confidently wrong: true -> predicted, confidence, #index"
        worst = worst_image(xs, result.worst, result.class_names, value_range, title=title)
        pngs["worst"] = save(worst, out_dir / "worst.png")
    return pngs


def write_filter_pngs(rep, value_range, class_names: list[str], out_dir: str | Path) -> dict[str, Path]:
    """``filters.png``, and ``feature_maps.png`` / ``patches.png`` when computed, of a `FilterReport`."""
    out_dir = Path(out_dir)
    pngs = {"filter_grid": save(filter_grid_image(rep.grid), out_dir / "filters.png")}
    if rep.maps is not None:
        pngs["feature_maps"] = save(feature_maps_image(rep.maps, value_range, class_names), out_dir / "feature_maps.png")
    if rep.patches is not None:
        pngs["patches"] = save(patches_image(rep.patches, value_range), out_dir / "patches.png")
    return pngs
