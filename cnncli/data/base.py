"""Data sources -> in-memory arrays, channels last.

Every source gives uint8 or float32 images shaped ``(N, *spatial, C)`` and int32
labels. Statistics for normalization are computed on the training split only and
saved with the run; normalization itself happens on the device, inside the step.

Sources: ``digits`` (scikit-learn's bundled handwritten digits, offline), ``npz:PATH``
(the Keras ``mnist.npz`` convention).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cnncli.errors import DataError


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


def load_split(source: str, split: str, cfg=None) -> tuple[Split, list[str], tuple[float, float]]:
    """Load one split of a source: the images, the class names and the raw value range."""
    kind, _, rest = source.partition(":")
    if kind == "digits":
        from cnncli.data.digits import load_digits_split

        return load_digits_split(split)
    if kind == "npz":
        from cnncli.data.npz import load_npz_split

        return load_npz_split(rest, split)
    if kind in ("tfds", "folder"):
        try:
            from cnncli.data import imageops as external
        except ImportError:
            raise DataError(
                f"data source {source!r}: {kind} sources are not available in this version",
                hint="use digits or npz:PATH",
            ) from None
        return external.load_split(source, split, cfg)
    raise DataError(f"unknown data source {source!r}", hint="use digits, npz:PATH, tfds:NAME or folder:PATH")


def load_dataset(cfg) -> Dataset:
    """Load the training and evaluation splits a recipe's ``[data]`` table names.

    Args:
        cfg: a `cnncli.config.recipe.DataConfig`.
    """
    train, names, value_range = load_split(cfg.source, cfg.train_split, cfg)
    evaluation, eval_names, _ = load_split(cfg.source, cfg.eval_split, cfg)
    if train.x.shape[1:] != evaluation.x.shape[1:]:
        raise DataError(
            f"{cfg.source}: split {cfg.train_split!r} has images {train.x.shape[1:]} but "
            f"{cfg.eval_split!r} has {evaluation.x.shape[1:]}"
        )
    if len(eval_names) > len(names):
        names = eval_names
    mean, std = channel_stats(train.x) if cfg.normalize else ([0.0], [1.0])
    channels = train.x.shape[-1]
    if not cfg.normalize:
        mean, std = [0.0] * channels, [1.0] * channels
    return Dataset(cfg.source, train, evaluation, names, mean, std, value_range)


def check_arrays(x: np.ndarray, y: np.ndarray, where: str, num_classes: int | None = None) -> Split:
    """Validate and canonicalize images and labels: channels-last, int32 labels in range."""
    if x.ndim == 2:  # (N, L): 1-D signals with one channel
        x = x[..., None]
    elif x.ndim == 3:  # (N, H, W): grayscale images
        x = x[..., None]
    if x.ndim not in (3, 4, 5):
        raise DataError(
            f"{where}: images have shape {x.shape}; expected (N,H,W), (N,H,W,C), (N,L) or (N,D,H,W,C)"
        )
    if x.dtype != np.uint8:
        if not np.issubdtype(x.dtype, np.number):
            raise DataError(f"{where}: images have dtype {x.dtype}; expected uint8 or float")
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
        raise DataError(
            f"{where}: labels range over [{y.min()}, {y.max()}]; expected class ids 0..N-1"
        )
    return Split(np.ascontiguousarray(x), y.astype(np.int32))
