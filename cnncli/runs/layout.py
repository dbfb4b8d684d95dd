"""The run directory: what ``train`` leaves behind and ``eval``/``inspect-filters`` read.

::

    runs/<name>/
      recipe.toml          the recipe as given (its text, byte for byte; .yaml if YAML)
      recipe.json          the recipe fully resolved (defaults filled, --set applied)
      data.json            class names, input shape, normalization statistics
      env.json             package versions, devices, seed, command line
      metrics.jsonl        one JSON object per epoch (and per logged step)
      summary.json         the final results (the same object as train's last JSON line)
      curves.png           loss and accuracy per epoch
      init.npz             the step-0 parameters (for inspect-filters --compare-init)
      checkpoints/<step>/  orbax checkpoints (see cnncli.runs.checkpoint)
      tb/                  TensorBoard event files (see cnncli.runs.tensorboard; train.tensorboard)
      process.json         while a process trains it; failure.json: why the last attempt failed
                           (see cnncli.runs.marker)
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

from cnncli.errors import CnnCliError

RECIPE_JSON = "recipe.json"
DATA_JSON = "data.json"
ENV_JSON = "env.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CURVES = "curves.png"
TB = "tb"
INIT = "init.npz"
CHECKPOINTS = "checkpoints"


def default_workdir(recipe_path: str | Path, root: str | Path = "runs") -> Path:
    """``runs/<recipe stem>``, or ``runs/<stem>-2``, ``-3``, ... if that is taken."""
    stem = Path(recipe_path).stem
    base = Path(root) / stem
    if not base.exists():
        return base
    n = 2
    while (Path(root) / f"{stem}-{n}").exists():
        n += 1
    return Path(root) / f"{stem}-{n}"


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    from cnncli._json import to_jsonable

    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(to_jsonable(obj), indent=2) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    """Read a JSON file of a run, with an error naming it when it is missing or broken."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CnnCliError(f"{path} not found", hint="is this a run directory made by `cnncli train`?") from None
    except ValueError as err:
        raise CnnCliError(f"{path} is not valid JSON: {err}") from None


def append_metrics(workdir: Path, record: dict) -> None:
    """Append one record to ``metrics.jsonl`` (one line, flushed)."""
    from cnncli._json import to_jsonable

    with open(workdir / METRICS, "a") as f:
        f.write(json.dumps(to_jsonable(record)) + "\n")
        f.flush()


def read_metrics(workdir: Path) -> list[dict]:
    """Records of ``metrics.jsonl``; a truncated last line (a killed run) is ignored."""
    path = Path(workdir) / METRICS
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def environment(devices: list[str], seed: int) -> dict[str, Any]:
    """The environment stamp: versions, machine, devices, seed, command line."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for pkg in ("cnncli", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "tensorflow-datasets"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = None
    return {
        "versions": versions,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "devices": devices,
        "seed": seed,
        "argv": sys.argv,
    }


def find_run(path: str | Path) -> Path:
    """The run directory for a path given by the user (the run itself or a checkpoint in it)."""
    p = Path(path)
    if not p.exists():
        raise CnnCliError(f"run directory {p} not found", hint="pass the --workdir a `cnncli train` run printed")
    for candidate in (p, *p.parents):
        if (candidate / RECIPE_JSON).exists():
            return candidate
    raise CnnCliError(f"{p} is not a cnncli run directory (no {RECIPE_JSON})")


def plot_curves(workdir: Path, epochs: list[dict]) -> Path | None:
    """Write ``curves.png``: train/eval loss and accuracy per epoch."""
    if not epochs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [e["epoch"] for e in epochs]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=100)
    for key, label in (("train_loss", "train"), ("eval_loss", "eval")):
        ax1.plot(xs, [e.get(key) for e in epochs], marker="o", ms=3, label=label)
    for key, label in (("train_accuracy", "train"), ("eval_accuracy", "eval"), ("ema_eval_accuracy", "eval (EMA)")):
        if any(e.get(key) is not None for e in epochs):
            ax2.plot(xs, [e.get(key) for e in epochs], marker="o", ms=3, label=label)
    ax1.set(title="loss", xlabel="epoch")
    ax2.set(title="accuracy", xlabel="epoch", ylim=(0, 1.0))
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path = workdir / CURVES
    fig.savefig(path)
    plt.close(fig)
    return path


def keep_metrics(workdir: Path, *, step: int, epoch: int) -> None:
    """Drop ``metrics.jsonl`` records past a checkpoint's step and completed epochs."""
    records = read_metrics(workdir)
    kept = [r for r in records if r.get("step", 0) <= step and r.get("epoch", 0) <= epoch]
    if kept != records or (records and not (workdir / METRICS).read_text().endswith("\n")):
        (workdir / METRICS).write_text("".join(json.dumps(r) + "\n" for r in kept))


def prepare_workdir(workdir: Path, recipe, recipe_text: str | None, suffix: str, fresh: bool) -> None:
    """Create the run directory and save the recipe, as given and resolved, for a new run."""
    workdir.mkdir(parents=True, exist_ok=True)
    if fresh or not (workdir / RECIPE_JSON).exists():  # no checkpoint yet: this recipe is the run's
        if recipe_text is not None:
            (workdir / f"recipe{suffix}").write_text(recipe_text)
        write_json(workdir / RECIPE_JSON, recipe.to_dict())
