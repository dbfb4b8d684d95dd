"""The compiled heart of training: pure train and eval steps over split NNX state.

The model is split once (``nnx.split``) into a static graph and three pieces of
state: trainable parameters, everything else (batch statistics, frozen parameters,
RNG counters), and the optimizer state. Steps are plain ``jax.jit`` functions over a
`TrainState` pytree; the NNX graph is rebuilt inside the trace (``nnx.merge(...,
copy=True)``), so no Python graph traversal runs per step (STACK-NOTES: 0.09 ms per
call on LeNet vs 1.1 ms for ``nnx.jit``). The state buffers are donated.

The whole training set lives on the device; a step receives the epoch's permutation
and its position, gathers its batch, converts and normalizes it on the device.

Mixed precision (``StepConfig.compute_dtype = bfloat16``, ``[train] precision =
"bf16"``): the optimizer, its state and the master parameters stay float32; each
step casts the floating parameters to bfloat16 for the forward and backward pass
(`compute_params`), so convolutions and dense layers take bfloat16 operands and
accumulate in float32 (`cnncli.models.ops.mixed_conv`), BatchNorm statistics are
float32, the logits and loss are float32, and the gradients arrive in float32
through the cast. Batch statistics (``rest``) are never cast.

On XLA CPU the compiled steps get `xla_options` (measured in BENCHMARKS.md).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from cnncli.models.apply import StepConfig, apply_model, preprocess, xla_options
from cnncli.train.streams import step_key


@struct.dataclass
class TrainState:
    """Everything that changes during training, as one pytree of arrays."""

    params: Any  # nnx.State of trainable parameters
    rest: Any  # nnx.State: batch stats, frozen params, RNG counters
    opt: Any  # optax state
    ema: Any  # EMA of params, or None
    step: jax.Array  # int32: number of completed updates
    sums: dict  # on-device metric sums since the last reset: loss, correct, count
    bad_step: jax.Array  # int32: first step whose loss was not finite, -1 if none
    bad_value: jax.Array  # float32: that loss


def fresh_state(params, rest, tx, *, ema: bool = False) -> TrainState:
    """The state before the first step: optimizer initialized, counters and sums zero.

    ``ema``: start an EMA of the parameters (a copy of them).
    """
    return TrainState(
        params=params, rest=rest, opt=tx.init(params), ema=jax.tree.map(jnp.copy, params) if ema else None,
        step=jnp.zeros((), jnp.int32), sums=zero_sums(), bad_step=jnp.full((), -1, jnp.int32),
        bad_value=jnp.zeros((), jnp.float32),
    )  # fmt: skip


def gather_batch(x_all, y_all, perm, index, cfg: StepConfig):
    """The step's batch: rows ``perm[index * B:(index + 1) * B]`` of the on-device set.

    With a mesh, the batch is constrained to be split over the ``data`` axis, so each
    device gathers and computes only its share (XLA inserts the gradient all-reduce).
    """
    idx = jax.lax.dynamic_slice(perm, (index * cfg.batch_size,), (cfg.batch_size,))
    x, labels = jnp.take(x_all, idx, axis=0), jnp.take(y_all, idx, axis=0)
    if cfg.batch_sharding is not None:
        x = jax.lax.with_sharding_constraint(x, cfg.batch_sharding)
        labels = jax.lax.with_sharding_constraint(labels, cfg.batch_sharding)
    return x, labels


def cross_entropy(logits: jax.Array, labels: jax.Array, num_classes: int, smoothing: float = 0.0) -> jax.Array:
    """Per-example softmax cross-entropy with optional label smoothing (float32)."""
    targets = jax.nn.one_hot(labels, num_classes)
    if smoothing:
        targets = optax.smooth_labels(targets, smoothing)
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def zero_sums() -> dict:
    """Fresh metric accumulators."""
    return {"loss": jnp.zeros((), jnp.float32), "correct": jnp.zeros((), jnp.float32), "count": jnp.zeros((), jnp.float32)}


def make_train_step(graphdef, split_filters, tx, cfg: StepConfig, augment=None, state_shardings=None,
                    *, compiler_options="auto", batched: bool = False):  # fmt: skip
    """Build the jitted train step.

    Args:
        graphdef: the model's graph in training mode (``nnx.split`` of ``model.train()``).
        split_filters: the (trainable, rest) filters used to split the state.
        tx: the optax transformation.
        cfg: static step settings.
        augment: optional ``(key, x, y_onehot) -> (x, y_onehot)`` run on the device.
        state_shardings: the state's shardings on a mesh (``distributed.state_shardings``);
            the updated state is laid out the same way.
        compiler_options: XLA options; ``"auto"`` = `xla_options`, None = XLA's defaults.
        batched: the step takes its batch (streamed data) instead of gathering it.

    Returns:
        ``train_step(state, x_all, y_all, perm, index, key) -> state``: one update on
        the batch ``perm[index * B:(index + 1) * B]`` of the on-device training set;
        with ``batched``, ``train_step(state, x, labels, key) -> state`` on that batch.
    """

    if compiler_options == "auto":
        compiler_options = xla_options(cfg.conv_backend)

    def loss_fn(params, rest, x, targets):
        logits, model = apply_model(graphdef, params, rest, x, cfg)
        loss = optax.softmax_cross_entropy(logits, targets).mean()
        _, _, new_rest = nnx.split(model, *split_filters)
        return loss, (logits, new_rest)

    def train_step(state: TrainState, x_all, y_all, perm, index, key):
        x, labels = gather_batch(x_all, y_all, perm, index, cfg)
        return update(state, x, labels, key)

    def batch_step(state: TrainState, x, labels, key):
        if cfg.batch_sharding is not None:
            x = jax.lax.with_sharding_constraint(x, cfg.batch_sharding)
            labels = jax.lax.with_sharding_constraint(labels, cfg.batch_sharding)
        return update(state, x, labels, key)

    def update(state: TrainState, x, labels, key):
        x = preprocess(x, cfg)
        targets = jax.nn.one_hot(labels, cfg.num_classes)
        if augment is not None:
            x, targets = augment(step_key(key, state.step), x, targets)
        if cfg.label_smoothing:
            targets = optax.smooth_labels(targets, cfg.label_smoothing)
        (loss, (logits, rest)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, state.rest, x, targets)
        updates, opt = tx.update(grads, state.opt, state.params)
        params = optax.apply_updates(state.params, updates)
        ok = jnp.isfinite(loss)
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)  # noqa: E731
        params, opt, rest = keep(params, state.params), keep(opt, state.opt), keep(rest, state.rest)
        ema = state.ema
        if cfg.ema_decay is not None:
            d = cfg.ema_decay
            ema = keep(jax.tree.map(lambda e, p: d * e + (1 - d) * p, ema, params), ema)
        correct = jnp.sum(jnp.argmax(logits, -1) == jnp.argmax(targets, -1))
        sums = {
            "loss": state.sums["loss"] + jnp.where(ok, loss, 0.0) * cfg.batch_size,
            "correct": state.sums["correct"] + correct.astype(jnp.float32),
            "count": state.sums["count"] + cfg.batch_size,
        }
        first_bad = (~ok) & (state.bad_step < 0)
        return TrainState(
            params=params, rest=rest, opt=opt, ema=ema, step=state.step + 1, sums=sums,
            bad_step=jnp.where(first_bad, state.step, state.bad_step),
            bad_value=jnp.where(first_bad, loss, state.bad_value),
        )  # fmt: skip

    step = batch_step if batched else train_step
    if state_shardings is not None:  # explicit: the state keeps its layout step after step
        return jax.jit(step, donate_argnums=(0,), out_shardings=state_shardings,
                       compiler_options=compiler_options)  # fmt: skip
    return jax.jit(step, donate_argnums=(0,), compiler_options=compiler_options)


def make_eval_step(graphdef, cfg: StepConfig):
    """Jitted ``(params, rest, x, y, mask) -> (loss_sum, correct, count)`` for one padded batch."""

    def eval_step(params, rest, x, y, mask):
        logits = apply_model(graphdef, params, rest, preprocess(x, cfg), cfg)[0]
        loss = cross_entropy(logits, y, cfg.num_classes)
        correct = (jnp.argmax(logits, -1) == y) & mask
        return jnp.sum(jnp.where(mask, loss, 0.0)), jnp.sum(correct), jnp.sum(mask)

    return jax.jit(eval_step, compiler_options=xla_options(cfg.conv_backend))


