"""``cnncli explain``: the command function (heavy imports inside)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cnncli.cli._options import CheckpointOpt, EmaOpt, JsonOpt, RunArg, checkpoint_arg


def _ints(text: str | None, what: str) -> tuple[int, ...]:
    """``4`` or ``4x4`` (per spatial axis) -> a tuple; None -> ()."""
    from cnncli.errors import UsageError

    if not text:
        return ()
    try:
        values = tuple(int(t) for t in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"{what} {text!r}: expected a size like 4 or 4x4") from None
    if any(v < 1 for v in values):
        raise UsageError(f"{what} {text!r}: sizes must be at least 1")
    return values


def explain(
    run: RunArg,
    inputs: Annotated[
        list[Path] | None,
        typer.Argument(help="PNG/JPEG images or .npy arrays, as `cnncli predict` takes them.", show_default=False),
    ] = None,
    method: Annotated[
        list[str] | None,
        typer.Option("--method", "-m", help="gradcam (default), gradcam++, saliency, smoothgrad, "
                     "integrated-gradients, occlusion; repeat for several."),
    ] = None,
    klass: Annotated[
        str | None, typer.Option("--class", help="Explain this class (name or index) instead of the predicted one.")
    ] = None,
    top: Annotated[int, typer.Option("--top", help="Explain the K most probable classes of each image.", min=1)] = 1,
    layer: Annotated[
        str, typer.Option("--layer", "-l", help="Grad-CAM's layer, as inspect-filters --list names it (resblock3, "
                          "resblock2.conv1), or auto: the output after the last residual add, else the last "
                          "convolution with spatial extent.")
    ] = "auto",
    source: Annotated[
        str | None, typer.Option("--source", help="Explain examples of this split of the run's data (with --index, --all).")
    ] = None,
    index: Annotated[
        list[int] | None, typer.Option("--index", "-i", help="Example index in --source (repeat for several).", min=0)
    ] = None,
    worst: Annotated[
        int, typer.Option("--worst", help="Explain the K most confidently wrong examples of the split.", min=0)
    ] = 0,
    all_: Annotated[
        bool, typer.Option("--all", help="Every example of --source, in chunks: maps and manifest.jsonl in --save-maps.")
    ] = False,
    baseline: Annotated[
        str, typer.Option("--baseline", help="Integrated gradients' start and occlusion's fill: black, blur or mean.")
    ] = "black",
    steps: Annotated[int, typer.Option("--steps", help="Integrated gradients: quadrature steps.", min=2)] = 64,
    samples: Annotated[int, typer.Option("--samples", help="SmoothGrad: noisy copies per image.", min=1)] = 16,
    window: Annotated[
        str | None, typer.Option("--window", help="Occlusion window, e.g. 4 or 4x4, at most the input (default about 1/8 of the side).")
    ] = None,
    stride: Annotated[str | None, typer.Option("--stride", help="Occlusion stride, at most the window (default half of it).")] = None,
    check: Annotated[
        bool, typer.Option("--check", help="Judge each method: model-randomization sanity test, deletion and "
                           "insertion AUCs, integrated gradients' completeness; PASS/FAIL.")
    ] = False,
    save_maps: Annotated[
        Path | None, typer.Option("--save-maps", help="Write each map as float32 .npy at the input's size here.")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for the PNGs. Default: RUN/explain.")] = None,
    checkpoint: CheckpointOpt = "latest",
    ema: EmaOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Show where a trained network looks: attribution maps of images, with self-checks.

    Writes one PNG per image (input, map and overlay side by side, one row per method,
    titled with class, probability and method) to RUN/explain/ or --out, and prints
    each map's target class, probability, peak and the share of its mass in the top
    10% of pixels. 1-D models give a map over time.

    **Methods**: gradcam at --layer, gradcam++, saliency (input gradients),
    smoothgrad, integrated-gradients (--baseline, --steps), occlusion (--window,
    --stride). One compiled function per method and input shape, batched over images.

    **--check** re-initializes the top layers and compares the maps (Adebayo et al.
    2018), measures deletion and insertion curves against a random pixel order, and
    integrated gradients' completeness; a method that fails is said to, plainly.

    Examples:

      cnncli explain runs/quickstart my_digit.png

      cnncli explain runs/quickstart --source test --index 0 --index 5 -m gradcam -m integrated-gradients

      cnncli explain runs/quickstart --source test --worst 8 --method occlusion --check

      cnncli explain runs/resnet20 cat.png --top 3 --layer resblock8 --json

      cnncli explain runs/quickstart --source test --all --save-maps maps/ --method saliency
    """
    import os

    from cnncli.errors import UsageError
    from cnncli.inspect.explain import (
        class_index,
        explain_inputs,
        explain_split,
        load_explain_inputs,
        method_configs,
        resolve_layer,
    )
    from cnncli.inspect.explain import save_maps as write_maps
    from cnncli.report import console as report
    from cnncli.report.explain import print_explain, print_split_summary
    from cnncli.runs.load import load_run

    if (index or all_) and source is None:
        raise UsageError("--index and --all need --source SPLIT", hint="e.g. --source test --index 0")
    if all_ and save_maps is None:
        raise UsageError("--all writes maps, not pictures: give --save-maps DIR", hint="e.g. --save-maps maps/")
    if all_ and (inputs or index or worst or check or top > 1):
        raise UsageError("--all explains the whole split, one target each: leave out image files, --index, "
                         "--worst, --top and --check")
    if top > 1 and klass is not None:
        raise UsageError("--top and --class both pick the target class: give one")
    loaded = load_run(run, checkpoint_arg(checkpoint), ema=ema)
    wants_layer = any(m.startswith("gradcam") for m in (method or ["gradcam"]))
    layer_name, reason = resolve_layer(loaded, layer) if wants_layer else (None, None)
    cfgs = method_configs(method, layer=layer_name, steps=steps, samples=samples, baseline=baseline,
                          window=_ints(window, "--window"), stride=_ints(stride, "--stride"))  # fmt: skip
    target = class_index(loaded, klass) if klass is not None else None
    if all_:
        summary = explain_split(loaded, source, cfgs, save_maps, klass=target)
        summary["layer"], summary["layer_reason"] = layer_name, reason
        print_split_summary(summary, json_out=json_out)
        return
    from cnncli.inspect.attribution import Explainer

    data_inputs = load_explain_inputs(loaded, inputs or [], split=source, indices=index or [], worst=worst)
    explainer = Explainer(loaded)  # one set of compiled functions for the maps and the checks
    rep = explain_inputs(loaded, data_inputs, cfgs, klass=target, top=top, layer_reason=reason, explainer=explainer)
    if check:
        from cnncli.inspect.attribution_check import check_report

        rep.checks = check_report(loaded, rep, explainer)
    if save_maps is not None:
        write_maps(rep, save_maps)
    out_dir = out if out is not None else loaded.workdir / "explain"
    _write_pngs(rep, out_dir)
    previews = None
    if not json_out and report.is_interactive() and "NO_COLOR" not in os.environ:
        previews = _previews(rep)
    print_explain(rep, json_out=json_out, previews=previews, out_dir=None if json_out else out_dir)


def _write_pngs(rep, out_dir: Path) -> None:
    from cnncli.inspect.attribution import mass_map
    from cnncli.pictures.explain import explain_image
    from cnncli.pictures.images import save

    for img in rep.images:
        rows = [(f"{e.method}: {e.class_name} ({e.probability:.2f})", mass_map(e.map, e.method)) for e in img.explanations]
        title = f"{img.input}: predicted {rep.class_names[img.predicted]} ({img.predicted_probability:.2f})"
        img.png = str(save(explain_image(img.x, rows, rep.value_range, title=title), out_dir / f"{img.stem}.png"))


def _previews(rep) -> list:
    """Small terminal renderings: each image's overlays in a row."""
    import numpy as np

    from cnncli.inspect.attribution import mass_map
    from cnncli.pictures.explain import terminal_tile
    from cnncli.pictures.images import terminal_image

    out = []
    for img in rep.images[:8]:
        tiles = [terminal_tile(img.x, mass_map(e.map, e.method), rep.value_range) for e in img.explanations[:6]]
        gap = np.full((tiles[0].shape[0], 2, 3), 255, np.uint8)
        row = np.concatenate([t for tile in tiles for t in (tile, gap)][:-1], axis=1)
        out.append(terminal_image(row))
    return out
