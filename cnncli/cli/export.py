"""``cnncli export``: the command function (heavy imports inside)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cnncli.cli._options import CheckpointOpt, EmaOpt, JsonOpt, RunArg, checkpoint_arg


def export(
    run: RunArg,
    format_: Annotated[
        str, typer.Option("--format", "-f", help="stablehlo (jax.export, loads with plain JAX) or onnx (jax2onnx).")
    ] = "stablehlo",
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="The model file. Default: RUN/export/FORMAT/model.stablehlo or .onnx."),
    ] = None,
    checkpoint: CheckpointOpt = "latest",
    ema: EmaOpt = False,
    raw: Annotated[
        bool, typer.Option("--raw", help="Take normalized float32 input, (x - mean) / std, instead of raw data.")
    ] = False,
    softmax: Annotated[bool, typer.Option("--softmax", help="Return probabilities instead of logits.")] = False,
    tolerance: Annotated[
        float | None,
        typer.Option("--tolerance", help="Largest allowed difference from cnncli's outputs. Default: 1e-4 (1e-2 for "
                     "bf16 runs).", min=0.0, show_default=False),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Export a trained run as one portable model file, checked against cnncli before it is written.

    **stablehlo** (default): `jax.export`'s serialized StableHLO, any batch size, loaded
    with plain JAX (`jax.export.deserialize(...)`, `.call(x)`). **onnx**: through jax2onnx,
    run by onnxruntime; parts of a model ONNX cannot express are listed first.

    The model takes the run's raw data (uint8 pixels for images), normalizes it inside and
    returns logits (`--softmax`: probabilities). A model.json beside the file gives the
    input shape, dtype and layout, class names, normalisation and versions.

    Before writing, the exported model runs on the first examples of the evaluation split
    at batch sizes 1, 7 and 64; its outputs must match cnncli's own within 1e-4
    (`--tolerance`), or nothing is written (exit 1).

    Examples:

      cnncli export runs/quickstart

      cnncli export runs/quickstart --format onnx --json

      cnncli export runs/quickstart --checkpoint best --softmax -o digits.stablehlo
    """
    from cnncli.export.exporter import check_format, export_run
    from cnncli.report.export import print_export
    from cnncli.runs.load import load_run

    fmt = check_format(format_)  # a typo fails before the run loads
    loaded = load_run(run, checkpoint_arg(checkpoint), ema=ema)
    result = export_run(loaded, fmt=fmt, output=output, raw=raw, softmax=softmax, tolerance=tolerance)
    print_export(result, json_out=json_out)
