"""The only code that knows the on-disk checkpoint format.

A checkpoint is an orbax step directory ``checkpoints/<step>/`` with two items:

- ``state``: every array of the training state (parameters, batch statistics, optimizer
  state, EMA, counters) as a nested dict keyed by the state's tree paths, written with
  orbax's standard (tensorstore) format: no pickle anywhere, so loading a checkpoint
  can never execute code.
- ``meta``: JSON: the step (number of completed updates), epoch and position in the
  epoch, the eval metrics, the recipe digest, package versions, and a sha256 of every
  array. Restore recomputes the digests: a flipped byte is an error naming the file,
  never silently wrong weights.

orbax commits a step atomically (it writes a temporary directory, then renames it), so
a killed save never leaves a directory that `steps` lists. Retention keeps the last
``keep`` steps plus the best by eval accuracy.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import jax
import numpy as np

from cnncli.errors import CheckpointError

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
        node[path[-1]] = np.array(jax.device_get(leaf), copy=True)
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


def digests(tree: dict) -> dict[str, str]:
    """sha256 of every array's bytes, keyed by its ``/``-joined path."""
    out = {}
    for path, leaf in zip(*_paths(tree)):
        arr = np.ascontiguousarray(leaf)
        h = hashlib.sha256(str(arr.dtype).encode() + str(arr.shape).encode())
        h.update(arr.tobytes())
        out["/".join(path)] = h.hexdigest()
    return out


class Checkpoints:
    """A run's checkpoint directory: save, list, and verified restore.

    Args:
        directory: ``<workdir>/checkpoints``.
        keep: how many of the newest steps to keep (the best by eval accuracy is
            kept in addition).
        async_save: write in a background thread (the step loop goes on meanwhile).
    """

    def __init__(self, directory: str | Path, *, keep: int = 2, async_save: bool = True):
        import orbax.checkpoint as ocp
        from orbax.checkpoint._src.checkpoint_managers import preservation_policy as pp

        logging.getLogger("absl").setLevel(logging.WARNING)  # orbax logs every save at INFO
        self.directory = Path(directory).resolve()
        policy = pp.AnyPreservationPolicy(
            [pp.LatestN(n=keep), pp.BestN(get_metric_fn=_best_metric, n=1, keep_checkpoints_without_metrics=False)]
        )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policy,
            enable_async_checkpointing=async_save,
            create=True,
        )
        self._ocp = ocp
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=(STATE, META))

    def steps(self) -> list[int]:
        """Committed steps, ascending (partial saves are never listed)."""
        self._manager.reload()
        return sorted(self._manager.all_steps())

    def latest(self) -> int | None:
        """The newest committed step, by step number."""
        steps = self.steps()
        return steps[-1] if steps else None

    def best(self) -> int | None:
        """The committed step with the highest eval accuracy (ties: the newest)."""
        best, best_key = None, None
        for step in self.steps():
            meta = self.read_meta(step)
            acc = (meta.get("metrics") or {}).get("eval_accuracy")
            if acc is not None and (best_key is None or (acc, step) >= best_key):
                best, best_key = step, (acc, step)
        return best

    def save(self, step: int, state, meta: dict[str, Any]) -> Path:
        """Save ``state`` (any pytree of arrays) at ``step`` with its ``meta`` (JSON-able)."""
        ocp = self._ocp
        tree = to_tree(state)
        meta = dict(meta, step=int(step), digests=digests(tree))
        metrics = meta.get("metrics") or None
        try:
            self._manager.save(
                int(step),
                args=ocp.args.Composite(**{STATE: ocp.args.StandardSave(tree), META: ocp.args.JsonSave(meta)}),
                metrics=metrics,
                force=True,
            )
        except Exception as err:
            raise CheckpointError(f"saving checkpoint step {step} in {self.directory} failed: {err}") from err
        return self.directory / str(step)

    def wait(self) -> None:
        """Block until background saves have committed; re-raise their errors."""
        try:
            self._manager.wait_until_finished()
            self._manager.check_for_errors()
        except Exception as err:
            raise CheckpointError(f"a background checkpoint save in {self.directory} failed: {err}") from err

    def read_meta(self, step: int) -> dict[str, Any]:
        """The JSON metadata of a committed step."""
        path = self.directory / str(step) / META / "metadata"
        candidates = [path] + sorted((self.directory / str(step) / META).glob("*"))
        for file in candidates:
            if file.is_file():
                try:
                    return json.loads(file.read_text())
                except (OSError, ValueError):
                    continue
        raise CheckpointError(f"checkpoint {self.directory / str(step)} has no readable metadata")

    def resolve(self, which: str | int) -> int:
        """Turn ``latest``, ``best`` or a step number into a committed step."""
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
            raise CheckpointError(
                f"no checkpoint at step {step} in {self.directory}", hint=f"committed steps: {steps}"
            )
        return step

    def restore(self, step: int, template) -> tuple[Any, dict[str, Any]]:
        """Restore ``step`` into ``template``'s structure, verifying every array's digest."""
        tree, meta = self.restore_tree(step)
        return from_tree(template, tree), meta

    def restore_tree(self, step: int) -> tuple[dict, dict[str, Any]]:
        """Restore ``step`` as the nested dict `to_tree` wrote, verifying every digest."""
        ocp = self._ocp
        meta = self.read_meta(step)
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(**{STATE: ocp.args.StandardRestore()}))
        except Exception as err:
            raise CheckpointError(
                f"checkpoint {self.directory / str(step)} cannot be read: {type(err).__name__}: {err}"
            ) from None
        tree = restored[STATE]
        tree = jax.tree.map(np.asarray, tree)
        expected = meta.get("digests", {})
        actual = digests(tree)
        bad = sorted(k for k in expected if actual.get(k) != expected[k])
        if bad or set(actual) != set(expected):
            raise CheckpointError(
                f"checkpoint {self.directory / str(step)} is corrupt: "
                f"checksum mismatch in {', '.join(bad[:3]) or 'the array list'}"
                + (f" and {len(bad) - 3} more" if len(bad) > 3 else ""),
                hint="restore an earlier step with --checkpoint STEP",
            )
        return tree, meta

    def close(self) -> None:
        """Wait for pending saves and release the manager."""
        self.wait()
        self._manager.close()


def _is_key(leaf) -> bool:
    return hasattr(leaf, "dtype") and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _best_metric(metrics) -> float:
    return float(metrics.get("eval_accuracy", float("-inf")))
