"""Printing ``cnncli runs``, ``cnncli runs diff`` and a sweep's progress.

A terminal gets rich tables on stdout and notes on stderr; ``--json`` (or a pipe) gets
one JSON object per line on stdout: one per run (`run_json`, keys pinned by
tests/test_runs.py), one per seed group with ``--group-by-seed``, one object for a diff.
A sweep reports through the train command's own reporter, wrapped by `SweepReporter`.
"""

from __future__ import annotations

import json
from typing import Any

from rich.markup import escape
from rich.table import Table

from cnncli._json import to_jsonable
from cnncli.errors import CnnCliError
from cnncli.report.console import print_error, print_json, stderr_console, stdout_console
from cnncli.runs.catalog import MISSING, RunEntry
from cnncli.runs.compare import GROUP_METRICS, RunDiff, SeedGroup, Stat, differing_keys, group_by_seed, seeds_vary
from cnncli.train.events import EpochEnd, RunFinished, SweepPointFailed, SweepPointSkipped, SweepPointStarted

RUN_KEYS = (
    "name", "path", "status", "eval_accuracy", "best_eval_accuracy", "best_epoch", "epochs", "steps",
    "train_seconds", "images_per_second", "recipe", "failure", "notes",
)  # fmt: skip
_LABELS = {"eval_accuracy": "eval acc", "best_eval_accuracy": "best acc", "train_seconds": "train time",
           "images_per_second": "img/s"}  # fmt: skip
_STATUS_STYLE = {"finished": "green", "running": "cyan", "interrupted": "yellow", "failed": "red", "empty": "dim"}


def _fmt(key: str, value: Any) -> str:
    """A cell: accuracies to 4 places, seconds to 0.1, images/s with thousands, recipe values as written."""
    if value is MISSING:
        return "-"
    if key in ("eval_accuracy", "best_eval_accuracy", "eval_loss", "train_loss"):
        return f"{value:.4f}"
    if key == "train_seconds":
        return f"{value:.2f} s" if value < 10 else f"{value:,.1f} s"
    if key == "images_per_second":
        return f"{value:,.0f}"
    if key == "num_params":
        return f"{value:,}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def run_json(entry: RunEntry, differing: list[str]) -> dict[str, Any]:
    """One run's ``--json`` object (`RUN_KEYS`): ``recipe`` holds the values that differ between the listed runs."""
    return {
        "name": entry.name, "path": str(entry.path), "status": entry.status,
        "eval_accuracy": entry.eval_accuracy, "best_eval_accuracy": entry.best_eval_accuracy,
        "best_epoch": entry.best_epoch, "epochs": entry.epochs, "steps": entry.steps,
        "train_seconds": entry.train_seconds, "images_per_second": entry.images_per_second,
        "recipe": {k: entry.recipe.get(k, MISSING) for k in differing},
        "failure": (entry.failure or {}).get("message") if entry.failure else None,
        "notes": list(entry.notes),
    }  # fmt: skip


def group_json(group: SeedGroup) -> dict[str, Any]:
    """One seed group's ``--json`` object: the setting, its runs and seeds, and mean/std/min/max per metric."""
    return {"setting": group.setting, "runs": len(group.names), "names": list(group.names),
            "seeds": list(group.seeds), "statuses": group.statuses,
            **{m: to_jsonable(group.stats[m]) for m in GROUP_METRICS}}  # fmt: skip


def print_runs(entries: list[RunEntry], *, root: str, json_out: bool, group: bool | None = None) -> None:
    """The runs table (and the seed-group table), or JSON lines.

    Args:
        group: True: the grouped view only; False: runs only; None: runs, plus the groups on a
            terminal when seeds differ and a setting has two runs or more (`seeds_vary`).
    """
    differing = differing_keys(entries)
    if not entries:
        stderr_console().print(f"no runs under {escape(root)}", highlight=False)
        return
    if json_out:
        for obj in ([group_json(g) for g in group_by_seed(entries)] if group else
                    [run_json(e, differing) for e in entries]):  # fmt: skip
            print_json(obj)
        return
    out = stdout_console()
    if not group:
        out.print(runs_table(entries, differing, root))
        _print_notes(entries)
    if group or (group is None and seeds_vary(entries)):
        out.print(groups_table(group_by_seed(entries)))


def runs_table(entries: list[RunEntry], differing: list[str], root: str) -> Table:
    """One row per run: name, status, metrics, then the recipe values that differ."""
    table = Table(title=f"runs under {escape(root)}", title_justify="left")
    table.add_column("name", overflow="fold")
    table.add_column("status")
    for key in ("eval_accuracy", "best_eval_accuracy", "epochs", "steps", "train_seconds", "images_per_second"):
        table.add_column(_LABELS.get(key, key), justify="right")
    for key in differing:
        table.add_column(escape(key), justify="right", overflow="fold")
    for e in entries:
        style = _STATUS_STYLE.get(e.status, "")
        cells = [_fmt(k, e.value(k)) for k in ("eval_accuracy", "best_eval_accuracy", "epochs", "steps",
                                                  "train_seconds", "images_per_second")]  # fmt: skip
        table.add_row(escape(e.name), f"[{style}]{e.status}[/]", *cells,
                      *(escape(_fmt(k, e.recipe.get(k, MISSING))) for k in differing))  # fmt: skip
    return table


def _print_notes(entries: list[RunEntry]) -> None:
    err = stderr_console()
    for e in entries:
        if e.failure:
            err.print(f"[red]failed:[/] {escape(e.name)}: {escape(str(e.failure.get('message')))}", highlight=False,
                      soft_wrap=True)  # fmt: skip
        for note in e.notes:
            err.print(f"[dim]note: {escape(e.name)}: {escape(note)}[/]", highlight=False, soft_wrap=True)


def _mean_std(stat: Stat, key: str) -> str:
    if stat.mean is None:
        return "-"
    if stat.std is None:
        return _fmt(key, stat.mean)
    digits = 4 if "accuracy" in key else (2 if stat.mean < 10 else 1) if key == "train_seconds" else 0
    return f"{stat.mean:,.{digits}f} ± {stat.std:,.{digits}f}"


def groups_table(groups: list[SeedGroup]) -> Table:
    """One row per setting: how many runs and seeds, mean ± sample std of each metric, eval acc min-max."""
    table = Table(title="over seeds (mean ± std)", title_justify="left")
    keys = list(groups[0].setting) if groups else []
    for key in keys:
        table.add_column(escape(key), justify="right", overflow="fold")
    table.add_column("runs", justify="right")
    table.add_column("seeds", overflow="fold")
    for key in GROUP_METRICS:
        table.add_column(_LABELS[key], justify="right")
    table.add_column("eval acc min-max", justify="right")
    for g in groups:
        acc = g.stats["eval_accuracy"]
        spread = "-" if acc.min is None else f"{acc.min:.4f}-{acc.max:.4f}"
        table.add_row(*(escape(_fmt(k, g.setting[k])) for k in keys), str(len(g.names)),
                      ",".join(_fmt("", s) for s in g.seeds), *(_mean_std(g.stats[m], m) for m in GROUP_METRICS),
                      spread)  # fmt: skip
    return table


# ------------------------------------------------------------------ diff


def diff_json(diff: RunDiff) -> dict[str, Any]:
    """``runs diff --json``: the paths ``a`` and ``b``, ``recipe`` {key: {a, b}}, ``metrics`` {key: {a, b, delta}}."""
    metrics = {}
    for key, a, b in diff.metrics:
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
        metrics[key] = {"a": a, "b": b, "delta": (b - a) if numbers else None}
    return {"a": str(diff.a.path), "b": str(diff.b.path),
            "recipe": {k: {"a": a, "b": b} for k, a, b in diff.recipe}, "metrics": metrics}  # fmt: skip


def _delta(key: str, delta: float | None) -> str:
    if delta is None:
        return "-"
    if key == "train_seconds":
        return f"{delta:+.2f} s"
    if isinstance(delta, int) or key == "images_per_second":
        return f"{delta:+,.0f}"
    return f"{delta:+.4f}"


def print_diff(diff: RunDiff, *, json_out: bool) -> None:
    """Two runs side by side: the recipe values that differ, then the metrics with B - A."""
    if json_out:
        print_json(diff_json(diff))
        return
    out = stdout_console()
    out.print(f"A: {escape(diff.a.name)}\nB: {escape(diff.b.name)}", soft_wrap=True)
    recipe = Table(title="recipe values that differ", title_justify="left")
    for name in ("key", "A", "B"):
        recipe.add_column(name, overflow="fold")
    for key, a, b in diff.recipe:
        recipe.add_row(escape(key), escape(_fmt(key, a)), escape(_fmt(key, b)))
    if not diff.recipe:
        recipe.add_row("(none: the same recipe)", "", "")
    out.print(recipe)
    metrics = Table(title="metrics", title_justify="left")
    for name in ("metric", "A", "B", "B - A"):
        metrics.add_column(name, justify="left" if name == "metric" else "right")
    for key, entry in diff_json(diff)["metrics"].items():
        metrics.add_row(key, _fmt(key, entry["a"]), _fmt(key, entry["b"]), _delta(key, entry["delta"]))
    out.print(metrics)


# ------------------------------------------------------------------ sweeps


class SweepReporter:
    """Wraps the train command's reporter for a sweep.

    On a terminal: a line per grid point, the run's own progress and epoch lines, no
    per-run summary table (the sweep ends with the runs table). JSON: one summary line per
    point (the train command's final line; a finished point's from its summary.json),
    no epoch lines. A failed point's error goes to stderr; the sweep goes on.
    """

    def __init__(self, inner, *, json_mode: bool):
        self.inner = inner
        self.json_mode = json_mode
        self.err = stderr_console()

    def __call__(self, event) -> None:
        if isinstance(event, SweepPointStarted):
            if not self.json_mode:
                how = "resuming" if event.resume else "training"
                self.err.print(f"[bold][{event.index + 1}/{event.total}][/] {how} {escape(event.name)}",
                               highlight=False, soft_wrap=True)  # fmt: skip
        elif isinstance(event, SweepPointSkipped):
            if self.json_mode and event.summary is not None:
                print_json({"event": "summary", **event.summary})
            elif not self.json_mode:
                why = "finished" if event.reason == "finished" else "another process is training it"
                self.err.print(f"[bold][{event.index + 1}/{event.total}][/] skipped {escape(event.name)} ({why})",
                               highlight=False, soft_wrap=True)  # fmt: skip
        elif isinstance(event, SweepPointFailed):
            self.inner.close()
            print_error(CnnCliError(f"{event.name}: {event.message}", hint=event.hint))
        elif isinstance(event, EpochEnd) and self.json_mode:
            pass
        elif isinstance(event, RunFinished) and not self.json_mode:
            self.inner.close()  # the progress bar; the sweep's table comes at the end
        else:
            self.inner(event)

    def close(self) -> None:
        self.inner.close()


def print_sweep_plan(rows: list[tuple[str, str, str | None]], *, json_out: bool) -> None:
    """``train --sweep --dry-run``: each point's folder and what a run would do (train, resume, skip)."""
    actions = {None: "train", "empty": "train", "finished": "skip (finished)", "running": "skip (running)"}
    if json_out:
        for name, workdir, status in rows:
            print_json({"name": name, "workdir": workdir, "status": status,
                        "action": actions.get(status, "resume").split(" ")[0]})  # fmt: skip
        return
    table = Table(title=f"sweep: {len(rows)} runs", title_justify="left")
    for column in ("run directory", "now", "would"):
        table.add_column(column, overflow="fold")
    for name, workdir, status in rows:
        table.add_row(escape(workdir), status or "-", actions.get(status, "resume"))
    stdout_console().print(table)
