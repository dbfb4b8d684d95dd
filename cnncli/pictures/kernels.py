"""A layer's kernels scaled for display: the grid ``inspect-filters`` draws, and TensorBoard's filter images.

Numpy only, so the training loop's TensorBoard images (`cnncli.train.board`) and
`cnncli.inspect.filters` scale kernels the same way;
`cnncli.pictures.figures.filter_grid_image` draws the result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class FilterGrid:
    """A layer's kernels ready to draw.

    Attributes:
        values: ``(F, C, *kernel_size, B)`` in [0, 1], 0.5 = a zero weight; ``B`` is 3
            for an RGB first layer (then ``C`` is 1), else 1 (one tile per channel).
        scale: ``"filter"`` (each filter scaled by its own max |w|) or ``"shared"``.
        max_abs: the |w| that maps to 0 or 1, per shown filter.
    """

    layer: str
    kernel_shape: tuple[int, ...]
    values: np.ndarray
    rgb: bool
    scale: str
    max_abs: list[float]
    total_filters: int
    total_channels: int


def filter_grid(kernel: np.ndarray, *, layer: str = "", shared: bool = False, rgb: bool | None = None,
                max_filters: int = 64, max_channels: int = 16) -> FilterGrid:  # fmt: skip
    """Scale a kernel ``(*k, cin, F)`` to [0, 1] per filter (or on one shared scale).

    Args:
        kernel: the kernel as Flax stores it.
        shared: one scale for the whole layer (compare filters' strengths) instead of
            each filter's own (see each filter's shape).
        rgb: draw the 3 input channels as one colour tile; default when ``cin == 3``.
        max_filters, max_channels: show at most this many.
    """
    kernel = np.asarray(kernel, np.float32)
    cin, nf = kernel.shape[-2], kernel.shape[-1]
    rgb = cin == 3 if rgb is None else rgb
    w = np.moveaxis(kernel, (-1, -2), (0, 1))[:max_filters]  # (F, cin, *k)
    if not rgb:
        w = w[:, :max_channels]
    flat = np.abs(w.reshape(len(w), -1))
    scale = np.full(len(w), flat.max() if flat.size else 0.0) if shared else flat.max(axis=1)
    safe = np.where(scale > 0, scale, 1.0)
    values = 0.5 + 0.5 * w / safe.reshape(-1, *([1] * (w.ndim - 1)))
    values = np.moveaxis(values, 1, -1)[:, None] if rgb else values[..., None]
    return FilterGrid(layer, tuple(kernel.shape), values.astype(np.float32), rgb, "shared" if shared else "filter",
                      [float(s) for s in scale], nf, cin)  # fmt: skip
