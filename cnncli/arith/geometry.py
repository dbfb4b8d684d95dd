"""Walk a layer list over an input shape: shapes, parameters, MACs, receptive fields.

`analyze` is the one entry point; it returns an `Analysis` of plain frozen
dataclasses that `cnncli.report.arith` renders and ``train --dry-run`` reuses.
Shapes are per example and channels last (``(28, 28, 1)``, ``(40, 1)``,
``(16, 112, 112, 3)``); the input's rank sets the dimensionality.

Conventions (they match torchvision's published parameter counts):

- conv params = prod(k) * cin/g * cout (+ cout with bias); tconv the same.
- bn and ln have 2*C parameters (scale and bias; running statistics are state,
  not parameters). ln normalizes the last axis.
- dense acts on the last axis (as `flax.nnx.Linear`): cin*cout (+ cout) params,
  prod(other axes) * cin * cout MACs.
- MACs count the multiply-accumulates of conv and dense layers, bias excluded.
  FLOPs = 2 * MACs, plus, when asked: 1 per biased output (``count_bias``), 2 per
  element for bn and 7 for ln (``count_norm``), and the window ops of pools
  (``count_pool``; see `_pool_flops`). Activations, dropout and residual adds are
  not counted.
- Blocks (resblock, bottleneck, denseblock, transition) are one row each, with the
  sums of their inner layers; their inner layers are in `LayerInfo.children`, named
  as the model builder names them (``resblock1.conv1``, ``resblock1.proj``, ...);
  see `cnncli.arith.blocks`. A block's receptive field is the max over its paths.
- Receptive field and jump follow Araujo et al. (Distill 2019), in input pixels per
  spatial axis. gap/flatten act as one window over the whole input (so their RF is
  the span of every path, padding included); a tconv's jump is fractional and its
  RF an approximation (alignment ignored).

Pure Python: no jax or numpy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from math import prod

from cnncli.arith import formulas as arith
from cnncli.arith.layers import (
    Activation,
    Conv,
    Dense,
    Dropout,
    Flatten,
    GlobalPool,
    LayerSpec,
    Norm,
    Pool,
    broadcast,
    broadcast_pairs,
    layer_names,
    to_token,
)
from cnncli.errors import LayerError, ShapeError

BYTES_PER_VALUE = 4  # float32 activations
NORM_FLOPS = {"bn": 2, "ln": 7}  # per element: bn folded to scale+shift; ln also computes mean/var


@dataclass(frozen=True)
class Counting:
    """Which optional operations FLOPs include (MACs never include them)."""

    bias: bool = False
    norm: bool = False
    pool: bool = False

    def describe(self) -> str:
        """The MAC/FLOP convention in one sentence, for table footers and JSON."""
        extra = [name for name, on in (("bias adds", self.bias), ("norm ops", self.norm), ("pool ops", self.pool)) if on]
        flops = "FLOPs = 2 x MACs" + (" + " + " + ".join(extra) if extra else "")
        return (
            "MACs: multiply-accumulates of conv and dense layers (bias not counted); "
            f"{flops}; activations, dropout and residual adds not counted"
        )


@dataclass(frozen=True)
class LayerInfo:
    """One row of the analysis: a layer (or block) applied to its input.

    Attributes:
        name: stable name from `cnncli.arith.layers.layer_names` (``conv1``,
            ``resblock2.conv1`` for block children).
        kind: layer kind (``conv``, ``maxpool``, ``resblock``, ...).
        token: the canonical token of the layer.
        input: input shape, channels last.
        output: output shape, channels last.
        kernel, stride, dilation: applied per spatial axis (None where not a window).
        padding: applied ``(lo, hi)`` per axis: the real pads of ``same``, with the
            extra high padding of a ceil-mode pool; for tconv, the padding of the
            direct conv being transposed (PyTorch's convention).
        output_padding: per axis, tconv only.
        params, macs, flops: see the module docstring for the conventions.
        rf: receptive field per input spatial axis, in input pixels.
        jump: distance in input pixels between adjacent outputs (effective stride).
        act_bytes: float32 bytes of the output per example.
        warnings: teaching warnings (unused pixels, padding limits).
        children: inner layers of a block, in order.
    """

    name: str
    kind: str
    token: str
    input: tuple[int, ...]
    output: tuple[int, ...]
    kernel: tuple[int, ...] | None = None
    stride: tuple[int, ...] | None = None
    padding: tuple[tuple[int, int], ...] | None = None
    dilation: tuple[int, ...] | None = None
    output_padding: tuple[int, ...] | None = None
    params: int = 0
    macs: int = 0
    flops: int = 0
    rf: tuple = ()
    jump: tuple = ()
    act_bytes: int = 0
    warnings: tuple[str, ...] = ()
    children: tuple[LayerInfo, ...] = ()


@dataclass(frozen=True)
class Totals:
    """Sums over the top-level rows."""

    params: int
    macs: int
    flops: int
    act_bytes: int


@dataclass(frozen=True)
class Analysis:
    """The result of `analyze`: input, per-layer rows, output and totals."""

    input: tuple[int, ...]
    layers: tuple[LayerInfo, ...]
    output: tuple[int, ...]
    total: Totals
    counting: Counting = field(default_factory=Counting)

    @property
    def warnings(self) -> list[str]:
        """Every row's warnings, prefixed with the layer name."""
        return [f"{row.name}: {w}" for row in self.layers for w in row.warnings]


@dataclass(frozen=True)
class _State:
    """What flows between layers: the shape and the receptive field so far."""

    shape: tuple[int, ...]
    rf: tuple
    jump: tuple

    @property
    def spatial(self) -> tuple[int, ...]:
        return self.shape[:-1]


def analyze(
    specs: list[LayerSpec] | tuple[LayerSpec, ...],
    input_shape: tuple[int, ...],
    *,
    num_classes: int | None = None,
    count_bias: bool = False,
    count_norm: bool = False,
    count_pool: bool = False,
) -> Analysis:
    """Compute every layer's output shape, parameters, MACs, FLOPs and receptive field.

    Args:
        specs: parsed layers (`cnncli.arith.layers.parse_layers`, `cnncli.arith.zoo.build`).
        input_shape: per-example shape, channels last, e.g. ``(224, 224, 3)``.
        num_classes: width of a ``dense`` without ``c=``.
        count_bias, count_norm, count_pool: add these operations to FLOPs.

    Returns:
        The `Analysis`.

    Raises:
        ShapeError: a layer cannot apply to its input (kernel larger than the padded
            input, conv after flatten, groups not dividing channels, ...).
        LayerError: a dense without ``c=`` and no ``num_classes``.
    """
    shape = tuple(int(v) for v in input_shape)
    if not shape or min(shape) < 1:
        raise ShapeError(f"input shape {shape} must have positive sizes", hint="e.g. 28x28x1 or 224x224x3")
    ctx = _Ctx(Counting(count_bias, count_norm, count_pool), num_classes)
    nsp = len(shape) - 1
    state = _State(shape, (1,) * nsp, (1,) * nsp)
    rows = []
    for name, spec in zip(layer_names(specs), specs):
        row, state = _apply(spec, name, state, ctx)
        rows.append(row)
    total = Totals(*(sum(getattr(r, f) for r in rows) for f in ("params", "macs", "flops", "act_bytes")))
    return Analysis(shape, tuple(rows), state.shape, total, ctx.counting)


@dataclass(frozen=True)
class _Ctx:
    counting: Counting
    num_classes: int | None


def _apply(spec: LayerSpec, name: str, state: _State, ctx: _Ctx) -> tuple[LayerInfo, _State]:
    """Dispatch one spec to its handler."""
    handler = _HANDLERS.get(type(spec))
    if handler is None:  # blocks live in their own module, which imports this one
        from cnncli.arith.blocks import HANDLERS

        handler = HANDLERS[type(spec)]
    return handler(spec, name, state, ctx)


def _row(spec_or_token, name: str, state: _State, out: tuple[int, ...], **kw) -> LayerInfo:
    token = spec_or_token if isinstance(spec_or_token, str) else to_token(spec_or_token)
    kind = token.partition(":")[0]
    return LayerInfo(
        name=name, kind=kind, token=token, input=state.shape, output=out,
        act_bytes=prod(out) * BYTES_PER_VALUE, rf=kw.pop("rf", _fmt(state.rf)),
        jump=kw.pop("jump", _fmt(state.jump)), **kw,
    )  # fmt: skip


def _fmt(values: tuple) -> tuple:
    """Receptive-field numbers as ints where whole (a tconv's jump can be a fraction)."""
    return tuple(int(v) if Fraction(v).denominator == 1 else float(v) for v in values)


def _need_spatial(name: str, token: str, state: _State) -> int:
    nsp = len(state.shape) - 1
    if nsp < 1:
        raise ShapeError(
            f"{name} ({token}) needs spatial axes, but its input is {_shape(state.shape)} "
            "(after flatten or global pooling)",
            hint="put convs and pools before flatten/gap",
        )
    return nsp


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(v) for v in shape)


def _window(spec, name: str, state: _State) -> tuple[tuple, tuple, tuple, str]:
    """Broadcast kernel/stride/dilation to the input's spatial axes."""
    token = to_token(spec)
    nsp = _need_spatial(name, token, state)
    k = broadcast(spec.kernel, nsp, what="kernel", token=token)
    s = broadcast(spec.stride if spec.stride is not None else spec.kernel, nsp, what="stride", token=token)
    d = broadcast(spec.dilation, nsp, what="dilation", token=token)
    return k, s, d, token


def _pads(padding, state: _State, k, s, d, token: str) -> tuple[tuple[int, int], ...]:
    if isinstance(padding, str):
        return tuple(arith.resolve_pads(padding, i, kk, ss, dd) for i, kk, ss, dd in zip(state.spatial, k, s, d))
    return broadcast_pairs(padding, len(k), token=token)


def conv_layer(spec: Conv, name: str, state: _State, ctx: _Ctx) -> tuple[LayerInfo, _State]:
    """A ``conv`` or ``tconv`` layer (also used for the convs inside blocks)."""
    if spec.kind == "tconv":
        return _tconv(spec, name, state, ctx)
    k, s, d, token = _window(spec, name, state)
    pads = _pads(spec.padding, state, k, s, d, token)
    cin = state.shape[-1]
    _check_groups(name, token, cin, spec.features, spec.groups)
    out_sp, warns = [], []
    for ax, (i, kk, ss, pp, dd) in enumerate(zip(state.spatial, k, s, pads, d)):
        where = f"{name} ({token}), axis {ax}: "
        out_sp.append(arith.conv_output(i, kk, ss, pp, dd, where=where))
        warns += _axis_warnings(i, kk, ss, pp, dd, ax, spec.pad_mode)
    out = (*out_sp, spec.features)
    kprod = prod(k)
    macs = prod(out_sp) * kprod * (cin // spec.groups) * spec.features
    params = kprod * (cin // spec.groups) * spec.features + (spec.features if spec.bias else 0)
    flops = 2 * macs + (prod(out) if spec.bias and ctx.counting.bias else 0)
    rf, jump = _rf(state, k, s, d)
    row = _row(spec, name, state, out, kernel=k, stride=s, padding=pads, dilation=d, params=params,
               macs=macs, flops=flops, rf=_fmt(rf), jump=_fmt(jump), warnings=tuple(warns))  # fmt: skip
    return row, _State(out, rf, jump)


def _tconv(spec: Conv, name: str, state: _State, ctx: _Ctx) -> tuple[LayerInfo, _State]:
    k, s, d, token = _window(spec, name, state)
    if spec.groups != 1:
        raise LayerError(f"layer {token!r}: tconv supports only g=1 (flax.nnx.ConvTranspose has no feature groups)")
    ops = broadcast(spec.output_padding, len(k), what="output padding", token=token)
    cin = state.shape[-1]
    pads, op_all, out_sp = [], [], []
    for ax, (i, kk, ss, dd, op) in enumerate(zip(state.spatial, k, s, d, ops)):
        padding = spec.padding if isinstance(spec.padding, str) else broadcast_pairs(spec.padding, len(k), token=token)[ax]
        pp, op2 = arith.tconv_pads(padding, i, kk, ss, dd, op)
        out_sp.append(arith.tconv_output(i, kk, ss, pp, dd, op2, where=f"{name} ({token}), axis {ax}: "))
        pads.append(pp)
        op_all.append(op2)
    out = (*out_sp, spec.features)
    kprod = prod(k)
    macs = prod(state.spatial) * cin * kprod * spec.features  # every input value meets every tap once
    params = kprod * cin * spec.features + (spec.features if spec.bias else 0)
    flops = 2 * macs + (prod(out) if spec.bias and ctx.counting.bias else 0)
    rf, jump = _rf(state, k, s, d, transpose=True)
    row = _row(spec, name, state, out, kernel=k, stride=s, padding=tuple(pads), dilation=d,
               output_padding=tuple(op_all), params=params, macs=macs, flops=flops,
               rf=_fmt(rf), jump=_fmt(jump))  # fmt: skip
    return row, _State(out, rf, jump)


def _check_groups(name: str, token: str, cin: int, cout: int, g: int) -> None:
    if cin % g or cout % g:
        raise ShapeError(
            f"{name} ({token}): groups g={g} must divide the input channels ({cin}) "
            f"and the output channels ({cout})",
            hint="pick g among the common divisors, e.g. g=1, or g=cin for a depthwise conv",
        )


def _axis_warnings(i: int, k: int, s: int, pads, d: int, ax: int, pad_mode: str = "zeros") -> list[str]:
    warns = []
    text = arith.unused_warning(i, k, s, pads, d, axis=f"axis {ax}")
    if text:
        warns.append(text)
    if pad_mode == "reflect" and max(pads) >= i:
        warns.append(f"reflect padding {max(pads)} on axis {ax} must be smaller than the input ({i}) in PyTorch")
    if pad_mode == "circular" and max(pads) > i:
        warns.append(f"circular padding {max(pads)} on axis {ax} wraps more than once (input {i})")
    return warns


def _rf(state: _State, k, s, d, *, transpose: bool = False) -> tuple[tuple, tuple]:
    pairs = [arith.receptive_step(r, j, kk, ss, dd, transpose=transpose) for r, j, kk, ss, dd in zip(state.rf, state.jump, k, s, d)]
    return tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)


def pool_layer(spec: Pool, name: str, state: _State, ctx: _Ctx) -> tuple[LayerInfo, _State]:
    """``maxpool``/``avgpool``/``l2pool``; ceil mode reports its extra high padding."""
    k, s, d, token = _window(spec, name, state)
    pads = _pads(spec.padding, state, k, s, d, token)
    out_sp, applied, warns = [], [], []
    for ax, (i, kk, ss, pp, dd) in enumerate(zip(state.spatial, k, s, pads, d)):
        o, extra = arith.pool_output(i, kk, ss, pp, dd, spec.ceil, where=f"{name} ({token}), axis {ax}: ")
        out_sp.append(o)
        applied.append((pp[0], pp[1] + extra))
        if not spec.ceil:
            warns += _axis_warnings(i, kk, ss, pp, dd, ax)
    out = (*out_sp, state.shape[-1])
    flops = _pool_flops(spec.kind, prod(k), prod(out)) if ctx.counting.pool else 0
    rf, jump = _rf(state, k, s, d)
    row = _row(spec, name, state, out, kernel=k, stride=s, padding=tuple(applied), dilation=d,
               flops=flops, rf=_fmt(rf), jump=_fmt(jump), warnings=tuple(warns))  # fmt: skip
    return row, _State(out, rf, jump)


def _pool_flops(kind: str, window: int, outputs: int) -> int:
    """Window ops per output: max k-1 compares; avg k (k-1 adds and a divide); l2 2k (squares, adds, root)."""
    per = {"maxpool": window - 1, "gmp": window - 1, "avgpool": window, "gap": window, "l2pool": 2 * window}
    return per[kind] * outputs


def global_pool_layer(spec: GlobalPool, name: str, state: _State, ctx: _Ctx) -> tuple[LayerInfo, _State]:
    """``gap``/``gmp``: the spatial axes collapse; the window is the whole input."""
    token = to_token(spec)
    _need_spatial(name, token, state)
    out = (state.shape[-1],)
    flops = _pool_flops(spec.kind, prod(state.spatial), prod(out)) if ctx.counting.pool else 0
    rf, jump = _rf(state, state.spatial, state.spatial, (1,) * len(state.spatial))
    return _row(spec, name, state, out, flops=flops, rf=_fmt(rf), jump=_fmt(jump)), _State(out, rf, jump)


def flatten_layer(spec: Flatten, name: str, state: _State, ctx: _Ctx) -> tuple[LayerInfo, _State]:
    """``flatten``: one feature axis; every output sees the whole input."""
    out = (prod(state.shape),)
    sp = state.spatial
    rf, jump = _rf(state, sp, sp, (1,) * len(sp)) if sp else (state.rf, state.jump)
    return _row(spec, name, state, out, rf=_fmt(rf), jump=_fmt(jump)), _State(out, rf, jump)


def dense_layer(spec: Dense, name: str, state: _State, ctx: _Ctx) -> tuple[LayerInfo, _State]:
    """``dense`` on the last axis (as `flax.nnx.Linear`)."""
    features = spec.features if spec.features is not None else ctx.num_classes
    if features is None:
        raise LayerError(
            f"{name} ({to_token(spec)}) has no width: no c= and no class count known",
            hint="give c=N on the layer, or the class count with --classes N",
        )
    cin = state.shape[-1]
    out = (*state.shape[:-1], features)
    macs = prod(state.shape[:-1]) * cin * features
    params = cin * features + (features if spec.bias else 0)
    flops = 2 * macs + (prod(out) if spec.bias and ctx.counting.bias else 0)
    token = to_token(spec) if spec.features is not None else f"dense:c={features}"
    return _row(token, name, state, out, params=params, macs=macs, flops=flops), _State(out, state.rf, state.jump)


def norm_layer(spec: Norm, name: str, state: _State, ctx: _Ctx) -> tuple[LayerInfo, _State]:
    """``bn``/``ln``: 2*C parameters (scale, bias) over the last axis."""
    flops = NORM_FLOPS[spec.kind] * prod(state.shape) if ctx.counting.norm else 0
    return _row(spec, name, state, state.shape, params=2 * state.shape[-1], flops=flops), state


def passthrough_layer(spec: LayerSpec, name: str, state: _State, ctx: _Ctx) -> tuple[LayerInfo, _State]:
    """Activations and dropout: same shape, nothing counted."""
    return _row(spec, name, state, state.shape), state


_HANDLERS = {
    Conv: conv_layer, Pool: pool_layer, GlobalPool: global_pool_layer, Flatten: flatten_layer,
    Dense: dense_layer, Norm: norm_layer, Activation: passthrough_layer, Dropout: passthrough_layer,
}  # fmt: skip
