"""What ``cnncli data info`` reports about a source: split sizes, classes, shape, statistics, samples.

Plain data, computed here; `cnncli.report.data` prints it and draws the grid.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np

from cnncli.data.base import DataWarning, Split, channel_stats
from cnncli.data.sources import load_split, split_sizes
from cnncli.data.stream import MAX_NAMED, open_streamed, plan_pipeline, read_examples, sample_indices, streams_split


@dataclass
class SplitSummary:
    """One split of a source, described (fields in the order ``data info --json`` prints them)."""

    source: str
    split: str
    split_sizes: dict[str, int]  # examples per split; the split read counts what it holds
    classes: list[str]
    class_counts: list[int]  # examples of each class in ``split``
    image_shape: list[int]
    dtype: str
    value_range: list[float]  # raw pixel range
    mean: list[float]  # per channel, raw pixel units
    std: list[float]
    pipeline: dict | None = None  # which pipeline a recipe with this [data] gets, and why (`plan_pipeline`)
    statistics_from: int | None = None  # examples the statistics read (a streamed split: a fixed sample)

    def to_dict(self) -> dict:
        """The summary as plain JSON-ready data."""
        return asdict(self)


def summarize_split(cfg, split: str, recipe_cfg=None) -> tuple[SplitSummary, Split]:
    """Describe one split of a recipe's ``[data]`` source, and return the split read.

    Args:
        cfg: a `cnncli.config.recipe.DataConfig`.
        split: the split to read, e.g. ``train`` or ``test[:10%]``.
        recipe_cfg: a recipe's whole ``[data]``, to say which pipeline it gets (default: ``split`` alone).

    Returns:
        (the summary, the loaded split) — the split for `class_rows`.

    Raises:
        DataError: as `cnncli.data.sources.load_split`.
    """
    sizes = split_sizes(cfg.source, cfg)
    plan = plan_pipeline(recipe_cfg or cfg.model_copy(update={"train_split": split, "eval_split": split}))
    if streams_split(cfg, split):
        return _summarize_streamed(cfg, split, sizes, plan)
    data, names, value_range = load_split(cfg.source, split, cfg)
    mean, std = channel_stats(data.x)
    counts = [int((data.y == c).sum()) for c in range(len(names))]
    if split in sizes:  # the split read here: what it holds, unreadable files skipped (sizes counts files)
        sizes[split] = int(len(data.y))
    summary = SplitSummary(cfg.source, split, sizes, names, counts, list(data.x.shape[1:]), str(data.x.dtype),
                           list(value_range), mean, std, plan.to_dict())  # fmt: skip
    return summary, data


def _summarize_streamed(cfg, split: str, sizes: dict[str, int], plan) -> tuple[SplitSummary, Split]:
    """A split too large for memory: counts from its labels, statistics and the grid from a fixed sample."""
    streamed, names, value_range = open_streamed(cfg, split)
    if streamed.skipped:
        named = "; ".join(f"{p} ({why})" for p, why in streamed.skipped[:MAX_NAMED])
        warnings.warn(DataWarning(f"{streamed.where}: skipped {len(streamed.skipped)} files that could not be read: "
                                  f"{named} (set data.strict = true to fail instead)"), stacklevel=2)  # fmt: skip
    example_bytes = math.prod(streamed.example_shape) * streamed.dtype.itemsize
    indices = sample_indices(len(streamed.records), example_bytes, cfg.memory_budget_mb)
    x, y = read_examples(streamed, indices)
    if len(x) < len(indices):
        warnings.warn(DataWarning(f"{streamed.where}: {len(indices) - len(x)} of {len(indices)} sampled examples "
                                  "could not be read (training skips and counts them)"), stacklevel=2)  # fmt: skip
    labels = streamed.y if isinstance(streamed.y, np.ndarray) else y  # TFDS keeps labels with the images
    counts = [int((labels == c).sum()) for c in range(len(names))]
    mean, std = channel_stats(x)
    if split in sizes:
        sizes[split] = len(streamed.records)
    summary = SplitSummary(cfg.source, split, sizes, names, counts, list(streamed.example_shape), str(streamed.dtype),
                           list(value_range), mean, std, plan.to_dict(), int(len(x)))  # fmt: skip
    return summary, Split(x, y)


def class_rows(data: Split, names: list[str], value_range, per_class: int) -> tuple[np.ndarray, list[str]]:
    """One grid row per class: its first ``per_class`` images (unit scale), blank tiles after.

    Returns:
        (images ``(classes * per_class, H, W, C)``, labels: the class name on each row's first tile).
    """
    lo, hi = value_range
    images = np.ones((len(names) * per_class, *data.x.shape[1:]), np.float32)  # white: no example
    labels = [""] * len(images)
    for c, name in enumerate(names):
        chosen = np.flatnonzero(data.y == c)[:per_class]
        images[c * per_class : c * per_class + len(chosen)] = (data.x[chosen].astype(np.float32) - lo) / max(hi - lo, 1e-12)
        labels[c * per_class] = f"{c}: {name}"
    return images, labels
