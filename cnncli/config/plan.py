"""Facts a recipe implies, each derived in one place: pure Python, no jax or numpy.

Training, its dry run, the profiler, evaluation and reading a run back all ask the
same questions (how many steps, how many classes, which layers, how inputs are
standardized, which evaluation batch size); the answers live here.

``meta`` below is a run's data facts: `cnncli.data.base.Dataset.meta` while training,
the run directory's ``data.json`` (`data_json`) afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

from cnncli.arith.layers import LayerSpec
from cnncli.config.recipe import Recipe
from cnncli.config.specs import specs_of
from cnncli.errors import DataError


class Steps(NamedTuple):
    """How long a run is, in optimizer steps."""

    per_epoch: int
    total: int
    epochs: int


def steps_for(recipe: Recipe, num_train: int) -> Steps:
    """(steps_per_epoch, total_steps, epochs) for a recipe and training-set size.

    Raises:
        DataError: the batch is larger than the training split.
    """
    bs = recipe.data.batch_size
    if bs > num_train:
        raise DataError(
            f"data.batch_size = {bs} is larger than the training split ({num_train} examples)",
            hint=f"use --set data.batch_size={max(1, 2 ** int(math.log2(num_train)))} or smaller",
        )
    spe = num_train // bs  # drop the last partial batch: every step has the same shape
    if recipe.train.steps is not None:
        total = recipe.train.steps
        return Steps(spe, total, math.ceil(total / spe))
    return Steps(spe, spe * recipe.train.epochs, recipe.train.epochs)


def num_classes(recipe: Recipe, data_classes: int) -> int:
    """The classifier's width: ``model.num_classes``, else the data's class count."""
    return recipe.model.num_classes or data_classes


def data_json(recipe: Recipe, meta: Mapping[str, Any], data_classes: int) -> dict[str, Any]:
    """What a run saves as ``data.json``: the data facts and the class count it trained with."""
    return dict(meta) | {"num_classes": num_classes(recipe, data_classes)}


def run_num_classes(meta: Mapping[str, Any]) -> int:
    """A run's class count from its ``data.json`` (runs older than its ``num_classes`` key: the names)."""
    return int(meta.get("num_classes") or len(meta["class_names"]))


def normalization(meta: Mapping[str, Any]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel ``(mean, std)`` that inputs are standardized with, in raw pixel units."""
    return tuple(float(v) for v in meta["mean"]), tuple(float(v) for v in meta["std"])


def eval_batch_size(recipe: Recipe, num_eval: int, data_axis: int = 1) -> int:
    """The evaluation batch: ``data.eval_batch_size``, at most the split, a multiple of ``data_axis``.

    One fixed size (the last batch padded) compiles once; `cnncli eval` uses the same
    size as training's evaluation, so it reproduces the logged numbers. On a mesh the
    size is rounded up to split evenly over the data axis.
    """
    size = min(recipe.data.eval_batch_size, max(num_eval, 1))
    return -(-size // data_axis) * data_axis


def layer_specs(recipe: Recipe, num_classes: int) -> tuple[LayerSpec, ...]:
    """The layer specs a recipe builds: its tokens (parsed at validation), or its zoo architecture."""
    return specs_of(layers=recipe.model.layers, arch=recipe.model.arch, num_classes=num_classes)
