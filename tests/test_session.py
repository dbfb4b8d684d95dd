"""Resuming, in process: bit-identical resumes, data position, signals, metrics, errors.

The reference is `straight_run`: RESUME_RECIPE trained 44 steps (2 epochs of 22) without
a break. Every resumed run must end with the same sha256 over all its arrays. The same
paths with real processes and `kill -9` are in test_cli_train_kill.py (slow).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
from collections import namedtuple

import jax
import pytest
from helpers import RESUME_RECIPE, state_digest, write_recipe

from cnncli.config.recipe import load_recipe
from cnncli.config.trajectory import trajectory_changes
from cnncli.errors import CheckpointError
from cnncli.runs import layout as rundir
from cnncli.runs.checkpoint import Checkpoints
from cnncli.train import loop
from cnncli.train.events import RunStarted, StepEnd
from cnncli.train.loop import fit
from cnncli.train.resume import fresh_state, initial_state, started_event
from cnncli.train.session import build_session
from cnncli.train.signals import Interrupted


class Crash(Exception):
    """Stands in for a crash at a given step (no signal, no save)."""


def train(tmp_path, workdir, *, at=None, do=None, overrides=(), resume_from=None):
    """Run RESUME_RECIPE in ``workdir``; at StepEnd ``at``, call ``do()``. Returns the events."""
    recipe = write_recipe(tmp_path, RESUME_RECIPE)
    events = []

    def on_event(event):
        events.append(event)
        if at is not None and isinstance(event, StepEnd) and event.step == at:
            do()

    fit(load_recipe(recipe, list(overrides)), workdir, recipe_text=recipe.read_text(), on_event=on_event,
        resume_from=resume_from)  # fmt: skip
    return events


def crash():
    raise Crash


def epochs_of(workdir):
    return [(r["epoch"], r["step"]) for r in rundir.read_metrics(workdir)]


@pytest.fixture(scope="module")
def crashed_at_35(tmp_path_factory):
    """A run that crashed at step 35, mid-epoch 2; its newest checkpoint is step 30 (read-only)."""
    tmp = tmp_path_factory.mktemp("crashed")
    with pytest.raises(Crash):
        train(tmp, tmp / "run", at=35, do=crash)
    return tmp / "run"


def copy_run(src, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    return dst


def test_mid_epoch_resume_is_bit_identical_and_continues_the_same_permutation(crashed_at_35, straight_run, tmp_path):
    run = copy_run(crashed_at_35, tmp_path)
    store = Checkpoints(run / rundir.CHECKPOINTS, async_save=False)
    assert store.latest() == 30 and store.read_meta(30)["epoch"] == 1 and store.read_meta(30)["index"] == 8
    store.close()
    assert state_digest(run, 30) == state_digest(straight_run, 30)
    events = train(tmp_path, run)
    started = events[0]
    assert (started.resumed_step, started.resumed_epoch, started.resumed_index) == (30, 1, 8)
    assert [e.step for e in events if isinstance(e, StepEnd)] == list(range(31, 45))
    assert state_digest(run) == state_digest(straight_run)
    assert epochs_of(run) == epochs_of(straight_run) == [(1, 22), (2, 44)]


def test_epoch_boundary_resume_runs_every_remaining_step(straight_run, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(Crash):
        train(tmp_path, run, at=25, do=crash, overrides=["train.checkpoint_every_steps=100"])
    events = train(tmp_path, run)
    assert (events[0].resumed_step, events[0].resumed_epoch, events[0].resumed_index) == (22, 1, 0)
    assert [e.step for e in events if isinstance(e, StepEnd)] == list(range(23, 45))
    assert state_digest(run) == state_digest(straight_run)
    assert epochs_of(run) == [(1, 22), (2, 44)]


@pytest.mark.parametrize("drop", ["optimizer state", "data position"])
def test_negative_control_a_resume_that_loses_state_differs(crashed_at_35, straight_run, tmp_path, monkeypatch, drop):
    original = loop.initial_state

    def lossy(sess, **options):
        start = original(sess, **options)
        if drop == "optimizer state":
            return dataclasses.replace(start, state=start.state.replace(opt=sess.blueprint.tx.init(start.state.params)))
        return dataclasses.replace(start, index=0)  # restart the epoch's permutation instead of batch 8

    monkeypatch.setattr(loop, "initial_state", lossy)
    run = copy_run(crashed_at_35, tmp_path)
    train(tmp_path, run)
    assert state_digest(run) != state_digest(straight_run)


def test_sigint_saves_at_the_interrupted_step_and_resumes_bit_identical(straight_run, tmp_path):
    run = tmp_path / "run"
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when the suite runs as a background job
    with pytest.raises(Interrupted) as info:
        train(tmp_path, run, at=13, do=lambda: os.kill(os.getpid(), signal.SIGINT))
    assert info.value.exit_code == 130
    assert f"stopped after step 13; checkpoint saved in {run.resolve() / 'checkpoints' / '13'}" in info.value.message
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored
    store = Checkpoints(run / rundir.CHECKPOINTS, async_save=False)
    assert store.latest() == 13 and (store.read_meta(13)["epoch"], store.read_meta(13)["index"]) == (0, 13)
    store.close()
    train(tmp_path, run)
    assert state_digest(run) == state_digest(straight_run)
    assert epochs_of(run) == [(1, 22), (2, 44)]


def test_sigterm_at_an_epoch_end_finishes_the_epoch_then_exits_143(tmp_path):
    run = tmp_path / "run"
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as info:
        train(tmp_path, run, at=22, do=lambda: os.kill(os.getpid(), signal.SIGTERM))
    assert info.value.exit_code == 143 and "SIGTERM: stopped after step 22" in info.value.message
    assert epochs_of(run) == [(1, 22)]
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_second_sigint_aborts_at_once(tmp_path):
    def twice():
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when the suite runs as a background job
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path, tmp_path / "run", at=5, do=twice)
    assert signal.getsignal(signal.SIGINT) is before


def test_metrics_past_the_checkpoint_and_a_truncated_last_line_are_dropped(crashed_at_35, straight_run, tmp_path):
    run = copy_run(crashed_at_35, tmp_path)
    with open(run / rundir.METRICS, "a") as f:  # what a run killed after step 30 may have left
        f.write(json.dumps({"epoch": 2, "step": 40, "eval_accuracy": 0.5}) + "\n")
        f.write('{"epoch": 2, "step": 4')  # killed in the middle of a line
    assert epochs_of(run) == [(1, 22), (2, 40)]  # the reader skips the broken line
    train(tmp_path, run)
    assert epochs_of(run) == [(1, 22), (2, 44)]
    lines = (run / rundir.METRICS).read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(line) for line in lines)


def test_resume_from_an_older_step_sets_the_newer_ones_aside(crashed_at_35, straight_run, tmp_path):
    run = copy_run(crashed_at_35, tmp_path)
    events = train(tmp_path, run, resume_from=20)
    started = events[0]
    assert started.resumed_step == 20 and any("moved the newer checkpoints [22, 30]" in w for w in started.warnings)
    assert sorted(p.name for p in (run / "checkpoints" / "superseded").glob("*/*")) == ["22", "30"]
    assert state_digest(run) == state_digest(straight_run)


def test_a_missing_explicit_checkpoint_is_an_error_never_a_fresh_start(crashed_at_35, tmp_path):
    with pytest.raises(CheckpointError, match=r"(?s)no checkpoint at step 7 .*committed steps: \[10, 20, 22, 30\]"):
        train(tmp_path, copy_run(crashed_at_35, tmp_path), resume_from=7)
    with pytest.raises(CheckpointError, match="--resume-from latest: no committed checkpoint in"):
        train(tmp_path, tmp_path / "new", resume_from="latest")
    assert not (tmp_path / "new").exists()  # nothing written for a failed resume


def test_a_damaged_newest_checkpoint_is_an_error_naming_the_file(crashed_at_35, tmp_path):
    run = copy_run(crashed_at_35, tmp_path)
    data = max((run / "checkpoints" / "30").rglob("d/*"), key=lambda p: p.stat().st_size)
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    data.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError) as info:
        train(tmp_path, run)
    assert f"damaged: {data.resolve()}: contents changed" in info.value.message
    assert "--resume-from 22" in info.value.hint


def test_restored_state_has_the_fresh_state_types_so_nothing_recompiles(crashed_at_35, tmp_path):
    recipe = load_recipe(write_recipe(tmp_path, RESUME_RECIPE), ["train.fsync=true"])  # not a trajectory field
    sess = build_session(recipe, copy_run(crashed_at_35, tmp_path))
    assert sess.checkpoints.fsync
    try:
        start = initial_state(sess)
        fresh = fresh_state(sess)
        aval = lambda x: (x.shape, x.dtype, getattr(x, "weak_type", False))  # noqa: E731
        assert jax.tree.map(aval, start.state) == jax.tree.map(aval, fresh)
        assert (int(start.state.step), start.epoch, start.index) == (30, 1, 8)
    finally:
        sess.checkpoints.close()


def test_started_event_warns_about_leftovers_and_disk_space(crashed_at_35, tmp_path, monkeypatch):
    run = copy_run(crashed_at_35, tmp_path)
    (run / "checkpoints" / "40.orbax-checkpoint-tmp" / "state").mkdir(parents=True)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    sess = build_session(load_recipe(write_recipe(tmp_path, RESUME_RECIPE)), run)
    try:
        started = started_event(sess, initial_state(sess))
    finally:
        sess.checkpoints.close()
    assert isinstance(started, RunStarted)
    assert any("40.orbax-checkpoint-tmp: an unfinished save" in w for w in started.warnings)
    assert any("but only 0.0 MB are free" in w for w in started.warnings)


def test_only_trajectory_fields_refuse_a_resume_and_change_the_digest(tmp_path):
    """One definition: the resume refusal and the checkpoints' recipe digest see the same fields."""
    path = write_recipe(tmp_path, RESUME_RECIPE)
    base = load_recipe(path)
    kept = load_recipe(path, ["train.fsync=true", "train.log_every=5", "train.keep=3", "train.eval_every=2",
                              "train.early_stopping=2", "train.checkpoint_every_minutes=5", 'train.conv_backend="xla"'])  # fmt: skip
    changed = load_recipe(path, ["train.label_smoothing=0.1", "data.batch_size=32"])
    assert trajectory_changes(base.to_dict(), kept.to_dict()) == [] and base.digest() == kept.digest()
    assert trajectory_changes(base.to_dict(), changed.to_dict()) == ["  data.batch_size: 64 -> 32",
                                                                     "  train.label_smoothing: 0.0 -> 0.1"]  # fmt: skip
    assert changed.digest() != base.digest()
