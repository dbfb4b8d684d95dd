"""On-device augmentation: the ordered ``[[data.augment]]`` ops, run inside the jitted step.

`make_augment` validates the recipe's ops and returns ``augment(key, x, targets) ->
(x, targets)``, a pure JAX function the train step calls on its normalized float32
batch ``(B, *spatial, C)`` and one-hot targets ``(B, K)``. No Python runs per step:
on CPU the ops cost only their arithmetic; elsewhere they run on the accelerator.

Units: ops see images in *unit* scale, 0 = the data's raw minimum and 1 = its raw
maximum (``value_range``; 0..255 for uint8 images), so arguments mean the same on any
dataset: ``brightness.max_delta = 0.1`` shifts by a tenth of the range, ``fill = 0``
is black, ``fill = "mean"`` is the training set's mean colour. Photometric ops clip to
[0, 1], as on real pixels. The batch is mapped to unit scale once, before the first
op, and back after the last (two multiply-adds per value).

Randomness: op ``i`` uses ``fold_in(key, i)``; per-example ops split that key over the
batch. The same key gives the same batch, bit for bit. ``p`` is per example, except
for ``mixup`` and ``cutmix``, which mix the whole batch with probability ``p``.

The geometric and RandAugment ops live in `cnncli.data.augment.geometric`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from cnncli.errors import RecipeError, did_you_mean, unknown_choice

PAD_MODES = ("constant", "edge", "reflect", "symmetric", "wrap")
Op = Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]  # (key, u, targets) -> (u, targets)


@dataclass(frozen=True)
class Arg:
    """One op argument: its default and what values are valid."""

    default: Any
    kind: str  # "number" | "int" | "fill" | "choice"
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()

    def describe(self) -> str:
        """What a valid value looks like, for error messages."""
        if self.kind == "choice":
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.kind == "fill":
            return 'a number in [0, 1] (unit scale) or "mean"'
        what = "an integer" if self.kind == "int" else "a number"
        if self.lo is not None and self.hi is not None:
            return f"{what} in [{self.lo:g}, {self.hi:g}]"
        return f"{what} >= {self.lo:g}" if self.lo is not None else what

    def valid(self, value: Any) -> bool:
        """True if ``value`` is allowed (booleans are never numbers here)."""
        if self.kind == "choice":
            return value in self.choices
        if self.kind == "fill" and value == "mean":
            return True
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or (self.kind == "int" and not isinstance(value, int)):
            return False
        lo, hi = (0.0, 1.0) if self.kind == "fill" else (self.lo, self.hi)
        return (lo is None or value >= lo) and (hi is None or value <= hi)


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


# ------------------------------------------------------------ pixel-wise ops


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


def _random_crop(a: dict, ctx: Context) -> Op:
    """Pad every spatial side by ``padding`` pixels and crop back at a random offset."""
    return each(shift_crop((a["padding"],) * len(ctx.spatial), a["mode"], fill_value(a, ctx)), a["p"])


def _flip(axis: int) -> Callable[[dict, Context], Op]:
    """Mirror along a batch axis (-2: width, -3: height) with probability ``p`` per example."""

    def build(a: dict, ctx: Context) -> Op:
        def op(key, u, targets):
            return per_example(key, u, jnp.flip(u, axis), a["p"]), targets

        return op

    return build


def _brightness(a: dict, ctx: Context) -> Op:
    d = a["max_delta"]
    return each(lambda key, im: jnp.clip(im + jax.random.uniform(key, (), minval=-d, maxval=d), 0.0, 1.0), a["p"])


def _contrast(a: dict, ctx: Context) -> Op:
    """Scale each channel's deviation from its per-image mean by a factor in [1 - d, 1 + d]."""
    d, axes = a["max_delta"], tuple(range(len(ctx.spatial)))

    def contrast(key, image):
        factor = jax.random.uniform(key, (), minval=1.0 - d, maxval=1.0 + d)
        mean = image.mean(axis=axes, keepdims=True)
        return jnp.clip(mean + factor * (image - mean), 0.0, 1.0)

    return each(contrast, a["p"])


def _gaussian_noise(a: dict, ctx: Context) -> Op:
    std = a["std"]

    def op(key, u, targets):
        k_noise, k_p = jax.random.split(key)
        # One flat draw for the batch: XLA CPU compiles a rank-4 draw ~5x slower (2.4 s vs 0.4 s).
        noise = jax.random.normal(k_noise, (u.size,)).reshape(u.shape)
        return per_example(k_p, u, jnp.clip(u + std * noise, 0.0, 1.0), a["p"]), targets

    return op


def box_mask(spatial: tuple[int, ...], lo: jax.Array, hi: jax.Array) -> jax.Array:
    """Boolean ``spatial`` mask of the box ``lo <= index < hi`` (one bound per axis)."""
    index = jnp.indices(spatial)
    shape = (len(spatial),) + (1,) * len(spatial)
    return jnp.all((index >= lo.reshape(shape)) & (index < hi.reshape(shape)), axis=0)


def _cutout(a: dict, ctx: Context) -> Op:
    """Fill ``holes`` boxes of side ``size`` pixels at random centres (DeVries & Taylor 2017)."""
    size, fill, sides = a["size"], fill_value(a, ctx), jnp.asarray(ctx.spatial)

    def cutout(key, image):
        mask = jnp.zeros(ctx.spatial, bool)
        for k in jax.random.split(key, a["holes"]):
            lo = jax.random.randint(k, (len(ctx.spatial),), 0, sides) - size // 2  # centre may be anywhere
            mask = mask | box_mask(ctx.spatial, lo, lo + size)
        return jnp.where(mask[..., None], fill, image)

    return each(cutout, a["p"])


# ----------------------------------------------------------- label mixing


def _mix_weight(key: jax.Array, alpha: float, p: float) -> jax.Array:
    """lambda ~ Beta(alpha, alpha), or 1 (no mixing) with probability 1 - p."""
    k_lam, k_p = jax.random.split(key)
    lam = jax.random.beta(k_lam, alpha, alpha)
    return lam if p >= 1.0 else jnp.where(jax.random.bernoulli(k_p, p), lam, 1.0)


def _mixup(a: dict, ctx: Context) -> Op:
    """x = lam x + (1 - lam) x[perm], the same for targets (Zhang et al. 2018); one lam per batch."""

    def op(key, u, targets):
        k_lam, k_perm = jax.random.split(key)
        lam = _mix_weight(k_lam, a["alpha"], a["p"])
        perm = jax.random.permutation(k_perm, u.shape[0])
        return lam * u + (1 - lam) * u[perm], lam * targets + (1 - lam) * targets[perm]

    return op


def _cutmix(a: dict, ctx: Context) -> Op:
    """Paste a box from a shuffled partner; targets mix by the box's area (Yun et al. 2019)."""
    sides = jnp.asarray(ctx.spatial)
    nd = len(ctx.spatial)

    def op(key, u, targets):
        k_lam, k_perm, k_box = jax.random.split(key, 3)
        lam = _mix_weight(k_lam, a["alpha"], a["p"])
        cut = jnp.floor(sides * (1.0 - lam) ** (1.0 / nd)).astype(jnp.int32)  # box sides, pixels
        centre = jax.random.randint(k_box, (nd,), 0, sides)
        lo, hi = jnp.clip(centre - cut // 2, 0, sides), jnp.clip(centre - cut // 2 + cut, 0, sides)
        area = jnp.prod(hi - lo) / jnp.prod(sides)  # the fraction actually pasted, after clipping
        perm = jax.random.permutation(k_perm, u.shape[0])
        mask = box_mask(ctx.spatial, lo, hi)[None, ..., None]
        return jnp.where(mask, u[perm], u), (1 - area) * targets + area * targets[perm]

    return op


# ---------------------------------------------------------------- registry


@dataclass(frozen=True)
class OpSpec:
    """A registered op: its builder, arguments, and the spatial ranks it works on."""

    build: Callable[[dict, Context], Op]
    args: dict[str, Arg]
    ranks: tuple[int, ...] = (1, 2, 3)  # number of spatial axes supported


def _p(default: float) -> Arg:
    return Arg(default, "number", 0.0, 1.0)


def _specs() -> dict[str, OpSpec]:
    from cnncli.data.augment import geometric as geo

    fill0 = Arg(0.0, "fill")
    return {
        "random_crop": OpSpec(_random_crop, {"padding": Arg(4, "int", 0), "mode": Arg("constant", "choice", choices=PAD_MODES),
                                             "fill": fill0, "p": _p(1.0)}),  # fmt: skip
        "flip_lr": OpSpec(_flip(-2), {"p": _p(0.5)}),
        "flip_ud": OpSpec(_flip(-3), {"p": _p(0.5)}, ranks=(2, 3)),
        "rotate": OpSpec(geo.rotate, {"degrees": Arg(15.0, "number", 0, 180), "fill": fill0, "p": _p(1.0)}, (2,)),
        "translate": OpSpec(geo.translate, {"fraction": Arg(0.125, "number", 0, 1), "fill": fill0, "p": _p(1.0)}, (2,)),
        "scale": OpSpec(geo.scale, {"min": Arg(0.9, "number", 0.05, 20), "max": Arg(1.1, "number", 0.05, 20),
                                    "fill": fill0, "p": _p(1.0)}, (2,)),  # fmt: skip
        "brightness": OpSpec(_brightness, {"max_delta": Arg(0.2, "number", 0, 1), "p": _p(1.0)}),
        "contrast": OpSpec(_contrast, {"max_delta": Arg(0.2, "number", 0, 1), "p": _p(1.0)}),
        "gaussian_noise": OpSpec(_gaussian_noise, {"std": Arg(0.05, "number", 0, 1), "p": _p(1.0)}),
        "cutout": OpSpec(_cutout, {"size": Arg(8, "int", 1), "holes": Arg(1, "int", 1, 64),
                                   "fill": Arg("mean", "fill"), "p": _p(1.0)}),  # fmt: skip
        "mixup": OpSpec(_mixup, {"alpha": Arg(0.2, "number", 1e-3, 100), "p": _p(1.0)}),
        "cutmix": OpSpec(_cutmix, {"alpha": Arg(1.0, "number", 1e-3, 100), "p": _p(1.0)}),
        "randaugment": OpSpec(geo.randaugment, {"n": Arg(2, "int", 0, 10), "m": Arg(9, "number", 0, 30),
                                                "fill": Arg(0.5, "fill"), "p": _p(1.0)}, (2,)),  # fmt: skip
    }


OPS = ("brightness", "contrast", "cutmix", "cutout", "flip_lr", "flip_ud", "gaussian_noise", "mixup", "randaugment",
       "random_crop", "rotate", "scale", "translate")  # fmt: skip  # the keys of _specs(), which imports lazily


def op_arguments() -> dict[str, dict[str, Any]]:
    """Every op's arguments and their defaults (for documentation and ``--help``)."""
    return {name: {k: arg.default for k, arg in spec.args.items()} for name, spec in sorted(_specs().items())}


def _check_one(i: int, name: str, given: dict, spec: OpSpec, input_shape: tuple[int, ...]) -> dict:
    where = f"data.augment[{i}]"
    rank = len(input_shape) - 1
    if rank not in spec.ranks:
        ranks = " or ".join(f"{r}-D" for r in spec.ranks)
        raise RecipeError(f"{where}.op: {name} needs {ranks} examples, but the data's are {rank}-D "
                          f"{'x'.join(map(str, input_shape))}", hint="remove it, or use ops that fit the data")  # fmt: skip
    for key, value in given.items():
        if key not in spec.args:
            guess = did_you_mean(key, spec.args)
            hint = f"; did you mean {guess!r}?" if guess else ""
            raise RecipeError(f"{where}: {name} has no argument {key!r}{hint} (valid: {', '.join(spec.args)})")
        if not spec.args[key].valid(value):
            raise RecipeError(f"{where}.{key}: {name} needs {spec.args[key].describe()}, got {value!r}")
    args = {k: given.get(k, arg.default) for k, arg in spec.args.items()}
    if name == "scale" and args["min"] > args["max"]:
        raise RecipeError(f"{where}: scale needs min <= max, got min = {args['min']}, max = {args['max']}")
    if name == "random_crop" and args["mode"] in ("reflect", "symmetric") and args["padding"] >= min(input_shape[:-1]):
        raise RecipeError(f"{where}.padding: {args['mode']} padding must be smaller than the image side")
    return args


def validate_ops(ops: list, input_shape: tuple[int, ...]) -> list[tuple[str, dict]]:
    """Check op names and arguments against the data; return ``(name, args with defaults)`` pairs.

    Args:
        ops: `cnncli.config.recipe.AugmentOp`s (or plain dicts with an ``op`` key).
        input_shape: one example's shape, channels last.

    Raises:
        RecipeError: naming ``data.augment[i]``, the bad name or argument, and the valid ones.
    """
    specs = _specs()
    plan = []
    for i, op in enumerate(ops):
        given = dict(op) if isinstance(op, dict) else {"op": op.op, **(op.model_extra or {})}
        name = given.pop("op", None)
        if name not in specs:
            raise RecipeError(f"data.augment[{i}].op: {unknown_choice('augmentation op', str(name), specs)}")
        plan.append((name, _check_one(i, name, given, specs[name], tuple(input_shape))))
    return plan


def make_augment(ops: list, data) -> Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]:
    """Build the on-device augmentation for a recipe's ``data.augment`` list.

    Args:
        ops: the ordered `cnncli.config.recipe.AugmentOp`s.
        data: the `cnncli.data.base.Dataset` (shape, mean/std, value range).

    Returns:
        ``augment(key, x, targets) -> (x, targets)`` on normalized float32 ``(B, *spatial, C)``
        images and float32 ``(B, K)`` targets; pure, shape-preserving, jit-safe.
    """
    plan = validate_ops(ops, data.input_shape)
    ctx = Context.from_data(data)
    specs = _specs()
    fns = [specs[name].build(args, ctx) for name, args in plan]

    def augment(key, x, targets):
        u = x * ctx.scale + ctx.offset  # normalized -> unit scale
        for i, fn in enumerate(fns):
            u, targets = fn(jax.random.fold_in(key, i), u, targets)
            if i + 1 < len(fns):
                u = materialize(u)
        return (u - ctx.offset) / ctx.scale, targets

    return augment
