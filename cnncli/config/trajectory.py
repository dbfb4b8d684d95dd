"""Which recipe fields change a run's training trajectory: the one definition.

Resuming a run directory with a recipe changed in any of these is refused, with a
field-by-field diff (`trajectory_changes`, unless ``--allow-recipe-change``), and
`cnncli.config.recipe.Recipe.digest` hashes exactly these, so two checkpoints carry the
same digest when, and only when, they lie on the same trajectory.

The rest of ``[train]`` changes how a run is carried out or kept, never the sequence
of states: ``log_every``, ``eval_every``, ``tensorboard``, ``tb_images``,
``early_stopping`` (where a run stops, not its steps), ``keep``,
``checkpoint_every_steps``/``_minutes``, ``fsync``, and ``conv_backend`` and ``mesh``
(the same steps on other kernels or devices: float rounding may differ, as between
machines, which a resume does not promise either).
"""

from __future__ import annotations

import json
from typing import Any

TRAJECTORY_FIELDS = ("data", "model", "optimizer", "schedule", "train.seed", "train.epochs", "train.steps",
                     "train.label_smoothing", "train.ema_decay", "train.freeze", "train.precision")  # fmt: skip


# How batches are read, never which: the streamed pipeline gives the same batches as memory, any worker count.
# And whether a run may start at all, never its steps: `strict` and `allow_missing_classes` refuse or allow
# the data; a run that goes ahead sees the same batches either way (so runs from before these keys resume).
NOT_TRAJECTORY = ("data.pipeline", "data.workers", "data.prefetch", "data.strict", "data.allow_missing_classes")


def in_trajectory(path: str) -> bool:
    """True when the dotted key ``path`` (``train.seed``, ``data.augment``) is, or lies in, a trajectory field."""
    if path in NOT_TRAJECTORY:
        return False
    return any(path == f or path.startswith(f + ".") for f in TRAJECTORY_FIELDS)


def trajectory_part(recipe: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The trajectory fields of a resolved recipe dict (``Recipe.to_dict``), nested as given."""
    out: dict[str, Any] = {}
    for key, value in recipe.items():
        path = f"{prefix}{key}"
        if in_trajectory(path):
            out[key] = {k: v for k, v in value.items() if f"{path}.{k}" not in NOT_TRAJECTORY} if isinstance(value, dict) else value
        elif isinstance(value, dict) and any(f.startswith(path + ".") for f in TRAJECTORY_FIELDS):
            out[key] = trajectory_part(value, path + ".")
    return out


def trajectory_changes(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """``  train.seed: 0 -> 5`` for each trajectory field that differs between two resolved recipes."""
    lines = []
    for key in sorted(set(old) | set(new)):
        path = f"{prefix}{key}"
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            lines += trajectory_changes(a, b, path + ".")
        elif a != b and in_trajectory(path):
            lines.append(f"  {path}: {json.dumps(a)} -> {json.dumps(b)}")
    return lines
