"""The filesystem side of checkpoints: commit, file manifest, fsync, pruning, faults.

orbax writes a step into ``<step>.orbax-checkpoint-tmp/`` and commits it with one
``rename`` to ``<step>/`` (verified for orbax-checkpoint 0.12.8: the suffix has no
timestamp, each item is itself written as ``state.orbax-checkpoint-tmp`` inside it, and
a later save of the same step removes a leftover temporary directory first). This
module hooks that commit (`commit_hook_class`; the orbax class it subclasses is private
API, reached only through `cnncli.runs.orbax_adapter`) to:

- write ``files.sha256.json``, the size and sha256 of every file of the step, inside the
  temporary directory, so it commits atomically with the data; a restore that fails
  uses it to name the damaged file;
- with ``fsync``, flush every file and directory before the rename and the parent
  directory after it, so a committed step also survives a power loss;
- fire the test-only fault hook (`fault`) at named points of a save.

It also turns OS errors into one-line reasons and keeps orbax's own logs quiet.

Old steps are removed by renaming them into ``.deleting/`` (atomic) before deleting
them (in the background), so a process killed while pruning never leaves a
half-deleted ``<step>/`` that would look committed.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path

from cnncli.errors import CheckpointError
from cnncli.runs.orbax_adapter import COMMIT_MARKER, TMP_SUFFIX, atomic_rename_base

MANIFEST = "files.sha256.json"
TRASH = ".deleting"  # not a number: orbax never lists it as a step
SUPERSEDED = "superseded"
# Written by orbax during the commit itself, after our manifest: not covered by it.
_UNHASHED = {"_CHECKPOINT_METADATA", COMMIT_MARKER, MANIFEST}
_STEP_TMP = re.compile(r"^(\d+)" + re.escape(TMP_SUFFIX))
_CHUNK = 1 << 20  # bytes read per hash update

# ------------------------------------------------------------------ fault hook

FAULT_ENV = "CNNCLI_FAULT"
FAULT_POINTS = ("before_write", "after_state_write", "before_commit", "after_commit", "during_prune")
FAULT_ACTIONS = {"kill": None, "enospc": errno.ENOSPC, "eacces": errno.EACCES, "eio": errno.EIO}


@dataclass(frozen=True)
class Fault:
    """A parsed ``CNNCLI_FAULT`` value: ``POINT[:ACTION][@STEP]``."""

    point: str
    action: str = "kill"
    step: int | None = None  # fire only when saving this step; None: any step


def parse_fault(spec: str) -> Fault:
    """Parse a ``CNNCLI_FAULT`` value, rejecting unknown points and actions loudly.

    Args:
        spec: e.g. ``after_state_write``, ``before_commit:enospc@44``.

    Raises:
        CheckpointError: an unknown point or action, or a step that is not a number.
    """
    body, _, step = spec.strip().partition("@")
    point, _, action = body.partition(":")
    action = action or "kill"
    if point not in FAULT_POINTS or action not in FAULT_ACTIONS or (step and not step.isdigit()):
        raise CheckpointError(
            f"{FAULT_ENV}={spec!r}: expected POINT[:ACTION][@STEP] with POINT one of "
            f"{', '.join(FAULT_POINTS)} and ACTION one of {', '.join(FAULT_ACTIONS)}",
            hint=f"{FAULT_ENV} is a test-only hook; unset it for real runs",
        )
    return Fault(point, action, int(step) if step else None)


def fault(point: str, step: int, path: Path) -> None:
    """TEST-ONLY fault injection at a named point of a save; a no-op unless ``CNNCLI_FAULT`` is set.

    ``kill`` sends SIGKILL to this process (the real thing: no handler, no cleanup);
    ``enospc``/``eacces``/``eio`` raise the `OSError` a full disk, a permission problem
    or an I/O error would, naming ``path``. The tests use it to kill or fail a save at
    an exact point; nothing else should set it.
    """
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    f = parse_fault(spec)
    if f.point != point or (f.step is not None and f.step != step):
        return
    if f.action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    code = FAULT_ACTIONS[f.action]
    cls = PermissionError if code == errno.EACCES else OSError
    raise cls(code, f"{os.strerror(code)} (injected by {FAULT_ENV}={spec})", str(path))


# --------------------------------------------------------------- commit hook


def commit_hook_class(fsync: bool):
    """An orbax ``AtomicRenameTemporaryPath`` that writes the manifest, fsyncs and fires faults.

    Raises:
        CheckpointError: the installed orbax moved that class (`cnncli.runs.orbax_adapter`).
    """

    class CommitHook(atomic_rename_base()):
        async def create(self, *args, **kwargs):
            path = await super().create(*args, **kwargs)
            if _is_step_dir(self.get_final()):
                fault("before_write", int(self.get_final().name), Path(path))
            return path

        async def finalize(self, *args, **kwargs):
            final = Path(self.get_final())
            if not _is_step_dir(final):  # an item (state/, meta/) inside the step's temporary dir
                await super().finalize(*args, **kwargs)
                match = _STEP_TMP.match(final.parent.name)
                if final.name == "state" and match:
                    fault("after_state_write", int(match.group(1)), final)
                return
            tmp, step = Path(self.get()), int(final.name)
            await asyncio.to_thread(write_manifest, tmp, fsync)
            fault("before_commit", step, tmp)
            await super().finalize(*args, **kwargs)  # orbax: commit marker, then rename tmp -> final
            if fsync:
                await asyncio.to_thread(_fsync_commit, final)
            fault("after_commit", step, final)

    CommitHook.__name__ = "CnnCliCommitHook"
    return CommitHook


def _is_step_dir(path) -> bool:
    return Path(path).name.isdigit()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.relative_to(root).as_posix() not in _UNHASHED)


def write_manifest(tmp: Path, fsync: bool) -> None:
    """Write ``files.sha256.json`` (size and sha256 of every file) into a step's temporary dir."""
    files = {p.relative_to(tmp).as_posix(): {"size": p.stat().st_size, "sha256": _sha256(p)} for p in _files(tmp)}
    path = tmp / MANIFEST
    with open(path, "w") as f:
        json.dump({"version": 1, "files": files}, f, indent=1)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    if fsync:
        fsync_tree(tmp)


def verify_files(step_dir: Path) -> list[str]:
    """Problems with a committed step's files against its manifest ([] if none, or no manifest).

    Missing, truncated, changed and unexpected files all count: orbax reads some file
    names when present (``state/checkpoint``), so a planted file is refused too.

    Each problem names the file, e.g. ``.../checkpoints/12/state/d/3f0a...: 3 of 4096
    bytes (truncated)``.
    """
    try:
        manifest = json.loads((step_dir / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    problems = [f"{step_dir / rel}: not written by the save (unexpected file)"
                for rel in sorted({p.relative_to(step_dir).as_posix() for p in _files(step_dir)} - set(manifest))]  # fmt: skip
    for rel, want in manifest.items():
        path = step_dir / rel
        name = str(path)
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif (size := path.stat().st_size) != want["size"]:
            problems.append(f"{name}: {size} of {want['size']} bytes ({'truncated' if size < want['size'] else 'grown'})")
        elif _sha256(path) != want["sha256"]:
            problems.append(f"{name}: contents changed (sha256 mismatch)")
    return problems


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and directory under ``root`` (directories too: their entries)."""
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            _fsync_path(Path(dirpath) / name)
        _fsync_path(Path(dirpath))


def _fsync_commit(final: Path) -> None:
    for name in (COMMIT_MARKER, "_CHECKPOINT_METADATA"):  # written by orbax after our manifest
        if (final / name).is_file():
            _fsync_path(final / name)
    _fsync_path(final)
    _fsync_path(final.parent)  # the rename itself lives in the parent directory's entries


# ---------------------------------------------------------- directory listing


def committed_steps(directory: Path) -> list[int]:
    """Committed steps in a checkpoints directory, ascending; read from the directory alone.

    A step is committed when ``<step>/`` exists with orbax's commit marker: temporary
    directories (``*.orbax-checkpoint-tmp``), ``.deleting/`` and stray numbered
    directories are never listed.
    """
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit() and (p / COMMIT_MARKER).is_file())


def _mb(path: Path) -> str:
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0
    return f"{size / 1e6:.1f} MB"


def leftovers(directory: Path) -> list[str]:
    """Warnings for what a killed or failed save left behind (ignored, never restored)."""
    if not directory.is_dir():
        return []
    out = []
    for p in sorted(directory.iterdir()):
        if TMP_SUFFIX in p.name:
            out.append(f"{p}: an unfinished save from an interrupted run ({_mb(p)}); ignored, safe to delete")
        elif p.name.isdigit() and p.is_dir() and not (p / COMMIT_MARKER).is_file():
            out.append(f"{p}: not a committed checkpoint (no {COMMIT_MARKER}); ignored")
    return out


# ------------------------------------------------------------------- removal


def discard(directory: Path, step: int) -> Path:
    """Retire a committed step: rename it into ``.deleting/`` (atomic); the caller deletes it.

    Returns:
        Its path in ``.deleting/``.
    """
    trash = directory / TRASH
    target = trash / str(step)
    if target.exists():
        shutil.rmtree(target)
    for attempt in (1, 2):  # another process may drop an empty .deleting/ between mkdir and rename
        trash.mkdir(exist_ok=True)
        try:
            os.rename(directory / str(step), target)
            break
        except FileNotFoundError:
            if attempt == 2 or not (directory / str(step)).exists():
                raise
    fault("during_prune", step, target)
    return target


def purge_trash(directory: Path) -> None:
    """Finish deletions a killed process left in ``.deleting/``."""
    shutil.rmtree(directory / TRASH, ignore_errors=True)


def drop_empty_trash(directory: Path) -> None:
    """Remove ``.deleting/`` once every deletion in it has finished (left alone if not empty)."""
    try:
        (directory / TRASH).rmdir()
    except OSError:  # absent, or a deletion left something behind: purge_trash finishes it next time
        pass


def set_aside(directory: Path, steps: list[int], stamp: str) -> Path:
    """Move committed ``steps`` to ``superseded/<stamp>/`` (kept, no longer listed)."""
    target, n = directory / SUPERSEDED / stamp, 1
    while any((target / str(step)).exists() for step in steps):  # two set-asides within one second
        n += 1
        target = directory / SUPERSEDED / f"{stamp}-{n}"
    target.mkdir(parents=True, exist_ok=True)
    for step in steps:
        os.rename(directory / str(step), target / str(step))
    return target


def disk_warning(directory: Path, state_bytes: int, keep: int) -> str | None:
    """A warning when free space cannot hold the checkpoints a run will write, else None.

    A run holds up to ``keep`` newest steps, the best step, and one being written:
    ``state_bytes * (keep + 2)``, less what its committed steps already occupy.
    """
    need = state_bytes * (keep + 2)
    steps = committed_steps(directory)
    have = sum(p.stat().st_size for s in steps for p in (directory / str(s)).rglob("*") if p.is_file())
    free = shutil.disk_usage(directory).free
    if free >= need - have:
        return None
    return (
        f"{directory}: checkpoints need about {need / 1e6:,.1f} MB (state {state_bytes / 1e6:,.1f} MB x "
        f"(keep {keep} + 2)), but only {free / 1e6:,.1f} MB are free; a save may fail with 'disk full'"
    )


# ------------------------------------------------------------- reporting


def reason(err: BaseException) -> str:
    """A one-line reason: ``No space left on device (ENOSPC): /path`` or ``ValueError: ...``."""
    if isinstance(err, OSError) and err.strerror:
        name = errno.errorcode.get(err.errno, "")
        return f"{err.strerror}{f' ({name})' if name else ''}{f': {err.filename}' if err.filename else ''}"
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:300] if text else ''}"


class _DropOrbaxRecords(logging.Filter):
    """orbax logs every save at INFO, and tracebacks of the failures we re-raise with a clear message."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.CRITICAL or "orbax" not in Path(record.pathname).parts


def quiet_orbax() -> None:
    """Keep orbax's logs off stderr (unless ``CNNCLI_DEBUG``): our errors say what matters."""
    logger = logging.getLogger("absl")
    logger.setLevel(logging.WARNING)
    if not os.environ.get("CNNCLI_DEBUG") and not any(isinstance(f, _DropOrbaxRecords) for f in logger.filters):
        logger.addFilter(_DropOrbaxRecords())
