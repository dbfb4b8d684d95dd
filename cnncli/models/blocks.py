"""Residual and dense blocks: ``resblock``, ``bottleneck``, ``denseblock``, ``transition``.

Sub-layers are attributes with fixed names, so parameter paths read
``('resblock1', 'conv2', 'kernel')``, ``('resblock1', 'proj', 'kernel')``,
``('denseblock1', 'layer3', 'conv1', 'kernel')``, ``('transition1', 'conv', 'kernel')``.
Every block conv has no bias (a BatchNorm follows) and zero padding: ``k // 2`` on
both sides for odd kernels, XLA ``same`` when a kernel size is even
(`cnncli.arith.layers.block_padding`, the rule `cnncli.arith.blocks` uses too).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

import cnncli.models.pooling as pooling
import cnncli.models.shapes as shapes
from cnncli.arith import layers as L
from cnncli.errors import ShapeError
from cnncli.models.ops import batch_norm, conv, spatial


def _valid(nd: int) -> tuple[tuple[int, int], ...]:
    return ((0, 0),) * nd


def _out(sizes, kernel, stride, pads, where):
    """Output sizes of one block conv (raises `ShapeError` if it does not fit)."""
    one = (1,) * len(sizes)
    return shapes.conv_geometry(pads, sizes, kernel, stride, one, where=where)[1]


class ResBlock(nnx.Module):
    """ResNet v1 basic block: conv-bn-relu-conv-bn, + shortcut, relu (see `cnncli.arith.layers.ResBlock`).

    Shortcut when channels or stride change: ``sc=conv`` is ``proj`` (1x1 conv,
    stride s) + ``proj_bn``; ``sc=pad`` takes ``x[:, ::s, ::s]`` and zero-pads the
    channels, half below and half above (option A, as the common CIFAR ResNet
    reimplementations). Otherwise the identity.
    """

    def __init__(self, spec: L.ResBlock, shape, rngs: nnx.Rngs, where: str):
        sizes, in_c = spatial(shape, where)
        nd, c = len(sizes), spec.features
        k = L.broadcast(spec.kernel, nd, what="kernel", token=where)
        s = L.broadcast(spec.stride, nd, what="stride", token=where)
        pads1 = shapes.block_pads(sizes, k, s)
        mid = _out(sizes, k, s, pads1, where)
        pads2 = shapes.block_pads(mid, k, (1,) * nd)
        out = _out(mid, k, (1,) * nd, pads2, where)
        self.conv1 = conv(in_c, c, k, s, pads1, rngs)
        self.bn1 = batch_norm(c, rngs)
        self.conv2 = conv(c, c, k, (1,) * nd, pads2, rngs)
        self.bn2 = batch_norm(c, rngs)
        reshape = in_c != c or set(s) != {1}
        project = reshape and spec.shortcut == "conv"
        # Each attribute is assigned once: NNX fixes an attribute as data or static
        # on its first assignment.
        self.proj = conv(in_c, c, (1,) * nd, s, _valid(nd), rngs) if project else None
        self.proj_bn = batch_norm(c, rngs) if project else None
        self.pad_channels = _channel_pad(in_c, c, where) if reshape and not project else None
        self.stride = s
        short = tuple(-(-i // st) for i, st in zip(sizes, s)) if reshape else sizes
        _check_shortcut(out, short, where)
        self.out_shape = (*out, c)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.bn1(self.conv1(x), relu=True)
        y = self.bn2(self.conv2(y))
        if self.proj is not None:
            x = self.proj_bn(self.proj(x))
        elif self.pad_channels is not None:
            x = x[(slice(None), *(slice(None, None, st) for st in self.stride))]
            x = jnp.pad(x, ((0, 0),) * (x.ndim - 1) + (self.pad_channels,))
        return jax.nn.relu(y + x)


def _channel_pad(in_c: int, c: int, where: str) -> tuple[int, int]:
    """Zero channels (below, above) that widen ``in_c`` to ``c`` for ``sc=pad``."""
    if c < in_c:
        raise ShapeError(f"{where}: sc=pad cannot shrink {in_c} channels to {c}", hint="use sc=conv")
    return ((c - in_c) // 2, c - in_c - (c - in_c) // 2)


def _check_shortcut(main, short, where: str) -> None:
    if tuple(main) != tuple(short):
        raise ShapeError(
            f"{where}: the residual path gives spatial size {tuple(main)} but the "
            f"shortcut gives {tuple(short)}",
            hint="use an odd kernel size in residual blocks",
        )


class Bottleneck(nnx.Module):
    """ResNet v1.5 bottleneck: 1x1 (c) - 3x3 (c, stride s) - 1x1 (c*e), each + bn.

    Shortcut ``proj`` (1x1, stride s) + ``proj_bn`` when channels or stride change.
    """

    def __init__(self, spec: L.Bottleneck, shape, rngs: nnx.Rngs, where: str):
        sizes, in_c = spatial(shape, where)
        nd, c = len(sizes), spec.features
        one, three = (1,) * nd, (3,) * nd
        s = L.broadcast(spec.stride, nd, what="stride", token=where)
        out_c = c * spec.expansion
        self.conv1 = conv(in_c, c, one, one, _valid(nd), rngs)
        self.bn1 = batch_norm(c, rngs)
        pads = shapes.block_pads(sizes, three, s)
        self.conv2 = conv(c, c, three, s, pads, rngs)
        self.bn2 = batch_norm(c, rngs)
        self.conv3 = conv(c, out_c, one, one, _valid(nd), rngs)
        self.bn3 = batch_norm(out_c, rngs)
        project = in_c != out_c or set(s) != {1}
        self.proj = conv(in_c, out_c, one, s, _valid(nd), rngs) if project else None
        self.proj_bn = batch_norm(out_c, rngs) if project else None
        out = _out(sizes, three, s, pads, where)
        self.out_shape = (*out, out_c)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.bn1(self.conv1(x), relu=True)
        y = self.bn2(self.conv2(y), relu=True)
        y = self.bn3(self.conv3(y))
        if self.proj is not None:
            x = self.proj_bn(self.proj(x))
        return jax.nn.relu(y + x)


class DenseLayer(nnx.Module):
    """One DenseNet-BC layer: bn-relu-conv1x1 (bs*gr) - bn-relu-conv3x3 (gr); returns only the new maps."""

    def __init__(self, in_c: int, growth: int, bn_size: int, nd: int, rngs: nnx.Rngs):
        one, three = (1,) * nd, (3,) * nd
        self.bn1 = batch_norm(in_c, rngs)
        self.conv1 = conv(in_c, bn_size * growth, one, one, _valid(nd), rngs)
        self.bn2 = batch_norm(bn_size * growth, rngs)
        self.conv2 = conv(bn_size * growth, growth, three, one, L.block_padding(three), rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.conv1(self.bn1(x, relu=True))
        return self.conv2(self.bn2(y, relu=True))


class DenseBlock(nnx.Module):
    """``n`` `DenseLayer`s named ``layer1..layerN``; each output is concatenated to its input."""

    def __init__(self, spec: L.DenseBlock, shape, rngs: nnx.Rngs, where: str):
        sizes, in_c = spatial(shape, where)
        self.layer_names = tuple(f"layer{i + 1}" for i in range(spec.layers))
        for i, name in enumerate(self.layer_names):
            channels = in_c + i * spec.growth
            setattr(self, name, DenseLayer(channels, spec.growth, spec.bn_size, len(sizes), rngs))
        self.out_shape = (*sizes, in_c + spec.layers * spec.growth)

    def __call__(self, x: jax.Array) -> jax.Array:
        for name in self.layer_names:
            x = jnp.concatenate([x, getattr(self, name)(x)], axis=-1)
        return x


class Transition(nnx.Module):
    """DenseNet transition: bn-relu-conv1x1 (c) then 2x2 average pool, stride 2 (floor)."""

    def __init__(self, spec: L.Transition, shape, rngs: nnx.Rngs, where: str):
        sizes, in_c = spatial(shape, where)
        nd = len(sizes)
        self.bn = batch_norm(in_c, rngs)
        self.conv = conv(in_c, spec.features, (1,) * nd, (1,) * nd, _valid(nd), rngs)
        self.window = (2,) * nd
        out = _out(sizes, self.window, self.window, _valid(nd), where)
        self.out_shape = (*out, spec.features)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.conv(self.bn(x, relu=True))
        return pooling.avg_pool(y, self.window, self.window)


BLOCKS = {L.ResBlock: ResBlock, L.Bottleneck: Bottleneck, L.DenseBlock: DenseBlock, L.Transition: Transition}
