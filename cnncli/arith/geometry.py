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
  (``count_pool``; see `cnncli.arith.plain`). Activations, dropout and residual adds are
  not counted.
- Blocks (resblock, bottleneck, denseblock, transition) are one row each, with the
  sums of their inner layers; their inner layers are in `LayerInfo.children`, named
  as the model builder names them (``resblock1.conv1``, ``resblock1.proj``, ...);
  see `cnncli.arith.blocks`. A block's receptive field is the max over its paths.
- Receptive field and jump follow Araujo et al. (Distill 2019), in input pixels per
  spatial axis. gap/flatten act as one window over the whole input (so their RF is
  the span of every path, padding included); a tconv's jump is fractional and its
  RF an approximation (alignment ignored).

The walk is layered so nothing imports back: `cnncli.arith._walk` holds what every
handler shares (`LayerInfo`, the state between layers, `Counting`), `cnncli.arith.plain`
and `cnncli.arith.blocks` hold the handlers, and this module dispatches to them.

Pure Python: no jax or numpy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cnncli.arith import blocks, plain
from cnncli.arith._walk import Counting, Ctx, Handler, LayerInfo, State
from cnncli.arith.layers import LayerSpec, layer_names
from cnncli.errors import ShapeError

__all__ = ["Analysis", "Counting", "LayerInfo", "Totals", "analyze"]

_HANDLERS: dict[type, Handler] = {**plain.HANDLERS, **blocks.HANDLERS}


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
    ctx = Ctx(Counting(count_bias, count_norm, count_pool), num_classes)
    nsp = len(shape) - 1
    state = State(shape, (1,) * nsp, (1,) * nsp)
    rows = []
    for name, spec in zip(layer_names(specs), specs):
        row, state = _apply(spec, name, state, ctx)
        rows.append(row)
    total = Totals(*(sum(getattr(r, f) for r in rows) for f in ("params", "macs", "flops", "act_bytes")))
    return Analysis(shape, tuple(rows), state.shape, total, ctx.counting)


def _apply(spec: LayerSpec, name: str, state: State, ctx: Ctx) -> tuple[LayerInfo, State]:
    """Dispatch one spec to its handler."""
    return _HANDLERS[type(spec)](spec, name, state, ctx)
