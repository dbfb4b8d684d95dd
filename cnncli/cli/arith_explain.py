"""The one-axis forms of ``cnncli conv-arith``: the quick form, ``--solve`` and ``--draw``.

Each checks its options, asks `cnncli.arith.explain` (or `cnncli.arith.formulas`) for
the answer and hands it to `cnncli.report.arith` to print. `cnncli.cli.arith_run`
dispatches here; this module imports no other command module. No jax or numpy.
"""

from __future__ import annotations

from cnncli.arith import explain
from cnncli.arith import formulas as arith
from cnncli.arith.layers import parse_shape
from cnncli.cli.arith_options import Options
from cnncli.errors import UsageError
from cnncli.report.arith import print_drawing, print_quick, print_solve


def _one(values: tuple[int, ...] | None, name: str) -> int | None:
    if values is None:
        return None
    if len(values) != 1:
        raise UsageError(f"{name} takes one value in the quick form (one axis); got {'x'.join(map(str, values))}")
    return values[0]


def _pad_pair(o: Options) -> tuple[int, int] | str:
    if isinstance(o.padding, str):
        return o.padding
    if len(o.padding) != 1:
        raise UsageError("-p/--padding takes one axis in the quick form", hint="e.g. -p 3, -p same or -p 1,2")
    return o.padding[0]


def quick(o: Options) -> None:
    """One axis: the output size, the formula with numbers, and teaching notes."""
    i = parse_shape(o.input)[0]
    k = _one(o.kernel, "-k/--kernel")
    if k is None:
        raise UsageError("the quick form needs -k/--kernel", hint="e.g. cnncli conv-arith 224 -k 7 -s 2 -p 3")
    if o.pool and o.transpose:
        raise UsageError("--pool and --transpose do not combine")
    s = _one(o.stride, "-s/--stride") or (k if o.pool else 1)
    d = _one(o.dilation, "-d/--dilation") or 1
    result = explain.quick_result(
        i, k, s, _pad_pair(o), d, transpose=o.transpose, output_padding=o.output_padding,
        pool=o.pool, ceil=o.ceil, convention=o.convention,
    )  # fmt: skip
    print_quick(result, as_json=o.json)


def solve_form(o: Options) -> None:
    """``--solve O``: the (k, s, p, d) that map INPUT to O, simplest first."""
    i = parse_shape(o.input or "")[0] if o.input and "x" not in o.input else None
    if i is None:
        raise UsageError("--solve needs a bare size as INPUT", hint="e.g. cnncli conv-arith 32 --solve 16")
    found = arith.solve(i, o.solve, transpose=o.transpose)
    print_solve(i, o.solve, found, transpose=o.transpose, as_json=o.json)


def draw_form(o: Options) -> None:
    """``--draw``: a small example worked by hand (see `cnncli.arith.explain.draw_example`)."""
    request = explain.DrawRequest(
        input=o.input, values=o.values, kernel_values=o.kernel_values, kernel=o.kernel, stride=o.stride,
        padding=o.padding, dilation=o.dilation, pad_mode=o.pad_mode, pool=o.pool, ceil=o.ceil,
        transpose=o.transpose, output_padding=o.output_padding,
    )  # fmt: skip
    values, kernel, drawing = explain.draw_example(request)
    print_drawing(values, kernel, drawing, as_json=o.json)
