"""The only code that knows the on-disk checkpoint format.

A checkpoint is an orbax step directory ``checkpoints/<step>/`` with two items and a
manifest:

- ``state``: every array of the training state (parameters, batch statistics, optimizer
  state with the schedule's step count, EMA, counters, RNG counters) as a nested dict
  keyed by the state's tree paths, written with orbax's standard (tensorstore) format:
  no pickle anywhere, so loading a checkpoint can never execute code.
- ``meta``: JSON: the step (number of completed updates), the data position (epoch and
  index within it), the eval metrics, the recipe digest, package versions, how the
  random streams derive from the seed, and a sha256 of every array. Restore recomputes
  the digests: a flipped byte is an error, never silently wrong weights.
- ``files.sha256.json``: size and sha256 of every file, to name the damaged file.

orbax writes a step into a temporary directory and commits it with a rename
(`cnncli.runs.checkpoint_fs`); `Checkpoints.steps` lists only committed steps. Retention is
ours, not orbax's: after a new step has committed, steps beyond the newest ``keep`` and
the best by eval accuracy are removed, so a failed save never costs an older step.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jax
import numpy as np

from cnncli.errors import CheckpointError
from cnncli.runs import checkpoint_fs as fs
from cnncli.runtime.distributed import host

STATE = "state"
META = "meta"


def _key_str(entry) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)  # pragma: no cover - unknown key kinds


def _paths(tree) -> tuple[list[tuple[str, ...]], list[Any]]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    paths = []
    for path, _ in leaves:
        if path and isinstance(path[-1], jax.tree_util.GetAttrKey) and path[-1].name == "value":
            path = path[:-1]  # an nnx.Variable's payload: "conv1/kernel", not "conv1/kernel/value"
        paths.append(tuple(_key_str(k) for k in path))
    return paths, [leaf for _, leaf in leaves]


def to_tree(state) -> dict:
    """A nested, string-keyed dict of host numpy copies of every array in ``state``.

    Copies (not views): the caller's device buffers may be donated to the next step
    while a background save is still writing.
    """
    out: dict = {}
    for path, leaf in zip(*_paths(state)):
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        if _is_key(leaf):  # typed PRNG keys are stored as their raw uint32 data
            leaf = jax.random.key_data(leaf)
        node[path[-1]] = np.array(host(leaf), copy=True)
    return out


def from_tree(template, tree: dict):
    """Fill ``template``'s structure with the arrays of ``tree`` (as made by `to_tree`)."""
    paths, leaves = _paths(template)
    values = []
    for path, leaf in zip(paths, leaves):
        node = tree
        try:
            for key in path:
                node = node[key]
        except (KeyError, TypeError):
            raise CheckpointError(
                f"checkpoint has no array at {'/'.join(path)}",
                hint="the checkpoint was written by a different model; check the run's recipe",
            ) from None
        if _is_key(leaf):
            values.append(jax.random.wrap_key_data(np.asarray(node), impl=jax.random.key_impl(leaf)))
            continue
        if tuple(np.shape(node)) != tuple(np.shape(leaf)):
            raise CheckpointError(
                f"checkpoint array {'/'.join(path)} has shape {np.shape(node)}, model expects {np.shape(leaf)}"
            )
        values.append(np.asarray(node, dtype=leaf.dtype if hasattr(leaf, "dtype") else None))
    treedef = jax.tree_util.tree_structure(template)
    return jax.tree_util.tree_unflatten(treedef, values)


def flat_tree(tree: dict, prefix: str = "") -> dict[str, Any]:
    """A nested dict (as `to_tree` makes) as one level keyed ``conv1/kernel``."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_tree(value, name + "/"))
        else:
            out[name] = value
    return out


def digests(tree: dict) -> dict[str, str]:
    """sha256 of every array's bytes, keyed by its ``/``-joined path."""
    out = {}
    for path, leaf in zip(*_paths(tree)):
        arr = np.ascontiguousarray(leaf)
        h = hashlib.sha256(str(arr.dtype).encode() + str(arr.shape).encode())
        h.update(arr.tobytes())
        out["/".join(path)] = h.hexdigest()
    return out


def state_nbytes(state) -> int:
    """Bytes of array data a checkpoint of ``state`` holds (typed keys as their raw data)."""
    leaves = jax.tree.leaves(state)
    return sum(int((jax.random.key_data(x) if _is_key(x) else x).nbytes) for x in leaves if hasattr(x, "dtype"))


def tree_digest(tree: dict, parts: tuple[str, ...] | None = None) -> str:
    """One sha256 over every array of ``tree`` (or of its top-level ``parts``), in path order.

    Two states with equal digests are bit-identical: same paths, dtypes, shapes, bytes.
    """
    if parts is not None:
        tree = {k: tree[k] for k in parts if k in tree}
    h = hashlib.sha256()
    for name, digest in sorted(digests(tree).items()):
        h.update(f"{name}={digest}\n".encode())
    return h.hexdigest()


class Checkpoints:
    """A run's checkpoint directory: save, list, verified restore, retention.

    Args:
        directory: ``<workdir>/checkpoints`` (created if missing).
        keep: how many of the newest steps to keep (the best by eval accuracy is
            kept in addition); at least one.
        async_save: write in a background thread (the step loop goes on meanwhile).
        fsync: flush every file and directory of a step to disk around its commit, so a
            committed step survives a power loss (slower; a killed process is survived
            without it).

    Attributes:
        warnings: what killed or failed earlier saves left behind, for the caller to
            show (the library never prints).
    """

    def __init__(self, directory: str | Path, *, keep: int = 2, async_save: bool = True, fsync: bool = False,
                 writer: bool = True):  # fmt: skip
        import orbax.checkpoint as ocp

        fs.quiet_orbax()
        if os.environ.get(fs.FAULT_ENV):
            fs.parse_fault(os.environ[fs.FAULT_ENV])  # a mistyped test hook fails now, not silently
        self.directory = Path(directory).resolve()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise CheckpointError(f"cannot create the checkpoint directory {self.directory}: {fs.reason(err)}") from None
        self.keep = max(1, keep)
        self.fsync = fsync
        self.writer = writer  # False: a reader (eval, inspect, another process) never touches .deleting/
        if writer:
            fs.purge_trash(self.directory)
        self._discarded = False  # whether this instance moved a step into .deleting/
        self.warnings: list[str] = fs.leftovers(self.directory)
        options = ocp.CheckpointManagerOptions(
            enable_async_checkpointing=async_save,
            # mkdir in save() itself: when orbax created the temporary directory in the
            # background and that failed, the process then hung 300 s at exit (0.12.8).
            async_options=ocp.AsyncOptions(create_directories_asynchronously=False),
            temporary_path_class=fs.commit_hook_class(fsync),
            create=jax.process_count() == 1,  # with several processes we made the directory above
            multiprocessing_options=_single_process_options(ocp),
        )
        self._ocp = ocp
        self._async = async_save
        self._pending: int | None = None  # the step being saved in the background
        self._error: CheckpointError | None = None  # the first save failure, raised on every later call
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=(STATE, META))
        self._deleter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cnncli-prune")

    def steps(self) -> list[int]:
        """Committed steps, ascending (partial saves and temporary directories are never listed)."""
        return fs.committed_steps(self.directory)

    def latest(self) -> int | None:
        """The newest committed step, by step number (not file time)."""
        steps = self.steps()
        return steps[-1] if steps else None

    def best(self) -> int | None:
        """The committed step with the highest eval accuracy (ties: the newest; unreadable: skipped)."""
        best, best_key = None, None
        for step in self.steps():
            try:
                acc = (self.read_meta(step).get("metrics") or {}).get("eval_accuracy")
            except CheckpointError:
                continue
            if acc is not None and (best_key is None or (acc, step) >= best_key):
                best, best_key = step, (acc, step)
        return best

    def save(self, step: int, state, meta: dict[str, Any]) -> Path:
        """Save ``state`` (any pytree of arrays) at ``step`` with its ``meta`` (JSON-able).

        The arrays are copied to the host first (the caller may donate its buffers),
        then written in the background when ``async_save``. Old steps are removed only
        after this one has committed (in `wait`, or the next `save`).

        Raises:
            CheckpointError: this save, or an earlier background one, failed; the message
                names the directory and the reason (disk full, permission denied, ...).
        """
        self.wait()
        ocp = self._ocp
        tree = to_tree(state)
        meta = dict(meta, step=int(step), digests=digests(tree))
        self._pending = int(step)
        try:
            self._manager.save(
                int(step), args=ocp.args.Composite(**{STATE: ocp.args.StandardSave(tree), META: ocp.args.JsonSave(meta)}),
                force=True,
            )  # fmt: skip
        except Exception as err:
            raise self._fail(err) from None
        if not self._async:
            self.wait()
        return self.directory / str(step)

    def wait(self) -> None:
        """Block until a background save has committed, then prune old steps.

        Raises:
            CheckpointError: the save failed. Raised again on every later call: orbax
                reports a background error only once, and a run must never go on as if
                its checkpoint existed.
        """
        if self._error is not None:
            raise self._error
        if self._pending is None:
            return
        try:
            self._manager.wait_until_finished()
            self._manager.check_for_errors()
        except Exception as err:
            raise self._fail(err) from None
        step, self._pending = self._pending, None
        try:
            self._prune(step)
        except OSError as err:
            raise self._fail(err, f"removing old checkpoints after step {step}") from None

    def poll(self) -> None:
        """Raise a failed background save now; never blocks on one still running."""
        if self._error is not None:
            raise self._error
        if self._pending is not None and not self._manager.is_saving_in_progress():
            self.wait()

    def _prune(self, step: int) -> None:
        steps = self.steps()
        if step not in steps:
            missing = FileNotFoundError(f"{self.directory / str(step)} is missing after its save")
            raise self._fail(missing, f"saving checkpoint step {step}")
        best = self.best()
        keep = set(steps[-self.keep :]) | {step} | ({best} if best is not None else set())
        for old in steps:
            if old not in keep:  # renamed away now; deleted off the step loop (40 ms each on this disk)
                self._deleter.submit(shutil.rmtree, fs.discard(self.directory, old), ignore_errors=True)
                self._discarded = True

    def _fail(self, err: BaseException, what: str | None = None) -> CheckpointError:
        what = what or f"saving checkpoint step {self._pending}"
        steps = self.steps()
        intact = f"the last committed checkpoint, step {steps[-1]}, is intact" if steps else "no checkpoint was committed yet"
        code = getattr(err, "errno", None)
        if code == errno.ENOSPC:
            advice = "free disk space or lower train.keep; "
        elif code in (errno.EACCES, errno.EPERM, errno.EROFS):
            advice = f"check that {self.directory} is writable; "
        else:
            advice = ""
        self._error = CheckpointError(f"{what} in {self.directory} failed: {fs.reason(err)}", hint=advice + intact)
        return self._error

    def read_meta(self, step: int) -> dict[str, Any]:
        """The JSON metadata of a committed step.

        Raises:
            CheckpointError: the metadata file is missing or not valid JSON (names the file).
        """
        path = self.directory / str(step) / META / "metadata"
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise CheckpointError(f"checkpoint {path.parent.parent} is incomplete: {path} is missing") from None
        except (OSError, ValueError) as err:
            raise self._corrupt(step, f"{path} is unreadable ({err})") from None

    def resolve(self, which: str | int) -> int:
        """Turn ``latest``, ``best`` or a step number into a committed step.

        Raises:
            CheckpointError: no committed checkpoint, or no such step (lists the committed ones).
        """
        steps = self.steps()
        if not steps:
            raise CheckpointError(f"no committed checkpoint in {self.directory}")
        if which == "latest":
            return steps[-1]
        if which == "best":
            best = self.best()
            return best if best is not None else steps[-1]
        try:
            step = int(which)
        except (TypeError, ValueError):
            raise CheckpointError(f"checkpoint {which!r}: expected latest, best or a step number") from None
        if step not in steps:
            raise CheckpointError(f"no checkpoint at step {step} in {self.directory}", hint=f"committed steps: {steps}")
        return step

    def restore(self, step: int, template) -> tuple[Any, dict[str, Any]]:
        """Restore ``step`` into ``template``'s structure, verifying every array's digest."""
        tree, meta = self.restore_tree(step)
        return from_tree(template, tree), meta

    def restore_tree(self, step: int) -> tuple[dict, dict[str, Any]]:
        """Restore ``step`` as the nested dict `to_tree` wrote, verifying every digest.

        Every file is first checked against the step's manifest (size and sha256), then
        every restored array against its digest.

        Raises:
            CheckpointError: a file is damaged, truncated or missing, or an array's
                digest differs; the message names the damaged file when it can.
        """
        ocp = self._ocp
        meta = self.read_meta(step)
        if files := fs.verify_files(self.directory / str(step)):  # before orbax reads: a short file
            raise self._corrupt(step, "its files differ from its manifest", files)  # can still restore
        try:
            self._manager.reload()
            restored = self._manager.restore(step, args=ocp.args.Composite(**{STATE: ocp.args.StandardRestore()}))
        except Exception as err:
            raise self._corrupt(step, f"it cannot be read ({fs.reason(err)})") from None
        tree = jax.tree.map(np.asarray, restored[STATE])
        expected, actual = meta.get("digests", {}), digests(tree)
        bad = sorted(k for k in set(expected) | set(actual) if expected.get(k) != actual.get(k))
        if bad:
            more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
            raise self._corrupt(step, f"checksum mismatch in {', '.join(bad[:3])}{more}")
        return tree, meta

    def _corrupt(self, step: int, what: str, files: list[str] | None = None) -> CheckpointError:
        files = fs.verify_files(self.directory / str(step)) if files is None else files
        where = f"; damaged: {'; '.join(files[:3])}" if files else ""
        others = [s for s in self.steps() if s < step]
        run = self.directory.parent
        hint = (
            f"the newest earlier checkpoint is step {others[-1]}: `cnncli train RECIPE --workdir {run} "
            f"--resume-from {others[-1]}` continues from it, `cnncli eval {run} --checkpoint {others[-1]}` "
            "evaluates it"
            if others
            else "no earlier checkpoint"
        )
        return CheckpointError(f"checkpoint {self.directory / str(step)} is corrupt: {what}{where}", hint=hint)

    def set_aside(self, steps: list[int]) -> Path:
        """Move committed ``steps`` to ``superseded/<time>/`` (kept on disk, no longer listed)."""
        target = fs.set_aside(self.directory, steps, time.strftime("%Y%m%d-%H%M%S"))
        self._manager.reload()
        return target

    def disk_warning(self, state_bytes: int) -> str | None:
        """A warning when free space cannot hold ``keep + 2`` copies of a ``state_bytes`` state."""
        return fs.disk_warning(self.directory, state_bytes, self.keep)

    def close(self) -> None:
        """Wait for a background save, prune, and release the manager.

        Raises:
            CheckpointError: a background save failed (see `wait`).
        """
        try:
            self.wait()
        finally:
            self._manager.close()
            self._deleter.shutdown(wait=True)
            if self._discarded:  # only the pruning writer, once its deletions are done
                fs.drop_empty_trash(self.directory)

    def abandon(self) -> None:
        """Forget a save in flight without waiting (an aborting process; it stays uncommitted)."""
        self._pending = None


def _single_process_options(ocp):
    """With several JAX processes, each manager acts alone (no cross-process barriers).

    The state is replicated, so process 0 writes every checkpoint by itself and every
    process can read them; the others never call ``save``.
    """
    if jax.process_count() == 1:
        return ocp.options.MultiprocessingOptions()
    pid = jax.process_index()
    return ocp.options.MultiprocessingOptions(primary_host=pid, active_processes={pid})


def _is_key(leaf) -> bool:
    return hasattr(leaf, "dtype") and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)
