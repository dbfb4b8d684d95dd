"""A recipe's Flax model: its layer specs (tokens or zoo) built into an NNX module."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from cnncli.config.plan import layer_specs
from cnncli.config.recipe import Recipe
from cnncli.errors import RecipeError
from cnncli.models.model import build_model as build
from cnncli.runtime.jaxsetup import configure


def init_rngs(seed: int) -> nnx.Rngs:
    """A model's own random streams from a run's seed: parameter init and dropout.

    Parameter init from an rbg key: threefry's initializer programs compiled slowly on
    XLA CPU (ResNet-20 init 5.0 s with threefry vs 1.9 s with rbg, BENCHMARKS.md). Only
    init uses it; dropout, shuffling and augmentation keep the default (threefry) keys.
    """
    return nnx.Rngs(params=jax.random.key(seed, impl="rbg"), dropout=seed + 1)


def build_model(recipe: Recipe, input_shape: tuple[int, ...], num_classes: int, seed: int | None = None):
    """Build the recipe's Flax model, checking that it ends in ``num_classes`` logits."""
    configure()
    seed = recipe.train.seed if seed is None else seed
    specs = layer_specs(recipe, num_classes)
    model = build(specs, input_shape, num_classes, rngs=init_rngs(seed))
    graphdef, state = nnx.split(model)
    x = jax.ShapeDtypeStruct((2, *input_shape), jnp.float32)
    out = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s, copy=True)(x), state, x)  # no compute
    if tuple(out.shape[1:]) != (num_classes,):
        shape = "x".join(map(str, out.shape[1:]))
        raise RecipeError(
            f"model.layers: the model's output is {shape} per example, but the data has {num_classes} classes",
            hint="end with `flatten` or `gap`, then `dense` (its width defaults to the class count)",
        )
    return model, specs
