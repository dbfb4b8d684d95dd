"""Printing ``inspect-filters --visualize``: a table of units, or one JSON object.

The rest of ``inspect-filters`` (the conv list, the filter report) prints from
`cnncli.report.eval`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from cnncli._json import to_jsonable
from cnncli.report.console import fitted, print_json, stderr_console, stdout_console, warn

VISUALIZE_KEYS = ("layer", "point", "relu", "units", "activation", "start", "real_mean", "ratio",
                  "num_examples", "steps", "seconds", "settings")  # fmt: skip


def visualization_json(vis, *, checkpoint_step: int, pngs: dict[str, Path]) -> dict[str, Any]:
    """The ``inspect-filters --visualize --json`` object (the optimized inputs themselves are in the .npy)."""
    out = {"checkpoint_step": checkpoint_step, **{k: getattr(vis, k) for k in VISUALIZE_KEYS}}
    out["files"] = {k: str(v) for k, v in pngs.items()}
    out["warnings"] = vis.warnings
    return to_jsonable(out)


def _g(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}"


def print_visualization(vis, *, checkpoint_step: int, pngs: dict[str, Path], json_out: bool, preview=None) -> None:
    """Per unit: its score on the optimized input, on the start, on real inputs, and the ratio."""
    for text in vis.warnings:
        warn(text)
    if json_out:
        print_json(visualization_json(vis, checkpoint_step=checkpoint_step, pngs=pngs))
        return
    console = stdout_console()
    where = vis.point + (" + relu" if vis.relu else "")
    console.print(
        f"[bold]{escape(vis.layer)}[/]: inputs that maximize each unit's mean at {escape(where)}, "
        f"{vis.steps} steps in {vis.seconds:.1f} s (compile included), checkpoint step {checkpoint_step}",
        markup=True, highlight=False, soft_wrap=True,
    )  # fmt: skip
    if preview is not None:
        from cnncli.report.eval import _picture_console

        _picture_console().print(preview)
    table = Table(title="units", title_justify="left", header_style="bold")
    for name in ("unit", "optimized", "start", "real mean", "ratio"):
        table.add_column(name, justify="right")
    for i, u in enumerate(vis.units):
        real = vis.real_mean[i] if vis.real_mean else None
        ratio = vis.ratio[i] if vis.ratio else None
        shown = "-" if ratio is None else f"{ratio:.1f}x"
        table.add_row(str(u), _g(vis.activation[i]), _g(vis.start[i]), _g(real), shown)
    if vis.real_mean is not None:
        table.caption = f"real mean: over {vis.num_examples} eval examples; ratio: optimized / real mean"
    else:
        table.caption = "no eval examples: no comparison with real inputs"
    console.print(fitted(console, table))
    err = stderr_console()
    for what, path in pngs.items():
        label = what.replace("_", " ")
        err.print(f"[dim]wrote {label}:[/] {escape(str(path))}", markup=True, highlight=False, soft_wrap=True)
