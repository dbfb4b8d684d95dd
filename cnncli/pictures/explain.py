"""Pictures of attribution maps (``cnncli explain``): input, map and overlay side by side.

Maps arrive non-negative (`cnncli.inspect.attribution.mass_map`) and are scaled by their
own maximum: viridis from dark (no attribution) to yellow (the peak). The overlay blends
the map's colour into the grayscale input in proportion to the map, so unattributed
pixels keep the input's look. 1-D inputs are line plots; their map is a line plot too,
and the overlay tints each time step's column.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from cnncli.pictures.images import fit_factor, grid_image, input_rgb, line_tile, to_uint8, upscale, viridis

OVERLAY_ALPHA = 0.7  # the map's colour weight at its peak


def unit(m: np.ndarray) -> np.ndarray:
    """A non-negative map scaled to [0, 1] by its maximum (an all-zero map stays zero)."""
    m = np.maximum(np.asarray(m, np.float32), 0)
    top = float(m.max()) if m.size else 0.0
    return m / top if top > 0 else m


def overlay_rgb(x: np.ndarray, m: np.ndarray, value_range) -> np.ndarray:
    """A 2-D input ``(H, W, C)`` with its map ``(H, W)`` blended in, RGB in [0, 1]."""
    u = unit(m)[..., None]
    gray = input_rgb(x, value_range).mean(axis=-1, keepdims=True).repeat(3, axis=-1)
    return gray * (1 - OVERLAY_ALPHA * u) + viridis(u[..., 0]) * OVERLAY_ALPHA * u


def _tiles_2d(x, m, value_range, target: int) -> list[np.ndarray]:
    factor = fit_factor(x.shape, target)
    big = lambda rgb: to_uint8(upscale(rgb, factor))
    return [big(input_rgb(x, value_range)), big(viridis(unit(m))), big(overlay_rgb(x, m, value_range))]


def _tiles_1d(x, m, value_range, target: int) -> list[np.ndarray]:
    size = (int(target * 1.6), target)
    u = unit(m)
    plain = line_tile(x, size, vrange=value_range, zero=None)
    curve = line_tile(u[:, None], size, vrange=(0.0, 1.0), zero=None, colors=[(200, 60, 30)])
    # overlay: each time step's column tinted by the map, the signal drawn on top
    w = size[0]
    cols = np.clip(np.round(np.linspace(0, len(u) - 1, w)).astype(int), 0, len(u) - 1)
    tint = viridis(u[cols])[None].repeat(size[1], axis=0)
    a = OVERLAY_ALPHA * u[cols][None, :, None]
    base = plain.astype(np.float32) / 255.0
    blended = base * (1 - a) + tint * a
    line = (plain != 255).any(axis=-1, keepdims=True) & (plain.astype(int).sum(axis=-1, keepdims=True) < 600)
    return [plain, curve, to_uint8(np.where(line, base, blended))]


def explain_image(x: np.ndarray, rows: list[tuple[str, np.ndarray]], value_range, *, title: str,
                  target: int = 112) -> Image.Image:  # fmt: skip
    """One picture per input: a row per map (label, non-negative map), columns input | map | overlay."""
    tiles, labels = [], []
    one_d = np.asarray(x).ndim == 2
    for _label, m in rows:
        tiles += (_tiles_1d if one_d else _tiles_2d)(np.asarray(x, np.float32), np.asarray(m), value_range, target)
    return grid_image(tiles, 3, title=title, row_labels=[label for label, _ in rows],
                      col_labels=["input", "map", "overlay"], labels=labels or None)  # fmt: skip


def terminal_tile(x: np.ndarray, m: np.ndarray, value_range, target: int = 24) -> np.ndarray:
    """A small uint8 overlay for the terminal (2-D), or the 1-D overlay tile shrunk."""
    x = np.asarray(x, np.float32)
    if x.ndim == 2:
        return _tiles_1d(x, np.asarray(m), value_range, target)[2]
    return to_uint8(upscale(overlay_rgb(x, m, value_range), fit_factor(x.shape, target)))
