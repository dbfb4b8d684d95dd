"""``cnncli train RECIPE --dry-run``: what a recipe would do, without compiling anything.

The resolved recipe, the per-layer table (the same one ``conv-arith`` prints, for the
data's real input shape), the parameter count, the learning-rate schedule as a small
terminal plot, and the training cost: FLOPs per step (forward x 3, the usual estimate
for forward + backward) and per run.
"""

from __future__ import annotations

import json
from typing import Any

from cnncli.config.recipe import Recipe

TRAIN_FLOPS_FACTOR = 3  # backward ~ 2x forward (Kaplan et al. 2020; Hoffmann et al. 2022)


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


def plan(recipe: Recipe) -> dict[str, Any]:
    """Everything the dry run shows, as plain data (also the ``--json`` output)."""
    from cnncli.arith import geometry
    from cnncli.data.base import load_dataset
    from cnncli.report.arith import analysis_to_json
    from cnncli.train.loop import steps_for
    from cnncli.train.optim import make_schedule
    from cnncli.train.session import model_specs

    data = load_dataset(recipe.data)
    num_classes = recipe.model.num_classes or data.num_classes
    analysis = geometry.analyze(model_specs(recipe, num_classes), data.input_shape, num_classes=num_classes)
    spe, total, epochs = steps_for(recipe, int(data.train.x.shape[0]))
    schedule = make_schedule(recipe.schedule, recipe.optimizer.learning_rate, spe, total)
    forward = int(analysis.total.flops)
    per_step = TRAIN_FLOPS_FACTOR * forward * recipe.data.batch_size
    points = sorted({round(i * (total - 1) / 49) for i in range(50)}) if total > 1 else [0]
    return {
        "recipe": recipe.to_dict(),
        "input_shape": list(data.input_shape),
        "num_classes": num_classes,
        "num_train": int(data.train.x.shape[0]),
        "num_eval": int(data.eval.x.shape[0]),
        "arith": analysis_to_json(analysis),
        "params": int(analysis.total.params),
        "steps_per_epoch": spe,
        "total_steps": total,
        "epochs": epochs,
        "schedule": [[s, float(schedule(s))] for s in points],
        "cost": {
            "forward_flops_per_example": forward,
            "train_flops_per_step": per_step,
            "train_flops_per_run": per_step * total,
            "eval_flops_per_pass": forward * int(data.eval.x.shape[0]),
        },
        "_analysis": analysis,
        "_schedule": schedule,
    }


def dry_run(recipe: Recipe, *, json_out: bool) -> None:
    """Print the plan: JSON on stdout for scripts, or tables for a person."""
    from cnncli.report.arith import human, layer_table
    from cnncli.report.console import print_json, stdout_console
    from cnncli.report.train import schedule_plot

    info = plan(recipe)
    if json_out:
        print_json({k: v for k, v in info.items() if not k.startswith("_")})
        return
    out = stdout_console()
    out.print("[bold]resolved recipe[/]")
    out.print(recipe_as_toml(recipe), markup=False, highlight=False)
    out.print(layer_table(info["_analysis"]))
    cost = info["cost"]
    out.print(
        f"parameters: {info['params']:,}   data: {info['num_train']:,} train / {info['num_eval']:,} eval images "
        f"of {'x'.join(map(str, info['input_shape']))}, {info['num_classes']} classes",
        highlight=False,
    )
    out.print(
        f"training: {info['epochs']} epochs x {info['steps_per_epoch']} steps = {info['total_steps']:,} steps; "
        f"~{human(cost['train_flops_per_step'])}FLOP per step (3 x forward), "
        f"~{human(cost['train_flops_per_run'])}FLOP per run",
        highlight=False,
    )
    out.print("\n[bold]learning rate[/]")
    out.print(schedule_plot(info["_schedule"], info["total_steps"]), markup=False, highlight=False)
