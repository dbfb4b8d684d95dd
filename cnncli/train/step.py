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

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from cnncli.models.ops import conv_backend


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


def trainable_filter(freeze: list[str]) -> Callable[[tuple, Any], bool]:
    """An NNX filter: parameters whose layer path matches none of the ``freeze`` globs.

    A glob matches the top-level layer name (``conv*`` freezes conv1, conv2, ...) or
    the dotted path (``resblock1.conv*``).
    """

    def is_trainable(path: tuple, value: Any) -> bool:
        if not isinstance(value, nnx.Param):
            return False
        names = [str(p) for p in path]
        dotted = ".".join(names)
        return not any(fnmatch.fnmatchcase(names[0], g) or fnmatch.fnmatchcase(dotted, g) for g in freeze)

    return is_trainable


@dataclass(frozen=True)
class StepConfig:
    """Static settings baked into the compiled steps."""

    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    batch_size: int
    label_smoothing: float = 0.0
    ema_decay: float | None = None
    compute_dtype: Any = jnp.float32
    batch_sharding: Any = None  # a NamedSharding splitting the batch over the mesh's data axis
    conv_backend: str = "xla"  # "onednn": convolutions through cnncli.native.onednn (CPU)


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


def preprocess(x: jax.Array, cfg: StepConfig) -> jax.Array:
    """Raw pixels (uint8 or float) -> normalized float32, per channel (last axis)."""
    mean = jnp.asarray(cfg.mean, jnp.float32)
    std = jnp.asarray(cfg.std, jnp.float32)
    return (x.astype(jnp.float32) - mean) / std


def cross_entropy(logits: jax.Array, labels: jax.Array, num_classes: int, smoothing: float = 0.0) -> jax.Array:
    """Per-example softmax cross-entropy with optional label smoothing (float32)."""
    targets = jax.nn.one_hot(labels, num_classes)
    if smoothing:
        targets = optax.smooth_labels(targets, smoothing)
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


# XLA CPU debug options for every compiled step (train, eval, logits), passed per
# program (``jax.jit(..., compiler_options=...)``), so they need no XLA_FLAGS before
# the backend starts and leave other programs alone. Measured in BENCHMARKS.md
# ("Levers"), alternating in one process:
# - YNNPACK elementwise fusions on: BatchNorm/ReLU/residual results materialize
#   once, instead of XLA re-computing whole residual chains inside the transposes
#   that feed every weight-gradient convolution (up to 145 ms per transpose on
#   ResNet-20): the ResNet-20 step took 25-30% less CPU time.
# - YNNPACK convolutions off (XLA's own convolutions instead): ResNet-20 +17%,
#   the 2-conv CNN +22% images/s; LeNet-5 unchanged.
# ``CNNCLI_XLA_OPTIONS=off`` compiles with XLA's defaults.
CPU_COMPILER_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": ",".join(
        f"LIBRARY_FUSION_TYPE_{t}" for t in ("ELTWISE", "REDUCE", "INDIVIDUAL_DOT")
    ),
}


def xla_options(conv_backend: str = "xla") -> dict[str, str] | None:
    """The XLA options cnncli compiles its steps with on this backend (None: XLA's defaults).

    With oneDNN convolutions (``conv_backend="onednn"``) XLA's default fusions are
    faster (no transposed copies feed weight gradients any more; BENCHMARKS.md), so
    the options are for XLA's own convolutions only.
    """
    import os

    if os.environ.get("CNNCLI_XLA_OPTIONS", "").lower() in ("off", "0", "none") or conv_backend != "xla":
        return None
    return dict(CPU_COMPILER_OPTIONS) if jax.default_backend() == "cpu" else None


def compute_params(params, dtype):
    """Floating parameters cast to the compute dtype (identity for float32).

    The cast is differentiable: gradients with respect to the float32 master
    parameters come back in float32.
    """
    if dtype == jnp.float32:
        return params
    cast = lambda p: p.astype(dtype) if jnp.issubdtype(p.dtype, jnp.floating) else p  # noqa: E731
    return jax.tree.map(cast, params)


def apply_model(graphdef, params, rest, x, cfg: StepConfig):
    """Rebuild the model inside a trace and run it on a normalized batch.

    The parameters are cast to the compute dtype (`compute_params`), convolutions use
    ``cfg.conv_backend``; returns float32 logits and the merged model (whose state
    carries the updated batch statistics in training mode).
    """
    model = nnx.merge(graphdef, compute_params(params, cfg.compute_dtype), rest, copy=True)
    with conv_backend(cfg.conv_backend):
        logits = model(x.astype(cfg.compute_dtype)).astype(jnp.float32)
    return logits, model


def zero_sums() -> dict:
    """Fresh metric accumulators."""
    return {"loss": jnp.zeros((), jnp.float32), "correct": jnp.zeros((), jnp.float32), "count": jnp.zeros((), jnp.float32)}


def make_train_step(graphdef, split_filters, tx, cfg: StepConfig, augment=None, state_shardings=None,
                    *, compiler_options="auto"):  # fmt: skip
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

    Returns:
        ``train_step(state, x_all, y_all, perm, index, key) -> state``: one update on
        the batch ``perm[index * B:(index + 1) * B]`` of the on-device training set.
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
        x = preprocess(x, cfg)
        targets = jax.nn.one_hot(labels, cfg.num_classes)
        if augment is not None:
            x, targets = augment(jax.random.fold_in(key, state.step), x, targets)
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

    if state_shardings is not None:  # explicit: the state keeps its layout step after step
        return jax.jit(train_step, donate_argnums=(0,), out_shardings=state_shardings,
                       compiler_options=compiler_options)  # fmt: skip
    return jax.jit(train_step, donate_argnums=(0,), compiler_options=compiler_options)


def make_logits_fn(graphdef, cfg: StepConfig):
    """Jitted ``(params, rest, x_raw) -> logits`` in eval mode (graphdef from ``model.eval()``)."""

    def logits_fn(params, rest, x):
        return apply_model(graphdef, params, rest, preprocess(x, cfg), cfg)[0]

    return jax.jit(logits_fn, compiler_options=xla_options(cfg.conv_backend))


def make_eval_step(graphdef, cfg: StepConfig):
    """Jitted ``(params, rest, x, y, mask) -> (loss_sum, correct, count)`` for one padded batch."""

    def eval_step(params, rest, x, y, mask):
        logits = apply_model(graphdef, params, rest, preprocess(x, cfg), cfg)[0]
        loss = cross_entropy(logits, y, cfg.num_classes)
        correct = (jnp.argmax(logits, -1) == y) & mask
        return jnp.sum(jnp.where(mask, loss, 0.0)), jnp.sum(correct), jnp.sum(mask)

    return jax.jit(eval_step, compiler_options=xla_options(cfg.conv_backend))


def batches(n: int, batch_size: int):
    """(start, stop) index ranges covering ``n`` examples in fixed-size batches."""
    for start in range(0, n, batch_size):
        yield start, min(start + batch_size, n)


def pad_batch(x, y, batch_size: int):
    """Pad a short last batch to ``batch_size`` (so eval compiles once) and return the mask."""
    import numpy as np

    n = x.shape[0]
    mask = np.zeros(batch_size, bool)
    mask[:n] = True
    if n == batch_size:
        return x, y, mask
    pad = batch_size - n
    x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
    y = np.concatenate([y, np.zeros((pad,), y.dtype)])
    return x, y, mask
