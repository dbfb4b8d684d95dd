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
      train.lock           the writer's lock (pid, host): one process trains a run directory at a time

Nothing half-written: `claim_workdir` checks the path (not a file, not under one, not a
folder of someone else's files), creates it and takes the lock before anything is
written; a run that fails before its first step is discarded (`WorkdirClaim.release`),
so the fixed recipe trains into the same name again.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import sys
import time
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
LOCK = "train.lock"
RUN_ENTRIES = frozenset({
    "recipe.toml", "recipe.yaml", "recipe.yml", RECIPE_JSON, DATA_JSON, ENV_JSON, METRICS, SUMMARY, CURVES, TB, INIT,
    CHECKPOINTS, LOCK, "process.json", "failure.json", "profile",
})  # fmt: skip  # what `cnncli train` writes at the top of a run directory


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
    """The run directory for a path given by the user: the run itself or a checkpoint in it.

    ``RUN/checkpoints/STEP`` is accepted even when that step is not there (loading it then
    says which steps are); any other path inside a run (``RUN/metrics.jsonl``, ``RUN/tb``)
    is refused rather than silently read as the run.
    """
    p = Path(path)
    if not p.exists():
        run = next((c for c in p.parents if (c / RECIPE_JSON).is_file()), None)
        parts = p.relative_to(run).parts if run is not None else ()
        if len(parts) == 2 and parts[0] == CHECKPOINTS and _is_step(parts[1]):
            return run  # a step that is not there: `Checkpoints.resolve` names the committed ones
        raise CnnCliError(f"run directory {p} not found", hint="pass the --workdir a `cnncli train` run printed")
    for candidate in (p, *p.parents):
        if (candidate / RECIPE_JSON).exists():
            inside = p.relative_to(candidate).parts
            if inside and inside[0] != CHECKPOINTS:  # checkpoints/...: `checkpoint_named` says which
                kind = "folder" if p.is_dir() else "file"
                raise CnnCliError(f"{p} is a {kind} inside the run {candidate}, not a run or a checkpoint",
                                  hint=f"pass the run directory {candidate} (with --checkpoint latest, best or a "
                                  f"step), or {candidate / CHECKPOINTS}/STEP")  # fmt: skip
            return candidate
    raise CnnCliError(f"{p} is not a cnncli run directory (no {RECIPE_JSON})")


def _is_step(name: str) -> bool:
    """A checkpoint folder's name: ASCII digits only (``str.isdigit`` also accepts ``²``, which `int` refuses)."""
    return name.isascii() and name.isdigit()


def checkpoint_named(path: str | Path, workdir: Path) -> int | None:
    """The step a user's path names when it points into ``workdir/checkpoints/STEP`` (None: the run itself).

    Raises:
        CnnCliError: a path inside ``checkpoints/`` that is not a step's folder (``superseded/``, a temporary one).
    """
    try:
        parts = Path(path).resolve().relative_to(Path(workdir).resolve()).parts
    except ValueError:
        return None
    if not parts or parts[0] != CHECKPOINTS:
        return None
    if len(parts) >= 2 and _is_step(parts[1]):
        return int(parts[1])
    raise CnnCliError(f"{path} is not a checkpoint of the run {workdir}",
                      hint=f"pass the run directory (and --checkpoint latest, best or a step), or "
                      f"{Path(workdir) / CHECKPOINTS}/STEP")  # fmt: skip


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


# ---------------------------------------------------------------- claiming a run directory


def check_workdir(workdir: Path, *, allow_foreign: bool = False) -> None:
    """Refuse a run directory path that cannot hold a run, before anything is created.

    Raises:
        CnnCliError: ``workdir`` is a file or lies under one; or (unless ``allow_foreign``)
            it is a folder holding files that are not a run's (no ``recipe.json``).
    """
    workdir = Path(workdir)
    for path in (workdir, *workdir.parents):
        if path.is_dir():
            break
        if path.exists() or path.is_symlink():
            kind = _not_a_folder(path)
            what = f"is {kind}" if path == workdir else f"lies under {path}, which is {kind}"
            raise CnnCliError(f"run directory {workdir} {what}", hint="pass a --workdir that is a folder, or a "
                              "path where one can be made")  # fmt: skip
    if allow_foreign or not workdir.is_dir() or (workdir / RECIPE_JSON).exists():
        return
    foreign = sorted(p.name for p in workdir.iterdir() if p.name not in RUN_ENTRIES and not p.name.endswith(".tmp"))
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise CnnCliError(f"{workdir} is not a run directory and not empty: it holds {shown}",
                          hint="pass another --workdir (or none: runs/<recipe name>), or add "
                          "--allow-nonempty-workdir to put the run among those files")  # fmt: skip


def _not_a_folder(path: Path) -> str:
    """What a path that is not a folder is, in words: a file, a broken symbolic link, a named pipe, ..."""
    if path.is_symlink() and not path.exists():
        return f"a broken symbolic link (to {os.readlink(path)})"
    if path.is_file():
        return "a file"
    return "not a folder (a named pipe, socket or device)"


class RunLock:
    """An exclusive ``flock`` on ``train.lock`` (released by the kernel when the process dies: never stale).

    Held per process and counted: a second `lock_run` of the same directory in the
    same process (a resume in a test, a sweep) shares it; the last `release` unlocks.
    """

    def __init__(self, path: Path, fd: int | None):
        self.path, self.fd, self.count = path, fd, 1

    def holds(self, path: Path) -> bool:
        """Is this still the lock of ``path`` (not of a file removed and made again since)?"""
        try:
            return self.fd is not None and os.fstat(self.fd).st_ino == os.stat(path).st_ino
        except OSError:
            return False

    def release(self) -> None:
        self.count -= 1
        if self.count > 0 or self.fd is None:
            return
        if _HELD.get(str(self.path)) is self:
            del _HELD[str(self.path)]
        try:
            os.close(self.fd)  # closing the last descriptor drops the flock
        except OSError:
            pass
        self.fd = None


_HELD: dict[str, RunLock] = {}


def lock_holder(workdir: Path) -> dict[str, Any]:
    """What ``train.lock`` says about its holder: pid, host, started (empty when unreadable)."""
    try:
        data = json.loads((Path(workdir) / LOCK).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def lock_run(workdir: Path) -> RunLock:
    """Take the run directory's writer lock, or fail at once naming the process that holds it.

    Raises:
        CnnCliError: another process (pid, host) holds the lock.
    """
    import fcntl

    path = (Path(workdir) / LOCK).resolve()
    if (held := _HELD.get(str(path))) is not None and held.holds(path):
        held.count += 1
        return held
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise CnnCliError(f"cannot write into {workdir}: {err.strerror or err}",
                          hint="pass a --workdir you can write to") from None  # fmt: skip
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        holder = lock_holder(workdir)
        who = f"process {holder.get('pid', '?')} on {holder.get('host', '?')}" if holder else "another process"
        since = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(holder["started"])) \
            if isinstance(holder.get("started"), int | float) else ""  # fmt: skip
        raise CnnCliError(f"{workdir} is being trained by {who}{since}",
                          hint="one process writes a run directory at a time: wait for it, stop it (Ctrl-C saves a "
                          "checkpoint), or train into another --workdir") from None  # fmt: skip
    except OSError:  # a filesystem without locks: train unlocked rather than not at all
        pass
    os.ftruncate(fd, 0)
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    os.write(fd, (json.dumps(holder) + "\n").encode())
    lock = _HELD[str(path)] = RunLock(path, fd)
    return lock


def _untrained(workdir: Path) -> bool:
    """No checkpoint (committed or not) and no metrics: nothing of a run would be lost."""
    checkpoints = workdir / CHECKPOINTS
    if checkpoints.is_dir() and any(checkpoints.iterdir()):
        return False
    return not read_metrics(workdir)


def discard_untrained(workdir: Path, *, created: bool | Path) -> bool:
    """Remove what training wrote into ``workdir`` when no step of it was kept; True when discarded.

    Only run entries (`RUN_ENTRIES`) are removed; the folder itself too when this attempt
    ``created`` it and nothing else is left in it (``created`` a path: the topmost folder it
    created, e.g. ``runs/``, each removed up to there while empty).
    """
    workdir = Path(workdir)
    if not workdir.is_dir() or not _untrained(workdir):
        return False
    try:
        lock = lock_run(workdir)  # ours already, or free: never discard what another process is training
    except CnnCliError:
        return False
    lock.release()
    for entry in workdir.iterdir():
        if entry.name in RUN_ENTRIES or entry.name.endswith(".tmp"):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
    if created:
        top = Path(created) if isinstance(created, Path) else workdir
        for folder in (workdir, *workdir.parents):
            try:
                folder.rmdir()  # only when empty
            except OSError:
                break
            if folder == top:
                break
    return True


class WorkdirClaim:
    """A run directory checked, created and locked by this process (see `claim_workdir`)."""

    def __init__(self, workdir: Path, created: bool | Path, lock: RunLock | None):
        self.workdir, self.created, self.lock = workdir, created, lock

    def release(self, *, discard: bool = False) -> None:
        """Drop the lock; with ``discard``, first remove the run if no step of it was kept."""
        if self.lock is None:
            return
        if discard and self.lock.count == 1:
            discard_untrained(self.workdir, created=self.created)
        self.lock.release()
        self.lock = None


def created_root(workdir: Path) -> Path | bool:
    """The topmost folder that creating ``workdir`` would create (False when it exists)."""
    missing = [p for p in (workdir, *workdir.parents) if not p.exists() and not p.is_symlink()]
    return missing[-1] if missing else False


def claim_workdir(workdir: Path, *, lock: bool = True) -> WorkdirClaim:
    """Check ``workdir`` (`check_workdir`, foreign files allowed: the CLI asked), create it, take its lock.

    Raises:
        CnnCliError: the path cannot hold a run, cannot be created, or another process trains it.
    """
    workdir = Path(workdir)
    check_workdir(workdir, allow_foreign=True)
    created = created_root(workdir)
    if lock:
        try:
            workdir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise CnnCliError(f"cannot create run directory {workdir}: {err.strerror or err}",
                              hint="pass a --workdir you can write to") from None  # fmt: skip
    return WorkdirClaim(workdir, created, lock_run(workdir) if lock else None)
