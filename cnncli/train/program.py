"""The compiled training program: one frozen bundle, built the same way for training and profiling.

`split_model` splits a built model once: the static graph (in training and in eval
mode) and its state, trainable parameters apart from everything else.
`build_program` makes the jitted train and eval steps from a `Blueprint` (those parts,
an optax transformation and a `StepConfig`), and compiles the train step ahead of time (timed)
for the state and arguments it will be called with, so the loop never recompiles.
`cnncli.train.profiling.synthetic_step` builds its benchmark step with the same two
functions, so a benchmark times exactly what ``cnncli train`` runs.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
import optax
from flax import nnx

from cnncli.models.apply import StepConfig, trainable_filter
from cnncli.train.step import make_eval_step, make_train_step


@dataclass(frozen=True)
class ModelParts:
    """A model split once into graph and state (`split_model`)."""

    graphdef: Any  # the graph in training mode
    eval_graphdef: Any  # the same graph in eval mode (BatchNorm's running statistics, no dropout)
    split_filters: tuple  # (trainable, rest)
    params: Any  # nnx.State: the trainable parameters, initial values
    rest: Any  # nnx.State: batch statistics, frozen parameters, RNG counters
    all_params: Any  # nnx.State of every parameter, frozen ones included (the step-0 weights)

    @property
    def num_params(self) -> int:
        return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(self.all_params))

    @property
    def num_trainable(self) -> int:
        return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(self.params))


def split_model(model: nnx.Module, freeze: Sequence[str] = ()) -> ModelParts:
    """Split ``model`` into its graphs and state; parameters matching the ``freeze`` globs are not trained."""
    filters = (trainable_filter(list(freeze)), ...)
    model.train()
    graphdef, params, rest = nnx.split(model, *filters)
    model.eval()
    eval_graphdef = nnx.split(model, *filters)[0]
    return ModelParts(graphdef, eval_graphdef, filters, params, rest, nnx.state(model, nnx.Param))


@dataclass(frozen=True)
class Blueprint:
    """What a `Program` is compiled from: the split model, the optimizer and the step settings."""

    parts: ModelParts
    tx: optax.GradientTransformation
    config: StepConfig
    augment: Callable | None = None  # on-device augmentation (key, x, y_onehot) -> (x, y_onehot)
    batched: bool = False  # streamed data: the step takes (state, x, labels, key) instead of gathering its batch


@dataclass(frozen=True)
class Program:
    """The compiled steps of a run and the blueprint they were built from."""

    blueprint: Blueprint
    train_step: Callable  # compiled: (state, x_all, y_all, perm, index, key) -> state, or (state, x, y, key)
    # -> state for streamed data (``blueprint.batched``); the state is donated
    eval_step: Callable  # jitted: (params, rest, x, y, mask) -> (loss_sum, correct, count)
    compile_seconds: float  # tracing + lowering + XLA compilation of the train step

    @property
    def graphdef(self):
        return self.blueprint.parts.graphdef

    @property
    def split_filters(self) -> tuple:
        return self.blueprint.parts.split_filters

    @property
    def tx(self) -> optax.GradientTransformation:
        return self.blueprint.tx

    @property
    def config(self) -> StepConfig:
        return self.blueprint.config


def build_program(blueprint: Blueprint, state, args: tuple, *, state_shardings=None,
                  compiler_options="auto") -> Program:  # fmt: skip
    """Make the train and eval steps and compile the train step for ``state`` and ``args`` (timed).

    Args:
        blueprint: the split model, optimizer, step settings and augmentation.
        state: a `cnncli.train.step.TrainState` laid out as the loop will pass it (not consumed).
        args: ``(x_all, y_all, perm, index, key)`` as the loop will pass them (``(x, y, key)`` when
            ``blueprint.batched``; arrays or ``jax.ShapeDtypeStruct``s).
        state_shardings: the state's shardings on a mesh (None on one device): the updated
            state keeps that layout.
        compiler_options: XLA options (``"auto"``: `cnncli.models.apply.xla_options`; None: XLA's defaults).
    """
    parts, cfg = blueprint.parts, blueprint.config
    t0 = time.perf_counter()
    step = make_train_step(parts.graphdef, parts.split_filters, blueprint.tx, cfg, blueprint.augment,
                           state_shardings, compiler_options=compiler_options, batched=blueprint.batched)  # fmt: skip
    compiled = step.lower(state, *args).compile()
    seconds = time.perf_counter() - t0
    # Evaluation keeps XLA's convolutions, as `cnncli eval` does: the same numbers in both.
    eval_step = make_eval_step(parts.eval_graphdef, dataclasses.replace(cfg, conv_backend="xla"))
    return Program(blueprint, compiled, eval_step, seconds)
