"""Geometry of the residual and dense blocks; `cnncli.arith.geometry` dispatches here.

Each block becomes one `LayerInfo` row whose params/MACs/FLOPs are the sums of its
inner layers, listed in ``children`` under the names the model builder uses::

    resblock1.conv1 .bn1 .conv2 .bn2 [.proj .proj_bn]
    bottleneck1.conv1 .bn1 .conv2 .bn2 .conv3 .bn3 [.proj .proj_bn]
    denseblock1.layer1.bn1 .layer1.conv1 .layer1.bn2 .layer1.conv2 ... .layerN.conv2
    transition1.bn .conv .pool

Each child's ``token`` is a plain layer token (``conv:c=64,k=3,p=1,bias=false``), so
a builder can parse it. Activations (relu) sit after each bn but the last, as in
the papers; they have no parameters and are not listed. Every conv inside a block
has no bias and is followed by bn. Kernels of odd size ``k`` are padded ``k//2`` on
both sides (torchvision); even kernels use ``same`` (`cnncli.arith.layers.block_padding`,
the one rule the model builder uses too).

The receptive field of a block is the maximum over its paths (main path, shortcut;
Araujo et al., Distill 2019), so a residual network's RF is that of its deepest path.
"""

from __future__ import annotations

from math import ceil

from cnncli.arith._walk import Ctx, LayerInfo, State, fmt_rf, need_spatial, row, shape_text
from cnncli.arith.layers import (
    Bottleneck,
    Conv,
    DenseBlock,
    LayerSpec,
    Norm,
    Pool,
    ResBlock,
    Transition,
    block_padding,
    broadcast,
    to_token,
)
from cnncli.arith.plain import conv_layer, norm_layer, pool_layer
from cnncli.errors import ShapeError

_BN = Norm("bn")


def _conv(c: int, k: tuple[int, ...], s: tuple[int, ...] = (1,)) -> Conv:
    """A bias-free conv as blocks use it, padded to keep the size at stride 1."""
    pad = block_padding(k)
    return Conv("conv", c, _compact(k), _compact(s), _compact(pad) if pad != "same" else pad, bias=False)


def _compact(values: tuple) -> tuple:
    """One value for all axes when they agree, so child tokens read ``k=3`` not ``k=3x3``."""
    return values[:1] if len(set(values)) == 1 else tuple(values)


def _chain(name: str, parts: list[tuple[str, LayerSpec]], state: State, ctx: Ctx) -> tuple[list[LayerInfo], State]:
    """Run named inner layers in sequence; return their rows and the final state."""
    rows = []
    for suffix, spec in parts:
        handler = {Conv: conv_layer, Norm: norm_layer, Pool: pool_layer}[type(spec)]
        info, state = handler(spec, f"{name}.{suffix}", state, ctx)
        rows.append(info)
    return rows, state


def _block_row(spec, name: str, state: State, end: State, children: list[LayerInfo], **kw) -> LayerInfo:
    """One row for a block: sums of its children, and their warnings (shortcut excluded)."""
    warns = tuple(
        f"{c.name.split('.', 1)[1]}: {w}" for c in children if not c.name.endswith((".proj", ".proj_bn")) for w in c.warnings
    )
    return row(
        spec, name, state, end.shape,
        params=sum(c.params for c in children), macs=sum(c.macs for c in children),
        flops=sum(c.flops for c in children), rf=fmt_rf(end.rf), jump=fmt_rf(end.jump),
        warnings=warns, children=tuple(children), **kw,
    )  # fmt: skip


def _shortcut(spec, name: str, state: State, end: State, s: tuple[int, ...], ctx: Ctx) -> tuple[list[LayerInfo], State]:
    """The residual path: identity, 1x1 projection + bn, or strided zero-padded identity."""
    cin, cout = state.shape[-1], end.shape[-1]
    token = to_token(spec)
    if cin == cout and all(v == 1 for v in s):
        sc_rows, sc = [], state
    elif getattr(spec, "shortcut", "conv") == "conv":
        sc_rows, sc = _chain(name, [("proj", _conv(cout, (1,) * len(s), s)), ("proj_bn", _BN)], state, ctx)
    else:  # option A: x[::s] with zero channels appended; no parameters
        if cout < cin:
            raise ShapeError(f"{name} ({token}): sc=pad cannot shrink channels from {cin} to {cout}", hint="use sc=conv")
        spatial = tuple(ceil(i / ss) for i, ss in zip(state.spatial, s))
        sc_rows, sc = [], State((*spatial, cout), state.rf, tuple(j * ss for j, ss in zip(state.jump, s)))
    if sc.shape != end.shape:
        raise ShapeError(
            f"{name} ({token}): the main path gives {shape_text(end.shape)} but the shortcut gives {shape_text(sc.shape)}",
            hint="use an odd kernel so padding k//2 keeps the sizes aligned",
        )
    return sc_rows, State(end.shape, tuple(max(a, b) for a, b in zip(end.rf, sc.rf)), end.jump)


def resblock_layer(spec: ResBlock, name: str, state: State, ctx: Ctx) -> tuple[LayerInfo, State]:
    """ResNet basic block: conv-bn-relu-conv-bn + shortcut, relu."""
    nsp = need_spatial(name, to_token(spec), state)
    k = broadcast(spec.kernel, nsp, what="kernel", token=to_token(spec))
    s = broadcast(spec.stride, nsp, what="stride", token=to_token(spec))
    c = spec.features
    main = [("conv1", _conv(c, k, s)), ("bn1", _BN), ("conv2", _conv(c, k)), ("bn2", _BN)]
    rows, end = _chain(name, main, state, ctx)
    sc_rows, out = _shortcut(spec, name, state, end, s, ctx)
    return _block_row(spec, name, state, out, rows + sc_rows, kernel=k, stride=s), out


def bottleneck_layer(spec: Bottleneck, name: str, state: State, ctx: Ctx) -> tuple[LayerInfo, State]:
    """ResNet bottleneck: 1x1 (c) - 3x3 (c, stride s) - 1x1 (c*e), each + bn; projection."""
    nsp = need_spatial(name, to_token(spec), state)
    s = broadcast(spec.stride, nsp, what="stride", token=to_token(spec))
    c, one, three = spec.features, (1,) * nsp, (3,) * nsp
    main = [
        ("conv1", _conv(c, one)), ("bn1", _BN), ("conv2", _conv(c, three, s)), ("bn2", _BN),
        ("conv3", _conv(c * spec.expansion, one)), ("bn3", _BN),
    ]  # fmt: skip
    rows, end = _chain(name, main, state, ctx)
    sc_rows, out = _shortcut(spec, name, state, end, s, ctx)
    return _block_row(spec, name, state, out, rows + sc_rows, kernel=three, stride=s), out


def denseblock_layer(spec: DenseBlock, name: str, state: State, ctx: Ctx) -> tuple[LayerInfo, State]:
    """DenseNet-BC block: n x (bn-relu-conv1x1(bs*gr)-bn-relu-conv3x3(gr)), concatenated."""
    nsp = need_spatial(name, to_token(spec), state)
    one, three = (1,) * nsp, (3,) * nsp
    rows, cur = [], state
    for j in range(1, spec.layers + 1):
        parts = [
            (f"layer{j}.bn1", _BN), (f"layer{j}.conv1", _conv(spec.bn_size * spec.growth, one)),
            (f"layer{j}.bn2", _BN), (f"layer{j}.conv2", _conv(spec.growth, three)),
        ]  # fmt: skip
        new_rows, new = _chain(name, parts, cur, ctx)
        rows += new_rows
        # concat: the new features see further; the old channels keep their RF (max over paths)
        rf = tuple(max(a, b) for a, b in zip(cur.rf, new.rf))
        cur = State((*cur.spatial, cur.shape[-1] + spec.growth), rf, cur.jump)
    return _block_row(spec, name, state, cur, rows, kernel=three, stride=(1,) * nsp), cur


def transition_layer(spec: Transition, name: str, state: State, ctx: Ctx) -> tuple[LayerInfo, State]:
    """DenseNet transition: bn-relu-conv1x1 (c) then 2x2 average pool, stride 2."""
    nsp = need_spatial(name, to_token(spec), state)
    parts = [("bn", _BN), ("conv", _conv(spec.features, (1,) * nsp)), ("pool", Pool("avgpool", (2,), (2,)))]
    rows, end = _chain(name, parts, state, ctx)
    return _block_row(spec, name, state, end, rows, kernel=(2,) * nsp, stride=(2,) * nsp), end


HANDLERS = {
    ResBlock: resblock_layer, Bottleneck: bottleneck_layer,
    DenseBlock: denseblock_layer, Transition: transition_layer,
}  # fmt: skip
