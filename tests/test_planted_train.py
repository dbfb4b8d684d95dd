"""Training numbers checked against hand computations, not only for the keys they sit under.

Issue 18, rule 11: a reversed EMA update, dropped label smoothing, an eval step that
counts its padding rows, early stopping one epoch late, every epoch trained in one
order, a ``train.steps`` that is not a whole number of epochs, and ``ema_decay = 1``
each passed the suite that only checked that keys existed. Here the model is
``flatten dense`` (logits = normalized pixels @ kernel + bias), so numpy recomputes
every loss, accuracy and EMA from the run's own checkpoints and ``init.npz``.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import cli

from cnncli.config.recipe import load_recipe
from cnncli.errors import RecipeError
from cnncli.runs import layout as rundir
from cnncli.runs.checkpoint import Checkpoints
from cnncli.train import loop as loop_module
from cnncli.train.events import EpochEnd, StepEnd
from cnncli.train.loop import fit

SMOOTHING, DECAY = 0.2, 0.75

LINEAR = """\
[data]
source = "npz:data.npz"
batch_size = {batch}
eval_batch_size = 4

[model]
layers = ["flatten", "dense"]

[optimizer]
name = "sgd"
learning_rate = 0.5

[train]
{length}
seed = 0
"""


def _npz(root: Path, n_train: int, n_test: int, classes: int = 3) -> Path:
    rng = np.random.default_rng(1)
    np.savez(
        root / "data.npz",
        x_train=rng.normal(size=(n_train, 2, 3, 1)).astype(np.float32), y_train=np.arange(n_train) % classes,
        x_test=rng.normal(size=(n_test, 2, 3, 1)).astype(np.float32), y_test=(np.arange(n_test) * 2 + 1) % classes,
    )  # fmt: skip
    return root / "data.npz"


def _fit(root: Path, text: str, **kw):
    (root / "r.toml").write_text(text)
    events: list = []
    summary = fit(load_recipe(root / "r.toml"), root / "run", recipe_text=text, on_event=events.append, **kw)
    return summary, events


def _logits(params: dict, x: np.ndarray, meta: dict) -> np.ndarray:
    """The model by hand: standardize with data.json's mean/std, flatten, one dense layer (float64)."""
    z = (x.astype(np.float64) - meta["mean"][0]) / meta["std"][0]
    dense = params["dense1"]
    return z.reshape(len(x), -1) @ np.asarray(dense["kernel"], np.float64) + np.asarray(dense["bias"], np.float64)


def _cross_entropy(logits: np.ndarray, labels: np.ndarray, smoothing: float = 0.0) -> np.ndarray:
    """Per-example cross-entropy against (1 - a) * one_hot + a / C targets."""
    c = logits.shape[1]
    shifted = logits - logits.max(1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    targets = (1 - smoothing) * np.eye(c)[labels] + smoothing / c
    return -(targets * log_p).sum(1)


def _nested(flat: dict) -> dict:
    """init.npz's ``dense1/kernel`` keys as the checkpoint's nested dict."""
    out: dict = {}
    for key, value in flat.items():
        layer, name = key.split("/")
        out.setdefault(layer, {})[name] = value
    return out


@pytest.fixture(scope="module")
def smoothed_ema_run(tmp_path_factory):
    """3 full-batch steps (one per epoch) with label smoothing 0.2 and an EMA at 0.75, every step checkpointed."""
    root = tmp_path_factory.mktemp("smoothed")
    _npz(root, 12, 5)  # 5 eval examples in batches of 4: the last batch has 3 padding rows
    length = (f"steps = 3\nlabel_smoothing = {SMOOTHING}\nema_decay = {DECAY}\n"
              "checkpoint_every_steps = 1\nkeep = 10")  # fmt: skip
    _fit(root, LINEAR.format(batch=12, length=length))
    run = root / "run"
    store = Checkpoints(run / rundir.CHECKPOINTS, async_save=False)
    try:
        trees = {step: store.restore_tree(step)[0] for step in store.steps()}
    finally:
        store.close()
    with np.load(root / "data.npz") as arrays:
        data = {k: arrays[k] for k in arrays.files}
    with np.load(run / rundir.INIT) as init:
        trees[0] = {"params": _nested({k: init[k] for k in init.files})}
    meta = json.loads((run / rundir.DATA_JSON).read_text())
    return {"trees": trees, "data": data, "meta": meta, "records": rundir.read_metrics(run)}


def test_train_loss_is_the_label_smoothed_cross_entropy(smoothed_ema_run):
    trees, data, meta = smoothed_ema_run["trees"], smoothed_ema_run["data"], smoothed_ema_run["meta"]
    records = smoothed_ema_run["records"]
    assert [r["step"] for r in records] == [1, 2, 3]
    for record in records:  # one step per epoch: the epoch's loss is the step's, at the params before it
        before = trees[record["step"] - 1]["params"]
        logits = _logits(before, data["x_train"], meta)
        smoothed = _cross_entropy(logits, data["y_train"], SMOOTHING).mean()
        plain = _cross_entropy(logits, data["y_train"]).mean()
        assert record["train_loss"] == pytest.approx(smoothed, rel=1e-5)
        assert abs(smoothed - plain) > 1e-3  # the smoothing changes the number this test pins
        assert record["train_accuracy"] == pytest.approx(np.mean(logits.argmax(1) == data["y_train"]))


def test_ema_after_each_step_is_the_hand_recursion(smoothed_ema_run):
    trees = smoothed_ema_run["trees"]
    ema = trees[0]["params"]  # the EMA starts as a copy of the initial parameters
    for step in (1, 2, 3):
        params = trees[step]["params"]
        ema = {layer: {name: DECAY * np.asarray(ema[layer][name], np.float64) + (1 - DECAY) * np.asarray(value, np.float64)
                       for name, value in arrays.items()} for layer, arrays in params.items()}  # fmt: skip
        for name in ("kernel", "bias"):
            np.testing.assert_allclose(trees[step]["ema"]["dense1"][name], ema["dense1"][name], rtol=1e-5, atol=1e-7)
    assert not np.allclose(trees[3]["ema"]["dense1"]["kernel"], trees[3]["params"]["dense1"]["kernel"], atol=1e-4)


def test_eval_numbers_with_a_padded_last_batch_match_a_hand_evaluation(smoothed_ema_run):
    trees, data, meta = smoothed_ema_run["trees"], smoothed_ema_run["data"], smoothed_ema_run["meta"]
    for record in smoothed_ema_run["records"]:
        for prefix, part in (("", "params"), ("ema_", "ema")):
            logits = _logits(trees[record["step"]][part], data["x_test"], meta)
            correct = int((logits.argmax(1) == data["y_test"]).sum())
            assert record[f"{prefix}eval_accuracy"] == correct / 5  # 5 examples, not 8 padded rows
            loss = _cross_entropy(logits, data["y_test"]).mean()  # evaluation never smooths
            assert record[f"{prefix}eval_loss"] == pytest.approx(loss, rel=1e-5)


def test_eval_step_never_counts_padding_rows():
    """Every row predicts class 0 and padding rows are labelled 0: only the mask keeps them out."""
    from flax import nnx

    from cnncli.arith.layers import parse_layers
    from cnncli.data.batching import batches, pad_batch
    from cnncli.models import build_model
    from cnncli.models.apply import StepConfig
    from cnncli.train.step import make_eval_step

    model = build_model(parse_layers(["flatten", "dense"]), (2, 2, 1), 3, rngs=nnx.Rngs(0))
    model.dense1.kernel[...] = jnp.zeros_like(model.dense1.kernel[...])
    model.dense1.bias[...] = jnp.array([2.0, 0.0, 0.0])
    model.eval()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    step = make_eval_step(graphdef, StepConfig(num_classes=3, mean=(0.0,), std=(1.0,), batch_size=4))
    x = np.ones((5, 2, 2, 1), np.float32)
    y = np.array([0, 1, 2, 1, 0], np.int32)
    totals = np.zeros(3)
    for start, stop in batches(5, 4):
        totals += np.array(jax.device_get(step(params, rest, *pad_batch(x[start:stop], y[start:stop], 4))))
    loss_sum, correct, count = totals
    assert (correct, count) == (2, 5)  # labels 0 at rows 0 and 4; the 3 padding rows are not examples
    lse = np.log(np.exp(2.0) + 2)  # log-sum-exp of the logits (2, 0, 0)
    assert loss_sum == pytest.approx(2 * (lse - 2.0) + 3 * lse, rel=1e-6)


# ------------------------------------------------------------------ epochs, steps, early stopping


def test_steps_not_a_multiple_of_an_epoch_stop_mid_epoch_with_exact_accounting(tmp_path):
    _npz(tmp_path, 40, 8)  # 40 // 8 = 5 steps per epoch; 12 steps = 2 epochs and 2 steps of a third
    summary, events = _fit(tmp_path, LINEAR.format(batch=8, length="steps = 12\nlog_every = 3"))
    assert summary["steps"] == 12 and summary["epochs"] == 3
    records = rundir.read_metrics(tmp_path / "run")
    assert [(r["epoch"], r["step"]) for r in records] == [(1, 5), (2, 10), (3, 12)]
    steps = [e for e in events if isinstance(e, StepEnd)]
    # progress every 3rd batch of an epoch and at each epoch's end, the run's last step included
    assert [(e.step, e.epoch) for e in steps] == [(3, 1), (5, 1), (8, 2), (10, 2), (12, 3)]
    store = Checkpoints(tmp_path / "run" / rundir.CHECKPOINTS, async_save=False)
    try:
        assert store.latest() == 12
        meta = store.read_meta(12)
        assert (meta["epoch"], meta["index"]) == (3, 0)  # the run is over: resuming trains nothing more
    finally:
        store.close()
    again, events = _fit(tmp_path, LINEAR.format(batch=8, length="steps = 12\nlog_every = 3"))
    assert again["steps"] == 12 and not any(isinstance(e, StepEnd) for e in events)


def test_each_epoch_trains_on_a_different_permutation_of_every_example(tmp_path, monkeypatch):
    from cnncli.train.streams import Feed

    seen: dict[int, np.ndarray] = {}
    original = Feed.permutation

    def spy(self, epoch):
        perm = original(self, epoch)
        seen[int(epoch)] = np.asarray(jax.device_get(perm))
        return perm

    monkeypatch.setattr(Feed, "permutation", spy)
    _npz(tmp_path, 16, 4)
    _fit(tmp_path, LINEAR.format(batch=8, length="epochs = 3"))
    assert sorted(seen) == [0, 1, 2]
    for perm in seen.values():
        assert sorted(perm.tolist()) == list(range(16))
    orders = {tuple(p.tolist()) for p in seen.values()}
    assert len(orders) == 3 and tuple(range(16)) not in orders  # shuffled, and differently each epoch


def test_epoch_permutations_differ_by_epoch_and_repeat_by_seed():
    from cnncli.train.streams import epoch_permutation

    key = jax.random.key(0)
    perms = [np.asarray(epoch_permutation(key, epoch, 32)) for epoch in range(4)]
    assert len({p.tobytes() for p in perms}) == 4
    assert all(sorted(p.tolist()) == list(range(32)) for p in perms)
    assert np.array_equal(np.asarray(epoch_permutation(jax.random.key(0), 2, 32)), perms[2])


def _scripted(monkeypatch, accuracies):
    """Make training's evaluation report ``accuracies``, one per evaluated epoch."""
    it = iter(accuracies)
    monkeypatch.setattr(loop_module, "evaluate_state", lambda sess, program, state, use_ema=False: (1.0, next(it)))


ACCURACIES = [0.5, 0.6, 0.6, 0.55, 0.7, 0.8]  # best at epoch 2; epochs 3 (a tie) and 4 bring no gain


@pytest.mark.parametrize(("patience", "stop"), [(1, 3), (2, 4), (3, None)])
def test_early_stopping_stops_after_exactly_patience_epochs_without_a_gain(tmp_path, monkeypatch, patience, stop):
    _scripted(monkeypatch, ACCURACIES)
    _npz(tmp_path, 16, 4)
    summary, events = _fit(tmp_path, LINEAR.format(batch=8, length=f"epochs = 6\nearly_stopping = {patience}"))
    epochs = [e.record["epoch"] for e in events if isinstance(e, EpochEnd)]
    assert epochs == list(range(1, (stop or 6) + 1))
    assert summary["stopped_early"] is (stop is not None)
    assert summary["epochs"] == (stop or 6) and summary["steps"] == 2 * (stop or 6)
    assert summary["best_eval_accuracy"] == 0.6 if stop else 0.8


def test_stopped_early_is_reported_when_patience_runs_out_on_the_last_epoch(tmp_path, monkeypatch):
    _scripted(monkeypatch, ACCURACIES)
    _npz(tmp_path, 16, 4)
    summary, _ = _fit(tmp_path, LINEAR.format(batch=8, length="epochs = 4\nearly_stopping = 2"))
    assert summary["epochs"] == 4 and summary["stopped_early"] is True
    assert json.loads((tmp_path / "run" / rundir.SUMMARY).read_text())["stopped_early"] is True


# ------------------------------------------------------------------ ema_decay = 1


@pytest.mark.parametrize("value", ["1", "1.0", "0", "1.5"])
def test_ema_decay_outside_0_1_is_refused_naming_the_line(tmp_path, value):
    path = tmp_path / "r.toml"
    path.write_text(LINEAR.format(batch=8, length=f"epochs = 1\nema_decay = {value}"))
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    message = str(info.value)
    assert f"{path}:15:" in message and "`train.ema_decay`" in message
    assert ("less than 1" if float(value) >= 1 else "greater than 0") in message


def test_ema_decay_1_is_refused_by_dry_run_before_anything_is_written(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _npz(tmp_path, 16, 4)
    (tmp_path / "r.toml").write_text(LINEAR.format(batch=8, length="epochs = 1\nema_decay = 1"))
    before = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = cli(["train", "r.toml", "--dry-run"], capsys)
    assert code == 1 and out == ""
    assert "`train.ema_decay`" in err and "less than 1" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert load_recipe(tmp_path / "r.toml", ["train.ema_decay=0.999"]).train.ema_decay == 0.999
