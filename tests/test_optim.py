"""Optimizers and schedules: the recipe's epochs become steps, decay skips biases."""

from __future__ import annotations

import jax.numpy as jnp
import pytest

from cnncli.config.recipe import OPTIMIZERS, OptimizerConfig, ScheduleConfig
from cnncli.train.optim import decay_mask, make_optimizer, make_schedule


def test_warmup_then_cosine():
    s = make_schedule(ScheduleConfig(name="warmup_cosine", warmup_epochs=1), 0.1, steps_per_epoch=10, total_steps=100)
    assert float(s(0)) == 0.0
    assert float(s(10)) == pytest.approx(0.1)
    assert float(s(100)) == pytest.approx(0.0, abs=1e-7)
    assert float(s(55)) == pytest.approx(0.05, rel=1e-3)  # cosine midpoint


def test_step_and_multistep_in_epochs():
    s = make_schedule(ScheduleConfig(name="step", step_epochs=2, gamma=0.5), 1.0, 10, 100)
    assert [float(s(t)) for t in (0, 19, 20, 40)] == [1.0, 1.0, 0.5, 0.25]
    m = make_schedule(ScheduleConfig(name="multistep", milestones=[3, 6], gamma=0.1), 1.0, 10, 100)
    assert float(m(29)) == 1.0 and float(m(30)) == pytest.approx(0.1) and float(m(60)) == pytest.approx(0.01)


def test_constant_with_warmup_and_onecycle_and_exponential():
    c = make_schedule(ScheduleConfig(name="constant", warmup_epochs=0.5), 1.0, 10, 100)
    assert float(c(0)) == 0.0 and float(c(5)) == 1.0 and float(c(99)) == 1.0
    o = make_schedule(ScheduleConfig(name="onecycle"), 1.0, 10, 100)
    assert float(o(30)) == pytest.approx(1.0, rel=1e-3) and float(o(0)) < 0.1
    e = make_schedule(ScheduleConfig(name="exponential", gamma=0.5), 1.0, 10, 100)
    assert float(e(10)) == pytest.approx(0.5) and float(e(20)) == pytest.approx(0.25)


def test_decay_mask_skips_vectors():
    params = {"kernel": jnp.ones((3, 3, 1, 4)), "bias": jnp.ones(4), "scale": jnp.ones(4)}
    assert decay_mask(params) == {"kernel": True, "bias": False, "scale": False}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_takes_a_step_downhill(name):
    params = {"w": jnp.array([[2.0, -3.0]]), "b": jnp.array([1.0])}
    tx = make_optimizer(OptimizerConfig(name=name, learning_rate=0.1, weight_decay=0.01, clip_norm=10.0), lambda _: 0.1)
    state = tx.init(params)
    loss = lambda p: jnp.sum(p["w"] ** 2) + jnp.sum(p["b"] ** 2)  # noqa: E731
    import jax
    import optax

    for _ in range(3):
        grads = jax.grad(loss)(params)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    assert float(loss(params)) < 14.0  # started at 4 + 9 + 1


def test_weight_decay_leaves_biases_alone():
    import optax

    params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
    tx = make_optimizer(OptimizerConfig(name="sgd", learning_rate=1.0, weight_decay=0.5), lambda _: 1.0)
    zero = {"w": jnp.zeros((2, 2)), "b": jnp.zeros(2)}
    updates, _ = tx.update(zero, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    assert float(new["w"][0, 0]) == pytest.approx(0.5) and float(new["b"][0]) == 1.0
