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
from cnncli.errors import CheckpointError, RecipeError, UsageError
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


def read_data_json(workdir: Path) -> dict[str, Any]:
    """A run's ``data.json``, checked: what `load_run` and the commands after it read must be there and sane.

    Raises:
        CheckpointError: the file is not an object, or ``input_shape``, ``class_names``,
            ``num_classes``, ``mean`` or ``std`` is missing or malformed (a damaged or
            hand-edited run: without this check, a traceback from deep inside).
    """
    path = workdir / rundir.DATA_JSON
    data = rundir.read_json(path)

    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{path}: {what}", hint="this file is written by `cnncli train`; restore it from a "
                               "copy of the run, or train again")  # fmt: skip

    if not isinstance(data, dict):
        raise bad(f"expected a JSON object, found {type(data).__name__}")

    def numbers(key: str, kind: type, positive: bool = False) -> list:
        values = data.get(key)
        if not isinstance(values, list) or not values or not all(
            isinstance(v, kind) and not isinstance(v, bool) and (v > 0 if positive else True) for v in values
        ):
            raise bad(f"`{key}` is {values!r}; expected a non-empty list of {'positive ' if positive else ''}"
                      f"{'integers' if kind is int else 'numbers'}")  # fmt: skip
        return values

    if not 2 <= len(numbers("input_shape", int, positive=True)) <= 4:
        raise bad(f"`input_shape` is {data['input_shape']!r}; expected 2 to 4 sides and channels")
    names = data.get("class_names")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise bad(f"`class_names` is {names!r}; expected a list of names")
    count = data.get("num_classes", len(names))
    if isinstance(count, bool) or not isinstance(count, int) or count < 2 or len(names) != count:
        raise bad(f"`class_names` names {len(names)} classes but `num_classes` is {count!r}")
    for key in ("mean", "std"):
        if key in data:
            numbers(key, int | float)
    return data


def load_run(path: str | Path, checkpoint: str | int = "latest", *, ema: bool = False) -> LoadedRun:
    """Rebuild a run's model and load a checkpoint into it.

    Args:
        path: the run directory (or a path inside it); ``RUN/checkpoints/STEP`` loads that step.
        checkpoint: ``latest``, ``best``, or a step number (with a ``checkpoints/STEP`` path: that
            step, or ``latest``, the default, which then means the path's step).
        ema: load the EMA weights (the run must have ``train.ema_decay``).

    Raises:
        CnnCliError: not a run directory, no such checkpoint, corrupt checkpoint.
    """
    from cnncli.models.apply import trainable_filter
    from cnncli.models.build import build_model

    workdir = rundir.find_run(path)
    checkpoint = _step_of_path(path, workdir, checkpoint)
    recipe = load_recipe_of(workdir)
    data = read_data_json(workdir)
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


def _step_of_path(path: str | Path, workdir: Path, checkpoint: str | int) -> str | int:
    """``RUN/checkpoints/STEP`` means that step (``checkpoint``, if not the default ``latest``, must agree)."""
    named = rundir.checkpoint_named(path, workdir)
    if named is None or checkpoint in ("latest", named):
        return checkpoint if named is None else named
    raise UsageError(f"{path} is the checkpoint of step {named}, but --checkpoint says {checkpoint}",
                     hint=f"give one of them: {workdir} --checkpoint {checkpoint}, or {path} alone")  # fmt: skip


def load_init_params(workdir: Path) -> dict[str, np.ndarray]:
    """The step-0 parameters, keyed by ``/``-joined state path (``conv1/kernel``)."""
    path = Path(workdir) / rundir.INIT
    if not path.exists():
        raise CheckpointError(f"{path} not found: this run did not keep its initial weights")
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}
