"""The training loop: recipe in, run directory out, typed events on the way.

`fit` never prints. It reports through ``on_event`` with the dataclasses of
`cnncli.train.events`; `cnncli.report.train` turns them into a rich progress display
or JSON lines.

The pieces: `build_session` assembles the run (frozen), `initial_state` picks the
start (fresh or resumed), `compile_program` compiles the step once, and the loop
below advances a `LoopState` epoch by epoch under `StopSignals`. One seed drives
every random stream (`cnncli.train.streams`), so the same recipe and seed on the same
machine give the same numbers, resumed or not.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

from cnncli.config.recipe import Recipe
from cnncli.errors import CheckpointError, CnnCliError, TrainingError
from cnncli.runs import layout as rundir
from cnncli.runtime.distributed import host, is_main_process
from cnncli.train.attempt import Attempt
from cnncli.train.board import Board
from cnncli.train.clock import SaveTimer
from cnncli.train.events import CheckpointSaved, Compiled, EpochEnd, Event, RunFinished, StepEnd
from cnncli.train.program import Program
from cnncli.train.resume import Start, initial_state, started_event
from cnncli.train.session import Session, build_session, compile_program, eval_batches
from cnncli.train.signals import StopSignals
from cnncli.train.state import LoopState, Progress
from cnncli.train.step import zero_sums


@dataclass(frozen=True)
class _Run:
    """What every part of the loop reads; none of it changes while training."""

    sess: Session
    program: Program
    signals: StopSignals
    emit: Callable[[Event], None]  # the caller's ``on_event``, TensorBoard first (`Board.listening`)
    board: Board


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


def evaluate_state(sess: Session, program: Program, state, *, use_ema: bool = False) -> tuple[float, float]:
    """Mean loss and accuracy of ``state`` on the session's eval split."""
    params = state.ema if use_ema else state.params
    totals = np.zeros(3)
    for x, y, mask in eval_batches(sess):
        totals += np.array(host(program.eval_step(params, state.rest, x, y, mask)), dtype=np.float64)
    return float(totals[0] / max(totals[2], 1)), float(totals[1] / max(totals[2], 1))


def _epoch_record(run: _Run, loop: LoopState, epoch: int, step: int, epoch_seconds: float) -> dict[str, Any]:
    sess, state = run.sess, loop.state
    train_loss, train_acc, _ = _read_sums(state)
    eval_loss, eval_acc = evaluate_state(sess, run.program, state)
    record = {
        "epoch": epoch,
        "step": step,
        "train_loss": train_loss,
        "train_accuracy": train_acc,
        "eval_loss": eval_loss,
        "eval_accuracy": eval_acc,
        "learning_rate": float(sess.schedule(max(step - 1, 0))),
        "epoch_seconds": epoch_seconds,
        "images_per_second": loop.clock.images_per_second,
    }
    if sess.recipe.train.ema_decay is not None:
        record["ema_eval_loss"], record["ema_eval_accuracy"] = evaluate_state(sess, run.program, state, use_ema=True)
    return record


def _save(run: _Run, state, epoch: int, index: int, metrics: dict) -> None:
    """Checkpoint ``state`` at data position (epoch, index): the next batch a resume trains on."""
    sess = run.sess
    step = int(host(state.step))
    if not is_main_process():  # process 0 writes checkpoints (the state is replicated)
        return
    if step in sess.checkpoints.steps():  # already committed (e.g. resumed here): same state, same step
        return
    run.board.before_save()  # TensorBoard events up to this step are written out before the checkpoint commits
    meta = {
        "epoch": epoch,
        "index": index,
        "steps_per_epoch": sess.steps.per_epoch,
        "metrics": metrics,
        "recipe_digest": sess.recipe.digest(),
        "ema": sess.recipe.train.ema_decay is not None,
        "versions": sess.env["versions"],
        "rng": sess.streams.describe(),  # the random streams are not stored: they derive from the seed
        "pipeline": _pipeline_position(sess, epoch, index),
    }
    path = sess.checkpoints.save(step, state, meta)
    run.emit(CheckpointSaved(step, path))


def _pipeline_position(sess: Session, epoch: int, index: int) -> dict[str, Any]:
    """Where the data stands: the batches are a function of (seed, epoch, index) and the training-set size."""
    position = {"kind": sess.pipeline.kind if sess.pipeline else "memory", "epoch": epoch, "index": index,
                "num_train": int(sess.data.train.x.shape[0])}  # fmt: skip
    if sess.stream is not None:
        position["skipped"] = len(sess.stream.bad.indices)
    return position


def _step_args(sess: Session, epoch: int, index: int) -> Iterator[tuple]:
    """The train step's arguments after the state, for steps ``index ..`` of ``epoch``: in memory or streamed."""
    if sess.stream is not None:
        return sess.stream.epoch(epoch, index)
    feed = sess.feed
    perm = feed.permutation(epoch)
    return (feed.args(perm, i) for i in itertools.count(index))


def _interrupt(run: _Run) -> None:
    """Wait for the checkpoint just saved, then raise `Interrupted` (exit 130 or 143)."""
    store = run.sess.checkpoints
    store.wait()
    step = store.latest()
    raise run.signals.interrupted(step, store.directory / str(step), run.sess.workdir)


def _log(run: _Run, loop: LoopState, state, step: int, images: int) -> None:
    sess = run.sess
    loss, acc, _ = _read_sums(state)  # blocks until the step is done
    loop.clock.stop(images)
    _check_finite(sess, state)
    sess.checkpoints.poll()  # a failed background save stops the run now, not at the next save
    lr = float(sess.schedule(step - 1))
    run.emit(StepEnd(step, loop.epoch + 1, sess.steps.total, loss, acc, lr, loop.clock.images_per_second))
    loop.clock.start()


def _run_epoch(run: _Run, loop: LoopState) -> None:
    """Train the epoch ``loop.epoch`` from ``loop.index``; leave the state and the next index in ``loop``.

    Stops early after a step when a signal asked to (the caller saves). Mid-epoch
    checkpoints (``loop.saves``) record the position, so a resume takes the same batches.
    """
    sess, clock = run.sess, loop.clock
    state, index = loop.state, loop.index
    step, images = int(host(state.step)), 0  # images: trained since the clock last stopped
    clock.start()
    with contextlib.closing(_step_args(sess, loop.epoch, index)) as args:  # closing stops the stream's workers
        state, index, images = _steps(run, loop, args, state, index, step, images)
    jax.block_until_ready(state.step)
    clock.stop(images)
    loop.state, loop.index = state, index


def _steps(run: _Run, loop: LoopState, args: Iterator[tuple], state, index: int, step: int, images: int):
    """The body of `_run_epoch`: (state, next index, images since the clock last stopped)."""
    sess, train_step, clock = run.sess, run.program.train_step, loop.clock
    spe, total, batch_size = sess.steps.per_epoch, sess.steps.total, sess.recipe.data.batch_size
    log_every = sess.recipe.train.log_every or max(1, spe // 10)
    while index < spe and step < total:
        state = train_step(state, *next(args))
        index, step, images = index + 1, step + 1, images + batch_size
        last = index == spe or step == total
        if index % log_every == 0 or last:
            _log(run, loop, state, step, images)
            images = 0
        if run.signals.requested or last:
            break
        if loop.saves.due(step):  # not on the epoch's last step: the caller saves that one
            jax.block_until_ready(state.step)  # the dispatched steps' compute belongs to training time
            clock.stop(images)
            images = 0
            _save(run, state, loop.epoch, index, {})
            loop.saves.reset()
            clock.start()
    return state, index, images


def _train_epoch(run: _Run, loop: LoopState) -> None:
    """One epoch from ``loop.index``, then its end: eval, metrics and checkpoint when due.

    The epoch-end checkpoint comes with each evaluated epoch (``train.eval_every``, by
    default every epoch) and the last, or when a periodic one falls due on this step.
    Sets ``loop.stopped_early`` when early stopping says so.

    Raises:
        Interrupted: a signal arrived; the checkpoint is saved first.
    """
    sess, epoch, cfg = run.sess, loop.epoch, run.sess.recipe.train
    if loop.index == 0:
        loop.state = loop.state.replace(sums=zero_sums())
    t_epoch = time.perf_counter()
    _run_epoch(run, loop)
    step = int(host(loop.state.step))
    if loop.index < sess.steps.per_epoch and step < sess.steps.total:  # a signal stopped it mid-epoch
        _save(run, loop.state, epoch, loop.index, {})
        _interrupt(run)
    stale, evaluate = False, (epoch + 1) % cfg.eval_every == 0 or step >= sess.steps.total
    if evaluate:
        record = _epoch_record(run, loop, epoch + 1, step, time.perf_counter() - t_epoch)
        loop.progress.history.append(record)
        if is_main_process():
            rundir.append_metrics(sess.workdir, record)
        run.emit(EpochEnd(record))
        run.board.epoch_images(loop.state, step)
        stale = loop.progress.track(record)
    if evaluate or loop.saves.due(step) or run.signals.requested:
        _save(run, loop.state, epoch + 1, 0, {"eval_accuracy": record["eval_accuracy"]} if evaluate else {})
        loop.saves.reset()
    if run.signals.requested:
        _interrupt(run)
    loop.stopped_early = stale and loop.progress.patience_over(cfg.early_stopping)


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
            `RunStarted`, `Compiled`, `StepEnd`, `EpochEnd`, `CheckpointSaved`, `RunFinished`
            (`cnncli.train.events`).
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
                         resume_from=resume_from, on_event=emit)  # fmt: skip
    with Attempt(sess.workdir, enabled=is_main_process()) as attempt:  # process.json; failure.json on an error
        try:
            with StopSignals() as signals:  # handlers restored on the way out, before the last save is awaited
                summary = _fit(sess, signals, attempt.watch(emit), resume_from, allow_recipe_change)
        except BaseException as err:
            _close_after(sess, err)
            raise
        sess.checkpoints.close()  # waits for the last save; raises its failure
    return summary


def _close_after(sess: Session, error: BaseException) -> None:
    """Close while ``error`` propagates: never mask it, never lose a save failure either.

    A second Ctrl-C (`KeyboardInterrupt`) does not wait for a background save; the
    uncommitted directory it leaves is ignored and reported by the next run.
    """
    if isinstance(error, KeyboardInterrupt):
        sess.checkpoints.abandon()
        return
    try:
        sess.checkpoints.close()
    except CheckpointError as failure:
        if failure is error:
            return
        if isinstance(error, CnnCliError):
            error.message += f"\nalso: {failure.message}"
        else:
            error.add_note(f"also: {failure.message}")


def _work_left(sess: Session, epoch: int, state) -> bool:
    return epoch < sess.steps.epochs and int(host(state.step)) < sess.steps.total


def _fit(sess: Session, signals: StopSignals, emit, resume_from, allow_recipe_change: bool) -> dict[str, Any]:
    start = initial_state(sess, resume_from=resume_from, allow_recipe_change=allow_recipe_change)
    emit(started_event(sess, start))
    program = None  # a finished run compiles nothing
    if _work_left(sess, start.epoch, start.state):
        program = compile_program(sess, start.state, start.shardings)
        emit(Compiled(program.compile_seconds))
    board = Board(sess, start, emit, active=program is not None)  # TensorBoard: tb/, when this invocation trains
    try:
        return _train(sess, start, _Run(sess, program, signals, board.listening(emit), board))
    finally:
        board.close()  # flushes what a crash or a signal left behind (a resume purges it past its checkpoint)
        if sess.stream is not None:
            sess.stream.close()  # stops an epoch read ahead that will not train


def _train(sess: Session, start: Start, run: _Run) -> dict[str, Any]:
    cfg, program = sess.recipe.train, run.program
    saves = SaveTimer(cfg.checkpoint_every_steps, cfg.checkpoint_every_minutes and cfg.checkpoint_every_minutes * 60)
    loop = LoopState(start.state, start.epoch, start.index, Progress.replay(rundir.read_metrics(sess.workdir)), saves)
    while _work_left(sess, loop.epoch, loop.state) and not loop.stopped_early:
        _train_epoch(run, loop)
        loop.epoch, loop.index = loop.epoch + 1, 0
    sess.checkpoints.wait()
    summary = _summary(sess, start, loop, program.compile_seconds if program else 0.0)
    summary["warnings"] += run.board.warnings
    if sess.stream is not None and (skipped := sess.stream.bad.warning()):
        summary["warnings"].append(skipped)
    if is_main_process():
        rundir.write_json(sess.workdir / rundir.SUMMARY, summary)
        rundir.plot_curves(sess.workdir, loop.progress.history)
    run.emit(RunFinished(summary))
    return summary


def _summary(sess: Session, start: Start, loop: LoopState, compile_seconds: float) -> dict[str, Any]:
    last = loop.progress.history[-1] if loop.progress.history else {}
    progress, clock = loop.progress, loop.clock
    summary = {
        "eval_accuracy": last.get("eval_accuracy"),
        "eval_loss": last.get("eval_loss"),
        "train_loss": last.get("train_loss"),
        "train_accuracy": last.get("train_accuracy"),
        "best_eval_accuracy": progress.best_accuracy if progress.history else None,
        "best_epoch": progress.best_epoch or None,
        "epochs": last.get("epoch", 0),
        "steps": int(host(loop.state.step)),
        "train_seconds": clock.seconds,
        "compile_seconds": compile_seconds,
        "images_per_second": clock.images_per_second if clock.images else None,  # None: no step ran here
        "stopped_early": loop.stopped_early,
        "num_params": sess.blueprint.parts.num_params,
        "conv_backend": sess.conv_backend,
        "conv_backend_note": sess.env.get("conv_backend_note"),  # why auto (the default) chose it; None if asked
        "devices": len(sess.devices),
        "processes": jax.process_count(),
        "mesh": sess.placement.describe()["axes"],
        "data_pipeline": sess.pipeline.to_dict() if sess.pipeline else None,
        "workdir": str(sess.workdir),
        "resumed_from": start.resumed._asdict() if start.resumed else None,
        "warnings": list(sess.warnings + start.warnings),
    }
    if "ema_eval_accuracy" in last:
        summary["ema_eval_accuracy"] = last["ema_eval_accuracy"]
    return summary
