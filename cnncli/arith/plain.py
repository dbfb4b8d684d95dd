"""Geometry of the plain layers: conv, tconv, pools, flatten, dense, norms, activations.

One handler per spec class, each ``(spec, name, state, ctx) -> (row, state)``
(`cnncli.arith._walk.Handler`), collected in `HANDLERS`; `cnncli.arith.geometry`
dispatches to them and `cnncli.arith.blocks` runs the convs, norms and pools inside
its blocks through them. The counting conventions are in `cnncli.arith.geometry`.

Pure Python: no jax or numpy.
"""

from __future__ import annotations

from math import prod

from cnncli.arith import formulas as arith
from cnncli.arith._walk import Ctx, Handler, LayerInfo, State, fmt_rf, need_spatial, row
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
    to_token,
)
from cnncli.errors import LayerError, ShapeError

NORM_FLOPS = {"bn": 2, "ln": 7}  # per element: bn folded to scale+shift; ln also computes mean/var


def _window(spec, name: str, state: State) -> tuple[tuple, tuple, tuple, str]:
    """Broadcast kernel/stride/dilation to the input's spatial axes."""
    token = to_token(spec)
    nsp = need_spatial(name, token, state)
    k = broadcast(spec.kernel, nsp, what="kernel", token=token)
    s = broadcast(spec.stride if spec.stride is not None else spec.kernel, nsp, what="stride", token=token)
    d = broadcast(spec.dilation, nsp, what="dilation", token=token)
    return k, s, d, token


def _pads(padding, state: State, k, s, d, token: str) -> tuple[tuple[int, int], ...]:
    if isinstance(padding, str):
        return tuple(arith.resolve_pads(padding, i, kk, ss, dd) for i, kk, ss, dd in zip(state.spatial, k, s, d))
    return broadcast_pairs(padding, len(k), token=token)


def conv_layer(spec: Conv, name: str, state: State, ctx: Ctx) -> tuple[LayerInfo, State]:
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
    info = row(spec, name, state, out, kernel=k, stride=s, padding=pads, dilation=d, params=params,
                macs=macs, flops=flops, rf=fmt_rf(rf), jump=fmt_rf(jump), warnings=tuple(warns))  # fmt: skip
    return info, State(out, rf, jump)


def _tconv(spec: Conv, name: str, state: State, ctx: Ctx) -> tuple[LayerInfo, State]:
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
    info = row(spec, name, state, out, kernel=k, stride=s, padding=tuple(pads), dilation=d,
                output_padding=tuple(op_all), params=params, macs=macs, flops=flops,
                rf=fmt_rf(rf), jump=fmt_rf(jump))  # fmt: skip
    return info, State(out, rf, jump)


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


def _rf(state: State, k, s, d, *, transpose: bool = False) -> tuple[tuple, tuple]:
    pairs = [arith.receptive_step(r, j, kk, ss, dd, transpose=transpose) for r, j, kk, ss, dd in zip(state.rf, state.jump, k, s, d)]
    return tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)


def pool_layer(spec: Pool, name: str, state: State, ctx: Ctx) -> tuple[LayerInfo, State]:
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
    info = row(spec, name, state, out, kernel=k, stride=s, padding=tuple(applied), dilation=d,
                flops=flops, rf=fmt_rf(rf), jump=fmt_rf(jump), warnings=tuple(warns))  # fmt: skip
    return info, State(out, rf, jump)


def _pool_flops(kind: str, window: int, outputs: int) -> int:
    """Window ops per output: max k-1 compares; avg k (k-1 adds and a divide); l2 2k (squares, adds, root)."""
    per = {"maxpool": window - 1, "gmp": window - 1, "avgpool": window, "gap": window, "l2pool": 2 * window}
    return per[kind] * outputs


def global_pool_layer(spec: GlobalPool, name: str, state: State, ctx: Ctx) -> tuple[LayerInfo, State]:
    """``gap``/``gmp``: the spatial axes collapse; the window is the whole input."""
    token = to_token(spec)
    need_spatial(name, token, state)
    out = (state.shape[-1],)
    flops = _pool_flops(spec.kind, prod(state.spatial), prod(out)) if ctx.counting.pool else 0
    rf, jump = _rf(state, state.spatial, state.spatial, (1,) * len(state.spatial))
    return row(spec, name, state, out, flops=flops, rf=fmt_rf(rf), jump=fmt_rf(jump)), State(out, rf, jump)


def flatten_layer(spec: Flatten, name: str, state: State, ctx: Ctx) -> tuple[LayerInfo, State]:
    """``flatten``: one feature axis; every output sees the whole input."""
    out = (prod(state.shape),)
    sp = state.spatial
    rf, jump = _rf(state, sp, sp, (1,) * len(sp)) if sp else (state.rf, state.jump)
    return row(spec, name, state, out, rf=fmt_rf(rf), jump=fmt_rf(jump)), State(out, rf, jump)


def dense_layer(spec: Dense, name: str, state: State, ctx: Ctx) -> tuple[LayerInfo, State]:
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
    return row(token, name, state, out, params=params, macs=macs, flops=flops), State(out, state.rf, state.jump)


def norm_layer(spec: Norm, name: str, state: State, ctx: Ctx) -> tuple[LayerInfo, State]:
    """``bn``/``ln``: 2*C parameters (scale, bias) over the last axis."""
    flops = NORM_FLOPS[spec.kind] * prod(state.shape) if ctx.counting.norm else 0
    return row(spec, name, state, state.shape, params=2 * state.shape[-1], flops=flops), state


def passthrough_layer(spec: LayerSpec, name: str, state: State, ctx: Ctx) -> tuple[LayerInfo, State]:
    """Activations and dropout: same shape, nothing counted."""
    return row(spec, name, state, state.shape), state


HANDLERS: dict[type, Handler] = {
    Conv: conv_layer, Pool: pool_layer, GlobalPool: global_pool_layer, Flatten: flatten_layer,
    Dense: dense_layer, Norm: norm_layer, Activation: passthrough_layer, Dropout: passthrough_layer,
}  # fmt: skip
