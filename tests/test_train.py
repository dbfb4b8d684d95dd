"""Training end to end on real (tiny) data: learning, determinism, no recompiles, NaN stop."""

from __future__ import annotations

import json
import logging

import jax
import numpy as np
import pytest
from helpers import TINY_RECIPE, write_recipe

from cnncli.config import plan
from cnncli.config.recipe import load_recipe
from cnncli.errors import DataError, RecipeError, TrainingError
from cnncli.runs import layout as rundir
from cnncli.runs.checkpoint import Checkpoints
from cnncli.train.events import (
    CheckpointSaved,
    Compiled,
    EpochEnd,
    RunFinished,
    RunStarted,
    StepEnd,
)
from cnncli.train.loop import fit


def run(tmp_path, overrides=(), text=TINY_RECIPE, name="run"):
    recipe = write_recipe(tmp_path, text)
    events = []
    summary = fit(load_recipe(recipe, list(overrides)), tmp_path / name, recipe_text=recipe.read_text(),
                  on_event=events.append)  # fmt: skip
    return summary, events


def test_trained_run_learns_and_leaves_a_complete_run_directory(trained_run):
    summary = json.loads((trained_run / rundir.SUMMARY).read_text())
    assert summary["eval_accuracy"] > 0.3  # 10 classes: chance is 0.1; 2 epochs of a tiny model
    assert summary["steps"] == 2 * (1438 // 64) and summary["epochs"] == 2
    for name in ("recipe.toml", "recipe.json", "data.json", "env.json", "metrics.jsonl", "curves.png", "init.npz"):
        assert (trained_run / name).exists(), name
    records = rundir.read_metrics(trained_run)
    assert [r["epoch"] for r in records] == [1, 2]
    assert records[-1]["eval_accuracy"] == summary["eval_accuracy"]
    store = Checkpoints(trained_run / rundir.CHECKPOINTS, async_save=False)
    assert store.latest() == summary["steps"]
    store.close()
    env = json.loads((trained_run / rundir.ENV_JSON).read_text())
    assert env["seed"] == 0 and env["versions"]["jax"] == jax.__version__
    from PIL import Image

    with Image.open(trained_run / "curves.png") as im:
        assert im.size[0] > 300 and im.size[1] > 150


def test_events_arrive_in_order(tmp_path):
    summary, events = run(tmp_path, ["train.epochs=1"])
    kinds = [type(e) for e in events]
    assert kinds[0] is RunStarted and kinds[1] is Compiled and kinds[-1] is RunFinished
    assert StepEnd in kinds and EpochEnd in kinds and CheckpointSaved in kinds
    steps = [e.step for e in events if isinstance(e, StepEnd)]
    assert steps == sorted(steps) and steps[-1] == 1438 // 64
    assert events[1].seconds == summary["compile_seconds"] > 0  # measured once


def test_the_plan_facts_of_a_recipe(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path), ["data.eval_batch_size=1000"])
    assert plan.steps_for(recipe, 1438) == (22, 44, 2)
    assert plan.steps_for(load_recipe(write_recipe(tmp_path), ["train.epochs=null", "train.steps=30"]), 1438) == (22, 30, 2)
    assert plan.eval_batch_size(recipe, 359) == 359  # at most the split
    assert plan.eval_batch_size(recipe, 359, data_axis=4) == 360  # a multiple of the data axis
    assert plan.num_classes(recipe, 10) == 10
    assert plan.num_classes(load_recipe(write_recipe(tmp_path), ["model.num_classes=12"]), 10) == 12
    assert plan.run_num_classes({"class_names": ["a", "b", "c"]}) == 3  # a data.json older than its num_classes
    assert plan.layer_specs(recipe, 10) is plan.layer_specs(recipe, 10)  # parsed once, at validation


def test_same_seed_same_numbers_and_a_different_seed_differs(tmp_path):
    a, _ = run(tmp_path, ["train.epochs=1"], name="a")
    b, _ = run(tmp_path, ["train.epochs=1"], name="b")
    c, _ = run(tmp_path, ["train.epochs=1", "train.seed=1"], name="c")
    assert a["eval_loss"] == b["eval_loss"] and a["train_loss"] == b["train_loss"]
    assert c["eval_loss"] != a["eval_loss"]


def test_a_small_model_overfits_one_batch(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (32, 6, 6, 1), dtype=np.uint8)
    y = np.arange(32) % 4
    np.savez(tmp_path / "one.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    text = TINY_RECIPE.replace('source = "digits"', 'source = "npz:one.npz"').replace("batch_size = 64", "batch_size = 32")
    summary, _ = run(tmp_path, ["train.epochs=150", "train.eval_every=150"], text=text)
    assert summary["train_accuracy"] == 1.0 and summary["eval_accuracy"] == 1.0
    assert summary["train_loss"] < 0.05


def test_no_recompilation_after_the_first_step(tmp_path, caplog):
    jax.config.update("jax_log_compiles", True)
    try:
        with caplog.at_level(logging.WARNING, logger="jax"):
            run(tmp_path, ["train.epochs=3"])
    finally:
        jax.config.update("jax_log_compiles", False)
    compiles = [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()]
    assert sum("train_step" in m for m in compiles) == 1, compiles
    assert sum("eval_step" in m for m in compiles) <= 1, compiles


def test_non_finite_loss_stops_with_step_and_value(tmp_path):
    x = np.random.default_rng(0).normal(size=(64, 6, 6, 1)).astype(np.float32)
    x[5] = 3e38  # finite but huge pixels (non-finite ones are refused): a non-finite loss in its batch
    y = np.arange(64) % 4
    np.savez(tmp_path / "inf.npz", x_train=x, y_train=y, x_test=x[:8], y_test=y[:8])
    text = TINY_RECIPE.replace('source = "digits"', 'source = "npz:inf.npz"\nnormalize = false')
    recipe = write_recipe(tmp_path, text.replace("batch_size = 64", "batch_size = 8"))
    with pytest.raises(TrainingError) as info:
        fit(load_recipe(recipe), tmp_path / "nan")
    message = str(info.value)
    assert "loss became nan at step" in message and "training stopped" in message
    store = Checkpoints(tmp_path / "nan" / rundir.CHECKPOINTS, async_save=False)
    assert store.steps() == []  # the first epoch never finished: nothing bad was saved
    store.close()


def test_freeze_keeps_conv_filters_at_their_initial_values(tmp_path):
    summary, _ = run(tmp_path, ["train.epochs=1", 'train.freeze=["conv*"]'])
    from cnncli.runs.load import load_init_params, load_run

    loaded = load_run(tmp_path / "run")
    init = load_init_params(tmp_path / "run")
    assert np.array_equal(np.asarray(loaded.model.conv1.kernel[...]), init["conv1/kernel"])
    assert not np.array_equal(np.asarray(loaded.model.dense1.kernel[...]), init["dense1/kernel"])


def test_freezing_everything_is_an_error(tmp_path):
    with pytest.raises(RecipeError, match="freezes every parameter"):
        run(tmp_path, ['train.freeze=["*"]'])


def test_ema_and_label_smoothing_and_early_stopping(tmp_path):
    summary, events = run(tmp_path, ["train.epochs=6", "train.ema_decay=0.9", "train.label_smoothing=0.1",
                                     "train.early_stopping=1", "optimizer.learning_rate=0.1"])  # fmt: skip
    assert summary["ema_eval_accuracy"] is not None
    records = [e.record for e in events if isinstance(e, EpochEnd)]
    assert all("ema_eval_accuracy" in r for r in records)
    # early stopping with patience 1: the run stops the epoch after the first one without a gain in
    # eval accuracy (possibly the last: stopped_early is reported then too; test_planted_train pins it)
    accs = [r["eval_accuracy"] for r in records]
    stall = next((i for i in range(1, len(accs)) if accs[i] <= max(accs[:i])), None)
    assert summary["stopped_early"] == (stall is not None) and summary["epochs"] == (stall + 1 if stall is not None else 6)


def test_batch_larger_than_the_data_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match=r"data.batch_size = 4096 is larger than the training split \(1438 examples\)"):
        run(tmp_path, ["data.batch_size=4096"])


def test_output_shape_must_match_the_classes(tmp_path):
    text = TINY_RECIPE.replace('"gap", "dense"', '"dense"')
    with pytest.raises(RecipeError, match="the model's output is 4x4x10 per example"):
        run(tmp_path, text=text)


def test_completed_run_resumes_to_the_same_summary(tmp_path):
    first, _ = run(tmp_path, ["train.epochs=1"])
    again, events = run(tmp_path, ["train.epochs=1"])
    assert again["eval_accuracy"] == first["eval_accuracy"]
    assert not any(isinstance(e, Compiled) for e in events)  # nothing left to train
    assert again["images_per_second"] is None and again["train_seconds"] == 0.0  # not "0 img/s"


def test_resume_refuses_a_changed_recipe(tmp_path):
    from cnncli.errors import CheckpointError

    run(tmp_path, ["train.epochs=1"])
    with pytest.raises(CheckpointError, match=r"(?s)different recipe.*train.seed: 0 -> 5"):
        run(tmp_path, ["train.epochs=1", "train.seed=5"])
