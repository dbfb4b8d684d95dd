"""Padding conventions resolved to explicit ``(lo, hi)`` pairs, axis by axis, via `cnncli.arith.formulas`.

The builder tracks every layer's output shape while it builds, because some layers
need it: a ``same`` padding with ``pm=reflect`` becomes pairs that depend on the
input size, and a ``dense`` after ``flatten`` needs the flattened width. The
conventions (XLA ``same``, ``full``, PyTorch ceil mode and ``ConvTranspose``) live
in `cnncli.arith.formulas`, shared with `cnncli.arith.geometry`; this module only applies them per
axis. ``tests/test_models.py`` checks the shapes the built modules really produce
against `cnncli.arith.geometry`.

Pure Python: no jax. Sizes, kernels, strides and paddings are per spatial axis.
"""

from __future__ import annotations

from cnncli.arith import formulas as arith
from cnncli.arith.layers import Padding, PadPairs, block_padding, broadcast_pairs


def _axis(where: str, axis: int) -> str:
    return f"{where}, axis {axis}: "


def window_pads(padding: Padding, sizes, kernel, stride, dilation, *, where: str) -> PadPairs:
    """A conv/pool padding (``same``/``valid``/``full`` or pairs) as ``(lo, hi)`` per axis."""
    if isinstance(padding, str):
        return tuple(arith.resolve_pads(padding, *a) for a in zip(sizes, kernel, stride, dilation))
    return broadcast_pairs(padding, len(sizes), token=where)


def conv_geometry(padding: Padding, sizes, kernel, stride, dilation, *, where: str):
    """``(pads, output sizes)`` of a convolution; raises `ShapeError` if the kernel does not fit."""
    pads = window_pads(padding, sizes, kernel, stride, dilation, where=where)
    out = tuple(
        arith.conv_output(i, k, s, p, d, where=_axis(where, ax))
        for ax, (i, k, s, p, d) in enumerate(zip(sizes, kernel, stride, pads, dilation))
    )
    return pads, out


def pool_geometry(padding: Padding, sizes, kernel, stride, dilation, ceil: bool, *, where: str):
    """``(pads, ceil-mode extra high padding, output sizes)`` of a pooling window."""
    pads = window_pads(padding, sizes, kernel, stride, dilation, where=where)
    results = [
        arith.pool_output(i, k, s, p, d, ceil, where=_axis(where, ax))
        for ax, (i, k, s, p, d) in enumerate(zip(sizes, kernel, stride, pads, dilation))
    ]
    return pads, tuple(e for _, e in results), tuple(o for o, _ in results)


def tconv_geometry(padding: Padding, sizes, kernel, stride, dilation, output_padding, *, where: str):
    """``(lax pads, output sizes)`` of a transposed conv (PyTorch ``ConvTranspose`` semantics).

    The lax pads pad the stride-dilated input of the equivalent direct convolution
    (``ke - 1 - lo``, ``ke - 1 - hi + op``); they may be negative (a crop).
    """
    if not isinstance(padding, str):
        padding = broadcast_pairs(padding, len(sizes), token=where)
    lax_pads, out = [], []
    for ax, (i, k, s, d, op) in enumerate(zip(sizes, kernel, stride, dilation, output_padding)):
        axis_padding = padding if isinstance(padding, str) else padding[ax]
        pads, op = arith.tconv_pads(axis_padding, i, k, s, d, op)
        out.append(arith.tconv_output(i, k, s, pads, d, op, where=_axis(where, ax)))
        lax_pads.append(arith.tconv_lax_padding(k, s, pads, d, op))
    return tuple(lax_pads), tuple(out)


def block_pads(sizes, kernel, stride) -> PadPairs:
    """Padding of a conv inside a block as ``(lo, hi)`` per axis: the one rule,
    `cnncli.arith.layers.block_padding` (``k // 2`` for odd kernels, else ``same``),
    with ``same`` resolved for these sizes.
    """
    return window_pads(block_padding(kernel), sizes, kernel, stride, (1,) * len(kernel), where="block")
