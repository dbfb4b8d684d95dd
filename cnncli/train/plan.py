"""``cnncli train RECIPE --dry-run``: what a recipe would do, without compiling anything.

`dry_run` gathers the facts: the data's real input shape and sizes, the per-layer
analysis (the one ``conv-arith`` prints), the run's length, the learning-rate
schedule sampled over the run, and the training cost: FLOPs per step (forward x 3,
the usual estimate for forward + backward) and per run. It prints nothing:
`cnncli.report.plan` shows them as tables or JSON.

`check_recipe` is what the dry run and training both check once the data is known,
all at once, each problem with the ``--set`` or the file and line to fix: the model's
output against the class count (a classifier of another width, a model ending in
``flatten``), ``model.num_classes``, numbers that are infinite or NaN, every augmentation argument, and ``train.freeze``
patterns that match no parameter (or every one).
"""

from __future__ import annotations

import fnmatch
import math
import warnings
from dataclasses import dataclass
from typing import Any

from cnncli.arith import geometry
from cnncli.config.plan import Steps, layer_specs, num_classes, steps_for
from cnncli.config.recipe import Recipe
from cnncli.errors import CnnCliError, DataError

Problem = tuple[tuple, str]  # (key path in the recipe, message)
SOURCE_KEYS = {"image_size": ("folder", "tfds"), "channels": ("folder", "tfds"), "image_key": ("tfds",),
               "label_key": ("tfds",), "data_dir": ("tfds",)}  # fmt: skip  # [data] keys only these kinds read

TRAIN_FLOPS_FACTOR = 3  # backward ~ 2x forward (Kaplan et al. 2020; Hoffmann et al. 2022)
SCHEDULE_POINTS = 50  # learning-rate samples over the run, for the JSON plan


@dataclass(frozen=True)
class DryRun:
    """Everything the dry run shows."""

    recipe: Recipe
    input_shape: tuple[int, ...]
    num_classes: int
    num_train: int
    num_eval: int
    analysis: geometry.Analysis  # per layer, for the data's input shape
    steps: Steps
    schedule: Any  # optax schedule: step -> learning rate
    schedule_points: tuple[tuple[int, float], ...]  # (step, learning rate), SCHEDULE_POINTS over the run
    warnings: tuple[str, ...] = ()  # what loading the data warned about (classes without examples, skipped files)

    @property
    def params(self) -> int:
        return int(self.analysis.total.params)

    @property
    def forward_flops(self) -> int:
        """Per example."""
        return int(self.analysis.total.flops)

    @property
    def train_flops_per_step(self) -> int:
        return TRAIN_FLOPS_FACTOR * self.forward_flops * self.recipe.data.batch_size

    @property
    def train_flops_per_run(self) -> int:
        return self.train_flops_per_step * self.steps.total

    @property
    def eval_flops_per_pass(self) -> int:
        return self.forward_flops * self.num_eval


def dry_run(recipe: Recipe) -> DryRun:
    """Load the recipe's data and work out the plan; nothing is compiled or written."""
    from cnncli.data.checks import check_counts
    from cnncli.data.sources import load_dataset
    from cnncli.data.stream import open_stream_dataset, plan_pipeline
    from cnncli.train.devices import place_run
    from cnncli.train.optim import make_schedule

    place_run(recipe)  # the mesh fits the devices and the batch splits over it
    streamed = plan_pipeline(recipe.data).kind == "stream"  # as `train` loads it: a split over the budget streams
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        try:
            data = open_stream_dataset(recipe.data) if streamed else load_dataset(recipe.data)
        except MemoryError as err:  # e.g. a data.image_size whose examples alone exceed the machine's memory
            raise DataError(f"{recipe.data.source}: the data does not fit in memory, even streamed ({err})",
                            hint="check data.image_size: every example is resized to it") from None  # fmt: skip
    if streamed:  # what `load_dataset` checks and streaming does not (yet): empty splits, a single class
        check_counts(data.name, {recipe.data.train_split: int(data.train.x.shape[0]),
                                 recipe.data.eval_split: int(data.eval.x.shape[0])}, data.class_names)  # fmt: skip
    check_recipe(recipe, tuple(data.input_shape), data.num_classes)
    classes = num_classes(recipe, data.num_classes)
    analysis = geometry.analyze(layer_specs(recipe, classes), data.input_shape, num_classes=classes)
    steps = steps_for(recipe, int(data.train.x.shape[0]))
    schedule = make_schedule(recipe.schedule, recipe.optimizer.learning_rate, steps.per_epoch, steps.total)
    last = SCHEDULE_POINTS - 1
    points = sorted({round(i * (steps.total - 1) / last) for i in range(SCHEDULE_POINTS)}) if steps.total > 1 else [0]
    return DryRun(
        recipe=recipe, input_shape=tuple(data.input_shape), num_classes=classes, num_train=int(data.train.x.shape[0]),
        num_eval=int(data.eval.x.shape[0]), analysis=analysis, steps=steps, schedule=schedule,
        schedule_points=tuple((s, float(schedule(s))) for s in points),
        warnings=tuple(str(w.message) for w in caught if issubclass(w.category, UserWarning)),
    )  # fmt: skip


# ---------------------------------------------------------------- checks once the data is known


def _model_key(recipe: Recipe) -> tuple:
    return ("model", "layers") if recipe.model.layers is not None else ("model", "arch")


def _output_problem(recipe: Recipe, analysis: geometry.Analysis, classes: int) -> Problem | None:
    if tuple(analysis.output) == (classes,):
        return None
    shape = "x".join(map(str, analysis.output))
    message = f"`{'.'.join(_model_key(recipe))}`: the model's output is {shape} per example, but the data has " \
              f"{classes} classes"  # fmt: skip
    last = analysis.layers[-1].name if analysis.layers else ""
    if last.startswith("flatten"):
        message += "; it ends in `flatten`: add `dense` after it (its width defaults to the class count)"
    elif last.startswith("dense"):
        message += "; drop `c=` from the last `dense`: the classifier's width defaults to the class count"
    else:
        message += "; end with `gap` or `flatten`, then `dense` (its width defaults to the class count)"
    return _model_key(recipe), message


def augment_problems(ops: list, input_shape: tuple[int, ...]) -> list[Problem]:
    """Every bad op name and argument of ``data.augment`` (not only the first)."""
    from cnncli.data.augment.core import SPECS, validate_ops
    from cnncli.errors import did_you_mean, unknown_choice

    problems: list[Problem] = []
    rank = len(input_shape) - 1
    for i, op in enumerate(ops):
        given = dict(op) if isinstance(op, dict) else {"op": op.op, **(op.model_extra or {})}
        name = given.pop("op", None)
        where = f"data.augment[{i}]"
        if name not in SPECS:
            problems.append((("data", "augment", i, "op"),
                             f"`{where}.op`: {unknown_choice('augmentation op', str(name), SPECS)}"))  # fmt: skip
            continue
        spec, before = SPECS[name], len(problems)
        if rank not in spec.ranks:
            ranks = " or ".join(f"{r}-D" for r in spec.ranks)
            problems.append((("data", "augment", i, "op"), f"`{where}.op`: {name} needs {ranks} examples, but the "
                             f"data's are {rank}-D {'x'.join(map(str, input_shape))}"))  # fmt: skip
        for key, value in given.items():
            if key not in spec.args:
                guess = did_you_mean(key, spec.args)
                hint = f"; did you mean {guess!r}?" if guess else ""
                problems.append((("data", "augment", i, key),
                                 f"`{where}`: {name} has no argument {key!r}{hint} (valid: {', '.join(spec.args)})"))
            elif not spec.args[key].valid(value):
                problems.append((("data", "augment", i, key),
                                 f"`{where}.{key}`: {name} needs {spec.args[key].describe()}, got {value!r}"))
        if len(problems) == before:  # each argument valid: what depends on several of them
            try:
                validate_ops([{"op": name, **given}], input_shape)
            except CnnCliError as err:
                problems.append((("data", "augment", i), err.message.replace("data.augment[0]", where)))
    return problems


def source_key_problems(recipe: Recipe) -> list[Problem]:
    """``[data]`` keys that the recipe's source kind never reads (set, they would be silently ignored)."""
    kind = recipe.data.source_spec.kind
    return [(("data", key), f"`data.{key}` is read only for {' and '.join(k + ':' for k in kinds)} sources, not "
             f"{kind}: remove it (the data is used as it is)")  # fmt: skip
            for key, kinds in SOURCE_KEYS.items() if getattr(recipe.data, key) is not None and kind not in kinds]


def parameter_paths(recipe: Recipe, input_shape: tuple[int, ...], classes: int) -> list[str]:
    """Dotted paths of the model's parameters (``conv1.kernel``), from an abstract build (nothing computed)."""
    from flax import nnx

    from cnncli.models.build import init_rngs
    from cnncli.models.model import build_model as build

    specs = layer_specs(recipe, classes)
    model = nnx.eval_shape(lambda: build(specs, input_shape, classes, rngs=init_rngs(recipe.train.seed)))
    return [".".join(map(str, path)) for path, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))]


def freeze_problems(patterns: list[str], paths: list[str]) -> list[Problem]:
    """``train.freeze`` globs that match no parameter, or that together freeze every one.

    A glob matches a parameter's top-level layer name or its dotted path, as
    `cnncli.models.apply.trainable_filter` does.
    """

    def hit(glob: str, path: str) -> bool:
        return fnmatch.fnmatchcase(path.split(".")[0], glob) or fnmatch.fnmatchcase(path, glob)

    problems: list[Problem] = []
    layers = list(dict.fromkeys(p.split(".")[0] for p in paths))
    shown = ", ".join(layers[:12]) + (", ..." if len(layers) > 12 else "")
    for i, glob in enumerate(patterns):
        if not any(hit(glob, p) for p in paths):
            problems.append((("train", "freeze", i), f"`train.freeze`: {glob!r} matches no parameter "
                             f"(layers with parameters: {shown})"))  # fmt: skip
    if patterns and paths and all(any(hit(g, p) for g in patterns) for p in paths):
        problems.append((("train", "freeze"), f"`train.freeze`: {patterns} freezes every parameter; nothing to train"))
    return problems


def nonfinite_problems(value: Any, loc: tuple = ()) -> list[Problem]:
    """Every number of the recipe (a `Recipe`'s ``model_dump()``) that is infinite or NaN.

    The schema's bounds let ``inf`` through (``learning_rate = inf`` is "greater than 0");
    none of them means anything finite training could use: the loss goes NaN, or the
    schedule cannot be computed.
    """
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in nonfinite_problems(item, (*loc, key))]
    if isinstance(value, list | tuple):
        return [p for i, item in enumerate(value) for p in nonfinite_problems(item, (*loc, i))]
    if isinstance(value, float) and not math.isfinite(value):
        path = ".".join(str(k) for k in loc if not isinstance(k, int))
        where = path + "".join(f"[{k}]" for k in loc if isinstance(k, int))
        return [(loc, f"`{where}` = {value}: give a finite number (or leave the key out for its default)")]
    return []


def recipe_problems(recipe: Recipe, input_shape: tuple[int, ...], data_classes: int) -> list[Problem]:
    """Every problem of ``recipe`` with this data (see the module docstring); [] when none."""
    problems: list[Problem] = nonfinite_problems(recipe.model_dump(exclude={"data": {"augment"}}))
    requested = recipe.model.num_classes
    if requested is not None and requested != data_classes:
        problems.append((("model", "num_classes"), f"`model.num_classes` = {requested}, but the data has "
                         f"{data_classes} classes", ))  # fmt: skip
    classes = num_classes(recipe, data_classes)
    try:
        analysis = geometry.analyze(layer_specs(recipe, classes), input_shape, num_classes=classes)
    except CnnCliError as err:
        problems.append((_model_key(recipe), f"`{'.'.join(_model_key(recipe))}`: {err.message}"))
        analysis = None
    if analysis is not None and (output := _output_problem(recipe, analysis, classes)):
        problems.append(output)
    problems += augment_problems(list(recipe.data.augment), input_shape)
    problems += source_key_problems(recipe)
    if recipe.train.freeze and analysis is not None:  # the layers build: their parameters can be listed
        problems += freeze_problems(list(recipe.train.freeze), parameter_paths(recipe, input_shape, classes))
    return problems


def check_recipe(recipe: Recipe, input_shape: tuple[int, ...], data_classes: int) -> None:
    """Raise one error listing every `recipe_problems` entry, each at its ``--set`` or file and line.

    Raises:
        RecipeError: problems in the file (exit 1); `cnncli.config.recipe.OverrideError`
            when all come from ``--set`` (exit 2).
    """
    if problems := recipe_problems(recipe, tuple(input_shape), data_classes):
        raise recipe.origin.error(problems, hint="nothing was trained; fix them and run again (--dry-run checks "
                                  "without training)")  # fmt: skip
