"""Sweeps: a grid of runs over recipe values, each a normal run directory in one folder.

``--sweep optimizer.learning_rate=1e-3,3e-3 --sweep train.seed=0,1`` is the grid of
every combination (2 x 2 = 4 points, the first --sweep varying slowest). Each point is
the recipe with its values applied as ``--set`` overrides (after the command's own
``--set``s), validated by the recipe schema like any recipe, and trained by
`cnncli.train.loop.fit` into ``FOLDER/<name>``, where the name spells the point's
values, sanitized for file names: ``optimizer.learning_rate=0.001,train.seed=0``
(values as parsed, so ``1e-3`` and ``0.001`` name the same run).

Every point is validated before anything trains (`plan_sweep`): one error lists every
refused value, naming its ``--sweep``. Running the same sweep again skips the finished
points and resumes the interrupted or failed ones (``fit`` resumes a run directory with
checkpoints); a point that fails does not stop the others.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnncli.config.recipe import RecipeFile, parse_override, read_recipe
from cnncli.errors import CnnCliError, RecipeError, UsageError
from cnncli.runs.catalog import is_run_dir, read_run
from cnncli.train.events import Event, SweepPointFailed, SweepPointSkipped, SweepPointStarted
from cnncli.train.loop import fit
from cnncli.train.signals import Interrupted

_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+\-]")  # what a folder name keeps; anything else becomes "_"
_MAX_NAME = 200  # characters; longer names are cut and get a digest (file systems allow 255 bytes)


@dataclass(frozen=True)
class Axis:
    """One ``--sweep KEY=V1,V2,...``: the key and each value's text (read as TOML, like ``--set``)."""

    key: str
    texts: tuple[str, ...]
    flag: str  # the --sweep as typed, for messages


@dataclass(frozen=True)
class Point:
    """One grid point: its ``--set`` overrides, its values and its folder name."""

    overrides: tuple[str, ...]  # "key=text", applied after the command's --set
    values: dict[str, Any]  # key -> parsed value
    name: str


@dataclass(frozen=True)
class Sweep:
    """A validated grid: the folder, the points, and each point's recipe."""

    folder: Path
    points: tuple[Point, ...]
    recipes: tuple[RecipeFile, ...]

    def workdir(self, point: Point) -> Path:
        return self.folder / point.name


@dataclass(frozen=True)
class Outcome:
    """What became of one point: ``trained``, ``skipped`` (finished, or being trained elsewhere) or ``failed``."""

    point: Point
    workdir: Path
    action: str
    summary: dict[str, Any] | None = None
    error: CnnCliError | None = None


def default_folder(recipe_path: str | Path, root: str | Path = "runs") -> Path:
    """``runs/<recipe stem>-sweep``: the same folder every time, so running a sweep again continues it."""
    return Path(root) / f"{Path(recipe_path).stem}-sweep"


def split_values(text: str) -> list[str]:
    """Split ``1e-3,3e-3`` on the commas outside brackets and quotes (``[1,2],[3]`` is two values)."""
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if quote or depth:
        raise ValueError("unbalanced quotes or brackets")
    return [*parts, text[start:]]


def parse_axis(text: str) -> Axis:
    """``KEY=V1,V2,...`` -> an `Axis`; a malformed one is a usage error (exit 2)."""
    key, eq, rest = text.partition("=")
    key = key.strip()
    example = "e.g. --sweep optimizer.learning_rate=1e-3,3e-3,1e-2"
    if not eq or not key or not re.fullmatch(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*", key):
        raise UsageError(f"--sweep {text!r}: expected KEY.PATH=VALUE1,VALUE2,...", hint=example)
    try:
        texts = [t.strip() for t in split_values(rest)]
    except ValueError as err:
        raise UsageError(f"--sweep {text!r}: {err}", hint=example) from None
    if any(not t for t in texts):
        raise UsageError(f"--sweep {text!r}: an empty value", hint=example)
    values = [parse_override(f"{key}={t}")[1] for t in texts]
    if len({_canon(v) for v in values}) < len(values):
        raise UsageError(f"--sweep {text!r}: a value is given twice", hint="each value once (1e-3 and 0.001 are equal)")
    return Axis(key, tuple(texts), f"--sweep {text}")


def parse_axes(sweeps: list[str], sets: list[str]) -> list[Axis]:
    """Every ``--sweep``, checked against each other and the ``--set``s (one key, one place)."""
    axes = [parse_axis(text) for text in sweeps]
    seen: dict[str, str] = {}
    set_keys = {item.partition("=")[0].strip() for item in sets}
    for axis in axes:
        if axis.key in seen:
            raise UsageError(f"{axis.flag}: {axis.key} is swept twice (also {seen[axis.key]})",
                             hint="give all of a key's values in one --sweep")  # fmt: skip
        if axis.key in set_keys:
            raise UsageError(f"{axis.flag}: {axis.key} is also given with --set", hint="drop one of them")
        seen[axis.key] = axis.flag
    return axes


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _spell(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    return json.dumps(value, separators=(",", ":"))


def point_name(values: dict[str, Any]) -> str:
    """The folder name of a point: ``key=value,...`` with anything but ``A-Za-z0-9._=,+-`` as ``_``."""
    name = _UNSAFE.sub("_", ",".join(f"{k}={_spell(v)}" for k, v in values.items()))
    if len(name) > _MAX_NAME:
        name = name[: _MAX_NAME - 13] + "-" + hashlib.sha256(name.encode()).hexdigest()[:12]
    return name


def grid(axes: list[Axis]) -> list[Point]:
    """Every combination of the axes' values (the first axis varies slowest), with unique names."""
    points = []
    for combo in itertools.product(*(axis.texts for axis in axes)):
        overrides = tuple(f"{a.key}={t}" for a, t in zip(axes, combo, strict=True))
        values = {a.key: parse_override(o)[1] for a, o in zip(axes, overrides, strict=True)}
        points.append(Point(overrides, values, point_name(values)))
    names = [p.name for p in points]
    if len(set(names)) < len(names):  # values equal once sanitized ("a/b" and "a_b"): a digest tells them apart
        points = [Point(p.overrides, p.values, _unique(p)) for p in points]
    return points


def _unique(point: Point) -> str:
    digest = hashlib.sha256(_canon(point.values).encode()).hexdigest()[:8]
    return f"{point.name[: _MAX_NAME - 9]}-{digest}"


def plan_sweep(recipe_path: str | Path, sets: list[str], sweeps: list[str], folder: str | Path) -> Sweep:
    """Parse the ``--sweep``s and validate every point's recipe before anything trains.

    Raises:
        UsageError: a malformed ``--sweep``, or ``folder`` is a run directory (exit 2).
        RecipeError: values the schema refuses, every one of them, each naming its ``--sweep`` (exit 1).
    """
    axes = parse_axes(sweeps, sets)
    if is_run_dir(Path(folder)):  # its points would hide inside a run: `cnncli runs` stops at a run directory
        raise UsageError(f"{folder} is a run directory; a sweep needs a folder of its own",
                         hint="pass another --workdir, or none for runs/<recipe name>-sweep")  # fmt: skip
    points = grid(axes)
    recipes, problems = [], {}
    for point in points:
        try:
            recipes.append(read_recipe(recipe_path, [*sets, *point.overrides]))
        except RecipeError as err:
            for line in err.message.splitlines():
                problems.setdefault(_blame(line, axes, point, str(recipe_path)), None)
    if problems:
        raise RecipeError("\n".join(problems), hint="fix or drop the refused values; nothing was trained")
    return Sweep(Path(folder), tuple(points), tuple(recipes))


def _blame(line: str, axes: list[Axis], point: Point, source: str) -> str:
    """An error line of a point's recipe, prefixed with the ``--sweep`` (and value) it comes from.

    The recipe file's name and line are dropped from a line that a ``--sweep`` value caused (the
    value is not in the file).
    """
    keys = re.findall(r"`([^`]+)`", line)
    for axis in axes:
        if any(axis.key == k or axis.key.startswith(k + ".") or k.startswith(axis.key + ".") for k in keys) \
                or axis.key in line:  # fmt: skip
            text = next(o for o in point.overrides if o.startswith(axis.key + "="))
            line = re.sub(rf"^{re.escape(source)}(:\d+)?: ", "", line)
            line = re.sub(rf"^--set {re.escape(text)}: ", "", line)  # the --sweep flag says it already
            return f"{axis.flag}: {text.partition('=')[2]}: {line}"
    return f"--sweep point {point.name}: {line}"


def status_of(workdir: Path) -> str | None:
    """The status of a point's run directory (`cnncli.runs.catalog`), None when it does not exist yet."""
    return read_run(workdir).status if workdir.exists() else None


def run_sweep(sweep: Sweep, *, on_event: Callable[[Event], None] | None = None,
              allow_recipe_change: bool = False) -> list[Outcome]:  # fmt: skip
    """Train every point that is not finished; return what became of each.

    ``on_event`` receives `SweepPointStarted`, `SweepPointSkipped` or `SweepPointFailed` per
    point and, in between, the point's own run events from `fit`.

    Raises:
        Interrupted: Ctrl-C or SIGTERM; the point's checkpoint was saved (running the sweep again resumes it).
    """
    emit = on_event or (lambda event: None)
    outcomes, total = [], len(sweep.points)
    for index, (point, loaded) in enumerate(zip(sweep.points, sweep.recipes, strict=True)):
        workdir = sweep.workdir(point)
        entry = read_run(workdir) if workdir.exists() else None
        status = entry.status if entry else None
        if entry and status in ("finished", "running"):
            summary = entry.summary
            emit(SweepPointSkipped(index, total, point.name, workdir, status, summary))
            outcomes.append(Outcome(point, workdir, "skipped", summary))
            continue
        emit(SweepPointStarted(index, total, point.name, workdir, resume=bool(entry and entry.steps)))
        try:
            summary = fit(loaded.recipe, workdir, recipe_text=loaded.text, recipe_suffix=loaded.suffix,
                          on_event=emit, allow_recipe_change=allow_recipe_change)  # fmt: skip
        except Interrupted as err:
            err.hint = "run the same command again: finished runs are skipped, this one resumes"
            raise
        except CnnCliError as err:
            emit(SweepPointFailed(index, total, point.name, workdir, err.message, err.hint))
            outcomes.append(Outcome(point, workdir, "failed", error=err))
            continue
        outcomes.append(Outcome(point, workdir, "trained", summary))
    return outcomes
