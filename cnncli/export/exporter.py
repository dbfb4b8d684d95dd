"""A trained run exported as one file plus a ``model.json``, verified before it is written.

`export_run` builds the served function (`cnncli.export.serve`), converts it
(`cnncli.export.stablehlo` or `cnncli.export.onnx_format`; for ONNX the parts it cannot
express are listed first, all at once), writes the artifact to a temporary file beside
its destination, loads that file back and checks it against cnncli's own outputs on
the run's evaluation split (`cnncli.export.verify`). Only a model within the tolerance is
renamed into place, then its ``model.json``; on any error both temporary files are
removed, so nothing is left at the output path. Nothing here prints.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax

from cnncli import __version__
from cnncli._json import to_jsonable
from cnncli.errors import DataError, ExportMismatchError, UsageError, unknown_choice
from cnncli.export import onnx_format, stablehlo
from cnncli.export.serve import (
    INPUT_NAME,
    Signature,
    prepare,
    reference_fn,
    reference_spread,
    serve_fn,
    signature,
)
from cnncli.export.verify import BATCH_SIZES, Verification, default_tolerance, verify
from cnncli.runs.splits import load_eval_split

FORMATS = {"stablehlo": ".stablehlo", "onnx": ".onnx"}  # format -> file extension
EXPORT_DIR = "export"  # RUN/export/<format>/model.<ext>, model.json beside it
METADATA = "model.json"


@dataclass
class ExportResult:
    """What was written, what it takes and gives, and how it compared with cnncli.

    ``input`` and ``output`` are model.json's (name, shape with ``None`` for the batch,
    dtype, and layout or kind).
    """

    path: Path
    format: str
    metadata: Path
    checkpoint_step: int
    weights: str
    raw: bool
    softmax: bool
    input: dict[str, Any]
    output: dict[str, Any]
    bytes: int
    verification: Verification
    seconds: float  # conversion and verification
    workdir: str = ""
    warnings: list[str] = field(default_factory=list)


def default_output(workdir: Path, fmt: str) -> Path:
    """``RUN/export/<format>/model.<ext>``: one folder per format, so each keeps its own model.json."""
    return Path(workdir) / EXPORT_DIR / fmt / f"model{FORMATS[fmt]}"


def metadata_path(output: Path) -> Path:
    """The model.json of an artifact: ``<stem>.json`` beside it (``model.json`` for the default ``model.<ext>``)."""
    return output.with_suffix(".json")


def check_format(fmt: str) -> str:
    """``stablehlo`` or ``onnx`` (any case); anything else is a usage error."""
    if fmt.lower() not in FORMATS:
        raise UsageError(f"--format: {unknown_choice('format', fmt, FORMATS)}")
    return fmt.lower()


def _check_output(output: Path) -> None:
    if output.suffix == ".json":
        raise UsageError(f"--output {output}: a .json name is taken by the model's metadata ({METADATA})",
                         hint="e.g. --output model.onnx")  # fmt: skip
    if output.is_dir():
        raise UsageError(f"--output {output} is a directory", hint=f"give a file name, e.g. {output / 'model.onnx'}")


@contextlib.contextmanager
def _staged(final: Path) -> Iterator[Path]:
    """A temporary file beside ``final``, renamed onto it when the block succeeds and removed when it fails."""
    tmp = final.with_name(f".{final.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")  # the umask's permissions
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, final)


@contextlib.contextmanager
def _folder(path: Path) -> Iterator[None]:
    """Create ``path`` (and missing parents); remove the ones created here if the block fails."""
    created = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        for p in created:  # deepest first
            with contextlib.suppress(OSError):
                p.rmdir()
        raise


def _io(sig: Signature) -> tuple[dict[str, Any], dict[str, Any]]:
    model_input = {"name": INPUT_NAME, "shape": [None, *sig.input_shape], "dtype": sig.input_dtype,
                   "layout": sig.layout}  # fmt: skip
    output = {"name": sig.output_name, "shape": [None, sig.num_classes], "dtype": "float32",
              "kind": "probabilities" if sig.softmax else "logits"}  # fmt: skip
    return model_input, output


def model_card(run, sig: Signature, fmt: str, artifact: Path, verification: Verification,
               extra: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """The model.json of an export: what it takes and gives, where it came from, how it was checked."""
    model_input, output = _io(sig)
    versions = {"cnncli": __version__, "jax": jax.__version__}
    if fmt == "onnx":
        versions.update(onnx_format.versions())
    return {
        "format": fmt,
        "artifact": artifact.name,
        "input": model_input,
        "output": output,
        "raw": sig.raw,
        "softmax": sig.softmax,
        "class_names": run.class_names,
        "normalization": {
            "mean": list(sig.mean), "std": list(sig.std), "inside": not sig.raw,
            "formula": "(x - mean) / std per channel (the last axis), in float32",
        },
        "value_range": run.data.get("value_range"),
        "recipe_digest": run.recipe.digest(),
        "run": {
            "workdir": str(run.workdir), "checkpoint_step": run.step, "weights": run.weights,
            "compute_dtype": sig.compute_dtype,
        },
        "versions": versions,
        **extra,
        "verification": to_jsonable(verification),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def _convert(fmt: str, run, sig: Signature) -> tuple[bytes, dict[str, Any]]:
    """The serialized model and the format's own model.json facts."""
    fn = serve_fn(run, sig)
    if fmt == "stablehlo":
        return stablehlo.to_stablehlo(fn, sig), {"platforms": list(stablehlo.PLATFORMS), "batch_dim": stablehlo.BATCH}
    if found := onnx_format.unsupported_layers(run):
        raise onnx_format.unsupported_error(found, run.workdir)
    blob, opset = onnx_format.to_onnx_bytes(fn, sig)
    return blob, {"opset": opset, "batch_dim": stablehlo.BATCH}


def _load(fmt: str, blob: bytes):
    return stablehlo.load_stablehlo(blob) if fmt == "stablehlo" else onnx_format.load_onnx(blob)


def export_run(run, *, fmt: str = "stablehlo", output: str | Path | None = None, raw: bool = False,
               softmax: bool = False, tolerance: float | None = None) -> ExportResult:  # fmt: skip
    """Export a loaded run, verified on its evaluation split; write the artifact and its model.json.

    Args:
        run: a `cnncli.runs.load.LoadedRun` (its checkpoint and weights chosen by the caller).
        fmt: ``stablehlo`` (`jax.export`) or ``onnx`` (jax2onnx, checked with onnxruntime).
        output: the artifact's path; default `default_output`. model.json goes beside it
            (`metadata_path`).
        raw: the model takes normalized float32 instead of raw data (no preprocessing inside).
        softmax: the model returns probabilities instead of logits.
        tolerance: the largest allowed absolute difference from cnncli's outputs;
            default `cnncli.export.verify.default_tolerance` (1e-4 in float32, 1e-2 in bfloat16).

    Raises:
        ExportError: ONNX cannot express parts of the model (all listed), or the converter
            is missing or fails.
        ExportMismatchError: the exported model's outputs differ from cnncli's beyond the
            tolerance; nothing is written.
        UsageError: an unknown format or an unusable output path.
        DataError: the evaluation split does not load or fit the run.
    """
    t0 = time.perf_counter()
    fmt = check_format(fmt)
    output = Path(output) if output is not None else default_output(run.workdir, fmt)
    _check_output(output)
    data, split, source, warnings = load_eval_split(run)
    x = data.x[: max(BATCH_SIZES)]
    if len(x) == 0:
        raise DataError(f"{source} [{split}] has no examples to verify the export on",
                        hint="the run's evaluation split needs at least one example")  # fmt: skip
    sig = signature(run, data.x.dtype, raw=raw, softmax=softmax)
    blob, extra = _convert(fmt, run, sig)
    meta_path = metadata_path(output)
    with _folder(output.parent), _staged(meta_path) as tmp_meta, _staged(output) as tmp_model:
        tmp_model.write_bytes(blob)
        check = verify(_load(fmt, tmp_model.read_bytes()), reference_fn(run, sig), lambda v: prepare(v, sig), x,
                       runtime="jax" if fmt == "stablehlo" else "onnxruntime", split=split, source=source,
                       tol=default_tolerance(sig.compute_dtype) if tolerance is None else tolerance)  # fmt: skip
        if not check.passed:
            raise mismatch_error(check, fmt, output, reference_spread(run, sig, x))
        card = model_card(run, sig, fmt, output, check, extra)
        tmp_meta.write_text(json.dumps(to_jsonable(card), indent=2) + "\n")
    model_input, model_output = _io(sig)
    return ExportResult(
        path=output, format=fmt, metadata=meta_path, checkpoint_step=run.step, weights=run.weights, raw=raw,
        softmax=softmax, input=model_input, output=model_output, bytes=len(blob), verification=check,
        seconds=time.perf_counter() - t0, workdir=str(run.workdir), warnings=list(warnings),
    )  # fmt: skip


def mismatch_error(check: Verification, fmt: str, output: Path, spread: float) -> ExportMismatchError:
    """The error for an export whose outputs differ from cnncli's beyond the tolerance.

    ``spread`` is how far cnncli's own outputs move under XLA's default compile options
    (`cnncli.export.serve.reference_spread`): when the export is about as close as that,
    the model amplifies rounding and a larger ``--tolerance`` is the answer; when it is
    much further, the conversion is wrong.
    """
    per_batch = ", ".join(f"batch {c.batch_size}: {c.max_abs_diff:.3g}" for c in check.per_batch)
    message = (
        f"the exported {fmt} model's outputs differ from cnncli's by up to {check.max_abs_diff:.3g} "
        f"(tolerance {check.tolerance:g}; {per_batch}; top-1 agreement {100 * check.top1_agreement:.2f}%) "
        f"under {check.runtime} on {check.source} [{check.split}]; nothing was written to {output}"
    )
    if 0 < check.max_abs_diff <= 4 * spread:  # as close as cnncli is to itself (both finite)
        suggest = 10 ** math.ceil(math.log10(check.max_abs_diff))
        return ExportMismatchError(
            f"{message}. cnncli's own outputs move by {spread:.3g} when XLA compiles them with its default "
            "options instead of cnncli's: this model amplifies float32 rounding, so no export can be much closer",
            hint=f"accept it with --tolerance {suggest:g}",
        )
    return ExportMismatchError(
        f"{message} (cnncli's own outputs move by only {spread:.3g} under other compile options)",
        hint="try --format stablehlo (the same XLA computation as cnncli), or report the model's recipe as a bug",
    )
