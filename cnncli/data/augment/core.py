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

This module is the registry: one `OpSpec` per op name, validation, and `make_augment`.
The ops live in `cnncli.data.augment.ops` (pixel-wise, label mixing) and
`cnncli.data.augment.geometric` (affine, RandAugment), both built on
`cnncli.data.augment.primitives`; none of them imports this module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import jax

from cnncli.data.augment import geometric as geo
from cnncli.data.augment import ops as px
from cnncli.data.augment.primitives import Context, Op, materialize
from cnncli.errors import RecipeError, did_you_mean, unknown_choice

PAD_MODES = ("constant", "edge", "reflect", "symmetric", "wrap")


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
    fill0 = Arg(0.0, "fill")
    return {
        "random_crop": OpSpec(px.random_crop, {"padding": Arg(4, "int", 0), "mode": Arg("constant", "choice", choices=PAD_MODES),
                                             "fill": fill0, "p": _p(1.0)}),  # fmt: skip
        "flip_lr": OpSpec(px.flip(-2), {"p": _p(0.5)}),
        "flip_ud": OpSpec(px.flip(-3), {"p": _p(0.5)}, ranks=(2, 3)),
        "rotate": OpSpec(geo.rotate, {"degrees": Arg(15.0, "number", 0, 180), "fill": fill0, "p": _p(1.0)}, (2,)),
        "translate": OpSpec(geo.translate, {"fraction": Arg(0.125, "number", 0, 1), "fill": fill0, "p": _p(1.0)}, (2,)),
        "scale": OpSpec(geo.scale, {"min": Arg(0.9, "number", 0.05, 20), "max": Arg(1.1, "number", 0.05, 20),
                                    "fill": fill0, "p": _p(1.0)}, (2,)),  # fmt: skip
        "brightness": OpSpec(px.brightness, {"max_delta": Arg(0.2, "number", 0, 1), "p": _p(1.0)}),
        "contrast": OpSpec(px.contrast, {"max_delta": Arg(0.2, "number", 0, 1), "p": _p(1.0)}),
        "gaussian_noise": OpSpec(px.gaussian_noise, {"std": Arg(0.05, "number", 0, 1), "p": _p(1.0)}),
        "cutout": OpSpec(px.cutout, {"size": Arg(8, "int", 1), "holes": Arg(1, "int", 1, 64),
                                   "fill": Arg("mean", "fill"), "p": _p(1.0)}),  # fmt: skip
        "mixup": OpSpec(px.mixup, {"alpha": Arg(0.2, "number", 1e-3, 100), "p": _p(1.0)}),
        "cutmix": OpSpec(px.cutmix, {"alpha": Arg(1.0, "number", 1e-3, 100), "p": _p(1.0)}),
        "randaugment": OpSpec(geo.randaugment, {"n": Arg(2, "int", 0, 10), "m": Arg(9, "number", 0, 30),
                                                "fill": Arg(0.5, "fill"), "p": _p(1.0)}, (2,)),  # fmt: skip
    }


SPECS = MappingProxyType(_specs())  # read-only: the registry is fixed at import
OPS = tuple(sorted(SPECS))


def op_arguments() -> dict[str, dict[str, Any]]:
    """Every op's arguments and their defaults (for documentation and ``--help``)."""
    return {name: {k: arg.default for k, arg in spec.args.items()} for name, spec in sorted(SPECS.items())}


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
    plan = []
    for i, op in enumerate(ops):
        given = dict(op) if isinstance(op, dict) else {"op": op.op, **(op.model_extra or {})}
        name = given.pop("op", None)
        if name not in SPECS:
            raise RecipeError(f"data.augment[{i}].op: {unknown_choice('augmentation op', str(name), SPECS)}")
        plan.append((name, _check_one(i, name, given, SPECS[name], tuple(input_shape))))
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
    fns = [SPECS[name].build(args, ctx) for name, args in plan]

    def augment(key, x, targets):
        u = x * ctx.scale + ctx.offset  # normalized -> unit scale
        for i, fn in enumerate(fns):
            u, targets = fn(jax.random.fold_in(key, i), u, targets)
            if i + 1 < len(fns):
                u = materialize(u)
        return (u - ctx.offset) / ctx.scale, targets

    return augment
