"""The forward pass shared by training and inference, and what it is configured by.

`apply_model` rebuilds an NNX model from split state inside a trace and runs it on a
normalized batch; `preprocess` is the one normalisation (raw pixels -> float32,
per channel); `make_logits_fn` is the jitted eval-mode forward pass that `eval`,
`predict`, `inspect-filters` and training's own evaluation all use. `StepConfig` holds
the static settings baked into every compiled step (train, eval, logits).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from cnncli.config.plan import normalization
from cnncli.models.backend import conv_backend


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


def compute_dtype(precision: str) -> Any:
    """``train.precision`` -> the dtype of the forward and backward pass (``bf16``: bfloat16, else float32)."""
    return jnp.bfloat16 if precision == "bf16" else jnp.float32


def make_step_config(meta, *, num_classes: int, batch_size: int, precision: str = "fp32", **options) -> StepConfig:
    """The `StepConfig` of a run's data: training, evaluation and the profiler all make it here.

    Args:
        meta: the data facts with per-channel ``mean`` and ``std`` (`cnncli.config.plan.normalization`):
            `Dataset.meta` while training, ``data.json`` when reading a run back.
        num_classes: logits width.
        batch_size: examples per compiled call.
        precision: ``train.precision`` (`compute_dtype`).
        options: the other `StepConfig` fields (label_smoothing, ema_decay, batch_sharding, conv_backend).
    """
    mean, std = normalization(meta)
    return StepConfig(num_classes=num_classes, mean=mean, std=std, batch_size=batch_size,
                      compute_dtype=compute_dtype(precision), **options)  # fmt: skip


def normalize(x: jax.Array, mean, std) -> jax.Array:
    """Raw pixels (uint8 or float) -> ``(x - mean) / std`` in float32, per channel (last axis).

    The one normalisation: training, evaluation and `cnncli.inspect.probe` all use it.
    """
    return (x.astype(jnp.float32) - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def preprocess(x: jax.Array, cfg: StepConfig) -> jax.Array:
    """Raw pixels (uint8 or float) -> normalized float32 with the run's ``cfg.mean``/``cfg.std``."""
    return normalize(x, cfg.mean, cfg.std)


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


def make_logits_fn(graphdef, cfg: StepConfig):
    """Jitted ``(params, rest, x_raw) -> logits`` in eval mode (graphdef from ``model.eval()``)."""

    def logits_fn(params, rest, x):
        return apply_model(graphdef, params, rest, preprocess(x, cfg), cfg)[0]

    return jax.jit(logits_fn, compiler_options=xla_options(cfg.conv_backend))

