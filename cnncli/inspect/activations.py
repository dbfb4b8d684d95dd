"""Where filters fire: feature maps for one input, the patches that excite a filter most,
and the receptive-field box of an output position.

Receptive-field sizes come from `cnncli.arith.geometry` (the figures ``conv-arith`` prints);
this module adds where the field sits. With per-layer padding ``lo_l`` and input jump
``j_l`` (the distance between adjacent positions of that layer's input, in input
pixels), output position ``o`` of a layer with jump ``J`` sees input pixels

    lo = o * J - sum_l lo_l * j_l,    hi = lo + rf - 1     (inclusive; per axis)

(Araujo et al., "Computing Receptive Fields of Convolutional Neural Networks",
Distill 2019); equivalently the box is centred on ``c_0 + o * J``, where the centre
``c_0`` of output 0 moves by ``((k_eff - 1) / 2 - lo_l) * j_l`` per layer. The box may
reach past the image where padding was read; ``clip_lo`` /
``clip_hi`` give the part inside. Nothing here prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from cnncli.arith.geometry import analyze
from cnncli.errors import UsageError, unknown_choice
from cnncli.inspect.evaluate import softmax
from cnncli.inspect.probe import batched_responses, conv_layers, point_shape


@dataclass
class RFBox:
    """The input pixels one output position sees, per spatial axis (inclusive bounds)."""

    layer: str
    position: tuple[int, ...]
    rf: tuple  # size per axis: geometry's figure
    jump: tuple
    lo: tuple[int, ...]  # may be negative (padding)
    hi: tuple[int, ...]  # may pass the input's end
    clip_lo: tuple[int, ...]
    clip_hi: tuple[int, ...]


def _advance(center: list, jump: list, r) -> None:
    """Move the centre of output 0's field and the jump through one windowed layer ``r``, in place."""
    if not (r.kernel and r.padding is not None):
        return
    for ax in range(len(center)):
        lo, s = Fraction(r.padding[ax][0]), Fraction(r.stride[ax])
        half = Fraction((r.kernel[ax] - 1) * r.dilation[ax], 2)  # (k_eff - 1) / 2
        if r.kind == "tconv":  # output o reads input (o + lo - t*d) / s
            center[ax] += (lo - half) * jump[ax] / s
            jump[ax] /= s
        else:
            center[ax] += (half - lo) * jump[ax]
            jump[ax] *= s


def _centers(analysis) -> dict[str, tuple[tuple[Fraction, ...], tuple[Fraction, ...]]]:
    """Per layer and per block part: the input coordinate of the centre of output 0's field, and the jump.

    Blocks walk their main path (the deepest one) in order; the projection shortcut
    (``.proj``, ``.proj_bn``) starts again from the block's input. Every part is recorded
    under its dotted name (``resblock1.bn1``), so block convs get boxes too.
    """
    nsp = len(analysis.input) - 1
    center, jump = [Fraction(0)] * nsp, [Fraction(1)] * nsp
    out = {}
    for row in analysis.layers:
        side_center, side_jump = list(center), list(jump)
        for r in row.children or [row]:
            on_side = r.name.endswith((".proj", ".proj_bn"))
            c, j = (side_center, side_jump) if on_side else (center, jump)
            _advance(c, j, r)
            out[r.name] = (tuple(c), tuple(j))
        out[row.name] = (tuple(center), tuple(jump))
    return out


def rf_box(analysis, layer: str, position: tuple[int, ...]) -> RFBox:
    """The receptive-field box of ``position`` in the output of ``layer``.

    Args:
        analysis: `cnncli.arith.geometry.analyze` of the run's specs and input shape (`run_analysis`).
        layer: a layer name with spatial output, or a part of a block (``resblock1.bn1``).
        position: an output index per spatial axis.
    """
    rows = {r.name: r for r in analysis.layers}
    rows.update({c.name: c for r in analysis.layers for c in (r.children or [])})
    row = rows[layer]
    center, jump = _centers(analysis)[layer]
    size = analysis.input[:-1]
    lo = tuple(int(np.floor(c + p * j - (Fraction(r) - 1) / 2)) for c, p, j, r in zip(center, position, jump, row.rf))
    hi = tuple(a + int(np.ceil(r)) - 1 for a, r in zip(lo, row.rf))
    return RFBox(
        layer, tuple(int(p) for p in position), tuple(row.rf), tuple(row.jump), lo, hi,
        tuple(max(a, 0) for a in lo), tuple(min(b, n - 1) for b, n in zip(hi, size)),
    )  # fmt: skip


def crop(x: np.ndarray, box: RFBox) -> np.ndarray:
    """The box's pixels of one raw input ``(*spatial, C)``; NaN where the box leaves the input."""
    shape = tuple(h - l + 1 for l, h in zip(box.lo, box.hi))
    out = np.full((*shape, x.shape[-1]), np.nan, np.float32)
    src = tuple(slice(cl, ch + 1) for cl, ch in zip(box.clip_lo, box.clip_hi))
    dst = tuple(slice(cl - l, ch - l + 1) for cl, ch, l in zip(box.clip_lo, box.clip_hi, box.lo))
    out[dst] = x[src]
    return out


# ----------------------------------------------------------- which layer
def shown_layer(run, name: str) -> tuple[str, str, bool]:
    """``(named, shown, relu)``: the layer asked for, the point whose output is drawn, and
    whether a ReLU fused into that point is applied when reading it.

    A conv shows its response (`cnncli.inspect.probe.ConvInfo.response`): for a
    top-level conv the activation after it (through bn/dropout), for a conv inside a
    block its BatchNorm and fused ReLU, or its own output.

    Raises:
        UsageError: an unknown name, a layer without spatial output, or a 3-D model.
    """
    names = list(run.model.layer_names)
    convs = {c.name: c for c in conv_layers(run)}
    if name in convs:
        shown, relu = convs[name].response, convs[name].response_relu
    elif name in names:
        shown, relu = name, False
    else:
        raise UsageError(unknown_choice("layer", name, names + [c for c in convs if c not in names]),
                         hint="conv layers as inspect-filters --list names them")  # fmt: skip
    shape = point_shape(run, shown)
    if len(shape) < 2:
        raise UsageError(
            f"{shown} has no spatial output (shape {'x'.join(map(str, shape))})",
            hint="pick a layer before flatten/gap: "
            + ", ".join(n for n, s in zip(names, run.model.layer_shapes) if len(s) >= 2),
        )
    if len(run.input_shape) > 3:
        raise UsageError("feature maps and patches are drawn for 1-D and 2-D inputs only",
                         hint="filter grids and the health table work for 3-D")  # fmt: skip
    return name, shown, relu


def run_analysis(run):
    """A loaded run's layer geometry: `cnncli.arith.geometry.analyze` of its specs and input shape.

    The receptive fields and jumps ``conv-arith`` prints for the run; `rf_box` places them.
    """
    return analyze(run.specs, run.input_shape, num_classes=run.num_classes)


# ----------------------------------------------------------- feature maps
@dataclass
class FeatureMaps:
    """A layer's activations for one input, channels ordered by mean activation (largest first)."""

    layer: str  # as asked
    shown: str  # the layer whose output this is
    input: str  # the file, or "eval[N]"
    x: np.ndarray  # the raw input (*input_shape)
    maps: np.ndarray  # (C, *spatial), reordered
    channels: list[int]  # original channel index of each map
    means: list[float]
    peak_channel: int
    peak_value: float
    box: RFBox  # receptive field of the most active position (over all channels)
    label: int | None = None
    predicted: int | None = None
    probability: float | None = None
    warnings: list[str] = field(default_factory=list)


def feature_maps(run, layer: str, x: np.ndarray, *, input_name: str, label: int | None = None) -> FeatureMaps:
    """Activations of ``layer`` for one raw input ``x (*input_shape)``, and the model's prediction."""
    named, shown, relu = shown_layer(run, layer)
    last = run.model.layer_names[-1]
    (_, _, acts), = batched_responses(run, x[None], [shown, last], batch_size=1)
    a = acts[shown][0]  # (*spatial, C)
    a = np.maximum(a, 0) if relu else a
    probs = softmax(acts[last].reshape(1, -1))[0]
    maps = np.moveaxis(a, -1, 0)
    means = maps.reshape(len(maps), -1).mean(axis=1)
    order = np.argsort(-means, kind="stable")
    flat = int(np.argmax(a))
    *pos, channel = np.unravel_index(flat, a.shape)
    pred = int(np.argmax(probs))
    return FeatureMaps(
        named, shown, input_name, x, maps[order], [int(c) for c in order], [float(means[c]) for c in order],
        int(channel), float(a.reshape(-1)[flat]), rf_box(run_analysis(run), shown, tuple(int(p) for p in pos)),
        label, pred, float(probs[pred]),
    )  # fmt: skip


# ---------------------------------------------------------------- patches
@dataclass
class Patch:
    """One input patch that excites a filter: the receptive field of its peak position."""

    filter: int
    rank: int  # 0 = the strongest
    index: int  # example index in the split
    label: int
    value: float  # the filter's peak response on this example
    box: RFBox
    pixels: np.ndarray  # raw crop (*rf, C); NaN outside the input


@dataclass
class ActivatingPatches:
    """For the first filters of a layer, the top-k examples' patches."""

    layer: str
    shown: str
    num_examples: int
    filters: list[int]
    patches: list[list[Patch]]  # [filter][rank]


def top_patches(run, layer: str, x: np.ndarray, y: np.ndarray, *, filters: int = 8, top_k: int = 8) -> ActivatingPatches:
    """The ``top_k`` inputs of ``x`` (raw) that most excite each of the first ``filters`` channels.

    Each example counts once per filter, at its peak position; the patch is that
    position's receptive field.
    """
    named, shown, relu = shown_layer(run, layer)
    shape = point_shape(run, shown)
    nf = min(filters, shape[-1])
    peaks = np.zeros((len(x), nf), np.float32)
    where = np.zeros((len(x), nf), np.int64)
    for start, stop, acts in batched_responses(run, x, [shown]):
        a = acts[shown][..., :nf]
        a = np.maximum(a, 0) if relu else a
        flat = a.reshape(len(a), -1, nf)
        where[start:stop] = flat.argmax(axis=1)
        peaks[start:stop] = flat.max(axis=1)
    spatial = shape[:-1]
    analysis = run_analysis(run)
    out = []
    for f in range(nf):
        best = np.argsort(-peaks[:, f], kind="stable")[:top_k]
        row = []
        for rank, i in enumerate(best):
            pos = tuple(int(p) for p in np.unravel_index(int(where[i, f]), spatial))
            box = rf_box(analysis, shown, pos)
            row.append(Patch(f, rank, int(i), int(y[i]), float(peaks[i, f]), box, crop(x[i], box)))
        out.append(row)
    return ActivatingPatches(named, shown, len(x), list(range(nf)), out)
