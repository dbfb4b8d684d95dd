"""What every layer handler shares while `cnncli.arith.geometry.analyze` walks a layer list.

The lowest module of the walk: `cnncli.arith.plain` (plain layers) and
`cnncli.arith.blocks` (residual and dense blocks) both build on it, and
`cnncli.arith.geometry` dispatches to both, so no two of them import each other.

- `State`: what flows between layers (shape, receptive field, jump).
- `Ctx`: what stays fixed during one walk (counting convention, class count).
- `LayerInfo`: one row of the result; `row` fills in what every row has.
- `Handler`: the signature of every handler, ``(spec, name, state, ctx) -> (row, state)``.

Pure Python: no jax or numpy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from math import prod

from cnncli.arith.layers import to_token
from cnncli.errors import ShapeError

BYTES_PER_VALUE = 4  # float32 activations


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
        params, macs, flops: see `cnncli.arith.geometry` for the conventions.
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
class State:
    """What flows between layers: the shape and the receptive field so far."""

    shape: tuple[int, ...]
    rf: tuple
    jump: tuple

    @property
    def spatial(self) -> tuple[int, ...]:
        """The spatial sizes: every axis but the last (channels)."""
        return self.shape[:-1]


@dataclass(frozen=True)
class Ctx:
    """What stays fixed during one walk: the FLOP counting convention and the class count."""

    counting: Counting
    num_classes: int | None


Handler = Callable[..., tuple[LayerInfo, State]]


def row(spec_or_token, name: str, state: State, out: tuple[int, ...], **kw) -> LayerInfo:
    """A `LayerInfo` for a layer that maps ``state`` to ``out``.

    Args:
        spec_or_token: the layer spec, or its token where it differs from `to_token`
            (a dense whose width came from the class count).
        name: the row's name.
        state: the layer's input state; its RF and jump are the defaults.
        out: the layer's output shape.
        **kw: any other `LayerInfo` field.

    Returns:
        The row, with ``kind`` from the token and ``act_bytes`` from ``out``.
    """
    token = spec_or_token if isinstance(spec_or_token, str) else to_token(spec_or_token)
    kind = token.partition(":")[0]
    return LayerInfo(
        name=name, kind=kind, token=token, input=state.shape, output=out,
        act_bytes=prod(out) * BYTES_PER_VALUE, rf=kw.pop("rf", fmt_rf(state.rf)),
        jump=kw.pop("jump", fmt_rf(state.jump)), **kw,
    )  # fmt: skip


def fmt_rf(values: tuple) -> tuple:
    """Receptive-field numbers as ints where whole (a tconv's jump can be a fraction)."""
    return tuple(int(v) if Fraction(v).denominator == 1 else float(v) for v in values)


def need_spatial(name: str, token: str, state: State) -> int:
    """The number of spatial axes of ``state``; a `ShapeError` when there are none.

    Args:
        name: the layer's name, for the message.
        token: the layer's token, for the message.
        state: the layer's input.

    Returns:
        ``len(state.shape) - 1``, at least 1.
    """
    nsp = len(state.shape) - 1
    if nsp < 1:
        raise ShapeError(
            f"{name} ({token}) needs spatial axes, but its input is {shape_text(state.shape)} "
            "(after flatten or global pooling)",
            hint="put convs and pools before flatten/gap",
        )
    return nsp


def shape_text(shape: tuple[int, ...]) -> str:
    """A shape as ``28x28x1``, for messages."""
    return "x".join(str(v) for v in shape)
