"""One-line slips sampled in the core modules that the suite did not notice (issue 18, rule 11).

Each test pins a number or an order worked out by hand: where a non-finite loss is
reported, gradient clipping, L2 weight decay under every optimizer, momentum against
Nesterov, multistep milestones after a warmup, the learning rate a record and a resume
report, ``train.eval_every``, contrast and brightness augmentation, average pooling's
ceil-mode divisor, and which checkpoint is ``best`` on a tie.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnncli.config.recipe import OPTIMIZERS, OptimizerConfig, ScheduleConfig
from cnncli.train.optim import make_optimizer, make_schedule

# ------------------------------------------------------------------ the train step


def test_the_first_non_finite_step_is_recorded_and_its_update_skipped():
    from flax import nnx

    from cnncli.arith.layers import parse_layers
    from cnncli.models import build_model
    from cnncli.models.apply import StepConfig
    from cnncli.train.step import fresh_state, make_train_step

    model = build_model(parse_layers(["flatten", "dense"]), (2, 2, 1), 2, rngs=nnx.Rngs(0))
    model.train()
    filters = (nnx.Param, ...)
    graphdef, params, rest = nnx.split(model, *filters)
    tx = optax.sgd(0.1)
    step = make_train_step(graphdef, filters, tx, StepConfig(num_classes=2, mean=(0.0,), std=(1.0,), batch_size=2))
    x = np.ones((6, 2, 2, 1), np.float32)
    x[2, 0, 0, 0] = np.inf  # in the second batch (rows 2, 3) of the identity permutation
    x[5, 0, 0, 0] = np.nan  # and in the third
    args = (jnp.asarray(x), jnp.asarray(np.array([0, 1, 0, 1, 0, 1], np.int32)), jnp.arange(6, dtype=jnp.int32))
    state = fresh_state(params, rest, tx)
    kernels = []
    for index in range(3):
        state = step(state, *args, np.int32(index), jax.random.key(0))
        kernels.append(np.asarray(state.params["dense1"]["kernel"][...]))
    assert int(state.bad_step) == 1  # 0-based: the second step; the loop reports it as "at step 2"
    assert not np.isfinite(float(state.bad_value)) and int(state.step) == 3
    np.testing.assert_array_equal(kernels[1], kernels[0])  # the bad steps left the weights alone
    np.testing.assert_array_equal(kernels[2], kernels[0])


# ------------------------------------------------------------------ optimizers and schedules


def _one_update(cfg: OptimizerConfig, params, grads, steps: int = 1):
    tx = make_optimizer(cfg, lambda _: cfg.learning_rate)
    state = tx.init(params)
    out = []
    for _ in range(steps):
        updates, state = tx.update(grads, state, params)
        out.append(updates)
    return out


def test_clip_norm_scales_the_gradient_to_the_global_norm():
    params = {"w": jnp.zeros((1, 2)), "b": jnp.zeros(1)}
    grads = {"w": jnp.array([[6.0, 0.0]]), "b": jnp.array([8.0])}  # global norm 10
    (clipped,) = _one_update(OptimizerConfig(name="sgd", learning_rate=1.0, clip_norm=2.0), params, grads)
    np.testing.assert_allclose(clipped["w"], [[-1.2, 0.0]], rtol=1e-6)  # -(6, 8) * 2 / 10
    np.testing.assert_allclose(clipped["b"], [-1.6], rtol=1e-6)
    (free,) = _one_update(OptimizerConfig(name="sgd", learning_rate=1.0, clip_norm=20.0), params, grads)
    np.testing.assert_allclose(free["w"], [[-6.0, 0.0]], rtol=1e-6)  # under the norm: untouched


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_weight_decay_shrinks_kernels_and_never_biases_under_every_optimizer(name):
    params = {"w": jnp.array([[2.0, -3.0]]), "b": jnp.array([1.5])}
    zero = jax.tree.map(jnp.zeros_like, params)
    cfg = OptimizerConfig(name=name, learning_rate=0.1, weight_decay=0.1)
    (updates,) = _one_update(cfg, params, zero)
    new = optax.apply_updates(params, updates)
    assert float(new["b"][0]) == 1.5  # biases are never decayed
    w, w0 = np.asarray(new["w"]), np.asarray(params["w"])
    assert np.all(np.abs(w) < np.abs(w0)) and np.all(np.sign(w) == np.sign(w0)), (name, w)  # pulled toward 0


def test_momentum_is_heavy_ball_and_nesterov_looks_ahead():
    params, grads = {"w": jnp.zeros((1, 1))}, {"w": jnp.ones((1, 1))}
    heavy = _one_update(OptimizerConfig(name="momentum", learning_rate=1.0, momentum=0.9), params, grads, steps=2)
    ahead = _one_update(OptimizerConfig(name="nesterov", learning_rate=1.0, momentum=0.9), params, grads, steps=2)
    # heavy ball: m1 = 1, m2 = 0.9 + 1 = 1.9; Nesterov: g + 0.9 m -> 1.9, then 1 + 0.9 * 1.9 = 2.71.
    assert [float(u["w"][0, 0]) for u in heavy] == pytest.approx([-1.0, -1.9])
    assert [float(u["w"][0, 0]) for u in ahead] == pytest.approx([-1.9, -2.71])


def test_multistep_milestones_count_from_the_start_of_training_even_after_a_warmup():
    s = make_schedule(ScheduleConfig(name="multistep", milestones=[3, 6], gamma=0.1, warmup_epochs=1), 1.0, 10, 100)
    assert float(s(0)) == 0.0 and float(s(5)) == pytest.approx(0.5)  # warming up over epoch 1
    assert float(s(10)) == pytest.approx(1.0) and float(s(29)) == pytest.approx(1.0)
    assert float(s(30)) == pytest.approx(0.1)  # epoch 3 is step 30, warmup or not
    assert float(s(59)) == pytest.approx(0.1) and float(s(60)) == pytest.approx(0.01)


# ------------------------------------------------------------------ the loop's records and a resume

WARMUP = """\
[data]
source = "npz:data.npz"
batch_size = 4

[model]
layers = ["flatten", "dense"]

[optimizer]
name = "sgd"
learning_rate = 0.5

[schedule]
name = "constant"
warmup_epochs = 1

[train]
epochs = 2
seed = 0
log_every = 1
"""


def _warmup_run(root, overrides=(), **kw):
    from cnncli.config.recipe import load_recipe
    from cnncli.train.loop import fit

    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 2, 2, 1)).astype(np.float32)
    np.savez(root / "data.npz", x_train=x, y_train=np.arange(8) % 2, x_test=x[:4], y_test=np.arange(4) % 2)
    (root / "r.toml").write_text(WARMUP)
    events: list = []
    fit(load_recipe(root / "r.toml", list(overrides)), root / "run", recipe_text=WARMUP, on_event=events.append, **kw)
    return events


def test_records_report_the_learning_rate_of_their_last_update_and_a_resume_that_of_its_next(tmp_path):
    from cnncli.runs import layout as rundir
    from cnncli.train.events import RunStarted, StepEnd

    every_step = ["train.checkpoint_every_steps=1", "train.keep=5"]
    events = _warmup_run(tmp_path, every_step)  # lr(t) = 0.25 t for t < 2, then 0.5
    steps = {e.step: e.learning_rate for e in events if isinstance(e, StepEnd)}
    assert steps[1] == 0.0 and steps[2] == pytest.approx(0.25) and steps[3] == pytest.approx(0.5)
    records = rundir.read_metrics(tmp_path / "run")
    assert [(r["step"], r["learning_rate"]) for r in records] == [(2, 0.25), (4, 0.5)]  # 2 steps per epoch
    events = _warmup_run(tmp_path, every_step, resume_from=1)  # its next update is step 2, at lr(1) = 0.25
    started = next(e for e in events if isinstance(e, RunStarted))
    assert started.resumed_step == 1 and started.resumed_lr == pytest.approx(0.25)


def test_eval_every_evaluates_every_nth_epoch_and_the_last(tmp_path):
    from cnncli.runs import layout as rundir

    _warmup_run(tmp_path, ["train.epochs=5", "train.eval_every=2"])
    assert [r["epoch"] for r in rundir.read_metrics(tmp_path / "run")] == [2, 4, 5]


# ------------------------------------------------------------------ augmentation


def _augment(op: dict, x: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``x`` (uint8) and the op's output, both in unit scale (0..1 of 0..255)."""
    from cnncli.data.augment.core import make_augment
    from cnncli.data.base import Dataset, Split, channel_stats

    y = np.zeros(len(x), np.int32)
    mean, std = channel_stats(x)
    data = Dataset("t", Split(x, y), Split(x, y), ["a", "b"], mean, std)
    fn = jax.jit(make_augment([op], data))
    normalized = (x.astype(np.float32) - np.float32(mean)) / np.float32(std)
    out, _ = fn(jax.random.key(seed), jnp.asarray(normalized), jax.nn.one_hot(y, 2))
    return x / 255.0, np.asarray(out) * np.float32(std) / 255.0 + np.float32(mean) / 255.0


def test_contrast_scales_each_channel_about_its_own_mean():
    rng = np.random.default_rng(0)
    flat = np.broadcast_to(rng.integers(20, 230, (16, 1, 1, 3)), (16, 6, 6, 3)).astype(np.uint8)
    before, after = _augment({"op": "contrast", "max_delta": 0.8, "p": 1.0}, flat)
    np.testing.assert_allclose(after, before, atol=1e-4)  # every channel equals its own mean: nothing to scale
    x = rng.integers(60, 200, (16, 6, 6, 3)).astype(np.uint8)
    before, after = _augment({"op": "contrast", "max_delta": 0.5, "p": 1.0}, x)
    np.testing.assert_allclose(after.mean(axis=(1, 2)), before.mean(axis=(1, 2)), atol=1e-4)  # means kept
    assert not np.allclose(after, before, atol=1e-3)


def test_brightness_offsets_go_both_ways_up_to_max_delta():
    x = np.random.default_rng(1).integers(100, 156, (64, 4, 4, 1)).astype(np.uint8)  # no clipping at 0.2
    before, after = _augment({"op": "brightness", "max_delta": 0.2, "p": 1.0}, x)
    offsets = (after - before).reshape(64, -1)
    np.testing.assert_allclose(offsets, offsets[:, :1] * np.ones_like(offsets), atol=1e-4)  # one offset per image
    assert offsets.max() <= 0.2 + 1e-4 and offsets.min() >= -0.2 - 1e-4
    assert (offsets[:, 0] < -0.05).sum() >= 10 and (offsets[:, 0] > 0.05).sum() >= 10


# ------------------------------------------------------------------ pooling


def test_ceil_mode_average_divides_by_the_elements_inside_the_padded_input():
    from cnncli.models import pooling

    x = jnp.arange(1.0, 6.0).reshape(1, 5, 1)  # 1 2 3 4 5
    # k=2, s=2, ceil: windows (1, 2), (3, 4), (5): the last one is cut by the ceil extra, not padded.
    out = pooling.avg_pool(x, (2,), (2,), pads=((0, 0),), extra=(1,))
    np.testing.assert_allclose(np.asarray(out).ravel(), [1.5, 3.5, 5.0])
    # p=1 counts its zero pad (PyTorch count_include_pad): (0, 1), (2, 3), (4, 5) over 2 each.
    padded = pooling.avg_pool(x, (2,), (2,), pads=((1, 0),), extra=(1,))
    np.testing.assert_allclose(np.asarray(padded).ravel(), [0.5, 2.5, 4.5])


# ------------------------------------------------------------------ checkpoints


def test_best_is_the_newest_of_equally_accurate_checkpoints(tmp_path):
    from cnncli.runs.checkpoint import Checkpoints

    store = Checkpoints(tmp_path / "ck", keep=10, async_save=False)
    try:
        for step, acc in [(1, 0.5), (2, 0.7), (3, 0.7), (4, 0.6)]:
            store.save(step, {"w": jnp.full((2,), float(step))}, {"metrics": {"eval_accuracy": acc}})
        assert store.best() == 3 and store.resolve("best") == 3
    finally:
        store.close()
