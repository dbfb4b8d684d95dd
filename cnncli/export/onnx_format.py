"""ONNX through jax2onnx, run by onnxruntime; which cnncli layers ONNX cannot express.

Every layer kind of `cnncli.arith.layers` was converted alone and in blocks, 1-D, 2-D and
3-D, with jax2onnx 0.17.1 and run under onnxruntime 1.32 (the slow test
``test_the_onnx_list_is_true_to_jax2onnx`` keeps this list honest: each case below
still fails, every other kind converts and matches).
Four things do not work, all found before converting (`unsupported_layers`):

- 3-D convolutions (``conv``/``tconv`` on ``D x H x W x C`` input, and the blocks
  built of them): jax2onnx raises ``NotImplementedError: Unsupported conv layouts``.
- Max pooling that takes the ``reduce_window`` path (`cnncli.models.pooling`:
  overlapping windows of more than 9 elements, e.g. ``maxpool:k=4,s=2``) over 2 or 3
  spatial axes: jax2onnx emits an ONNX ``MaxPool`` over all 4 (5) axes, which
  onnxruntime rejects ("Unsupported pooling size"). 1-D works.
- ``pm=edge`` padding: the converted graph fails in onnxruntime with a variable batch
  size (a shape mismatch in a ``Concat``).
- ``train.precision = "bf16"``: onnxruntime's CPU kernels have no bfloat16 ``Add``.

StableHLO (`cnncli.export.stablehlo`) expresses all of them. jax2onnx and onnxruntime
are the optional ``onnx`` extra; they are imported only here, when converting.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata

import jax
import numpy as np
from flax import nnx

from cnncli.arith import layers as L
from cnncli.errors import ExportError
from cnncli.export.serve import INPUT_NAME, Signature
from cnncli.export.stablehlo import BATCH
from cnncli.models import pooling
from cnncli.models.ops import PaddedConv, WindowPool

INSTALL_HINT = "install the onnx extra: `uv sync --extra onnx` (or `pip install 'cnncli[onnx]'`)"


@dataclass(frozen=True)
class Unsupported:
    """A part of a model that ONNX (through jax2onnx and onnxruntime) cannot express.

    Attributes:
        layer: the model's name for it, as ``inspect-filters --list`` prints conv layers
            (``conv3``, ``resblock2.conv1``, ``maxpool1``), or the recipe key for a
            run-wide setting (``train.precision``).
        token: the top-level layer's token (``conv:c=8,k=3,pm=edge``) or the setting's value.
        reason: what fails, in words.
    """

    layer: str
    token: str
    reason: str


def _reasons(module: nnx.Module) -> Iterator[tuple[tuple[str, ...], str]]:
    """(path inside the layer, reason) for each part of one top-level layer that ONNX cannot express."""
    for path, part in nnx.iter_modules(module):
        path = tuple(map(str, path))
        if isinstance(part, (nnx.Conv, nnx.ConvTranspose)) and len(part.kernel_size) == 3:
            yield path, "3-D convolution: jax2onnx converts 1-D and 2-D convolutions only"
        if isinstance(part, PaddedConv) and part.pad_mode == "edge":
            yield path, "edge padding (pm=edge): the converted graph fails in onnxruntime with a variable batch size"
        if isinstance(part, WindowPool) and part.kind == "maxpool" and len(part.window) >= 2:
            pads = tuple((lo, hi + e) for (lo, hi), e in zip(part.pads, part.extra))
            impl = part.impl if part.impl != "auto" else pooling.choose_max_impl(
                part.window, part.strides, part.dilation, pads
            )  # fmt: skip
            if impl == "reduce_window":
                window = "x".join(map(str, part.window))
                yield path, (
                    f"max pooling over overlapping {window} windows (lax.reduce_window): jax2onnx makes it an ONNX "
                    "MaxPool over every axis, which onnxruntime rejects"
                )


def unsupported_layers(run) -> list[Unsupported]:
    """Everything in a loaded run's model that ONNX cannot express, in layer order (empty: all of it can)."""
    found = []
    if run.recipe.train.precision == "bf16":
        found.append(Unsupported("train.precision", "bf16", "bfloat16 arithmetic: onnxruntime's CPU kernels lack it"))
    for name, spec in zip(run.model.names, run.specs):
        for path, reason in sorted(_reasons(getattr(run.model, name))):
            found.append(Unsupported(".".join((name, *path)), L.to_token(spec), reason))
    return found


def unsupported_error(found: list[Unsupported], workdir) -> ExportError:
    """One error listing every part ONNX cannot express, each by name and token."""
    lines = "".join(f"\n  {u.layer} ({u.token}): {u.reason}" for u in found)
    return ExportError(
        f"{workdir}: {len(found)} part{'s' if len(found) != 1 else ''} of this model cannot be expressed in ONNX "
        f"(jax2onnx {_version('jax2onnx')}, onnxruntime {_version('onnxruntime')}):{lines}",
        hint="export with --format stablehlo (the default): StableHLO expresses every cnncli layer",
    )


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def versions() -> dict[str, str]:
    """The converter's and runtime's versions, for model.json."""
    return {name: _version(name) for name in ("jax2onnx", "onnx", "onnxruntime")}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """jax2onnx and onnx_ir log shape-inference warnings for every graph; the library never prints."""
    loggers = [logging.getLogger(name) for name in ("jax2onnx", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def to_onnx_bytes(fn: Callable, sig: Signature) -> tuple[bytes, int]:
    """Convert ``fn`` for a ``(B, *input_shape)`` input; returns the serialized model and its opset.

    Raises:
        ExportError: jax2onnx is not installed, or fails on this model.
    """
    try:
        from jax2onnx import to_onnx
    except ImportError:
        raise ExportError("--format onnx needs jax2onnx, which is not installed", hint=INSTALL_HINT) from None
    (batch,) = jax.export.symbolic_shape(BATCH)
    spec = jax.ShapeDtypeStruct((batch, *sig.input_shape), np.dtype(sig.input_dtype))
    try:
        with _quiet():
            proto = to_onnx(fn, [spec], model_name="cnncli", return_mode="proto",
                            input_names=[INPUT_NAME], output_names=[sig.output_name])  # fmt: skip
        blob = proto.SerializeToString()
    except Exception as err:  # a converter's failure on a model cnncli did not foresee
        raise ExportError(
            f"jax2onnx {_version('jax2onnx')} could not convert this model: {type(err).__name__}: {err}",
            hint="export with --format stablehlo (the default), which expresses every cnncli layer",
        ) from err
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    return blob, int(opset)


def load_onnx(blob: bytes) -> Callable[[np.ndarray], np.ndarray]:
    """The serialized model as a numpy function, run by onnxruntime on the CPU."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportError("--format onnx needs onnxruntime to check the model, which is not installed",
                          hint=INSTALL_HINT) from None  # fmt: skip
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: no shape-merge warnings on stderr
    try:
        session = ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
    except Exception as err:
        raise _runtime_error(err) from err
    name = session.get_inputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        try:
            return np.asarray(session.run(None, {name: x})[0])
        except Exception as err:  # onnxruntime rejects a node jax2onnx emitted
            raise _runtime_error(err, len(x)) from err

    return run


def _runtime_error(err: Exception, batch: int | None = None) -> ExportError:
    where = f" at batch size {batch}" if batch is not None else ""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return ExportError(
        f"onnxruntime {_version('onnxruntime')} could not run the converted model{where}: {text}",
        hint="export with --format stablehlo (the default), which expresses every cnncli layer",
    )
