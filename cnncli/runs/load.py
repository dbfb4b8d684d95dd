"""Reading a run directory back: the recipe, the data facts, and a restored model.

`eval`, `predict` and `inspect-filters` start here. Nothing in a run directory is
unpickled or executed: the recipe is JSON validated by the schema, arrays come from
orbax's tensorstore files (digests verified) or ``np.load(allow_pickle=False)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from cnncli.arith.layers import LayerSpec
from cnncli.config.plan import run_num_classes
from cnncli.config.recipe import Recipe
from cnncli.errors import CheckpointError, RecipeError
from cnncli.runs import layout as rundir
from cnncli.runs.checkpoint import Checkpoints, from_tree


@dataclass
class LoadedRun:
    """A run restored for inference.

    Attributes:
        workdir: the run directory.
        recipe: the resolved recipe the run trained with.
        data: ``data.json``: class_names, input_shape, mean, std, value_range, ...
        model: the Flax model in eval mode, holding the checkpoint's weights.
        specs: its layer specs.
        step: the checkpoint's step (completed updates).
        meta: the checkpoint's metadata (epoch, metrics, versions, ...).
        weights: ``"raw"`` or ``"ema"``: which weights the model holds.
    """

    workdir: Path
    recipe: Recipe
    data: dict[str, Any]
    model: Any
    specs: tuple[LayerSpec, ...]
    step: int
    meta: dict[str, Any]
    weights: str = "raw"

    @property
    def class_names(self) -> list[str]:
        return list(self.data["class_names"])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.data["input_shape"])

    @property
    def num_classes(self) -> int:
        return run_num_classes(self.data)


def load_recipe_of(workdir: Path) -> Recipe:
    """The resolved recipe saved in a run directory."""
    data = rundir.read_json(workdir / rundir.RECIPE_JSON)
    try:
        return Recipe.model_validate(data)
    except Exception as err:
        raise RecipeError(f"{workdir / rundir.RECIPE_JSON}: not a valid recipe: {err}") from None


def load_run(path: str | Path, checkpoint: str | int = "latest", *, ema: bool = False) -> LoadedRun:
    """Rebuild a run's model and load a checkpoint into it.

    Args:
        path: the run directory (or a path inside it).
        checkpoint: ``latest``, ``best``, or a step number.
        ema: load the EMA weights (the run must have ``train.ema_decay``).

    Raises:
        CnnCliError: not a run directory, no such checkpoint, corrupt checkpoint.
    """
    from cnncli.models.apply import trainable_filter
    from cnncli.models.build import build_model

    workdir = rundir.find_run(path)
    recipe = load_recipe_of(workdir)
    data = rundir.read_json(workdir / rundir.DATA_JSON)
    model, specs = build_model(recipe, tuple(data["input_shape"]), run_num_classes(data))
    store = Checkpoints(workdir / rundir.CHECKPOINTS, keep=recipe.train.keep, async_save=False, writer=False)
    try:
        step = store.resolve(checkpoint)
        tree, meta = store.restore_tree(step)
    finally:
        store.close()
    graphdef, params, rest = nnx.split(model, trainable_filter(recipe.train.freeze), ...)
    key = "ema" if ema else "params"
    if ema and not isinstance(tree.get("ema"), dict):
        raise CheckpointError(f"{workdir}: this run kept no EMA weights", hint="drop --ema")
    params = from_tree(params, tree[key])
    rest = from_tree(rest, tree.get("rest", {}))  # orbax drops empty subtrees: a model without bn/dropout has none
    model = nnx.merge(graphdef, jax.tree.map(jax.numpy.asarray, params), jax.tree.map(jax.numpy.asarray, rest))
    model.eval()
    return LoadedRun(workdir, recipe, data, model, specs, step, meta, "ema" if ema else "raw")


def load_init_params(workdir: Path) -> dict[str, np.ndarray]:
    """The step-0 parameters, keyed by ``/``-joined state path (``conv1/kernel``)."""
    path = Path(workdir) / rundir.INIT
    if not path.exists():
        raise CheckpointError(f"{path} not found: this run did not keep its initial weights")
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}
