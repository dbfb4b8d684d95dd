"""cnncli.pictures.images and cnncli.pictures.figures: PNGs read back with Pillow (size, mode), terminal half blocks."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cnncli.inspect.activations import ActivatingPatches, FeatureMaps, Patch, RFBox
from cnncli.inspect.evaluate import Mistake
from cnncli.pictures import figures, images
from cnncli.pictures.kernels import filter_grid


def _read(path):
    """Read a PNG back; check it is one."""
    with Image.open(path) as img:
        assert img.format == "PNG"
        img.load()
        return img.copy()


def test_filter_grid_png_one_tile_per_filter(tmp_path):
    kernel = np.random.default_rng(0).normal(size=(3, 3, 1, 8)).astype(np.float32)
    path = images.save(figures.filter_grid_image(filter_grid(kernel, layer="conv1"), min_tile=48), tmp_path / "a" / "f.png")
    img = _read(path)
    assert img.mode == "RGB"
    assert img.width >= 3 * 48 and img.height >= 3 * 48  # a 3x3 grid of 48-px tiles (8 filters)


def test_filter_grid_png_rows_of_channels(tmp_path):
    kernel = np.random.default_rng(0).normal(size=(3, 3, 4, 5)).astype(np.float32)
    img = figures.filter_grid_image(filter_grid(kernel, layer="conv2"), min_tile=30)
    assert img.mode == "RGB" and img.width >= 4 * 30 and img.height >= 5 * 30


def test_filter_tiles_keep_the_colours():
    kernel = np.zeros((2, 2, 3, 1), np.float32)
    kernel[0, 0, :, 0] = [1.0, -1.0, 0.0]  # red up, green down, blue zero
    tiles = figures.filter_tiles(filter_grid(kernel), min_tile=4)
    assert tiles[0].shape == (4, 4, 3)
    assert tuple(tiles[0][0, 0]) == (255, 0, 128) and tuple(tiles[0][3, 3]) == (128, 128, 128)


def test_1d_and_3d_filter_grids(tmp_path):
    one = filter_grid(np.random.default_rng(0).normal(size=(7, 2, 3)), layer="conv1")
    img = _read(images.save(figures.filter_grid_image(one, min_tile=40), tmp_path / "1d.png"))
    assert img.mode == "RGB" and img.height >= 3 * 40  # 3 filters x 2 channels of line plots
    strip = figures.filter_grid_terminal(one)
    assert strip.dtype == np.uint8 and strip.shape[2] == 3
    three = filter_grid(np.random.default_rng(0).normal(size=(3, 3, 3, 1, 2)), layer="conv1")
    assert three.values.shape == (2, 1, 3, 3, 3, 1)
    assert figures.filter_grid_image(three).mode == "RGB"


def test_confusion_png_sizes(tmp_path):
    cm = [[5, 1, 0], [0, 4, 2], [1, 0, 7]]
    img = _read(images.save(figures.confusion_image(cm, ["cat", "dog", "a very long class name"], title="t"), tmp_path / "c.png"))
    assert img.mode == "RGB" and img.width > 3 * 44 and img.height > 3 * 44
    big = figures.confusion_image(np.eye(100, dtype=int), [f"class{i}" for i in range(100)])
    assert big.width >= 100 * 8 and big.height >= 100 * 8


def test_worst_grid(tmp_path):
    xs = [np.full((8, 8, 1), v, np.float32) for v in (0, 8, 16)]
    mistakes = [Mistake(i, 0, 1, 0.9, 0.05) for i in range(3)]
    img = _read(images.save(figures.worst_image(xs, mistakes, ["zero", "one"], (0, 16), title="worst"), tmp_path / "w.png"))
    assert img.mode == "RGB" and img.width >= 2 * 80 and img.height >= 2 * 80


def _box(lo, hi, size):
    return RFBox("relu1", (1, 1), tuple(h - l + 1 for l, h in zip(lo, hi)), (1, 1), lo, hi,
                 tuple(max(a, 0) for a in lo), tuple(min(b, n - 1) for b, n in zip(hi, size)))  # fmt: skip


def test_feature_maps_png_draws_the_box(tmp_path):
    box = _box((-1, 2), (1, 4), (8, 8))
    fm = FeatureMaps("conv1", "relu1", "eval[0]", np.zeros((8, 8, 1), np.float32), np.random.rand(4, 8, 8),
                     [2, 0, 1, 3], [0.9, 0.5, 0.2, 0.1], 2, 1.0, box, label=1, predicted=1, probability=0.8)  # fmt: skip
    img = _read(images.save(figures.feature_maps_image(fm, (0, 16), ["a", "b"]), tmp_path / "fm.png"))
    assert img.mode == "RGB"
    tile = images.input_tile(fm.x, (0, 16), 160, box=box)  # 8x8 upscaled by 20
    assert tile.shape == (160, 160, 3)
    assert tuple(tile[0, 2 * 20]) == images.BOX and tuple(tile[10, 10]) == (0, 0, 0)


def test_patches_png_marks_outside_pixels(tmp_path):
    box = _box((-1, -1), (1, 1), (8, 8))
    pixels = np.full((3, 3, 1), 16, np.float32)
    pixels[0] = np.nan  # above the image
    patch = Patch(0, 0, 5, 1, 2.0, box, pixels)
    ap = ActivatingPatches("conv1", "relu1", 10, [0], [[patch, patch]])
    img = _read(images.save(figures.patches_image(ap, (0, 16)), tmp_path / "p.png"))
    assert img.mode == "RGB"
    tile = images.input_tile(pixels, (0, 16), 48)
    assert tuple(tile[0, 0]) == images.OUTSIDE and tuple(tile[-1, -1]) == (255, 255, 255)


def test_terminal_image_uses_half_blocks():
    rgb = np.zeros((3, 4, 3), np.uint8)
    rgb[0] = (255, 0, 0)
    rgb[1] = (0, 0, 255)
    text = images.terminal_image(rgb)
    lines = text.plain.splitlines()
    assert lines == ["▀▀▀▀", "▀▀▀▀"]  # 3 rows -> 2 character rows (padded)
    styles = {str(span.style) for span in text.spans}
    assert "rgb(255,0,0) on rgb(0,0,255)" in styles
    wide = images.terminal_image(np.zeros((2, 300, 3), np.uint8), max_width=100)
    assert max(len(line) for line in wide.plain.splitlines()) == 100


@pytest.mark.parametrize("values", [np.linspace(0, 1, 9)[:, None], np.full((1, 2), np.nan)])
def test_line_tile(values):
    tile = images.line_tile(values, (60, 30), span=(2, 4))
    assert tile.shape == (30, 60, 3) and tile.dtype == np.uint8
