"""Where training starts: a fresh state, or one restored from a committed checkpoint.

The newest committed step by default; with ``resume_from`` that step (or ``latest``),
which must exist: a missing or damaged checkpoint is an error, never a fresh start.
Resuming from an older step sets the newer ones aside. Records of ``metrics.jsonl``
past the restored position are dropped, so each epoch appears once. A recipe changed
in a trajectory field (`cnncli.config.trajectory`) is refused with a diff unless
``allow_recipe_change``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from cnncli.config.trajectory import trajectory_changes
from cnncli.errors import CheckpointError
from cnncli.runs import layout as rundir
from cnncli.runs.checkpoint import flat_tree, state_nbytes, to_tree
from cnncli.runtime import distributed
from cnncli.train import step as steps
from cnncli.train.events import RunStarted
from cnncli.train.session import Session


class Resumed(NamedTuple):
    """Where a resumed run picks up."""

    step: int  # the checkpoint's step (completed updates)
    epoch: int  # completed epochs at that step
    index: int  # the next batch of that epoch
    learning_rate: float  # of the next update


@dataclass(frozen=True)
class Start:
    """The state training starts from, laid out on the mesh, and its data position."""

    state: Any  # a `cnncli.train.step.TrainState`
    shardings: Any  # the state's shardings on a mesh; None on one device
    epoch: int
    index: int
    resumed: Resumed | None = None  # None: a fresh run
    warnings: tuple[str, ...] = ()  # leftovers of interrupted saves, low disk space, checkpoints set aside


def fresh_state(sess: Session):
    """The state before the first step: the model's initial weights, a fresh optimizer state."""
    parts = sess.blueprint.parts
    return steps.fresh_state(parts.params, parts.rest, sess.blueprint.tx, ema=sess.recipe.train.ema_decay is not None)


def initial_state(sess: Session, *, resume_from: str | int | None = None, allow_recipe_change: bool = False) -> Start:
    """The `Start`: fresh, or restored from a committed checkpoint (see the module docstring).

    Raises:
        CheckpointError: no such checkpoint, a damaged one, or a changed recipe.
    """
    state = fresh_state(sess)
    notes = list(sess.checkpoints.warnings)
    if warning := sess.checkpoints.disk_warning(state_nbytes(state)):
        notes.append(warning)
    store = sess.checkpoints
    step = store.latest() if resume_from is None else store.resolve(resume_from)
    if step is None:
        if distributed.is_main_process():
            np.savez(sess.workdir / rundir.INIT, **flat_tree(to_tree(sess.blueprint.parts.all_params)))  # --compare-init
            rundir.keep_metrics(sess.workdir, step=0, epoch=0)  # a run killed before its first checkpoint
        return _placed(sess, state, 0, 0, None, notes)
    check_recipe_unchanged(sess, allow_recipe_change)
    state, meta = _restore(sess, step, state)
    newer = [s for s in store.steps() if s > step]
    if newer and distributed.is_main_process():
        notes.append(f"resuming from step {step}: moved the newer checkpoints {newer} to {store.set_aside(newer)}")
    epoch, index = int(meta["epoch"]), int(meta["index"])
    if note := _data_changed(sess, meta):
        notes.append(note)
    if distributed.is_main_process():
        rundir.keep_metrics(sess.workdir, step=step, epoch=epoch)
        if allow_recipe_change:
            rundir.write_json(sess.workdir / rundir.RECIPE_JSON, sess.recipe.to_dict())  # what eval rebuilds
    return _placed(sess, state, epoch, index, Resumed(step, epoch, index, float(sess.schedule(step))), notes)


def _data_changed(sess: Session, meta: dict) -> str | None:
    """A warning when the training split changed size since the checkpoint: its order, so its batches, changed too."""
    saved = (meta.get("pipeline") or {}).get("num_train")
    now = int(sess.data.train.x.shape[0])
    if saved is None or int(saved) == now:
        return None
    return (f"the training split has {now} examples but had {saved} when step {meta['step']} was saved: the batches "
            "from here on differ from those of an uninterrupted run")  # fmt: skip


def _placed(sess: Session, state, epoch: int, index: int, resumed: Resumed | None, notes: list[str]) -> Start:
    state, shardings = sess.placement.place_state(state)  # a no-op on one device
    return Start(state, shardings, epoch, index, resumed, tuple(notes))


def _restore(sess: Session, step: int, fresh) -> tuple[Any, dict]:
    """The checkpoint of ``step`` restored into the fresh state's structure and types (nothing recompiles)."""
    state, meta = sess.checkpoints.restore(step, fresh)
    state = jax.tree.map(jnp.asarray, state)
    if int(state.step) != step or int(meta["step"]) != step:
        where = sess.checkpoints.directory / str(step)
        raise CheckpointError(f"checkpoint {where} holds step {int(state.step)}, not {step}")
    return state, meta


def check_recipe_unchanged(sess: Session, allow_recipe_change: bool = False) -> None:
    """Refuse to resume with a recipe changed in a trajectory field (the saved ``recipe.json`` is the reference).

    Raises:
        CheckpointError: listing each changed field, old -> new.
    """
    saved_path = sess.workdir / rundir.RECIPE_JSON
    if not saved_path.exists() or allow_recipe_change:
        return
    lines = trajectory_changes(json.loads(saved_path.read_text()), sess.recipe.to_dict())
    if lines:
        raise CheckpointError(
            f"{sess.workdir} holds a run of a different recipe; resuming would change its trajectory:\n"
            + "\n".join(lines),
            hint="resume with the original recipe, pass --allow-recipe-change, or use a new --workdir",
        )


def started_event(sess: Session, start: Start) -> RunStarted:
    """The `RunStarted` event of a session starting at ``start``."""
    resumed = start.resumed or (None, None, None, None)
    return RunStarted(
        workdir=sess.workdir, num_params=sess.blueprint.parts.num_params, steps_per_epoch=sess.steps.per_epoch,
        total_steps=sess.steps.total, epochs=sess.steps.epochs, devices=sess.devices,
        input_shape=sess.data.input_shape, num_classes=sess.blueprint.config.num_classes,
        num_train=int(sess.data.train.x.shape[0]),
        resumed_step=resumed[0], resumed_epoch=resumed[1], resumed_index=resumed[2], resumed_lr=resumed[3],
        warnings=sess.warnings + start.warnings, notes=sess.notes,
    )  # fmt: skip
