"""Primitives every augmentation op is built from: the op type, the data context, per-example application.

Ops see images in *unit* scale (0 = the data's raw minimum, 1 = its raw maximum; see
`cnncli.data.augment.core`). `cnncli.data.augment.ops` and
`cnncli.data.augment.geometric` both build on this module; it imports neither.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp

Op = Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]  # (key, u, targets) -> (u, targets)


@dataclass(frozen=True)
class Context:
    """What ops need to know about the data: example geometry and the unit-scale mapping."""

    spatial: tuple[int, ...]  # (H, W) for images; (L,) or (D, H, W) for other data
    channels: int
    mean: jax.Array  # (C,) the training mean in unit scale: fill = "mean"
    scale: jax.Array  # (C,) unit = normalized * scale + offset
    offset: jax.Array

    @classmethod
    def from_data(cls, data) -> Context:
        """From a `cnncli.data.base.Dataset` (``input_shape``, ``mean``, ``std``, ``value_range``)."""
        shape = tuple(data.input_shape)
        channels = shape[-1]
        lo, hi = (float(v) for v in data.value_range)
        width = hi - lo if hi > lo else 1.0  # constant data: any scale works
        mean = jnp.broadcast_to(jnp.asarray(data.mean or [0.0], jnp.float32), (channels,))
        std = jnp.broadcast_to(jnp.asarray(data.std or [1.0], jnp.float32), (channels,))
        return cls(shape[:-1], channels, (mean - lo) / width, std / width, (mean - lo) / width)


def materialize(v: jax.Array) -> jax.Array:
    """Force ``v`` into memory (outside ``vmap`` only): a conditional is a fusion boundary.

    XLA CPU otherwise fuses an op's gathers (resampling, crops, ``x[perm]``) with what
    produces their input and what consumes their output, recomputing per gathered
    value: two rotations in a row took 21 ms per 128 CIFAR images instead of 4, two
    RandAugment rounds 17 ms instead of 7. ``lax.optimization_barrier`` does not stop
    it on CPU. Costs one copy at most.
    """
    return jax.lax.cond(jnp.isnan(v.reshape(-1)[0]), lambda t: t + 0.0, lambda t: t, v)


def fill_value(args: dict, ctx: Context) -> jax.Array:
    """The per-channel fill colour ``(C,)`` in unit scale."""
    if args["fill"] == "mean":
        return ctx.mean
    return jnp.full((ctx.channels,), args["fill"], jnp.float32)


def per_example(key: jax.Array, u: jax.Array, out: jax.Array, p: float) -> jax.Array:
    """Keep ``out`` for each example with probability ``p``, else the input ``u``."""
    if p >= 1.0:
        return out
    keep = jax.random.bernoulli(key, p, (u.shape[0],))
    return jnp.where(keep.reshape((-1,) + (1,) * (u.ndim - 1)), out, u)


def each(fn: Callable[[jax.Array, jax.Array], jax.Array], p: float) -> Op:
    """An op from ``fn(key, image) -> image``: vmapped over the batch, applied with probability ``p``."""

    def op(key, u, targets):
        if p <= 0.0:
            return u, targets
        k_fn, k_p = jax.random.split(key)
        out = jax.vmap(fn)(jax.random.split(k_fn, u.shape[0]), u)
        return per_example(k_p, u, out, p), targets

    return op


def shift_crop(pads: tuple[int, ...], mode: str, fill: jax.Array) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """``crop(key, image)``: pad spatial axis ``i`` by ``pads[i]`` each side, crop back at a random offset.

    A whole-pixel shift by up to ``pads[i]`` in either direction; ``mode`` is `jnp.pad`'s,
    with ``"constant"`` padding in the per-channel ``fill`` colour.
    """
    widths = [(p, p) for p in pads] + [(0, 0)]

    def crop(key, image):
        if mode == "constant":
            inside = jnp.pad(jnp.ones(image.shape[:-1] + (1,), bool), widths)
            padded = jnp.where(inside, jnp.pad(image, widths), fill)
        else:
            padded = jnp.pad(image, widths, mode=mode)
        starts = jax.random.randint(key, (len(pads),), 0, 2 * jnp.asarray(pads) + 1)
        return jax.lax.dynamic_slice(padded, [starts[i] for i in range(len(pads))] + [0], image.shape)

    return crop


