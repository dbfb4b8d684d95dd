"""TensorBoard event files (``<run>/tb/``): tags against metrics.jsonl, hparams, images, resume, failures.

Read back with TensorBoard's own `EventAccumulator` (it applies TensorBoard's purge of
events past a restart, as the dashboard does), on real runs of the tiny digits recipes.
"""

from __future__ import annotations

import errno
import io
import json
import math
import os
import shutil
import signal
import subprocess
import sys

import pytest
from helpers import RESUME_RECIPE, TINY_RECIPE, write_recipe
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer
from tensorboard.plugins.hparams import metadata as hparams_metadata

from cnncli.config.recipe import load_recipe
from cnncli.config.trajectory import trajectory_changes
from cnncli.runs import layout as rundir
from cnncli.runs import tensorboard as tb
from cnncli.runs.checkpoint_fs import FAULT_ENV
from cnncli.train import board as board_module
from cnncli.train.board import Board
from cnncli.train.events import RunWarning, StepEnd
from cnncli.train.loop import fit
from cnncli.train.resume import initial_state
from cnncli.train.session import build_session

TRAIN_TAGS = ("train/loss", "train/accuracy", "train/learning_rate", "train/images_per_second")


class Crash(Exception):
    """Stands in for a crash at a given step (no signal, no save)."""


def train(tmp_path, workdir, text=TINY_RECIPE, overrides=(), *, crash_at=None, resume_from=None):
    """Train ``text`` in ``workdir``; returns (events, summary); raises `Crash` after StepEnd ``crash_at``."""
    recipe = write_recipe(tmp_path, text)
    events = []

    def on_event(event):
        events.append(event)
        if crash_at is not None and isinstance(event, StepEnd) and event.step == crash_at:
            raise Crash

    summary = fit(load_recipe(recipe, list(overrides)), workdir, recipe_text=recipe.read_text(), on_event=on_event,
                  resume_from=resume_from)  # fmt: skip
    return events, summary


def read_tb(workdir) -> EventAccumulator:
    acc = EventAccumulator(str(workdir / rundir.TB), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    return acc.Reload()


def steps(acc, tag) -> list[int]:
    return [e.step for e in acc.Scalars(tag)]


def values(acc, tag) -> dict[int, float]:
    return {e.step: e.value for e in acc.Scalars(tag)}


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-7)  # TensorBoard stores scalars as float32


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """TINY_RECIPE with an EMA and ``tb_images``: (run directory, events, summary); read-only."""
    tmp = tmp_path_factory.mktemp("tb")
    events, summary = train(tmp, tmp / "run", overrides=["train.ema_decay=0.9", "train.tb_images=true"])
    return tmp / "run", events, summary


def test_step_scalars_are_the_logged_steps_and_epoch_scalars_the_metrics(logged):
    run, events, _ = logged
    acc = read_tb(run)
    logged_steps = [e for e in events if isinstance(e, StepEnd)]
    for tag, field in zip(TRAIN_TAGS, ("loss", "accuracy", "learning_rate", "images_per_second")):
        assert steps(acc, tag) == [e.step for e in logged_steps], tag
        assert all(close(values(acc, tag)[e.step], getattr(e, field)) for e in logged_steps), tag
    records = rundir.read_metrics(run)
    assert [r["step"] for r in records] == [22, 44]
    for key, tag in (("eval_loss", "eval/loss"), ("eval_accuracy", "eval/accuracy"),
                     ("ema_eval_loss", "eval/ema_loss"), ("ema_eval_accuracy", "eval/ema_accuracy")):  # fmt: skip
        assert steps(acc, tag) == [22, 44], tag
        assert all(close(values(acc, tag)[r["step"]], r[key]) for r in records), tag
    for r in records:  # an epoch's last step is always logged: the epoch means of metrics.jsonl
        assert close(values(acc, "train/loss")[r["step"]], r["train_loss"])
        assert close(values(acc, "train/accuracy")[r["step"]], r["train_accuracy"])


def test_hparams_are_the_flattened_recipe_with_the_final_metrics(logged):
    run, _, summary = logged
    acc = read_tb(run)
    content = acc.PluginTagToContent("hparams")
    start = hparams_metadata.parse_session_start_info_plugin_data(content[hparams_metadata.SESSION_START_INFO_TAG])
    assert hparams_metadata.SESSION_END_INFO_TAG in content  # the run finished
    hparams = {name: value.WhichOneof("kind") and getattr(value, value.WhichOneof("kind"))
               for name, value in start.hparams.items()}  # fmt: skip
    recipe = json.loads((run / rundir.RECIPE_JSON).read_text())
    assert hparams == tb.flatten_hparams(recipe)  # numbers come back as doubles: 64 == 64.0
    assert hparams["model.layers"] == " ".join(recipe["model"]["layers"])
    assert hparams["train.ema_decay"] == 0.9 and hparams["train.tb_images"] is True
    assert hparams["train.steps"] == "null"  # None, as recipe.json writes it
    for key in ("eval_accuracy", "eval_loss", "train_loss", "best_eval_accuracy", "ema_eval_accuracy"):
        assert [(e.step, e.value) for e in acc.Scalars(f"final/{key}")] == [(44, pytest.approx(summary[key]))], key


def test_tb_images_logs_the_first_filters_and_the_confusion_matrix_each_evaluated_epoch(logged):
    acc = read_tb(logged[0])
    for tag in ("images/filters", "images/confusion"):
        images = acc.Images(tag)
        assert [i.step for i in images] == [22, 44], tag
        assert all(i.encoded_image_string.startswith(b"\x89PNG") and i.width > 100 for i in images), tag


def test_one_hparams_row_per_run_under_a_runs_folder(logged, tmp_path):
    """``tensorboard --logdir runs``: each run's tb/ is one TensorBoard run with its own session."""
    root = tmp_path / "runs"
    for name in ("a", "b"):
        shutil.copytree(logged[0] / rundir.TB, root / name / rundir.TB)
    mux = EventMultiplexer().AddRunsFromDirectory(str(root))
    mux.Reload()
    assert sorted(mux.Runs()) == ["a/tb", "b/tb"]
    sessions = mux.PluginRunToTagToContent("hparams")
    assert all(hparams_metadata.SESSION_START_INFO_TAG in sessions[r] for r in ("a/tb", "b/tb"))


def test_a_resume_continues_every_curve_without_a_step_twice_or_missing(tmp_path):
    """Crash at 35 (newest checkpoint 30), resume; then resume the finished run from step 20."""
    run = tmp_path / "run"
    with pytest.raises(Crash):
        train(tmp_path, run, RESUME_RECIPE, crash_at=35)
    events, _ = train(tmp_path, run, RESUME_RECIPE)
    assert events[0].resumed_step == 30
    assert len(list((run / rundir.TB).iterdir())) == 2  # one events file per invocation

    def check(acc):
        for tag in TRAIN_TAGS:
            assert steps(acc, tag) == list(range(1, 45)), tag  # log_every = 1: every step, once, in order
        assert steps(acc, "eval/accuracy") == [22, 44]
        assert steps(acc, "final/eval_accuracy") == [44]

    acc = read_tb(run)
    check(acc)
    first = values(acc, "train/loss")
    events, summary = train(tmp_path, run, RESUME_RECIPE, resume_from=20)  # logged up to 44: 21..44 purged
    acc = read_tb(run)
    check(acc)
    assert values(acc, "train/loss") == pytest.approx(first)  # the same trajectory, logged again once
    assert values(acc, "final/eval_accuracy") == {44: pytest.approx(summary["eval_accuracy"])}
    train(tmp_path, run, RESUME_RECIPE)  # finished: nothing to train, nothing logged
    assert len(list((run / rundir.TB).iterdir())) == 3


def test_off_or_not_process_0_writes_no_tb(tmp_path, monkeypatch):
    recipe_path = write_recipe(tmp_path, TINY_RECIPE)
    sess = build_session(
        load_recipe(recipe_path, ["train.tensorboard=false", "train.tb_images=true"]), tmp_path / "off"
    )
    try:
        board = Board(sess, initial_state(sess), lambda event: None)
        assert board.log is None and board.images is None
    finally:
        sess.checkpoints.close()
    monkeypatch.setattr(board_module, "is_main_process", lambda: False)
    sess = build_session(load_recipe(recipe_path), tmp_path / "other")
    try:

        def emit(event):
            pass

        board = Board(sess, initial_state(sess), emit)
        assert board.log is None and board.listening(emit) is emit
    finally:
        sess.checkpoints.close()
    assert not (tmp_path / "off" / rundir.TB).exists() and not (tmp_path / "other" / rundir.TB).exists()


def test_train_tensorboard_false_trains_without_tb(tmp_path):
    _, summary = train(tmp_path, tmp_path / "run", overrides=["train.tensorboard=false", "train.epochs=1"])
    assert summary["steps"] == 22 and not (tmp_path / "run" / rundir.TB).exists()


def test_a_full_disk_warns_once_and_training_goes_on(tmp_path, monkeypatch):
    writes = []

    class FullDisk(io.BytesIO):
        """An events file on a disk that fills up at the sixth record."""

        def write(self, data):
            writes.append(len(data))
            if len(writes) > 5:
                raise OSError(errno.ENOSPC, "No space left on device")
            return super().write(data)

    monkeypatch.setattr(tb, "open", lambda path, mode: FullDisk(), raising=False)
    events, summary = train(tmp_path, tmp_path / "run")
    warnings = [e.message for e in events if isinstance(e, RunWarning)]
    assert len(warnings) == 1 and "No space left on device" in warnings[0] and "training goes on" in warnings[0]
    assert summary["warnings"] == warnings and summary["steps"] == 44
    assert len(writes) == 6  # nothing written after the failure


def test_an_unwritable_tb_folder_is_one_failure_message(tmp_path):
    (tmp_path / rundir.TB).write_text("not a folder")  # root ignores permission bits: a file blocks the folder
    failures = []
    log = tb.EventLog(tmp_path, 1, failures.append)
    log.scalars(1, {"train/loss": 1.0})
    log.flush()
    log.close()
    assert log.failed and len(failures) == 1 and str(tmp_path / rundir.TB) in failures[0]


def test_event_files_of_one_second_keep_their_order(tmp_path):
    for first in (1, 11):
        log = tb.EventLog(tmp_path, first, lambda message: pytest.fail(message))
        log.scalars(first, {"x": float(first)})
        log.close()
    names = sorted(p.name for p in (tmp_path / rundir.TB).iterdir())
    assert [n[-4:] for n in names] == [".000", ".001"]


def test_flatten_hparams():
    flat = tb.flatten_hparams({"model": {"layers": ["conv:c=8", "relu"], "arch": None},
                               "schedule": {"milestones": [30, 60], "name": "step"},
                               "train": {"freeze": [], "mesh": {"model": 1}, "fsync": False}})  # fmt: skip
    assert flat == {"model.layers": "conv:c=8 relu", "model.arch": "null", "schedule.milestones": "[30,60]", "schedule.name": "step",
                    "train.freeze": "[]", "train.mesh.model": 1, "train.fsync": False}  # fmt: skip


def test_tensorboard_settings_are_not_trajectory_fields(tmp_path):
    path = write_recipe(tmp_path, TINY_RECIPE)
    base, other = load_recipe(path), load_recipe(path, ["train.tensorboard=false", "train.tb_images=true"])
    assert trajectory_changes(base.to_dict(), other.to_dict()) == [] and base.digest() == other.digest()


@pytest.mark.slow
def test_kill_9_after_a_checkpoint_loses_no_logged_step(tmp_path):
    """A real `kill -9` right after checkpoint 20 commits: steps 11..20 were flushed before it, 21.. are logged again."""
    recipe = write_recipe(tmp_path, RESUME_RECIPE)
    command = [sys.executable, "-m", "cnncli.cli.app", "train", str(recipe), "--workdir", str(tmp_path / "w"), "--json"]
    fault = os.environ | {FAULT_ENV: "after_commit@20"}
    killed = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300, env=fault)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout.splitlines()[-1])["resumed_from"]["step"] == 20
    acc = read_tb(tmp_path / "w")
    for tag in TRAIN_TAGS:
        assert steps(acc, tag) == list(range(1, 45)), tag
    assert steps(acc, "eval/accuracy") == [22, 44]


def test_reporters_show_a_run_warning_on_stderr(capsys):
    from cnncli.report.train import JsonReporter, RichReporter

    JsonReporter()(RunWarning("TensorBoard logging stopped: disk full"))
    RichReporter()(RunWarning("TensorBoard logging stopped: again"))
    out, err = capsys.readouterr()
    assert out == "" and "warning: TensorBoard logging stopped: disk full" in err and "again" in err
