"""The data layer's types and checks: `Split`, `Dataset`, `check_arrays`, `channel_stats`.

Every source gives uint8 or float32 images shaped ``(N, *spatial, C)`` and int32
labels. Statistics for normalization are computed on the training split only and
saved with the run; normalization itself happens on the device, inside the step.

The loaders (`cnncli.data.digits`, ``npz``, ``tfds``, ``folder``) import this module;
`cnncli.data.sources` picks the loader for a source. Nothing here imports either.

The library never prints: skipped files are reported with `DataWarning` (Python
``warnings``), which the CLI turns into ``warning:`` lines on stderr.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cnncli.errors import DataError


class DataWarning(UserWarning):
    """Something was skipped while loading data (e.g. unreadable image files)."""


@dataclass
class Split:
    """One split of a dataset: images ``(N, *spatial, C)`` and int32 labels ``(N,)``."""

    x: np.ndarray
    y: np.ndarray


@dataclass
class Dataset:
    """A training split, an evaluation split, and what the run must remember about them."""

    name: str
    train: Split
    eval: Split
    class_names: list[str]
    mean: list[float] = field(default_factory=list)  # per channel, in raw pixel units
    std: list[float] = field(default_factory=list)
    value_range: tuple[float, float] = (0.0, 255.0)  # raw pixel range, for pictures

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Per-example shape, channels last."""
        return tuple(self.train.x.shape[1:])

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    def meta(self) -> dict:
        """What a run saves about its data (``data.json``)."""
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "class_names": self.class_names,
            "mean": self.mean,
            "std": self.std,
            "value_range": list(self.value_range),
            "num_train": int(self.train.x.shape[0]),
            "num_eval": int(self.eval.x.shape[0]),
        }


def channel_stats(x: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std over all examples and positions (float64 accumulation)."""
    axes = tuple(range(x.ndim - 1))
    mean = x.mean(axis=axes, dtype=np.float64)
    std = x.std(axis=axes, dtype=np.float64)
    std = np.where(std < 1e-8, 1.0, std)  # constant channels: leave unscaled
    return [float(v) for v in mean], [float(v) for v in std]


def check_arrays(x: np.ndarray, y: np.ndarray, where: str, num_classes: int | None = None, *,
                 named: bool = False) -> Split:  # fmt: skip
    """Validate and canonicalize images and labels: channels-last, int32 labels in range.

    Pixels are uint8 (kept), or integer, boolean or floating point (as float32); a complex
    image is refused (its imaginary part would be dropped). ``named``: ``num_classes`` is
    the number of the data's ``class_names`` (the error says so).
    """
    if x.ndim == 2:  # (N, L): 1-D signals with one channel
        x = x[..., None]
    elif x.ndim == 3:  # (N, H, W): grayscale images
        x = x[..., None]
    if x.ndim not in (3, 4, 5):
        raise DataError(
            f"{where}: images have shape {x.shape}; expected (N,H,W), (N,H,W,C), (N,L) or (N,D,H,W,C)"
        )
    if x.dtype != np.uint8:
        if np.issubdtype(x.dtype, np.complexfloating):
            raise DataError(f"{where}: images have dtype {x.dtype}; complex pixels have no single value to train on",
                            hint="save real pixels, e.g. np.abs(x) or x.real, as uint8 or float")  # fmt: skip
        if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating) or x.dtype == np.bool_):
            raise DataError(f"{where}: images have dtype {x.dtype}; expected uint8, integer, boolean or float pixels")
        x = x.astype(np.float32)
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise DataError(f"{where}: labels have shape {y.shape}; expected ({x.shape[0]},) to match the images")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0):
            y = y.astype(np.int64)
        else:
            raise DataError(f"{where}: labels have dtype {y.dtype}; expected integer class ids")
    if y.size and (y.min() < 0 or (num_classes is not None and y.max() >= num_classes)):
        expected = f"0..{num_classes - 1}" if num_classes is not None else "from 0"
        names = f" ({num_classes} class_names)" if named and num_classes is not None else ""
        first = int(np.flatnonzero((y < 0) | (y >= (num_classes if num_classes is not None else np.inf)))[0])
        raise DataError(
            f"{where}: labels range over [{y.min()}, {y.max()}]; expected class ids {expected}{names} "
            f"(label {y[first]} at index {first})",
            hint="give one class name per class id, or fix the labels" if names else "class ids count from 0",
        )
    return Split(np.ascontiguousarray(x), y.astype(np.int32))
