"""``cnncli eval`` and ``cnncli predict``: the command functions (heavy imports inside)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cnncli.cli._options import CheckpointOpt, EmaOpt, JsonOpt, RunArg, checkpoint_arg, source_arg


def eval_run(
    run: RunArg,
    checkpoint: CheckpointOpt = "latest",
    split: Annotated[
        str | None, typer.Option("--split", help="Split to evaluate. Default: the recipe's data.eval_split.")
    ] = None,
    source: Annotated[
        str | None,
        typer.Option("--source", help="Another data source with the same input shape and classes, e.g. npz:new.npz."),
    ] = None,
    worst: Annotated[
        int, typer.Option("--worst", help="Also draw the N most confidently wrong examples (worst.png).", min=0)
    ] = 0,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o",
            help="Folder for confusion.png and worst.png. Default: RUN/eval/SPLIT (RUN/eval/NAME-SPLIT for another --source).",
        ),
    ] = None,
    ema: EmaOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Evaluate a trained run: accuracy, top-5, loss, per-class precision/recall/F1, confusion, calibration.

    The model is rebuilt from the run's saved recipe; no Python needed. Evaluating the
    final checkpoint on the recipe's split reproduces the eval accuracy training logged.
    Writes confusion.png (and worst.png with --worst) to RUN/eval/SPLIT/ or --out.

    **ECE** is the expected calibration error over 15 equal-width confidence bins: the
    gap between how sure the model is and how often it is right. **throughput** counts
    images per second of inference, compilation excluded.

    Examples:

      cnncli eval runs/quickstart

      cnncli eval runs/quickstart --checkpoint best --worst 16

      cnncli eval runs/quickstart --source npz:my_digits.npz --split test

      cnncli eval runs/quickstart --json | jq .accuracy
    """
    from cnncli.inspect.evaluate import evaluate_split
    from cnncli.pictures import figures
    from cnncli.report.eval import print_eval
    from cnncli.runs.load import load_run
    from cnncli.runs.splits import load_eval_split

    source = source_arg(source)
    loaded = load_run(run, checkpoint_arg(checkpoint), ema=ema)
    data, split_name, source_name, warnings = load_eval_split(loaded, split, source)
    result = evaluate_split(loaded, data, split=split_name, source=source_name, worst=worst, warnings=warnings)
    out_dir = out if out is not None else loaded.workdir / "eval" / _slug(source_name, loaded, split_name)
    value_range = loaded.data.get("value_range") or (0, 255)
    pngs = write_pngs(lambda: figures.write_eval_pngs(result, data.x, value_range, out_dir), out_dir, result.warnings)
    print_eval(result, pngs, json_out=json_out, worst_asked=worst)


def write_pngs(write, out_dir: Path, warnings: list[str]) -> dict:
    """Run ``write`` (PNGs into ``out_dir``): its ``{name: path}``, or ``{}`` and a warning when the
    folder cannot be written (read-only, full, a file in the way); the results print either way."""
    try:
        return write()
    except OSError as err:  # Pillow removes a PNG it could not finish
        where = err.filename or out_dir
        warnings.append(f"the PNGs could not be written ({where}: {err.strerror or err}); the results are "
                        "complete without them (--out DIR writes them elsewhere)")  # fmt: skip
        return {}


def _slug(source: str, run, split: str) -> str:
    """``test`` for the run's own source; ``<source name>-test`` for another source."""
    if source == run.recipe.data.source:
        return split
    from cnncli.config.source import DataSource

    name = DataSource.parse(source).stem
    return f"{''.join(ch if ch.isalnum() or ch in '-_.' else '_' for ch in name)}-{split}"


def predict(
    run: RunArg,
    inputs: Annotated[
        list[Path],
        typer.Argument(help="PNG/JPEG images or .npy arrays (raw values, the run's input shape).", show_default=False),
    ],
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="How many classes to show per input.", min=1)] = 5,
    checkpoint: CheckpointOpt = "latest",
    ema: EmaOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Classify images or arrays with a trained run: the top classes and their probabilities.

    Images are converted to the run's channels (grayscale or RGB) and size, and their
    0..255 pixels mapped onto the raw value range the run trained on (0..16 for the
    digits). A .npy file holds raw values: one example, or a batch (N, ...).

    Examples:

      cnncli predict runs/quickstart my_digit.png

      cnncli predict runs/quickstart batch.npy --top-k 3 --json
    """
    from cnncli.inspect.predict import predict_files
    from cnncli.report.eval import print_predictions
    from cnncli.runs.load import load_run

    loaded = load_run(run, checkpoint_arg(checkpoint), ema=ema)
    preds = predict_files(loaded, list(inputs), top_k=top_k)
    print_predictions(preds, checkpoint_step=loaded.step, json_out=json_out)
