"""Printing for ``cnncli train RECIPE --dry-run``: the plan as tables for a person, or JSON.

The facts come from `cnncli.train.plan.dry_run`; this module only shows them: the
resolved recipe (as TOML), the per-layer table (the one ``conv-arith`` prints), the
parameter count, the run's length and cost, and the learning-rate schedule as a small
terminal plot.
"""

from __future__ import annotations

import json
from typing import Any

from cnncli.config.recipe import Recipe
from cnncli.report.arith import analysis_to_json, human, layer_table
from cnncli.report.console import fitted, print_json, stdout_console, warn
from cnncli.train.plan import DryRun


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value)


def recipe_as_toml(recipe: Recipe) -> str:
    """The resolved recipe in TOML syntax (``null`` values left out, as TOML has none)."""
    lines = []
    for section, table in recipe.to_dict().items():
        lines.append(f"[{section}]")
        for key, value in table.items():
            if value is not None:
                lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def plan_json(plan: DryRun) -> dict[str, Any]:
    """The plan as plain data: the ``--dry-run --json`` output."""
    return {
        "recipe": plan.recipe.to_dict(),
        "input_shape": list(plan.input_shape),
        "num_classes": plan.num_classes,
        "num_train": plan.num_train,
        "num_eval": plan.num_eval,
        "arith": analysis_to_json(plan.analysis),
        "params": plan.params,
        "steps_per_epoch": plan.steps.per_epoch,
        "total_steps": plan.steps.total,
        "epochs": plan.steps.epochs,
        "schedule": [[s, lr] for s, lr in plan.schedule_points],
        "cost": {
            "forward_flops_per_example": plan.forward_flops,
            "train_flops_per_step": plan.train_flops_per_step,
            "train_flops_per_run": plan.train_flops_per_run,
            "eval_flops_per_pass": plan.eval_flops_per_pass,
        },
        "warnings": list(plan.warnings),
    }


def print_plan(plan: DryRun, *, json_out: bool) -> None:
    """Print the plan: JSON on stdout for scripts, or tables for a person (warnings also on stderr)."""
    for message in plan.warnings:
        warn(message)
    if json_out:
        print_json(plan_json(plan))
        return
    out = stdout_console()
    out.print("[bold]resolved recipe[/]")
    out.print(recipe_as_toml(plan.recipe), markup=False, highlight=False)
    out.print(fitted(out, layer_table(plan.analysis)))  # a narrow terminal: one line per layer
    out.print(
        f"parameters: {plan.params:,}   data: {plan.num_train:,} train / {plan.num_eval:,} eval images "
        f"of {'x'.join(map(str, plan.input_shape))}, {plan.num_classes} classes",
        highlight=False,
    )
    out.print(
        f"training: {plan.steps.epochs} epochs x {plan.steps.per_epoch} steps = {plan.steps.total:,} steps; "
        f"~{human(plan.train_flops_per_step)}FLOP per step (3 x forward), "
        f"~{human(plan.train_flops_per_run)}FLOP per run",
        highlight=False,
    )
    out.print("\n[bold]learning rate[/]")
    out.print(schedule_plot(plan.schedule, plan.steps.total), markup=False, highlight=False)


def schedule_plot(schedule, total_steps: int, width: int = 60, height: int = 8) -> str:
    """A small terminal plot of the learning rate over the run (block characters)."""
    width = max(2, min(width, total_steps))
    xs = [round(i * (total_steps - 1) / (width - 1)) for i in range(width)]
    ys = [float(schedule(x)) for x in xs]
    top = max(ys) or 1.0
    levels = " ▁▂▃▄▅▆▇█"
    rows = []
    for r in range(height - 1, -1, -1):
        line = ""
        for y in ys:
            fill = y / top * height - r  # how much of this row the value fills, in rows
            line += levels[max(0, min(8, int(round(fill * 8))))]
        label = f"{top * (r + 1) / height:9.2e} |" if r in (height - 1, 0) else " " * 10 + "|"
        rows.append(label + line)
    rows.append(" " * 10 + "+" + "-" * width)
    rows.append(" " * 11 + "0" + " " * (width - len(str(total_steps)) - 1) + str(total_steps) + "  (step)")
    return "\n".join(rows)
