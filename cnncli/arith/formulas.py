"""Convolution arithmetic along one axis: output sizes, paddings, transposes, solving.

Every function here works on one spatial axis with plain integers; `cnncli.arith.geometry`
applies them axis by axis. The formulas follow Dumoulin & Visin, "A guide to
convolution arithmetic for deep learning" (arXiv:1603.07285), generalized to uneven
``(lo, hi)`` padding and dilation. With the effective kernel ``ke = d*(k-1) + 1``::

    conv:        o = floor((i + lo + hi - ke) / s) + 1
    pool, ceil:  o = ceil((i + lo + hi - ke) / s) + 1, minus 1 if the last window
                 would start in the high padding (PyTorch's ``ceil_mode`` rule)
    tconv:       o = (i - 1)*s - lo - hi + ke + op     (PyTorch's ConvTranspose)

Padding names resolve exactly as XLA does (`jax.lax.padtype_to_pads`): ``same``
pads ``total = max((ceil(i/s) - 1)*s + ke - i, 0)`` with ``lo = total // 2`` and
``hi = total - lo`` (the odd one goes at the end); ``valid`` is ``(0, 0)``; ``full``
is ``(ke - 1, ke - 1)``.

Pure Python: no jax, numpy or rich.
"""

from __future__ import annotations

from dataclasses import dataclass

from cnncli.errors import LayerError, ShapeError

Pair = tuple[int, int]


def effective_kernel(k: int, d: int = 1) -> int:
    """The span of a kernel of size ``k`` dilated by ``d``: ``d*(k-1) + 1`` pixels."""
    return d * (k - 1) + 1


def same_pads(i: int, k: int, s: int = 1, d: int = 1) -> Pair:
    """The ``(lo, hi)`` pads of ``same`` exactly as XLA computes them.

    The output is ``ceil(i / s)``; the total padding is split with the odd pixel at
    the end (``lo = total // 2``), as `jax.lax.padtype_to_pads`, TensorFlow and
    PyTorch's ``padding="same"`` do.

    >>> same_pads(224, 7, 2)
    (2, 3)
    """
    out = -(-i // s)
    total = max((out - 1) * s + effective_kernel(k, d) - i, 0)
    return total // 2, total - total // 2


def resolve_pads(padding: str | Pair, i: int, k: int, s: int = 1, d: int = 1) -> Pair:
    """One axis's ``(lo, hi)`` for a padding name (``same``/``valid``/``full``) or pair."""
    if padding == "same":
        return same_pads(i, k, s, d)
    if padding == "valid":
        return 0, 0
    if padding == "full":
        ke = effective_kernel(k, d)
        return ke - 1, ke - 1
    if isinstance(padding, str):
        raise LayerError(f"unknown padding {padding!r}", hint="use same, valid, full or integers")
    lo, hi = padding
    return int(lo), int(hi)


def _check_fits(i: int, k: int, pads: Pair, d: int, where: str) -> None:
    ke = effective_kernel(k, d)
    padded = i + pads[0] + pads[1]
    if padded < ke:
        span = f"kernel {k}" + (f" (dilated by {d}: {ke} wide)" if d > 1 else "")
        raise ShapeError(
            f"{where}{span} is larger than the padded input {padded} "
            f"(input {i} + padding {pads[0]}+{pads[1]}); the output would be empty",
            hint="use a smaller kernel or dilation, more padding (p=same), or a larger input",
        )


def conv_output(i: int, k: int, s: int = 1, pads: Pair = (0, 0), d: int = 1, *, where: str = "") -> int:
    """Output size of a convolution: ``floor((i + lo + hi - ke) / s) + 1``.

    Args:
        i: input size along the axis.
        k: kernel size.
        s: stride.
        pads: ``(lo, hi)`` zero padding.
        d: dilation.
        where: prefix for error messages, e.g. ``"conv2 (axis 0): "``.

    Raises:
        ShapeError: the dilated kernel is larger than the padded input.
    """
    _check_fits(i, k, pads, d, where)
    return (i + pads[0] + pads[1] - effective_kernel(k, d)) // s + 1


def pool_output(
    i: int, k: int, s: int, pads: Pair = (0, 0), d: int = 1, ceil: bool = False, *, where: str = ""
) -> tuple[int, int]:
    """Output size of a pooling window, and the extra high padding ceil mode needs.

    Floor mode is `conv_output`. Ceil mode rounds up, then drops the last window if
    it would start inside the high padding (PyTorch's ``ceil_mode``). Frameworks
    without a ceil mode (``jax.lax.reduce_window``, Flax) get the same output from
    the floor formula by padding ``extra`` more at the end.

    Returns:
        ``(o, extra)``: the output size and the extra high padding (0 in floor mode).
        ``extra`` is negative (a crop) only in the corner PyTorch rejects, padding
        wider than half the window, where ceil mode drops a window floor mode keeps.
    """
    _check_fits(i, k, pads, d, where)
    ke = effective_kernel(k, d)
    span = i + pads[0] + pads[1] - ke
    if not ceil:
        return span // s + 1, 0
    o = -(-span // s) + 1
    if (o - 1) * s >= i + pads[0]:
        o -= 1
    return o, 0 if o == span // s + 1 else (o - 1) * s + ke - (i + pads[0] + pads[1])


def tconv_output(i: int, k: int, s: int = 1, pads: Pair = (0, 0), d: int = 1, op: int = 0, *, where: str = "") -> int:
    """Output size of a transposed convolution (PyTorch's ``ConvTranspose``).

    ``pads`` is the padding of the direct convolution being transposed, and ``op``
    the output padding (Dumoulin & Visin's ``a``):
    ``o = (i - 1)*s - lo - hi + d*(k - 1) + op + 1``.

    Raises:
        ShapeError: the output would be empty, or ``op`` is not below the stride or
            the dilation (PyTorch's rule: larger values add rows no input reaches).
    """
    if op and op >= max(s, d):
        raise ShapeError(
            f"{where}output padding {op} must be smaller than the stride ({s}) or the dilation ({d})",
            hint="output padding only picks among the s input sizes a strided conv maps to one size",
        )
    o = (i - 1) * s - pads[0] - pads[1] + effective_kernel(k, d) + op
    if o < 1:
        raise ShapeError(
            f"{where}padding {pads[0]}+{pads[1]} crops the whole output of a transposed conv "
            f"(input {i}, kernel {k}, stride {s}): the output would be {o}",
            hint="use less padding",
        )
    return o


def tconv_pads(padding: str | Pair, i: int, k: int, s: int = 1, d: int = 1, op: int = 0) -> tuple[Pair, int]:
    """A transposed conv's padding as PyTorch spells it: ``((lo, hi), op)``.

    Integer padding is already the direct conv's padding. ``same``/``valid`` follow
    Flax/TensorFlow (``jax.lax.conv_transpose``): ``same`` gives ``i*s``, ``valid``
    gives ``i*s + max(ke - s, 0)``; they are translated to the equivalent direct-conv
    padding and output padding, so one formula (`tconv_output`) serves every case.
    """
    ke = effective_kernel(k, d)
    if padding == "full":
        return (ke - 1, ke - 1), op
    if not isinstance(padding, str):
        return (int(padding[0]), int(padding[1])), op
    if padding == "same":
        total = ke + s - 2
        a = ke - 1 if s > ke - 1 else -(-total // 2)
    elif padding == "valid":
        total = ke + s - 2 + max(ke - s, 0)
        a = ke - 1
    else:
        raise LayerError(f"unknown padding {padding!r}", hint="use same, valid, full or integers")
    b = total - a + op
    # lax pads (a, b) on the stride-dilated input are (ke-1-lo, ke-1-hi+op) in torch terms
    return (ke - 1 - a, max(ke - 1 - b, 0)), max(b - (ke - 1), 0)


def tconv_lax_padding(k: int, s: int, pads: Pair, d: int = 1, op: int = 0) -> Pair:
    """The explicit padding to give `jax.lax.conv_transpose` for PyTorch-style ``pads``/``op``.

    ``lax.conv_transpose`` pads the stride-dilated input directly, so the direct
    conv's ``p`` becomes ``ke - 1 - p`` (Dumoulin & Visin's ``p' = k - p - 1``), and
    the output padding goes on the high side. Values may be negative (a crop).
    """
    ke = effective_kernel(k, d)
    return ke - 1 - pads[0], ke - 1 - pads[1] + op


def transpose_output_padding(i: int, k: int, s: int = 1, pads: Pair = (0, 0), d: int = 1) -> int:
    """The ``output_padding`` a conv's transpose needs to give back exactly ``i``.

    A strided conv maps ``s`` input sizes to one output size; the transpose picks
    one with ``op = (i + lo + hi - ke) mod s`` (Dumoulin & Visin, relationship 14).
    """
    return (i + pads[0] + pads[1] - effective_kernel(k, d)) % s


@dataclass(frozen=True)
class Unused:
    """Positions a strided window never reads along one axis.

    Attributes:
        tail: positions of the padded input after the last window (the floor's remainder).
        tail_pixels: how many of ``tail`` are real input pixels (the rest is padding).
        gap_pixels: real input pixels skipped between windows (when the stride
            exceeds what the window covers, e.g. a 1x1 conv with stride 2).
    """

    tail: int
    tail_pixels: int
    gap_pixels: int

    @property
    def pixels(self) -> int:
        """Real input pixels never read."""
        return self.tail_pixels + self.gap_pixels


def unused(i: int, k: int, s: int = 1, pads: Pair = (0, 0), d: int = 1) -> Unused:
    """Which input positions a conv or floor-mode pool never reads (see `Unused`)."""
    ke = effective_kernel(k, d)
    lo, hi = pads
    o = (i + lo + hi - ke) // s + 1
    tail = (i + lo + hi - ke) % s
    tail_pixels = max(0, tail - hi)
    gaps = 0
    if s > 1 and (k == 1 or d > 1 or ke < s):
        seen = {r * s + j * d - lo for r in range(o) for j in range(k)}
        last = (o - 1) * s + ke - lo  # first position after the last window
        gaps = sum(1 for x in range(0, min(i, last)) if x not in seen)
    return Unused(tail, tail_pixels, gaps)


def unused_warning(i: int, k: int, s: int = 1, pads: Pair = (0, 0), d: int = 1, *, axis: str = "") -> str | None:
    """A teaching warning when input pixels are never read, else None.

    Only real input pixels count: a remainder that falls in the padding loses
    nothing and is not worth a warning in a layer table.
    """
    u = unused(i, k, s, pads, d)
    where = f" along {axis}" if axis else ""
    parts = []
    if u.tail_pixels:
        span = i + pads[0] + pads[1] - effective_kernel(k, d)
        parts.append(
            f"the last {u.tail_pixels} input pixel(s){where} are never read: "
            f"({i} + {pads[0]} + {pads[1]} - {effective_kernel(k, d)}) mod {s} = {span % s}"
        )
    if u.gap_pixels:
        parts.append(f"{u.gap_pixels} of {i} input pixels{where} fall between windows (window {k}, stride {s})")
    if not parts:
        return None
    return "; ".join(parts) + "; adjust the padding, kernel or stride, or the input size"


def conv_formula(i: int, k: int, s: int = 1, pads: Pair = (0, 0), d: int = 1) -> str:
    """The conv output formula with the numbers substituted.

    >>> conv_formula(224, 7, 2, (3, 3))
    'floor((224 + 3 + 3 - 1*(7-1) - 1) / 2) + 1 = 112'
    """
    o = conv_output(i, k, s, pads, d)
    return f"floor(({i} + {pads[0]} + {pads[1]} - {d}*({k}-1) - 1) / {s}) + 1 = {o}"


def pool_formula(i: int, k: int, s: int, pads: Pair = (0, 0), d: int = 1, ceil: bool = False) -> str:
    """The pooling output formula with the numbers substituted (ceil or floor)."""
    if not ceil:
        return conv_formula(i, k, s, pads, d)
    o, _ = pool_output(i, k, s, pads, d, ceil=True)
    text = f"ceil(({i} + {pads[0]} + {pads[1]} - {d}*({k}-1) - 1) / {s}) + 1"
    raw = -(-(i + pads[0] + pads[1] - effective_kernel(k, d)) // s) + 1
    if raw != o:
        return f"{text} - 1 = {o}  (the last window would start in the padding)"
    return f"{text} = {o}"


def tconv_formula(i: int, k: int, s: int = 1, pads: Pair = (0, 0), d: int = 1, op: int = 0) -> str:
    """The transposed conv output formula with the numbers substituted."""
    o = tconv_output(i, k, s, pads, d, op)
    return f"({i} - 1)*{s} - {pads[0]} - {pads[1]} + {d}*({k}-1) + {op} + 1 = {o}"


def receptive_step(rf: float, jump: float, k: int, s: int = 1, d: int = 1, *, transpose: bool = False):
    """One layer of the receptive-field recurrence (Araujo et al., Distill 2019).

    ``r_out = r_in + (ke - 1) * j_in`` and ``j_out = j_in * s``, in input pixels. A
    transposed conv's output reads ``ceil(ke / s)`` input positions and moves by
    ``j / s``, so its jump can be fractional (an approximation: alignment ignored).

    Returns:
        ``(rf, jump)`` after the layer.
    """
    ke = effective_kernel(k, d)
    if transpose:
        from fractions import Fraction

        return rf + (-(-ke // s) - 1) * jump, Fraction(jump) / s
    return rf + (ke - 1) * jump, jump * s


@dataclass(frozen=True)
class Solution:
    """One ``(k, s, p, d)`` (and output padding, for a transposed conv) mapping i to o.

    Attributes:
        drops: real input pixels the conv never reads (see `unused`); 0 for tconv.
    """

    k: int
    s: int
    p: int
    d: int = 1
    op: int = 0
    drops: int = 0

    def token(self, transpose: bool = False) -> str:
        """The layer-token keys, e.g. ``k=3,s=2,p=1``."""
        text = f"k={self.k},s={self.s},p={self.p}"
        if self.d > 1:
            text += f",d={self.d}"
        if transpose and self.op:
            text += f",op={self.op}"
        return text


def solve(
    i: int, o: int, *, transpose: bool = False, max_kernel: int = 11, max_stride: int | None = None, max_dilation: int = 3
) -> list[Solution]:
    """Every ``(k, s, p, d)`` with symmetric padding that maps size ``i`` to ``o``.

    The search is bounded: ``k <= max_kernel``, ``d <= max_dilation``, ``p <= ke // 2``
    (``p <= ke - 1`` when ``o > i``: beyond that windows hold only zeros), ``s <= max_stride`` (default:
    ``max(4, 2 * ceil(i / o))``; for a transposed conv ``2 * ceil(o / i)``). Results
    are sorted by simplicity: those that read every input pixel first, then no
    dilation, then the smallest kernel, stride and padding; convs that drop input
    pixels are kept, last, and flagged (``drops``).

    Args:
        i: input size.
        o: wanted output size.
        transpose: solve for a transposed conv (upsampling) instead.
    """
    if i < 1 or o < 1:
        raise LayerError(f"sizes must be positive (got {i} -> {o})")
    ratio = -(-o // i) if transpose else -(-i // o)
    max_stride = max_stride or max(4, 2 * ratio)
    found = []
    for d in range(1, max_dilation + 1):
        for k in range(1 if d == 1 else 2, max_kernel + 1):
            ke = effective_kernel(k, d)
            # more than half the window in padding only pays when growing without --transpose
            for p in range(ke if o > i else ke // 2 + 1):
                for s in range(1, max_stride + 1):
                    found += _solutions_at(i, o, k, s, p, d, transpose)
    return sorted(found, key=lambda x: (x.drops > 0, x.d, x.k, x.s, x.p, x.op))


def _solutions_at(i: int, o: int, k: int, s: int, p: int, d: int, transpose: bool) -> list[Solution]:
    ke = effective_kernel(k, d)
    if transpose:
        op = o - ((i - 1) * s - 2 * p + ke)
        if 0 <= op < max(s, d):
            return [Solution(k, s, p, d, op)]
        return []
    if i + 2 * p < ke or (i + 2 * p - ke) // s + 1 != o:
        return []
    return [Solution(k, s, p, d, 0, unused(i, k, s, (p, p), d).pixels)]
