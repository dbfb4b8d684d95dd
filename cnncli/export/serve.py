"""The function an export serves, and cnncli's own outputs it is checked against.

`serve_fn` is a run's eval-mode forward pass with its weights baked in: raw inputs
(uint8 pixels, or the raw float values a run trained on) are normalized inside with the
run's per-channel mean and std (`cnncli.models.apply.preprocess`, the one normalisation
training and evaluation use), unless ``raw`` (then the caller normalizes and feeds
float32). It runs through `cnncli.models.apply.apply_model` with the run's compute dtype
and XLA's own convolutions (the oneDNN custom calls are never exported), so it is the
same computation as `reference_fn`, the jitted logits function of ``eval`` and
``predict``. `Signature` says what the exported model takes and gives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import numpy as np
from flax import nnx

from cnncli.models.apply import apply_model, make_logits_fn, make_step_config, preprocess

LAYOUTS = {1: "NWC", 2: "NHWC", 3: "NDHWC"}  # spatial axes -> channels-last layout name
INPUT_NAME = "input"


@dataclass(frozen=True)
class Signature:
    """What an exported model takes and gives.

    Attributes:
        input_shape: one example's shape, channels last; the batch axis is symbolic.
        data_dtype: the dtype of the run's raw data: ``uint8`` (pixels) or ``float32``.
        raw: the input is already normalized float32 (``--raw``).
        softmax: the output is probabilities, not logits (``--softmax``).
        num_classes: output width.
        compute_dtype: ``float32`` or ``bfloat16`` (the run's ``train.precision``).
        mean, std: the per-channel normalisation, in raw units.
    """

    input_shape: tuple[int, ...]
    data_dtype: str
    raw: bool
    softmax: bool
    num_classes: int
    compute_dtype: str
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def input_dtype(self) -> str:
        """What the exported model is fed: float32 when ``raw``, else the run's raw data dtype."""
        return "float32" if self.raw else self.data_dtype

    @property
    def layout(self) -> str:
        return LAYOUTS.get(len(self.input_shape) - 1, "N" + "?" * (len(self.input_shape) - 1) + "C")

    @property
    def output_name(self) -> str:
        return "probabilities" if self.softmax else "logits"


def _step_config(run):
    return make_step_config(run.data, num_classes=run.num_classes, batch_size=1, precision=run.recipe.train.precision)


def signature(run, data_dtype, *, raw: bool = False, softmax: bool = False) -> Signature:
    """The `Signature` of a loaded run's export; ``data_dtype`` is its eval split's dtype."""
    cfg = _step_config(run)
    return Signature(
        input_shape=tuple(run.input_shape), data_dtype="uint8" if np.dtype(data_dtype) == np.uint8 else "float32",
        raw=raw, softmax=softmax, num_classes=run.num_classes, compute_dtype=np.dtype(cfg.compute_dtype).name,
        mean=cfg.mean, std=cfg.std,
    )  # fmt: skip


def serve_fn(run, sig: Signature) -> Callable[[jax.Array], jax.Array]:
    """``x (B, *input_shape) -> (B, num_classes)`` float32 logits or probabilities, weights as constants."""
    graphdef, params, rest = nnx.split(run.model, nnx.Param, ...)
    cfg = _step_config(run)

    def serve(x):
        x = x if sig.raw else preprocess(x, cfg)
        logits = apply_model(graphdef, params, rest, x, cfg)[0]
        return jax.nn.softmax(logits, axis=-1) if sig.softmax else logits

    return serve


def reference_fn(run, sig: Signature) -> Callable[[np.ndarray], np.ndarray]:
    """cnncli's own outputs for a batch of raw inputs: ``eval``'s jitted logits (softmax in float64 after)."""
    graphdef, params, rest = nnx.split(run.model, nnx.Param, ...)
    logits_fn = make_logits_fn(graphdef, _step_config(run))

    def reference(x_raw: np.ndarray) -> np.ndarray:
        logits = np.asarray(logits_fn(params, rest, x_raw), np.float32)
        return softmax(logits) if sig.softmax else logits

    return reference


def reference_spread(run, sig: Signature, x_raw: np.ndarray) -> float:
    """How far cnncli's own outputs move when XLA compiles them with its default options.

    `reference_fn` compiles with cnncli's XLA CPU options (`cnncli.models.apply.xla_options`);
    the same function under plain ``jax.jit`` fuses and rounds differently. The largest
    difference between the two is the floor below which no export can be asked to agree:
    deep networks that amplify float32 rounding (ResNet-50 with random weights and
    BatchNorm statistics of random data: 2.4e-4 on logits of 6) move by more than 1e-4
    on their own.
    """
    graphdef, params, rest = nnx.split(run.model, nnx.Param, ...)
    cfg = _step_config(run)
    plain = jax.jit(lambda p, r, x: apply_model(graphdef, p, r, preprocess(x, cfg), cfg)[0])
    other = np.asarray(plain(params, rest, x_raw), np.float32)
    ours = reference_fn(run, sig)(x_raw)
    return float(np.abs((softmax(other) if sig.softmax else other) - ours).max())


def prepare(x_raw: np.ndarray, sig: Signature) -> np.ndarray:
    """What a caller feeds the exported model: raw data as is, or ``(x - mean) / std`` in float32 with ``raw``."""
    if not sig.raw:
        return np.ascontiguousarray(x_raw.astype(np.dtype(sig.input_dtype), copy=False))
    mean, std = np.asarray(sig.mean, np.float32), np.asarray(sig.std, np.float32)
    return np.ascontiguousarray((x_raw.astype(np.float32) - mean) / std)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, computed in float64, returned in float32."""
    z = np.asarray(logits, np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)
