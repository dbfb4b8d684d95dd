"""Run directories read back into plain data: what ``cnncli runs`` lists.

`catalogue` finds the runs under a folder (a run directory, a sweep folder, or
``runs/`` holding both) and reads each into a `RunEntry` from its files alone, without
jax or a checkpoint restore, so listing a hundred runs takes a fraction of a second.
Whatever a directory holds is read and whatever it lacks is left as None: a run from
an older cnncli, a half-written one, or an empty folder is listed with what is known
(its ``notes`` say what could not be read), never an exception.

Status, from the files (`cnncli.runs.layout`, `cnncli.runs.marker`), first match wins:

- ``running``: ``process.json`` names a live process on this host (or a process on
  another host, which cannot be checked from here; a note says so);
- ``failed``: ``failure.json``: the last attempt stopped on an error;
- ``finished``: ``summary.json``, and no checkpoint newer than the summary's step (a
  finished run trained on with ``--allow-recipe-change`` and stopped is not finished);
- ``empty``: the directory holds nothing at all;
- ``interrupted``: anything else (checkpoints or metrics but no summary: Ctrl-C, a
  kill, a crash of an older cnncli that recorded no failure). Running ``cnncli train``
  on it again resumes it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnncli.errors import CnnCliError
from cnncli.runs import layout, marker

STATUSES = ("finished", "running", "interrupted", "failed", "empty")
COLUMNS = (
    "name", "status", "eval_accuracy", "best_eval_accuracy", "best_epoch", "epochs", "steps",
    "train_seconds", "images_per_second", "eval_loss", "train_loss",
)  # fmt: skip
MISSING = None  # the value of a recipe key a run does not have (older cnncli, unreadable recipe.json)
_MARKS = (
    layout.RECIPE_JSON, layout.SUMMARY, layout.METRICS, layout.ENV_JSON, layout.DATA_JSON, layout.CHECKPOINTS,
    marker.PROCESS, marker.FAILURE, "recipe.toml", "recipe.yaml", "recipe.yml",
)  # fmt: skip
_MAX_DEPTH = 4  # folders below the root searched for runs: runs/ > sweep > run is 2


@dataclass(frozen=True)
class RunEntry:
    """One run directory as read from its files (None: not known).

    Attributes:
        name: the path relative to the listed folder (the folder's own name for a run listed alone).
        path: the run directory.
        status: one of `STATUSES` (see the module docstring).
        eval_accuracy: of the last evaluated epoch (``metrics.jsonl``, else ``summary.json``).
        best_eval_accuracy, best_epoch: the highest eval accuracy and its epoch (the later one on a tie).
        epochs: evaluated epochs; steps: completed updates (the newest of checkpoints, metrics, summary).
        train_seconds: training time over every attempt: the sum of the epochs' ``epoch_seconds``
            (``summary.json``'s ``train_seconds`` when metrics lack it).
        images_per_second: ``summary.json``'s, else the last epoch record's.
        eval_loss, train_loss: of the last evaluated epoch.
        recipe: ``recipe.json`` flattened to dotted keys (``optimizer.learning_rate``); {} when unreadable.
        summary: ``summary.json`` as written, or None.
        failure: ``failure.json`` as written, or None.
        process: ``process.json`` as written, or None.
        notes: what could not be read or looks odd, in words.
    """

    name: str
    path: Path
    status: str
    eval_accuracy: float | None = None
    best_eval_accuracy: float | None = None
    best_epoch: int | None = None
    epochs: int | None = None
    steps: int | None = None
    train_seconds: float | None = None
    images_per_second: float | None = None
    eval_loss: float | None = None
    train_loss: float | None = None
    recipe: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] | None = None
    failure: dict[str, Any] | None = None
    process: dict[str, Any] | None = None
    notes: tuple[str, ...] = ()

    def value(self, key: str) -> Any:
        """A column (`COLUMNS`) or a dotted recipe key; `MISSING` when the run does not have it."""
        if key in COLUMNS:
            return getattr(self, key)
        return self.recipe.get(key, MISSING)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optimizer": {"learning_rate": 0.01}}`` -> ``{"optimizer.learning_rate": 0.01}`` (lists are values)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, path + "."))
        else:
            flat[path] = value
    return flat


def is_run_dir(path: Path) -> bool:
    """True when ``path`` holds any file a cnncli run writes (an older version's run included)."""
    return any((path / name).exists() for name in _MARKS)


def find_runs(root: str | Path) -> list[Path]:
    """The run directories under ``root`` (``root`` itself when it is one), sorted by path.

    Hidden folders are skipped; a folder that is completely empty is listed (status
    ``empty``): a run that wrote nothing yet, or a sweep point made by hand.

    Raises:
        CnnCliError: ``root`` does not exist or is not a folder.
    """
    root = Path(root)
    if not root.exists():
        raise CnnCliError(f"{root}: no such folder", hint="train a run first (cnncli train RECIPE writes runs/NAME), "
                          "or pass the folder that holds your runs")  # fmt: skip
    if not root.is_dir():
        raise CnnCliError(f"{root} is not a folder", hint="pass a run directory or a folder of runs")
    if is_run_dir(root):
        return [root]
    found: list[Path] = []
    _walk(root, _MAX_DEPTH, found)
    return found


def _walk(folder: Path, depth: int, found: list[Path]) -> None:
    try:
        children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return
    for child in children:
        if is_run_dir(child) or _is_empty(child):
            found.append(child)
        elif depth > 1:
            _walk(child, depth - 1, found)


def _is_empty(folder: Path) -> bool:
    try:
        return not any(folder.iterdir())
    except OSError:
        return False


def catalogue(root: str | Path) -> list[RunEntry]:
    """Every run under ``root`` (see `find_runs`), read by `read_run`, named relative to ``root``."""
    root = Path(root)
    return [read_run(path, path.resolve().name if path == root else path.relative_to(root).as_posix())
            for path in find_runs(root)]  # fmt: skip


def _read_json(path: Path, notes: list[str]) -> Any:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        notes.append(f"{path.name} is unreadable ({type(err).__name__}): ignored")
        return None


def _checkpoint_steps(path: Path) -> list[int]:
    from cnncli.runs.checkpoint_fs import committed_steps  # the one reader of the checkpoint layout

    try:
        return committed_steps(path / layout.CHECKPOINTS)
    except OSError:
        return []


def read_run(path: str | Path, name: str | None = None) -> RunEntry:
    """A run directory read into a `RunEntry`; never raises for what the directory holds or lacks."""
    path = Path(path)
    notes: list[str] = []
    recipe = _read_json(path / layout.RECIPE_JSON, notes)
    if recipe is None and is_run_dir(path):
        notes.append(f"no readable {layout.RECIPE_JSON}: recipe values unknown")
    summary = _read_json(path / layout.SUMMARY, notes)
    summary = summary if isinstance(summary, dict) else None
    records = [r for r in layout.read_metrics(path) if isinstance(r, dict) and "eval_accuracy" in r]
    steps = _checkpoint_steps(path)
    failure, process = marker.read_failure(path), marker.read_process(path)
    status = _status(path, summary, steps, failure, process, notes)
    return RunEntry(
        name=name or path.name, path=path, status=status,
        recipe=flatten(recipe) if isinstance(recipe, dict) else {}, summary=summary, failure=failure,
        process=process if status == "running" else None, notes=tuple(notes), **_metrics(records, summary, steps),
    )  # fmt: skip


def _status(path: Path, summary, steps: list[int], failure, process, notes: list[str]) -> str:
    if process is not None:
        alive = marker.process_alive(process)
        if alive is None:
            notes.append(f"process.json names pid {process.get('pid')} on host {process.get('host')}: "
                         "not checked from this host")  # fmt: skip
            return "running"
        if alive:
            return "running"
        notes.append(f"process.json names pid {process.get('pid')}, which is gone: that process was killed")
    if failure is not None:
        return "failed"
    if summary is not None:
        if not steps or _number(summary.get("steps"), -1) >= steps[-1]:
            return "finished"
        notes.append(f"summary.json is of step {summary.get('steps')}, the newest checkpoint is step {steps[-1]}")
    return "empty" if _is_empty(path) else "interrupted"


def _number(value: Any, default: float | None = None) -> Any:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else default


def _best(records: list[dict]) -> tuple[float | None, int | None]:
    best, epoch = None, None
    for r in records:
        acc = _number(r.get("eval_accuracy"))
        if acc is not None and (best is None or acc >= best):  # the later epoch on a tie, as --checkpoint best
            best, epoch = acc, r.get("epoch")
    return best, epoch


def _metrics(records: list[dict], summary: dict | None, steps: list[int]) -> dict[str, Any]:
    """The metric fields of a `RunEntry`: metrics.jsonl first (every attempt), summary.json where it lacks them."""
    s = summary or {}
    last = records[-1] if records else {}
    best, best_epoch = _best(records)
    seconds = [_number(r.get("epoch_seconds")) for r in records]
    step_counts = [n for n in (*steps[-1:], _number(last.get("step")), _number(s.get("steps"))) if n is not None]
    ips = _number(s.get("images_per_second"))
    return {
        "eval_accuracy": _number(last.get("eval_accuracy"), _number(s.get("eval_accuracy"))),
        "best_eval_accuracy": best if best is not None else _number(s.get("best_eval_accuracy")),
        "best_epoch": best_epoch if best is not None else _number(s.get("best_epoch")),
        "epochs": _number(last.get("epoch"), _number(s.get("epochs"))),
        "steps": int(max(step_counts)) if step_counts else None,
        "train_seconds": sum(seconds) if records and None not in seconds else _number(s.get("train_seconds")),
        "images_per_second": ips if ips is not None else _number(last.get("images_per_second")),
        "eval_loss": _number(last.get("eval_loss"), _number(s.get("eval_loss"))),
        "train_loss": _number(last.get("train_loss"), _number(s.get("train_loss"))),
    }
