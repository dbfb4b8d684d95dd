"""One seed, every random stream; and the training set on the device, fed to each step.

`SeedStreams` derives the run's random streams from ``train.seed``: parameter init
and dropout (`cnncli.models.build.init_rngs`), the epoch shuffles and the
augmentation keys. Each is a stateless function of (seed, epoch or step), so a
checkpoint stores none of them and a resume re-derives them: same recipe and seed on
the same machine, same numbers.

`Feed` holds the whole training set on the device (replicated on a mesh) and gives a
step its arguments: the epoch's permutation and the batch's position in it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from cnncli.data.base import Dataset
from cnncli.models.build import init_rngs
from cnncli.runtime import distributed

_SHUFFLE, _AUGMENT = 1, 2  # fold_in tags of the streams under key(seed)


def epoch_permutation(shuffle_key: jax.Array, epoch: int, n: int) -> jax.Array:
    """The training-set order of epoch ``epoch`` (int32): a function of (seed, epoch) only."""
    return jax.random.permutation(jax.random.fold_in(shuffle_key, epoch), n).astype(jnp.int32)


def step_key(augment_key: jax.Array, step) -> jax.Array:
    """The augmentation key of optimizer step ``step`` (the train step derives it inside its trace)."""
    return jax.random.fold_in(augment_key, step)


@dataclass(frozen=True)
class SeedStreams:
    """The random streams of a run, all from one seed (see the module docstring)."""

    seed: int

    def init_rngs(self) -> nnx.Rngs:
        """Parameter init (rbg) and dropout streams for building the model."""
        return init_rngs(self.seed)

    @property
    def shuffle(self) -> jax.Array:
        """The key whose ``fold_in(key, epoch)`` permutes epoch ``epoch``."""
        return jax.random.fold_in(jax.random.key(self.seed), _SHUFFLE)

    @property
    def augment(self) -> jax.Array:
        """The key whose ``fold_in(key, step)`` augments step ``step``'s batch (inside the step)."""
        return jax.random.fold_in(jax.random.key(self.seed), _AUGMENT)

    def describe(self) -> dict[str, Any]:
        """The streams, in words, for a checkpoint's metadata (they are not stored: they derive from the seed)."""
        return {"seed": self.seed, "shuffle": f"permutation(fold_in(fold_in(key(seed), {_SHUFFLE}), epoch))",
                "augment": f"fold_in(fold_in(key(seed), {_AUGMENT}), step)", "dropout": "nnx.Rngs counters in state.rest"}  # fmt: skip


@dataclass(frozen=True)
class Feed:
    """The training set on the device and the arguments of each train step."""

    x: jax.Array  # the whole training split, on every device
    y: jax.Array
    shuffle_key: jax.Array
    augment_key: jax.Array  # replicated over the mesh
    placement: distributed.Placement
    permute: Callable[[jax.Array, int], jax.Array]  # jitted (shuffle key, epoch) -> int32 permutation

    def permutation(self, epoch: int) -> jax.Array:
        """The training-set order of an epoch: a function of (seed, epoch) only."""
        return self.permute(self.shuffle_key, epoch)

    def index(self, index: int):
        """The step's position argument (replicated over processes when there are several)."""
        return self.placement.scalar(index)

    def args(self, perm: jax.Array, index: int) -> tuple:
        """``(x_all, y_all, perm, index, key)``: what the train step takes after the state."""
        return self.x, self.y, perm, self.index(index), self.augment_key


def make_feed(data: Dataset, streams: SeedStreams, placement: distributed.Placement) -> Feed:
    """Put the training split on the device(s) and the permutation function beside it."""
    n = data.train.x.shape[0]
    perm = lambda key, epoch: epoch_permutation(key, epoch, n)  # noqa: E731
    permute = jax.jit(perm, out_shardings=distributed.replicated(placement.mesh)) if placement.multi else jax.jit(perm)
    return Feed(x=placement.replicate(data.train.x), y=placement.replicate(data.train.y), shuffle_key=streams.shuffle,
                augment_key=placement.replicate(streams.augment), placement=placement, permute=permute)  # fmt: skip
