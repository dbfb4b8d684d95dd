"""The training loop: recipe in, run directory out, typed events on the way.

`fit` never prints. It reports through ``on_event`` with the event dataclasses below;
`cnncli.report.train` turns them into a rich progress display or JSON lines.

One seed drives everything: ``jax.random.key(seed)`` is split into parameter init,
dropout, shuffling and augmentation streams, so the same recipe and seed on the same
machine give the same numbers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cnncli.config.recipe import Recipe
from cnncli.errors import DataError, TrainingError
from cnncli.runs import layout as rundir
from cnncli.runtime.distributed import host, is_main_process
from cnncli.train.clock import Clock, SaveTimer
from cnncli.train.session import Session, build_session


@dataclass(frozen=True)
class RunStarted:
    workdir: Path
    num_params: int
    steps_per_epoch: int
    total_steps: int
    epochs: int
    devices: list[str]
    input_shape: tuple[int, ...]
    num_classes: int
    num_train: int
    resumed_step: int | None = None  # the checkpoint's step (completed updates); None: a fresh run
    resumed_epoch: int | None = None  # completed epochs at that step
    resumed_index: int | None = None  # the next batch of that epoch (0: the epoch starts afresh)
    resumed_lr: float | None = None  # the learning rate of the next update
    warnings: tuple[str, ...] = ()  # leftovers of interrupted saves, low disk space, ...
    notes: tuple[str, ...] = ()  # choices made for the user (conv_backend = "auto"), shown on a terminal


@dataclass(frozen=True)
class ExtensionBuild:
    cache_dir: Path  # the oneDNN extension is about to be compiled (first use, seconds) into here


@dataclass(frozen=True)
class Compiled:
    seconds: float  # wall time of tracing + XLA compilation of the train step


@dataclass(frozen=True)
class StepEnd:
    step: int  # completed updates
    epoch: int  # 1-based epoch in progress
    total_steps: int
    loss: float  # mean training loss since the last StepEnd
    accuracy: float
    learning_rate: float
    images_per_second: float


@dataclass(frozen=True)
class EpochEnd:
    record: dict[str, Any]  # the metrics.jsonl record of this epoch


@dataclass(frozen=True)
class CheckpointSaved:
    step: int
    path: Path


@dataclass(frozen=True)
class RunFinished:
    summary: dict[str, Any]


Event = ExtensionBuild | RunStarted | Compiled | StepEnd | EpochEnd | CheckpointSaved | RunFinished


@dataclass
class _Progress:
    best_accuracy: float = -1.0
    best_epoch: int = 0
    epochs_without_gain: int = 0
    history: list[dict] = field(default_factory=list)


def _read_sums(state) -> tuple[float, float, float]:
    sums = host(state.sums)
    count = float(sums["count"])
    if count == 0:
        return float("nan"), float("nan"), 0.0
    return float(sums["loss"]) / count, float(sums["correct"]) / count, count


def _check_finite(sess: Session, state) -> None:
    bad = int(host(state.bad_step))
    if bad >= 0:
        value = float(host(state.bad_value))
        latest = sess.checkpoints.latest()
        where = f"; the last good checkpoint is step {latest}" if latest is not None else ""
        raise TrainingError(
            f"loss became {value} at step {bad + 1}: training stopped{where}",
            hint="lower optimizer.learning_rate, add optimizer.clip_norm, or check the data",
        )


def evaluate_state(sess: Session, state, *, use_ema: bool = False) -> tuple[float, float]:
    """Mean loss and accuracy of ``state`` on the session's eval split."""
    params = state.ema if use_ema else state.params
    totals = np.zeros(3)
    split = sess.data.eval
    bs = sess.eval_batch_size
    for start, stop in sess.batches(split.x.shape[0], bs):
        x, y, mask = sess.eval_args(*sess.pad(split.x[start:stop], split.y[start:stop], bs))
        totals += np.array(host(sess.eval_step(params, state.rest, x, y, mask)), dtype=np.float64)
    return float(totals[0] / max(totals[2], 1)), float(totals[1] / max(totals[2], 1))


def _epoch_record(sess, state, epoch, step, clock, epoch_seconds) -> dict[str, Any]:
    train_loss, train_acc, _ = _read_sums(state)
    eval_loss, eval_acc = evaluate_state(sess, state)
    record = {
        "epoch": epoch,
        "step": step,
        "train_loss": train_loss,
        "train_accuracy": train_acc,
        "eval_loss": eval_loss,
        "eval_accuracy": eval_acc,
        "learning_rate": float(sess.schedule(max(step - 1, 0))),
        "epoch_seconds": epoch_seconds,
        "images_per_second": clock.images_per_second,
    }
    if sess.recipe.train.ema_decay is not None:
        record["ema_eval_loss"], record["ema_eval_accuracy"] = evaluate_state(sess, state, use_ema=True)
    return record


def _save(sess: Session, state, epoch: int, index: int, metrics: dict, emit) -> None:
    """Checkpoint ``state`` at data position (epoch, index): the next batch a resume trains on."""
    step = int(host(state.step))
    if not is_main_process():  # process 0 writes checkpoints (the state is replicated)
        return
    if step in sess.checkpoints.steps():  # already committed (e.g. resumed here): same state, same step
        return
    meta = {
        "epoch": epoch,
        "index": index,
        "steps_per_epoch": sess.steps_per_epoch,
        "metrics": metrics,
        "recipe_digest": sess.recipe.digest(),
        "ema": sess.recipe.train.ema_decay is not None,
        "versions": sess.env["versions"],
        # The random streams are not stored: they derive from the seed and are stateless.
        "rng": {"seed": sess.recipe.train.seed, "shuffle": "permutation(fold_in(fold_in(key(seed), 1), epoch))",
                "augment": "fold_in(fold_in(key(seed), 2), step)", "dropout": "nnx.Rngs counters in state.rest"},
    }  # fmt: skip
    path = sess.checkpoints.save(step, state, meta)
    emit(CheckpointSaved(step, path))


def _log(sess, state, epoch, step, clock, images, emit) -> None:
    loss, acc, _ = _read_sums(state)  # blocks until the step is done
    clock.stop(images)
    _check_finite(sess, state)
    sess.checkpoints.poll()  # a failed background save stops the run now, not at the next save
    emit(StepEnd(step, epoch + 1, sess.total_steps, loss, acc, float(sess.schedule(step - 1)), clock.images_per_second))
    clock.start()


def _run_epoch(sess, state, epoch, start_index, clock, saves, emit):
    """Train one epoch from ``start_index``; return the state and the next index.

    Stops early after a step when a signal asked to (the caller saves). Mid-epoch
    checkpoints (``saves``) record the position, so a resume takes the same batches.
    """
    perm = sess.permutation(epoch)
    log_every = sess.recipe.train.log_every or max(1, sess.steps_per_epoch // 10)
    step = int(host(state.step))
    index, images = start_index, 0  # images: trained since the clock last stopped
    clock.start()
    while index < sess.steps_per_epoch and step < sess.total_steps:
        state = sess.train_step(state, sess.x_train, sess.y_train, perm, sess.index_arg(index), sess.augment_key)
        index, step, images = index + 1, step + 1, images + sess.batch_size
        last = index == sess.steps_per_epoch or step == sess.total_steps
        if index % log_every == 0 or last:
            _log(sess, state, epoch, step, clock, images, emit)
            images = 0
        if sess.should_stop() or last:
            break
        if saves.due(step):  # not on the epoch's last step: the caller saves that one
            jax.block_until_ready(state.step)  # the dispatched steps' compute belongs to training time
            clock.stop(images)
            images = 0
            _save(sess, state, epoch, index, {}, emit)
            saves.reset()
            clock.start()
    jax.block_until_ready(state.step)
    clock.stop(images)
    return state, index


def _train_epoch(sess, state, epoch, index, clock, progress, saves, emit):
    """One epoch from ``index``, then its end: eval, metrics and checkpoint when due.

    The epoch-end checkpoint comes with each evaluated epoch (``train.eval_every``, by
    default every epoch) and the last, or when a periodic one falls due on this step.

    Returns:
        (state, stop): ``stop`` when early stopping says so.

    Raises:
        Interrupted: a signal arrived; the checkpoint is saved first.
    """
    if index == 0:
        state = state.replace(sums=sess.zero_sums())
    t_epoch = time.perf_counter()
    state, index = _run_epoch(sess, state, epoch, index, clock, saves, emit)
    step = int(host(state.step))
    if index < sess.steps_per_epoch and step < sess.total_steps:  # a signal stopped it mid-epoch
        _save(sess, state, epoch, index, {}, emit)
        sess.raise_interrupted()
    stale, evaluate = False, (epoch + 1) % sess.recipe.train.eval_every == 0 or step >= sess.total_steps
    if evaluate:
        record = _epoch_record(sess, state, epoch + 1, step, clock, time.perf_counter() - t_epoch)
        progress.history.append(record)
        if is_main_process():
            rundir.append_metrics(sess.workdir, record)
        emit(EpochEnd(record))
        stale = _track_best(progress, record)
    if evaluate or saves.due(step) or sess.should_stop():
        _save(sess, state, epoch + 1, 0, {"eval_accuracy": record["eval_accuracy"]} if evaluate else {}, emit)
        saves.reset()
    if sess.should_stop():
        sess.raise_interrupted()
    return state, stale and _patience_over(sess, progress)


def fit(
    recipe: Recipe,
    workdir: str | Path,
    *,
    recipe_text: str | None = None,
    recipe_suffix: str = ".toml",
    on_event: Callable[[Event], None] | None = None,
    allow_recipe_change: bool = False,
    resume_from: str | int | None = None,
) -> dict[str, Any]:
    """Train a recipe, writing a run directory.

    Args:
        recipe: the validated recipe.
        workdir: the run directory; an existing one with checkpoints is resumed.
        recipe_text: the recipe file's text, saved as given.
        recipe_suffix: ``.toml`` or ``.yaml``, for the saved copy.
        on_event: receives `ExtensionBuild` (only before a first oneDNN build),
            `RunStarted`, `Compiled`, `StepEnd`, `EpochEnd`, `CheckpointSaved`, `RunFinished`.
        allow_recipe_change: resume even if the recipe changed in a trajectory field.
        resume_from: ``latest`` or a step number: resume from that checkpoint, which
            must exist (newer ones are set aside). None: the newest, if any.

    Returns:
        The summary dict (also written to ``summary.json``).

    Raises:
        Interrupted: SIGINT/SIGTERM; the checkpoint was saved (exit code 130/143).
        CheckpointError: a save failed (path and reason), or a checkpoint to resume
            from is missing or damaged.
    """
    emit = on_event or (lambda event: None)
    sess = build_session(recipe, Path(workdir), recipe_text=recipe_text, recipe_suffix=recipe_suffix,
                         allow_recipe_change=allow_recipe_change, resume_from=resume_from, on_event=emit)  # fmt: skip
    try:
        summary = _fit(sess, emit)
    except BaseException as err:
        sess.close_after(err)
        raise
    sess.close()
    return summary


def _fit(sess: Session, emit) -> dict[str, Any]:
    state, epoch, index = sess.initial_state()
    emit(sess.started_event(state, epoch))
    if epoch < sess.epochs and int(host(state.step)) < sess.total_steps:  # else: already complete
        t0 = time.perf_counter()
        sess.compile(state)
        emit(Compiled(time.perf_counter() - t0))
    clock, progress = Clock(), _Progress(history=[r for r in rundir.read_metrics(sess.workdir) if "eval_accuracy" in r])
    for record in progress.history:
        _track_best(progress, record)
    cfg = sess.recipe.train
    saves = SaveTimer(cfg.checkpoint_every_steps, cfg.checkpoint_every_minutes and cfg.checkpoint_every_minutes * 60)
    stopped_early = False
    while epoch < sess.epochs and int(host(state.step)) < sess.total_steps and not stopped_early:
        state, stopped_early = _train_epoch(sess, state, epoch, index, clock, progress, saves, emit)
        epoch, index = epoch + 1, 0
    sess.checkpoints.wait()
    summary = _summary(sess, state, progress, clock, stopped_early)
    if is_main_process():
        rundir.write_json(sess.workdir / rundir.SUMMARY, summary)
        rundir.plot_curves(sess.workdir, progress.history)
    emit(RunFinished(summary))
    return summary


def _track_best(progress: _Progress, record: dict) -> bool:
    """Update the best-so-far; True when this epoch did not improve.

    A tie moves ``best_epoch`` to the later epoch, as ``--checkpoint best`` does (the
    newest of equally accurate checkpoints), but does not count as an improvement for
    early stopping.
    """
    acc = record["eval_accuracy"]
    if acc >= progress.best_accuracy:
        improved = acc > progress.best_accuracy
        progress.best_accuracy, progress.best_epoch = acc, record["epoch"]
        if improved:
            progress.epochs_without_gain = 0
            return False
    progress.epochs_without_gain += 1
    return True


def _patience_over(sess: Session, progress: _Progress) -> bool:
    patience = sess.recipe.train.early_stopping
    return patience is not None and progress.epochs_without_gain >= patience


def _summary(sess: Session, state, progress: _Progress, clock: Clock, stopped_early: bool) -> dict[str, Any]:
    last = progress.history[-1] if progress.history else {}
    summary = {
        "eval_accuracy": last.get("eval_accuracy"),
        "eval_loss": last.get("eval_loss"),
        "train_loss": last.get("train_loss"),
        "train_accuracy": last.get("train_accuracy"),
        "best_eval_accuracy": progress.best_accuracy if progress.history else None,
        "best_epoch": progress.best_epoch or None,
        "epochs": last.get("epoch", 0),
        "steps": int(host(state.step)),
        "train_seconds": clock.seconds,
        "compile_seconds": sess.compile_seconds,
        "images_per_second": clock.images_per_second if clock.images else None,  # None: no step ran here
        "stopped_early": stopped_early,
        "num_params": sess.num_params,
        "conv_backend": sess.conv_backend,
        "devices": len(sess.devices),
        "processes": jax.process_count(),
        "mesh": sess.placement.describe()["axes"],
        "workdir": str(sess.workdir),
        "resumed_from": sess.resumed_from(),
        "warnings": list(sess.warnings),
    }
    if "ema_eval_accuracy" in last:
        summary["ema_eval_accuracy"] = last["ema_eval_accuracy"]
    return summary


def steps_for(recipe: Recipe, num_train: int) -> tuple[int, int, int]:
    """(steps_per_epoch, total_steps, epochs) for a recipe and training-set size."""
    bs = recipe.data.batch_size
    if bs > num_train:
        raise DataError(
            f"data.batch_size = {bs} is larger than the training split ({num_train} examples)",
            hint=f"use --set data.batch_size={max(1, 2 ** int(math.log2(num_train)))} or smaller",
        )
    spe = num_train // bs  # drop the last partial batch: every step has the same shape
    if recipe.train.steps is not None:
        total = recipe.train.steps
        return spe, total, math.ceil(total / spe)
    return spe, spe * recipe.train.epochs, recipe.train.epochs


__all__ = ["fit", "steps_for", "evaluate_state", "ExtensionBuild", "RunStarted", "Compiled", "StepEnd", "EpochEnd",
           "CheckpointSaved", "RunFinished", "jnp"]  # fmt: skip
