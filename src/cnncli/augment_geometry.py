"""Geometric augmentation (rotate, translate, scale) and a RandAugment policy, for 2-D images.

Every geometric op is one affine resampling: each output pixel ``q`` reads the input
at ``A (q - c - t) + c`` (``c`` the image centre, ``t`` a shift in pixels, ``A`` the
inverse of the transform), bilinearly, with ``fill`` outside the image. Identity
parameters sample exactly at pixel centres, so they return the input unchanged.

RandAugment (Cubuk et al. 2020): each example gets ``n`` ops drawn uniformly from
`POLICY`, at magnitude ``m`` on torchvision's 0..30 scale (``level = m / 30``) and a
random sign. Equalize is not included. Each round costs one affine resampling plus
the elementwise colour ops (under ``vmap`` every branch is computed and one selected).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from cnncli.augment import Context, Op, each, fill_value

COLOUR = ("identity", "autocontrast", "brightness", "color", "contrast", "posterize", "sharpness", "solarize")
GEOMETRIC = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
POLICY = COLOUR + GEOMETRIC
MAX_DEGREES = 30.0  # rotate at m = 30, as in torchvision's RandAugment
MAX_SHEAR = 0.3  # shear factor at m = 30
MAX_SHIFT = 150 / 331  # translate fraction of the side at m = 30 (torchvision: 150 px of 331)
MAX_FACTOR = 0.9  # brightness/color/contrast/sharpness factor 1 +- 0.9 at m = 30
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as Pillow's convert("L")


def warp(image: jax.Array, inverse: jax.Array, shift: jax.Array, fill: jax.Array) -> jax.Array:
    """Resample ``image (H, W, C)`` at ``inverse @ (q - c - shift) + c``; bilinear; ``fill (C,)`` outside."""
    h, w, _ = image.shape
    centre = jnp.array([(h - 1) / 2, (w - 1) / 2], jnp.float32)
    rows, cols = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij")
    rel = jnp.stack([rows, cols]) - (centre + shift)[:, None, None]
    src = jnp.einsum("ij,jhw->ihw", inverse, rel) + centre[:, None, None]
    r0, c0 = jnp.floor(src[0]), jnp.floor(src[1])
    dr, dc = src[0] - r0, src[1] - c0
    out = jnp.zeros_like(image)
    for r, wr in ((r0, 1.0 - dr), (r0 + 1.0, dr)):  # the four neighbours, weighted by overlap
        for c, wc in ((c0, 1.0 - dc), (c0 + 1.0, dc)):
            valid = (r >= 0) & (r <= h - 1) & (c >= 0) & (c <= w - 1)
            tap = image[jnp.clip(r, 0, h - 1).astype(jnp.int32), jnp.clip(c, 0, w - 1).astype(jnp.int32)]
            out = out + (wr * wc)[..., None] * jnp.where(valid[..., None], tap, fill)
    return out


def _rotation(radians: jax.Array) -> jax.Array:
    cos, sin = jnp.cos(radians), jnp.sin(radians)
    return jnp.array([[cos, -sin], [sin, cos]])


def rotate(a: dict, ctx: Context) -> Op:
    """Rotate by an angle uniform in [-degrees, degrees]."""
    limit, fill = math.radians(a["degrees"]), fill_value(a, ctx)

    def op(key, image):
        angle = jax.random.uniform(key, (), minval=-limit, maxval=limit)
        return warp(image, _rotation(angle), jnp.zeros(2), fill)

    return each(op, a["p"])


def translate(a: dict, ctx: Context) -> Op:
    """Shift by a whole number of pixels, up to ``fraction`` of each side (no blur)."""
    sides, fill = jnp.asarray(ctx.spatial, jnp.float32), fill_value(a, ctx)

    def op(key, image):
        shift = jnp.round(jax.random.uniform(key, (2,), minval=-1.0, maxval=1.0) * a["fraction"] * sides)
        return warp(image, jnp.eye(2), shift, fill)

    return each(op, a["p"])


def scale(a: dict, ctx: Context) -> Op:
    """Zoom about the centre by a factor uniform in [min, max] (> 1 zooms in)."""
    fill = fill_value(a, ctx)

    def op(key, image):
        factor = jax.random.uniform(key, (), minval=a["min"], maxval=a["max"])
        return warp(image, jnp.eye(2) / factor, jnp.zeros(2), fill)

    return each(op, a["p"])


# ------------------------------------------------------------ RandAugment


def _luma(image: jax.Array) -> jax.Array:
    if image.shape[-1] == 3:
        return (image @ jnp.asarray(LUMA, image.dtype))[..., None]
    return image.mean(axis=-1, keepdims=True)


def _blend(base: jax.Array, image: jax.Array, factor: jax.Array) -> jax.Array:
    return jnp.clip(base + factor * (image - base), 0.0, 1.0)


def _smooth(image: jax.Array) -> jax.Array:
    """PIL's SMOOTH filter ([[1,1,1],[1,5,1],[1,1,1]] / 13), edges replicated."""
    h, w, _ = image.shape
    padded = jnp.pad(image, ((1, 1), (1, 1), (0, 0)), mode="edge")
    total = sum(padded[i : i + h, j : j + w] for i in range(3) for j in range(3))
    return (total + 4 * image) / 13


def _colour_branches(level: float):
    """The colour ops as ``f(image, factor) -> image`` in `COLOUR` order (unit scale)."""
    step = 2 ** round(4 * level)  # posterize: keep 8 - round(4 level) of 8 bits
    threshold = 1.0 - level  # solarize: invert values above it

    def autocontrast(im, f):
        lo, hi = im.min(axis=(0, 1), keepdims=True), im.max(axis=(0, 1), keepdims=True)
        return jnp.where(hi > lo, (im - lo) / jnp.where(hi > lo, hi - lo, 1.0), im)

    return [
        lambda im, f: im,
        autocontrast,
        lambda im, f: jnp.clip(im * f, 0.0, 1.0),
        lambda im, f: _blend(_luma(im), im, f),
        lambda im, f: _blend(_luma(im).mean(), im, f),
        lambda im, f: jnp.floor(jnp.round(im * 255) / step) * step / 255,
        lambda im, f: _blend(_smooth(im), im, f),
        lambda im, f: jnp.where(im > threshold, 1.0 - im, im),
    ]


def _affine(op: jax.Array, sign: jax.Array, level: float, sides: jax.Array):
    """(inverse matrix, shift) of the geometric op with index ``op`` in `POLICY`; identity otherwise."""
    index = {name: POLICY.index(name) for name in GEOMETRIC}
    angle = jnp.where(op == index["rotate"], sign * math.radians(MAX_DEGREES) * level, 0.0)
    shear_x = jnp.where(op == index["shear_x"], sign * MAX_SHEAR * level, 0.0)
    shear_y = jnp.where(op == index["shear_y"], sign * MAX_SHEAR * level, 0.0)
    shear = jnp.array([[1.0, shear_y], [shear_x, 1.0]])
    shift = jnp.stack([
        jnp.where(op == index["translate_y"], jnp.round(sign * MAX_SHIFT * level * sides[0]), 0.0),
        jnp.where(op == index["translate_x"], jnp.round(sign * MAX_SHIFT * level * sides[1]), 0.0),
    ])  # fmt: skip
    return _rotation(angle) @ shear, shift


def randaugment(a: dict, ctx: Context) -> Op:
    """``n`` ops per example from `POLICY` at magnitude ``m`` (0..30), random signs."""
    level = a["m"] / 30.0
    branches = _colour_branches(level)
    sides, fill = jnp.asarray(ctx.spatial, jnp.float32), fill_value(a, ctx)

    def op(key, image):
        for k in jax.random.split(key, a["n"]):
            k_op, k_sign = jax.random.split(k)
            choice = jax.random.randint(k_op, (), 0, len(POLICY))
            sign = jnp.where(jax.random.bernoulli(k_sign), 1.0, -1.0)
            inverse, shift = _affine(choice, sign, level, sides)
            image = warp(image, inverse, shift, fill)
            colour = jnp.where(choice < len(COLOUR), choice, 0)
            image = jax.lax.switch(colour, branches, image, 1.0 + sign * MAX_FACTOR * level)
        return image

    return each(op, a["p"])
