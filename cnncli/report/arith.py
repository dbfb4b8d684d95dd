"""Rendering of a `cnncli.arith.geometry.Analysis`: a rich table for people, a dict for scripts.

Both are public and shared: ``cnncli conv-arith`` prints them, and ``cnncli train
--dry-run`` reuses them to show what a recipe would build. The ``print_*`` functions
are conv-arith's only printers, one per form: results (or one JSON object with
``as_json``) on stdout, warnings on stderr.

- `layer_table` returns a `rich.table.Table` with one row per layer (blocks are one
  row): name, output shape, kernel/stride/padding actually applied, parameters, MACs,
  FLOPs, receptive field, jump and activation memory, with totals in the footer and
  the MAC/FLOP convention in the caption.
- `analysis_to_json` returns a JSON-ready dict with stable keys: ``input``,
  ``layers`` (each with ``name``, ``kind``, ``token``, ``input``, ``output``,
  ``kernel``, ``stride``, ``padding``, ``dilation``, ``params``, ``macs``, ``flops``,
  ``rf``, ``jump``, ``act_bytes``, ``warnings``; tconv rows add ``output_padding``
  and blocks add ``children``), ``output``, ``total`` (``params``, ``macs``,
  ``flops``, ``act_bytes``) and ``convention``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cnncli.arith.draw import Drawing
from cnncli.arith.explain import no_solution_note, same_stride_note
from cnncli.arith.formulas import Solution
from cnncli.arith.geometry import Analysis, LayerInfo
from cnncli.arith.layers import format_padding
from cnncli.report.console import fitted, print_json, print_lines, stdout_console, warn

if TYPE_CHECKING:
    from rich.table import Table

_SUFFIXES = ((1e3, "K"), (1e6, "M"), (1e9, "G"), (1e12, "T"))
_BINARY = ((2**10, " KiB"), (2**20, " MiB"), (2**30, " GiB"))


def _three_digits(n: float, units: tuple[tuple[float, str], ...], roll_over: float) -> str | None:
    """``n`` in the largest unit it reaches, to three significant digits; None below the smallest unit.

    The digits are chosen after rounding, so a value that rounds up to the next decade keeps three
    digits (9996 -> ``10.0K``, not ``10.00K``), and one that rounds up to ``roll_over`` moves to the
    next unit (999600 -> ``1.00M``, not ``1000K``).
    """
    index = max((i for i, (scale, _) in enumerate(units) if abs(n) >= scale), default=None)
    if index is None:
        return None
    while True:
        scale, suffix = units[index]
        value = n / scale
        for digits in (2, 1, 0):
            text = f"{value:.{digits}f}"
            if abs(float(text)) < 10 ** (3 - digits):
                break
        if abs(float(text)) < roll_over or index == len(units) - 1:
            return f"{text}{suffix}"
        index += 1


def human(n: float) -> str:
    """A count in three significant digits: 11689512 -> ``11.7M``, 1814073344 -> ``1.81G``, 999600 -> ``1.00M``."""
    text = _three_digits(n, _SUFFIXES, 1000)
    if text is not None:
        return text
    return f"{n:g}" if isinstance(n, float) else str(n)


def human_bytes(n: float) -> str:
    """A byte count in binary units: 3211264 -> ``3.06 MiB``; 1048575 -> ``1.00 MiB``, not ``1024 KiB``."""
    text = _three_digits(n, _BINARY, 1024)
    return text if text is not None else f"{int(n)} B"


def axes(values) -> str:
    """Per-axis values: one number when all axes agree (``3``), else ``3x5``; ``-`` for None."""
    if values is None or len(values) == 0:
        return "-"
    if len(set(values)) == 1:
        return _num(values[0])
    return "x".join(_num(v) for v in values)


def _num(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def shape_text(shape) -> str:
    """A shape as ``112x112x64``."""
    return "x".join(str(v) for v in shape)


def _pad_text(row: LayerInfo) -> str:
    if row.padding is None:
        return "-"
    pads = row.padding
    text = format_padding(pads[:1] if len(set(pads)) == 1 else pads)
    if row.output_padding and any(row.output_padding):
        text += f" op{axes(row.output_padding)}"
    return text


def _count(n: int) -> str:
    return human(n) if n else "-"


def layer_table(analysis: Analysis, *, title: str | None = None) -> Table:
    """One row per layer, totals in the footer, the counting convention in the caption.

    Args:
        analysis: from `cnncli.arith.geometry.analyze`.
        title: optional table title (e.g. the architecture name).
    """
    total = analysis.total
    caption = (
        f"{analysis.counting.describe()}. RF and jump in input pixels. "
        "Act mem: float32 output per example."
    )
    if any(row.kind == "tconv" for row in analysis.layers):
        caption += " tconv p: the padding of the conv being transposed (PyTorch), op: output padding."
    heading = f"{title}, input {shape_text(analysis.input)}" if title else f"input {shape_text(analysis.input)}"
    from rich.table import Table  # 20 ms: only the forms that print a table pay for it

    table = Table(title=heading, caption=caption, show_footer=True, caption_justify="left")
    columns = [
        ("layer", "total", "left"),
        ("output", shape_text(analysis.output), "left"),
        ("k", "", "right"), ("s", "", "right"), ("p", "", "right"),
        ("params", human(total.params), "right"), ("MACs", human(total.macs), "right"),
        ("FLOPs", human(total.flops), "right"), ("RF", "", "right"), ("jump", "", "right"),
        ("act mem", human_bytes(total.act_bytes), "right"),
    ]  # fmt: skip
    for header, footer, justify in columns:
        table.add_column(header, footer=footer, justify=justify, no_wrap=True)
    for row in analysis.layers:
        table.add_row(
            row.name, shape_text(row.output), axes(row.kernel), axes(row.stride), _pad_text(row),
            _count(row.params), _count(row.macs), _count(row.flops),
            axes(row.rf), axes(row.jump), human_bytes(row.act_bytes),
        )  # fmt: skip
    return table


def layer_to_json(row: LayerInfo) -> dict[str, Any]:
    """One row as plain JSON types (lists, ints); see the module docstring for the keys."""
    data: dict[str, Any] = {
        "name": row.name,
        "kind": row.kind,
        "token": row.token,
        "input": list(row.input),
        "output": list(row.output),
        "kernel": _list(row.kernel),
        "stride": _list(row.stride),
        "padding": [list(p) for p in row.padding] if row.padding is not None else None,
        "dilation": _list(row.dilation),
        "params": row.params,
        "macs": row.macs,
        "flops": row.flops,
        "rf": list(row.rf),
        "jump": list(row.jump),
        "act_bytes": row.act_bytes,
        "warnings": list(row.warnings),
    }
    if row.output_padding is not None:
        data["output_padding"] = list(row.output_padding)
    if row.children:
        data["children"] = [layer_to_json(c) for c in row.children]
    return data


def _list(values) -> list | None:
    return list(values) if values is not None else None


def analysis_to_json(analysis: Analysis) -> dict[str, Any]:
    """The whole analysis as a JSON-ready dict with stable keys (see the module docstring)."""
    total = analysis.total
    return {
        "input": list(analysis.input),
        "layers": [layer_to_json(row) for row in analysis.layers],
        "output": list(analysis.output),
        "total": {"params": total.params, "macs": total.macs, "flops": total.flops, "act_bytes": total.act_bytes},
        "convention": analysis.counting.describe(),
    }


def print_analysis(
    analysis: Analysis, *, title: str | None = None, as_json: bool = False, warnings: list[str] = ()
) -> None:
    """A stack's `layer_table` (or `analysis_to_json`) on stdout, then ``warnings`` and its own on stderr."""
    if as_json:
        print_json(analysis_to_json(analysis))
    else:
        console = stdout_console()
        console.print(fitted(console, layer_table(analysis, title=title)))  # too narrow: one line per layer
    for text in [*warnings, *analysis.warnings]:
        warn(text)


def print_quick(result: dict[str, Any], *, as_json: bool = False) -> None:
    """The quick form: warnings on stderr first, then size, formula and notes on stdout.

    Args:
        result: from `cnncli.arith.explain.quick_result`; its ``warnings`` are taken out.
        as_json: print the rest of the dict as one JSON object instead of one line each.
    """
    for text in result.pop("warnings"):
        warn(text)
    if as_json:
        print_json(result)
        return
    print_lines([str(result["output"]), result["formula"], *result["notes"], *result.get("convention_notes", [])])


def solve_table(i: int, o: int, found: list[Solution], transpose: bool, limit: int = 20) -> Table:
    """A rich table of `cnncli.arith.formulas.solve` results, the first ``limit`` rows."""
    kind = "transposed convs" if transpose else "convs"
    from rich.table import Table

    table = Table(title=f"{kind} mapping {i} to {o}, simplest first", caption_justify="left")
    for col in ("k", "s", "p", "d") + (("op",) if transpose else ()) + ("token keys", "note"):
        table.add_column(col, justify="right" if len(col) <= 2 else "left")
    for x in found[:limit]:
        note = f"drops {x.drops} input pixel(s)" if x.drops else ""
        cells = [x.k, x.s, x.p, x.d] + ([x.op] if transpose else []) + [x.token(transpose), note]
        table.add_row(*(str(c) for c in cells))
    if len(found) > limit:
        table.caption = f"{len(found) - limit} more; --json lists all"
    return table


def print_solve(i: int, o: int, found: list[Solution], *, transpose: bool = False, as_json: bool = False) -> None:
    """``--solve``: the `solve_table` and the ``p=same`` note (JSON: every solution)."""
    if as_json:
        print_json({"input": i, "output": o, "transpose": transpose, "solutions": [vars(x) for x in found]})
        return
    console = stdout_console()
    if not found:
        console.print(no_solution_note(i, o, transpose), markup=False)
        return
    console.print(fitted(console, solve_table(i, o, found, transpose)))
    note = same_stride_note(i, o, transpose)
    if note:
        console.print(note, markup=False)


def print_tokens(arch: str, tokens: list[str], *, as_json: bool = False) -> None:
    """``--arch NAME --tokens``: the token list on one line, ready to paste."""
    if as_json:
        print_json({"arch": arch, "tokens": tokens})
    else:
        stdout_console().print(" ".join(tokens), markup=False, highlight=False, soft_wrap=True)


def print_drawing(values: list, kernel: list, drawing: Drawing, *, as_json: bool = False) -> None:
    """``--draw``: the worked example's text (JSON: input, kernel, output, convolution, matrix)."""
    if as_json:
        print_json({"input": values, "kernel": kernel, "output": drawing.output,
                    "convolution": drawing.convolution, "matrix": drawing.matrix})  # fmt: skip
        return
    stdout_console().print(drawing.text, markup=False, highlight=False, soft_wrap=True)
