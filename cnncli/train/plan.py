"""``cnncli train RECIPE --dry-run``: what a recipe would do, without compiling anything.

`dry_run` gathers the facts: the data's real input shape and sizes, the per-layer
analysis (the one ``conv-arith`` prints), the run's length, the learning-rate
schedule sampled over the run, and the training cost: FLOPs per step (forward x 3,
the usual estimate for forward + backward) and per run. It prints nothing:
`cnncli.report.plan` shows them as tables or JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cnncli.arith import geometry
from cnncli.config.plan import Steps, layer_specs, num_classes, steps_for
from cnncli.config.recipe import Recipe

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
    from cnncli.data.sources import load_dataset
    from cnncli.train.optim import make_schedule

    data = load_dataset(recipe.data)
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
    )  # fmt: skip
