"""A recipe's Flax model: its layer specs (tokens or zoo) built into an NNX module."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from cnncli.arith.layers import LayerSpec, parse_layers
from cnncli.config.recipe import Recipe
from cnncli.errors import RecipeError


def model_specs(recipe: Recipe, num_classes: int) -> tuple[LayerSpec, ...]:
    """The layer specs a recipe builds: its tokens, or its zoo architecture."""
    if recipe.model.layers is not None:
        return parse_layers(recipe.model.layers)
    from cnncli.arith import zoo

    return zoo.build(recipe.model.arch, num_classes)


def build_model(recipe: Recipe, input_shape: tuple[int, ...], num_classes: int, seed: int | None = None):
    """Build the recipe's Flax model, checking that it ends in ``num_classes`` logits."""
    from cnncli.models import build_model as build
    from cnncli.runtime.jaxsetup import configure

    configure()
    seed = recipe.train.seed if seed is None else seed
    specs = model_specs(recipe, num_classes)
    # Parameter init from an rbg key: threefry's initializer programs compiled slowly on
    # XLA CPU (ResNet-20 init 5.0 s with threefry vs 1.9 s with rbg, BENCHMARKS.md). Only
    # init uses it; dropout, shuffling and augmentation keep the default (threefry) keys.
    model = build(specs, input_shape, num_classes, rngs=nnx.Rngs(params=jax.random.key(seed, impl="rbg"), dropout=seed + 1))
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
