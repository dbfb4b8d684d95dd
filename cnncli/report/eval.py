"""Printing ``eval``, ``predict`` and ``inspect-filters`` results: rich tables or one JSON object.

Results go to stdout (tables on a terminal, plain text when piped, one JSON object with
``--json``); notes about written files and warnings go to stderr. Filter grids are
previewed in the terminal with truecolor half blocks only when stdout is a terminal.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.table import Table

from cnncli._json import to_jsonable
from cnncli.report.console import fits, fitted, print_json, stderr_console, stdout_console, warn

if TYPE_CHECKING:
    from rich.text import Text

MAX_CONFUSION_TABLE = 20  # classes; a wider matrix is only drawn in confusion.png
MAX_HEALTH_ROWS = 64  # filters in the health table; flagged ones beyond are still listed


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _num(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _wrote(paths: dict[str, Path | None]) -> None:
    console = stderr_console()
    for what, path in paths.items():
        if path is not None:
            console.print(f"[dim]wrote {what}:[/] {escape(str(path))}", markup=True, highlight=False, soft_wrap=True)


# ------------------------------------------------------------------- eval
def eval_json(result, pngs: dict[str, Path | None]) -> dict[str, Any]:
    """The ``eval --json`` object: the pinned keys first, then the rest of the result."""
    data = to_jsonable(result)
    head = ["accuracy", "loss", "num_examples", "top5_accuracy", "per_class", "confusion", "checkpoint_step",
            "ece", "throughput"]  # fmt: skip
    out = {k: data.pop(k) for k in head}
    out.update(data)
    out["pngs"] = {k: str(v) for k, v in pngs.items() if v}
    return out


def print_eval(result, pngs: dict[str, Path | None], *, json_out: bool, worst_asked: int = 0) -> None:
    """Print an `cnncli.inspect.evaluate.EvalResult`: summary, per-class table, confusion table, worst."""
    for text in result.warnings:
        warn(text)
    if json_out:
        print_json(eval_json(result, pngs))
        return
    console = stdout_console()
    weights = " (EMA weights)" if result.weights == "ema" else ""
    console.print(
        f"[bold]{escape(result.workdir)}[/]  checkpoint step {result.checkpoint_step}{weights}  "
        f"{escape(result.source)} \\[{escape(result.split)}]  {result.num_examples:,} examples",
        markup=True, highlight=False, soft_wrap=True,
    )  # fmt: skip
    summary = Table(show_header=False, box=None, padding=(0, 2))
    summary.add_row("accuracy", _pct(result.accuracy))
    top5 = _pct(result.top5_accuracy) if result.top5_accuracy is not None else "- (5 classes or fewer)"
    summary.add_row("top-5 accuracy", top5)
    loss = f"{result.loss:.4f}" if result.loss >= 1e-3 else f"{result.loss:.2e}"
    summary.add_row("loss", f"{loss}  (mean cross-entropy)")
    summary.add_row("calibration error", f"{result.ece:.4f}  (ECE, 15 bins)")
    summary.add_row("throughput", f"{result.throughput:,.0f} images/s  (batch {result.batch_size}, "
                    f"compile {result.compile_seconds:.2f} s excluded)")  # fmt: skip
    console.print(summary)
    console.print(fitted(console, per_class_table(result)))
    if len(result.class_names) <= MAX_CONFUSION_TABLE:
        for part in confusion_tables(result.confusion, result.class_names, console):
            console.print(part)
    else:
        console.print(f"confusion matrix: {len(result.class_names)} classes, see confusion.png or --json")
    if result.worst:
        console.print(fitted(console, worst_table(result)))
    elif worst_asked:
        console.print("no wrongly classified examples: nothing to draw for --worst")
    _wrote({k.replace("_", " "): v for k, v in pngs.items()})


def per_class_table(result) -> Table:
    """Precision, recall (= the class's accuracy), F1 and support per class."""
    table = Table(title="per class", title_justify="left", header_style="bold")
    for name, justify in (("class", "left"), ("precision", "right"), ("recall", "right"), ("F1", "right"),
                          ("support", "right"), ("predicted", "right")):  # fmt: skip
        table.add_column(name, justify=justify)
    for c in result.per_class:
        table.add_row(escape(c.name), _num(c.precision), _num(c.recall), _num(c.f1), str(c.support), str(c.predicted))
    table.caption = "recall is the class's accuracy: correct / support"
    return table


def confusion_table(confusion: list[list[int]], class_names: list[str], columns: range | None = None) -> Table:
    """Rows true, columns predicted (``columns``: those of the predicted classes, default all);
    the diagonal in bold, errors dimmed when zero."""
    columns = range(len(class_names)) if columns is None else columns
    part = "" if len(columns) == len(class_names) else f" {columns.start}-{columns.stop - 1} of {len(class_names)}"
    table = Table(title=f"confusion (rows: true, columns: predicted{part})", title_justify="left", header_style="bold")
    table.add_column("true \\ pred", justify="left")
    headers = _short_names(class_names)
    for j in columns:
        table.add_column(escape(headers[j]), justify="right")
    for i, row in enumerate(confusion):
        cells = []
        for j in columns:
            v = row[j]
            if i == j:
                cells.append(f"[bold green]{v}[/]")
            elif v:
                cells.append(f"[red]{v}[/]")
            else:
                cells.append("[dim]·[/]")
        table.add_row(escape(_row_label(class_names, headers, i)), *cells)
    return table


def _short_names(class_names: list[str]) -> list[str]:
    """Column headers: names cut to 8 characters, or the class indices when two would read the same."""
    short = [name[:8] for name in class_names]
    return short if len(set(short)) == len(short) else [str(i) for i in range(len(class_names))]


def _row_label(class_names: list[str], headers: list[str], i: int) -> str:
    return class_names[i] if headers[i] == class_names[i][:8] else f"{i} {class_names[i]}"


def confusion_tables(confusion: list[list[int]], class_names: list[str], console) -> list:
    """The confusion matrix as tables that fit ``console``: whole, or its predicted columns folded into
    several tables; one line per true class when not even one column fits. No cell is ever dropped."""
    n = len(class_names)
    whole = confusion_table(confusion, class_names)
    if fits(console, whole):
        return [whole]
    parts, start = [], 0
    while start < n:
        stop = start + 1
        if not fits(console, confusion_table(confusion, class_names, range(start, stop))):
            return [confusion_records(confusion, class_names)]
        while stop < n and fits(console, confusion_table(confusion, class_names, range(start, stop + 1))):
            stop += 1
        parts.append(confusion_table(confusion, class_names, range(start, stop)))
        start = stop
    return parts


def confusion_records(confusion: list[list[int]], class_names: list[str]) -> Text:
    """One line per true class: how many were predicted as each class (the zeros left out, and said so)."""
    from rich.text import Text

    lines = ["confusion (true class: count predicted as each class; others 0)"]
    for i, row in enumerate(confusion):
        counts = ", ".join(f"{class_names[j]} {v}" for j, v in enumerate(row) if v) or "none"
        lines.append(f"{class_names[i]}: {counts}")
    return Text("\n".join(lines))


def worst_table(result) -> Table:
    table = Table(title=f"{len(result.worst)} most confidently wrong", title_justify="left", header_style="bold")
    for name in ("index", "true", "predicted", "confidence", "p(true)"):
        table.add_column(name, justify="right" if name in ("index", "confidence", "p(true)") else "left")
    for m in result.worst:
        names = result.class_names
        table.add_row(str(m.index), escape(names[m.true]), escape(names[m.predicted]), _pct(m.confidence),
                      _pct(m.true_probability))  # fmt: skip
    return table


# ---------------------------------------------------------------- predict
def print_predictions(preds, *, checkpoint_step: int, json_out: bool) -> None:
    """Top-k classes per input, or ``{"checkpoint_step", "predictions": [...]}``."""
    if json_out:
        print_json({"checkpoint_step": checkpoint_step, "predictions": preds})
        return
    console = stdout_console()
    for p in preds:
        if p.note:
            warn(f"{p.input}: {p.note}")
        table = Table(title=escape(p.input), title_justify="left", header_style="bold")
        table.add_column("class")
        table.add_column("probability", justify="right")
        table.add_column("")
        for i, t in enumerate(p.top):
            bar = "█" * int(round(20 * t["probability"]))
            style = "bold" if i == 0 else ""
            table.add_row(f"[{style}]{escape(t['class'])}[/]" if style else escape(t["class"]), _pct(t["probability"]), bar)
        console.print(fitted(console, table))


# ---------------------------------------------------------- inspect-filters
def print_conv_list(infos, *, workdir: str, step: int, json_out: bool) -> None:
    """``inspect-filters --list``: every conv with its kernel shape, filters and input channels."""
    if json_out:
        print_json({"checkpoint_step": step, "layers": infos})
        return
    table = Table(title=f"conv layers of {escape(workdir)} (step {step})", title_justify="left", header_style="bold")
    for name in ("layer", "kind", "kernel", "filters", "in channels", "groups", "kernel shape", "params", "response"):
        table.add_column(name, justify="right" if name in ("filters", "in channels", "groups", "params") else "left")
    for c in infos:
        table.add_row(
            c.name, c.kind, "x".join(map(str, c.kernel_size)), str(c.filters), str(c.in_channels), str(c.groups),
            "(" + ", ".join(map(str, c.kernel_shape)) + ")", f"{c.params:,}",
            c.response + (" + relu" if c.response_relu else ""),
        )  # fmt: skip
    table.caption = ("response: where each filter's output is read: the activation after it; inside a block, "
                     "its BatchNorm and ReLU, or the conv itself")  # fmt: skip
    console = stdout_console()
    console.print(fitted(console, table))


def filters_json(rep) -> dict[str, Any]:
    """The ``inspect-filters --json`` object (pixel arrays left out)."""
    out: dict[str, Any] = {
        "layer": rep.info, "checkpoint_step": rep.step, "scale": rep.grid.scale,
        "filters": rep.health, "flags": rep.flags(), "validation_examples": rep.num_examples,
        "compared_to_init": rep.compared_to_init, "pngs": {k: str(v) for k, v in rep.pngs.items()},
        "warnings": rep.warnings,
    }  # fmt: skip
    if rep.maps is not None:
        fm = rep.maps
        out["feature_maps"] = {
            "layer": fm.layer, "shown": fm.shown, "input": fm.input, "channels": fm.channels, "means": fm.means,
            "peak_channel": fm.peak_channel, "peak_value": fm.peak_value, "rf_box": fm.box,
            "label": fm.label, "predicted": fm.predicted, "probability": fm.probability,
        }  # fmt: skip
    if rep.patches is not None:
        out["patches"] = {
            "layer": rep.patches.layer, "shown": rep.patches.shown, "num_examples": rep.patches.num_examples,
            "filters": [[{"index": p.index, "label": p.label, "value": p.value, "box": p.box} for p in row]
                        for row in rep.patches.patches],
        }  # fmt: skip
    return to_jsonable(out)


def print_filters(rep, *, json_out: bool, preview=None) -> None:
    """The filter report: preview (terminal only), health table, flags, feature-map summary."""
    for text in rep.warnings:
        warn(text)
    if json_out:
        print_json(filters_json(rep))
        return
    console = stdout_console()
    info = rep.info
    console.print(
        f"[bold]{info.name}[/]: {info.filters} filters {'x'.join(map(str, info.kernel_size))} over "
        f"{info.in_channels} input channels, checkpoint step {rep.step}",
        markup=True, highlight=False, soft_wrap=True,
    )  # fmt: skip
    if preview is not None:
        _picture_console().print(preview)
    console.print(fitted(console, health_table(rep)))
    flags = rep.flags()
    summary = ", ".join(f"{len(v)} {k}" for k, v in flags.items() if v) or "no dead, near-zero or near-duplicate filters"
    console.print(f"flags: {summary}")
    if rep.maps is not None:
        fm = rep.maps
        box = " x ".join(f"{lo}..{hi}" for lo, hi in zip(fm.box.lo, fm.box.hi))
        console.print(
            f"feature maps of {fm.shown} for {escape(fm.input)}: strongest channels "
            f"{', '.join(f'c{c}' for c in fm.channels[:5])}; peak c{fm.peak_channel} = {fm.peak_value:.3g} at "
            f"{fm.box.position}, receptive field {'x'.join(str(int(r)) for r in fm.box.rf)} over input {box}",
            highlight=False, soft_wrap=True,
        )  # fmt: skip
    _wrote({k.replace("_", " "): v for k, v in rep.pngs.items()})


def _picture_console():
    """stdout with at least 256 colours: the 16-colour fallback has only 4 grays.

    Truecolor when the terminal says so (``COLORTERM``); 256 colours otherwise, which
    every current terminal emulator supports.
    """
    import os
    import sys

    from rich.console import Console

    depth = "truecolor" if os.environ.get("COLORTERM", "").lower() in ("truecolor", "24bit") else "256"
    return Console(file=sys.stdout, force_terminal=True, color_system=depth, highlight=False)


def health_table(rep) -> Table:
    """Per filter: L2, mean, std, dead fraction, nearest filter (cosine), init distance, flags."""
    table = Table(title="filter health", title_justify="left", header_style="bold")
    cols = ["filter", "L2", "mean", "std", "dead", "nearest (cos)"]
    if rep.compared_to_init:
        cols += ["moved", "moved / |w0|", "cos(w, w0)"]
    for name in cols + ["flags"]:
        table.add_column(name, justify="left" if name in ("flags", "nearest (cos)") else "right")
    shown = [s for s in rep.health if s.index < MAX_HEALTH_ROWS or s.flags]
    for s in shown:
        nearest = "-" if s.nearest is None else f"{s.nearest} ({s.cosine:.2f})"
        dead = _pct(s.dead_fraction) if s.dead_fraction is not None else "-"
        row = [str(s.index), _num(s.l2), f"{s.mean:+.3f}", _num(s.std), dead, nearest]
        if rep.compared_to_init:
            row += [_num(s.init_distance), _num(s.init_relative, 2), _num(s.init_cosine, 2)]
        row.append(f"[yellow]{', '.join(s.flags)}[/]" if s.flags else "")
        table.add_row(*row)
    if any(s.dead_fraction is not None for s in rep.health):
        dead = f"dead: fraction of {rep.num_examples} validation examples on which the ReLU output is 0 everywhere"
    elif rep.num_examples:
        dead = f"dead: - (no ReLU right after {rep.info.name})"
    else:
        dead = "dead: - (no validation data)"
    more = len(rep.health) - len(shown)
    table.caption = dead + (f"; {more} unflagged filters not shown (all in --json)" if more else "")
    return table
