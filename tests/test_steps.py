"""Tests for cnncli.train.step (and the step profiler): mixed precision, recompilation, donation.

One tiny conv/BatchNorm/dense model on 8x8x3 inputs; every step is real code, on CPU.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from cnncli.arith import layers
from cnncli.models import build_model
from cnncli.models.apply import (
    StepConfig,
    compute_params,
    trainable_filter,
    xla_options,
)
from cnncli.models.norm import BatchNorm, batch_norm_train
from cnncli.train.step import fresh_state, make_train_step

TOKENS = "conv:c=4,k=3,p=same bn relu maxpool:k=2 resblock:c=8,s=2 dropout:r=0.1 gap dense"
SHAPE = (8, 8, 3)
BATCH = 16


@functools.lru_cache(maxsize=None)
def _split():
    """The model, split once per test session (initialized under one jit, rbg keys: fast)."""
    key = jax.random.key(0, impl="rbg")
    model = nnx.jit(lambda: build_model(layers.parse_layers(TOKENS), SHAPE, 5, rngs=nnx.Rngs(params=key, dropout=1)))()
    filters = (trainable_filter([]), ...)
    model.train()
    graphdef, params, rest = nnx.split(model, *filters)
    return graphdef, filters, params, rest


def _setup(precision: str = "fp32"):
    """(jitted step, fresh state, data); the step is shared, so it compiles once per session."""
    step, tx, data = _step(precision)
    _, _, params, rest = _split()
    params, rest = jax.tree.map(jnp.copy, (params, rest))  # each test donates its own copy
    return step, fresh_state(params, rest, tx), data


@functools.lru_cache(maxsize=None)
def _step(precision: str):
    graphdef, filters, _, _ = _split()
    tx = optax.sgd(0.1, momentum=0.9)
    cfg = StepConfig(num_classes=5, mean=(127.5,) * 3, std=(64.0,) * 3, batch_size=BATCH,
                     compute_dtype=jnp.bfloat16 if precision == "bf16" else jnp.float32)  # fmt: skip
    step = make_train_step(graphdef, filters, tx, cfg)
    rng = np.random.default_rng(0)
    data = (
        jnp.asarray(rng.integers(0, 256, (4 * BATCH, *SHAPE), dtype=np.uint8)),
        jnp.asarray(rng.integers(0, 5, (4 * BATCH,), dtype=np.int32)),
        jnp.arange(4 * BATCH, dtype=jnp.int32),
    )
    return step, tx, data


def _run(step, state, data, n):
    for i in range(n):
        state = step(state, *data, np.int32(i % 4), jax.random.key(0))
    return state


def test_bf16_mixed_precision_tracks_fp32():
    step32, s32, data = _setup("fp32")
    step16, s16, _ = _setup("bf16")
    s32, s16 = _run(step32, s32, data, 3), _run(step16, s16, data, 3)
    # Master weights, optimizer state and batch statistics stay float32.
    for leaf in jax.tree.leaves((s16.params, s16.opt, s16.rest)):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            assert leaf.dtype == jnp.float32
    loss32 = float(s32.sums["loss"] / s32.sums["count"])
    loss16 = float(s16.sums["loss"] / s16.sums["count"])
    assert loss16 == pytest.approx(loss32, rel=0.03)
    for a, b in zip(jax.tree.leaves(s32.params), jax.tree.leaves(s16.params)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=0.05, atol=0.02)
    # and bf16 really changes the computation (it is not a float32 step in disguise)
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(s32.params), jax.tree.leaves(s16.params)))


def test_bf16_step_computes_convs_in_bfloat16():
    step16, s16, data = _setup("bf16")
    text = step16.lower(s16, *data, np.int32(0), jax.random.key(0)).as_text()
    assert "bf16" in text and "conv" in text


def test_compute_params_casts_only_floats():
    tree = {"w": jnp.ones(3), "n": jnp.ones(3, jnp.int32)}
    out = compute_params(tree, jnp.bfloat16)
    assert out["w"].dtype == jnp.bfloat16 and out["n"].dtype == jnp.int32
    assert compute_params(tree, jnp.float32) is tree


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_no_recompile_after_first_step(precision):
    step, state, data = _setup(precision)
    state = _run(step, state, data, 3)
    assert step._cache_size() == 1  # the returned state has the input's exact avals


def test_aot_compiled_step_accepts_its_own_output():
    step, state, data = _setup()
    compiled = step.lower(state, *data, np.int32(0), jax.random.key(0)).compile()  # as Session.compile
    for i in range(2):  # a Compiled never retraces: a changed aval would raise here
        state = compiled(state, *data, np.int32(i), jax.random.key(0))
    assert int(state.step) == 2


def test_donation_consumes_the_old_state_and_keeps_training():
    step, state, data = _setup()
    old_leaf = jax.tree.leaves(state.params)[0]
    new = step(state, *data, np.int32(0), jax.random.key(0))
    assert old_leaf.is_deleted()  # donated: updated in place
    new = _run(step, new, data, 2)
    assert int(new.step) == 3 and np.isfinite(float(new.sums["loss"]))


def test_xla_options_on_cpu(monkeypatch):
    assert jax.default_backend() == "cpu"
    assert "xla_cpu_experimental_ynn_fusion_type" in xla_options()
    monkeypatch.setenv("CNNCLI_XLA_OPTIONS", "off")
    assert xla_options() is None


# ------------------------------------------------------------------ BatchNorm


def _pair(features=6):
    ours = BatchNorm(features, momentum=0.9, epsilon=1e-5)
    ref = nnx.BatchNorm(features, momentum=0.9, epsilon=1e-5, rngs=nnx.Rngs(0))
    for bn in (ours, ref):
        bn.scale[...] = jnp.linspace(0.5, 1.5, features)
        bn.bias[...] = jnp.linspace(-0.2, 0.3, features)
    return ours, ref


def test_batchnorm_matches_flax_in_train_and_eval():
    x = jax.random.normal(jax.random.key(1), (4, 5, 5, 6)) * 3 + 1
    ours, ref = _pair()
    np.testing.assert_allclose(ours(x), ref(x), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ours.mean[...], ref.mean[...], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours.var[...], ref.var[...], rtol=1e-5, atol=1e-6)
    ours.eval(), ref.eval()
    np.testing.assert_allclose(ours(x), ref(x), rtol=1e-4, atol=1e-4)
    assert {p for p, _ in nnx.to_flat_state(nnx.state(ours))} == {p for p, _ in nnx.to_flat_state(nnx.state(ref))}


def test_batchnorm_gradient_matches_autodiff():
    x = jax.random.normal(jax.random.key(2), (8, 3, 3, 4)) * 2 - 1
    scale, bias = jnp.array([0.5, 1.0, 1.5, 2.0]), jnp.array([0.1, -0.1, 0.0, 0.2])
    w = jax.random.normal(jax.random.key(3), x.shape)

    def reference(x, scale, bias):
        mean = x.mean((0, 1, 2))
        var = (x * x).mean((0, 1, 2)) - mean**2
        return jnp.sum(w * ((x - mean) * jax.lax.rsqrt(var + 1e-5) * scale + bias))

    def ours(x, scale, bias):
        return jnp.sum(w * batch_norm_train(x, scale, bias, 1e-5)[0])

    for a, b in zip(jax.grad(ours, (0, 1, 2))(x, scale, bias), jax.grad(reference, (0, 1, 2))(x, scale, bias)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_batchnorm_bf16_input_keeps_dtype_and_float32_stats():
    bn = BatchNorm(3, momentum=0.9)
    y = bn(jnp.ones((2, 4, 4, 3), jnp.bfloat16))
    assert y.dtype == jnp.bfloat16 and bn.mean[...].dtype == jnp.float32


# ------------------------------------------------------------------ profiler


def test_profile_steps_reports_top_ops(tmp_path):
    from cnncli.train.profiling import format_top_ops, profile_steps, synthetic_step

    bench = synthetic_step("conv:c=4,k=3,p=same bn relu gap dense", (8, 8, 1), batch_size=8)
    report = profile_steps(bench.step, bench.state, bench.args, 2, tmp_path / "profile", batch_size=8)
    assert report.ops and report.op_ms > 0 and report.wall_seconds > 0
    assert list(tmp_path.glob("profile/**/*.xplane.pb"))
    text = format_top_ops(report, 5)
    assert "ms/step" in text and report.ops[0].name in text
