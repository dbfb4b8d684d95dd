"""``conv-arith --draw``: a convolution worked by hand, in the terminal.

For a small 2-D input the sliding window is drawn step by step over the (padded)
input, each window cell written ``value×weight`` as in lecture slides, followed by
the output grid. For 1-D the convolution is also written as a matrix: Toeplitz for
zero padding (constant along diagonals, corners cut), circulant for circular padding
(each row the previous one rotated), and a transposed conv as the transposed matrix.

What CNN layers compute is cross-correlation, ``y[i] = sum_m x[i*s + m*d - lo] w[m]``
(no kernel flip); true convolution flips the kernel first. The drawing shows both.

The default 2-D example is the 5x5 image and 3x3 kernel worked in the lecture seed
``001`` (output ``[[4,3,4],[2,4,3],[2,3,4]]``). Pure Python: no numpy.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from cnncli.arith.formulas import conv_output
from cnncli.errors import UsageError

SEED_IMAGE = [[1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1], [0, 0, 1, 1, 0], [0, 1, 1, 0, 0]]
SEED_KERNEL = [[1, 0, 1], [0, 1, 0], [1, 0, 1]]
MAX_SIDE = {1: 24, 2: 12}  # largest input side that still fits a terminal
MAX_FRAMES = 4  # window steps drawn when the output has more than 9 positions


def parse_values(text: str, *, what: str = "--values") -> list:
    """``"1,2,3"`` -> a 1-D list; ``"1,0;0,1"`` (rows split by ``;``) -> a 2-D list."""
    rows = [r for r in text.replace(" ", "").split(";") if r]
    try:
        parsed = [[_number(v) for v in row.split(",") if v] for row in rows]
    except ValueError:
        raise UsageError(f"{what}: {text!r} is not a list of numbers", hint='e.g. "1,2,3" or "1,0;0,1"') from None
    if not parsed or not all(parsed):
        raise UsageError(f"{what}: no numbers in {text!r}", hint='e.g. "1,2,3" or "1,0;0,1"')
    if len(parsed) == 1 and ";" not in text:
        return parsed[0]
    if len({len(r) for r in parsed}) != 1:
        raise UsageError(f"{what}: rows have different lengths {[len(r) for r in parsed]}", hint="give a rectangle")
    return parsed


def _number(text: str) -> int | float:
    value = float(text)
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


def shape_of(values: list) -> tuple[int, ...]:
    """``(n,)`` for a 1-D list, ``(rows, cols)`` for a 2-D one."""
    return (len(values), len(values[0])) if isinstance(values[0], list) else (len(values),)


def default_values(shape: tuple[int, ...]) -> list:
    """The seed-001 image for 5x5, a diagonal band for other 2-D sizes, 1..n for 1-D."""
    if shape == (5, 5):
        return [row[:] for row in SEED_IMAGE]
    if len(shape) == 2:
        return [[1 if 0 <= c - r <= 2 else 0 for c in range(shape[1])] for r in range(shape[0])]
    return list(range(1, shape[0] + 1))


def default_kernel(kernel: tuple[int, ...]) -> list:
    """The seed-001 X-shaped kernel (any size) in 2-D; ``[1, 0, ..., 0, -1]`` in 1-D."""
    if len(kernel) == 2:
        kh, kw = kernel
        return [[1 if (c == r * (kw - 1) // max(kh - 1, 1) or c == (kw - 1) - r * (kw - 1) // max(kh - 1, 1)) else 0
                 for c in range(kw)] for r in range(kh)]  # fmt: skip
    k = kernel[0]
    return [1] if k == 1 else [1] + [0] * (k - 2) + [-1]


def source_index(p: int, n: int, mode: str) -> int | None:
    """Where padded position ``p`` (0 = first real pixel) reads from; None for a zero."""
    if 0 <= p < n:
        return p
    if mode == "zeros":
        return None
    if mode == "circular":
        return p % n
    if mode == "edge":
        return min(max(p, 0), n - 1)
    if n == 1:  # reflect
        return 0
    period = 2 * (n - 1)
    p %= period
    return p if p < n else period - p


@dataclass(frozen=True)
class Setup:
    """A drawing's parameters, one entry per axis."""

    stride: tuple[int, ...]
    pads: tuple[tuple[int, int], ...]
    dilation: tuple[int, ...]
    pad_mode: str = "zeros"
    pool: bool = False
    output_padding: tuple[int, ...] = field(default=())


def _get(values: list, idx: tuple[int, ...]):
    for i in idx:
        values = values[i]
    return values


def _taps(out: tuple[int, ...], kshape: tuple[int, ...], shape: tuple[int, ...], setup: Setup):
    """(tap index, source index or None) for every kernel tap at one output position."""
    for tap in itertools.product(*(range(k) for k in kshape)):
        src = []
        for r, m, n, s, (lo, _), d in zip(out, tap, shape, setup.stride, setup.pads, setup.dilation):
            src.append(source_index(r * s + m * d - lo, n, setup.pad_mode))
        yield tap, (None if None in src else tuple(src))


def correlate(values: list, kernel: list, setup: Setup) -> list:
    """Cross-correlation (what CNN layers compute), or max pooling with ``setup.pool``.

    Returns:
        The output as nested lists, same rank as ``values``.
    """
    shape, kshape = shape_of(values), shape_of(kernel)
    oshape = tuple(conv_output(n, k, s, p, d) for n, k, s, p, d in zip(shape, kshape, setup.stride, setup.pads, setup.dilation))
    flat = {}
    for out in itertools.product(*(range(o) for o in oshape)):
        terms = [(_get(values, src), _get(kernel, tap)) for tap, src in _taps(out, kshape, shape, setup) if src]
        if setup.pool:  # max pooling ignores the padding (PyTorch pads with -inf)
            flat[out] = max(v for v, _ in terms)
        else:
            flat[out] = sum(v * w for v, w in terms)
    return _nest(flat, oshape)


def _nest(flat: dict, oshape: tuple[int, ...]) -> list:
    if len(oshape) == 1:
        return [flat[(i,)] for i in range(oshape[0])]
    return [[flat[(i, j)] for j in range(oshape[1])] for i in range(oshape[0])]


def flip(kernel: list) -> list:
    """The kernel rotated 180 degrees: true convolution = cross-correlation with this."""
    if isinstance(kernel[0], list):
        return [row[::-1] for row in kernel[::-1]]
    return kernel[::-1]


def conv_matrix(n: int, k: int, setup: Setup, rows: int | None = None) -> list[list[list[int]]]:
    """The 1-D conv as a matrix ``C`` with ``y = C x``: each cell lists the kernel taps it holds.

    A cell can hold several taps when padding wraps or reflects (``w0+w2``).

    Args:
        n: input length.
        k: kernel length.
        rows: number of outputs (default: the conv's output size).
    """
    (lo, hi), s, d = setup.pads[0], setup.stride[0], setup.dilation[0]
    rows = conv_output(n, k, s, (lo, hi), d) if rows is None else rows
    matrix = [[[] for _ in range(n)] for _ in range(rows)]
    for r in range(rows):
        for m in range(k):
            src = source_index(r * s + m * d - lo, n, setup.pad_mode)
            if src is not None:
                matrix[r][src].append(m)
    return matrix


def fmt(v) -> str:
    """A number without a trailing ``.0``."""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def grid(rows: list[list[str]], indent: str = "  ") -> list[str]:
    """Right-aligned columns of strings."""
    width = max((len(c) for r in rows for c in r), default=1)
    return [indent + " ".join(c.rjust(width) for c in r) for r in rows]


@dataclass(frozen=True)
class Drawing:
    """A rendered drawing and the numbers behind it.

    Attributes:
        text: the lines to print.
        output: the layer's output (cross-correlation, max pool, or transposed conv).
        convolution: the output of true convolution (flipped kernel); None for pools.
        matrix: 1-D only: the matrix ``M`` with ``y = M x``, numeric.
    """

    text: str
    output: list
    convolution: list | None = None
    matrix: list | None = None


def _window_cell(p: tuple[int, ...], out: tuple[int, ...], kshape, setup: Setup) -> tuple[int, ...] | None:
    """The kernel tap at real position ``p`` for output ``out``, or None outside the window."""
    tap = []
    for pp, r, k, s, (lo, _), d in zip(p, out, kshape, setup.stride, setup.pads, setup.dilation):
        offset = pp - (r * s - lo)
        if offset < 0 or offset % d or offset // d >= k:
            return None
        tap.append(offset // d)
    return tuple(tap)


def _frame(values: list, kernel: list, out: tuple[int, int], setup: Setup) -> list[list[str]]:
    """The padded 2-D input with the window at ``out`` written ``value×weight``."""
    (n0, n1), kshape = shape_of(values), shape_of(kernel)
    (lo0, hi0), (lo1, hi1) = setup.pads
    rows = []
    for p0 in range(-lo0, n0 + hi0):
        row = []
        for p1 in range(-lo1, n1 + hi1):
            s0, s1 = source_index(p0, n0, setup.pad_mode), source_index(p1, n1, setup.pad_mode)
            value = None if s0 is None or s1 is None else values[s0][s1]
            tap = _window_cell((p0, p1), out, kshape, setup)
            if tap is None:
                row.append("·" if value is None else fmt(value))
            elif setup.pool:
                row.append(f"[{'·' if value is None else fmt(value)}]")
            else:
                row.append(f"{fmt(0 if value is None else value)}×{fmt(kernel[tap[0]][tap[1]])}")
        rows.append(row)
    return rows


def _side_by_side(left: list[str], right: list[str], gap: str = "    ") -> list[str]:
    width = max(len(line) for line in left)
    return [(a.ljust(width) + gap + b).rstrip() for a, b in itertools.zip_longest(left, right, fillvalue="")]


def _step_text(values, kernel, out, setup: Setup, result) -> str:
    shape, kshape = shape_of(values), shape_of(kernel)
    terms = [(_get(values, src) if src else None, _get(kernel, tap)) for tap, src in _taps(out, kshape, shape, setup)]
    where = ",".join(str(v) for v in out)
    if setup.pool:
        return f"y[{where}] = max({', '.join(fmt(v) for v, _ in terms if v is not None)}) = {fmt(result)}"
    return f"y[{where}] = " + " + ".join(f"{fmt(v or 0)}×{fmt(w)}" for v, w in terms) + f" = {fmt(result)}"


def draw_2d(values: list, kernel: list, setup: Setup) -> Drawing:
    """The sliding window over a 2-D input, step by step, then the output grid."""
    output = correlate(values, kernel, setup)
    positions = list(itertools.product(range(len(output)), range(len(output[0]))))
    shown = positions if len(positions) <= 9 else positions[:MAX_FRAMES]
    lines = [_header(values, kernel, setup), ""]
    for step, out in enumerate(shown, 1):
        partial = [[fmt(output[i][j]) if (i, j) in positions[:step] else "?" for j in range(len(output[0]))]
                   for i in range(len(output))]  # fmt: skip
        lines.append(f"step {step}: " + _step_text(values, kernel, out, setup, output[out[0]][out[1]]))
        lines += _side_by_side(grid(_frame(values, kernel, out, setup)), grid(partial))
        lines.append("")
    if len(shown) < len(positions):
        lines += [f"... {len(positions) - len(shown)} more window positions", ""]
    lines.append(f"output y ({len(output)}x{len(output[0])}):")
    lines += grid([[fmt(v) for v in row] for row in output])
    if setup.pool:
        return Drawing("\n".join(lines), output)
    convolution = correlate(values, flip(kernel), setup)
    lines += ["", *_flip_note(kernel, convolution, output)]
    return Drawing("\n".join(lines), output, convolution)


def _header(values, kernel, setup: Setup) -> str:
    what = "max pooling" if setup.pool else "cross-correlation"
    pads = ", ".join(f"{lo}+{hi}" for lo, hi in setup.pads)
    text = (
        f"{what}: input {'x'.join(map(str, shape_of(values)))}, window {'x'.join(map(str, shape_of(kernel)))}, "
        f"stride {'x'.join(map(str, setup.stride))}, padding {pads} ({setup.pad_mode})"
    )
    if any(d > 1 for d in setup.dilation):
        text += f", dilation {'x'.join(map(str, setup.dilation))}"
    return text + ("; · is zero padding" if setup.pad_mode == "zeros" and any(map(any, setup.pads)) else "")


def _flip_note(kernel: list, convolution: list, output: list) -> list[str]:
    flipped = flip(kernel)
    lines = [
        "CNN layers compute cross-correlation: the kernel slides as is (y[i] = sum_m x[i*s + m*d - lo] w[m]).",
        "True convolution flips the kernel first (180 degrees): flip(w) =",
        *grid([[fmt(v) for v in row] for row in (flipped if isinstance(flipped[0], list) else [flipped])]),
    ]
    if flipped == kernel:
        return lines + ["This kernel equals its flip, so convolution gives the same output here."]
    out_rows = convolution if isinstance(convolution[0], list) else [convolution]
    return lines + ["and convolution gives:", *grid([[fmt(v) for v in row] for row in out_rows])]


def _matrix_name(setup: Setup, rows: int, n: int) -> str:
    if setup.pad_mode == "circular" and setup.stride[0] == 1 and rows == n:
        name = "circulant: each row is the previous one rotated right by one"
    elif setup.pad_mode == "zeros" and setup.stride[0] == 1:
        name = "Toeplitz: constant along each diagonal; zero padding cuts the corners"
    elif setup.pad_mode == "zeros":
        name = f"the rows of a Toeplitz matrix taken {setup.stride[0]} apart (stride {setup.stride[0]})"
    else:
        name = f"{setup.pad_mode} padding folds the kernel back in at the edges"
    return name


def _matrix_lines(matrix: list[list[list[int]]], kernel: list) -> tuple[list[str], list[list]]:
    symbolic = [["+".join(f"w{m}" for m in cell) or "0" for cell in row] for row in matrix]
    numeric = [[sum(kernel[m] for m in cell) for cell in row] for row in matrix]
    return grid(symbolic) + [""] + grid([[fmt(v) for v in row] for row in numeric]), numeric


def draw_1d(values: list, kernel: list, setup: Setup) -> Drawing:
    """A 1-D conv (or max pool): each window as a sum, then the matrix form ``y = C x``."""
    output = correlate(values, kernel, setup)
    (lo, hi), n = setup.pads[0], len(values)
    padded = [source_index(p, n, setup.pad_mode) for p in range(-lo, n + hi)]
    lines = [
        _header(values, kernel, setup),
        f"x = {[values[i] for i in range(n)]}, w = {kernel}",
        "padded x: " + " ".join("·" if i is None else fmt(values[i]) for i in padded),
        "",
    ]
    lines += [_step_text(values, kernel, (r,), setup, output[r]) for r in range(len(output))]
    if setup.pool:
        return Drawing("\n".join(lines), output)
    matrix = conv_matrix(n, len(kernel), setup)
    mlines, numeric = _matrix_lines(matrix, kernel)
    lines += ["", f"as a matrix, y = C x with C ({len(matrix)}x{n}), {_matrix_name(setup, len(matrix), n)}:", *mlines]
    lines += ["", f"y = {[fmt(v) for v in output]}".replace("'", ""), ""]
    convolution = correlate(values, flip(kernel), setup)
    lines += _flip_note(kernel, convolution, output)
    return Drawing("\n".join(lines), output, convolution, numeric)


def draw_tconv_1d(values: list, kernel: list, setup: Setup, out_size: int) -> Drawing:
    """A 1-D transposed conv as ``y = C^T x``, C being the conv that maps ``out_size`` to ``len(x)``."""
    matrix = conv_matrix(out_size, len(kernel), setup, rows=len(values))
    transposed = [[matrix[r][c] for r in range(len(values))] for c in range(out_size)]
    mlines, numeric = _matrix_lines(transposed, kernel)
    output = [sum(numeric[c][r] * values[r] for r in range(len(values))) for c in range(out_size)]
    (lo, hi), s = setup.pads[0], setup.stride[0]
    lines = [
        f"transposed conv: x ({len(values)}) -> y ({out_size}), kernel {len(kernel)}, stride {s}, padding {lo}+{hi}"
        f", output padding {setup.output_padding[0] if setup.output_padding else 0}",
        f"x = {values}, w = {kernel}",
        f"C is the conv (same k, s, p) that maps {out_size} values to {len(values)}; the transposed conv",
        "multiplies by its transpose, so each input value spreads w over the output: y = C^T x with",
        f"C^T ({out_size}x{len(values)}): each column holds w, {s} rows below the previous one"
        f" (padding {lo}+{hi} crops rows at the ends):",
        *mlines,
        "",
        f"y = {[fmt(v) for v in output]}".replace("'", ""),
    ]
    return Drawing("\n".join(lines), output, None, numeric)


def check_small(shape: tuple[int, ...]) -> None:
    """Refuse inputs too big to draw (the table is the tool for those)."""
    limit = MAX_SIDE.get(len(shape))
    if limit is None:
        raise UsageError(f"--draw shows 1-D and 2-D inputs; got {len(shape)}-D", hint="drop --draw for 3-D shapes")
    if max(shape) > limit:
        size = "x".join(map(str, shape))
        raise UsageError(f"--draw is for small inputs (at most {limit} per side); got {size}", hint="e.g. 5x5 or 8")
