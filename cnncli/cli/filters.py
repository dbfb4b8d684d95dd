"""``cnncli inspect-filters``: the command function (heavy imports inside)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cnncli.cli._options import CheckpointOpt, EmaOpt, JsonOpt, RunArg, checkpoint_arg
from cnncli.errors import UsageError


def inspect_filters(
    run: RunArg,
    layer: Annotated[
        str | None,
        typer.Option("--layer", "-l", help="Conv layer, as named by --list (conv1, resblock2.conv1). Default: the first."),
    ] = None,
    list_: Annotated[
        bool, typer.Option("--list", help="List the conv layers: name, kernel, filters, input channels.")
    ] = False,
    image: Annotated[
        Path | None, typer.Option("--image", help="Show the layer's feature maps for this input (PNG/JPEG or .npy).")
    ] = None,
    index: Annotated[
        int | None, typer.Option("--index", help="Show the feature maps for example N of the eval split.", min=0)
    ] = None,
    patches: Annotated[
        bool, typer.Option("--patches", help="Find the eval-split patches that most excite each of the first filters.")
    ] = False,
    top_k: Annotated[int, typer.Option("--top-k", help="Patches per filter (with --patches).", min=1)] = 8,
    filters: Annotated[
        int | None, typer.Option("--filters", help="Filters to draw (default 64 in the grid, 8 with --patches).", min=1)
    ] = None,
    shared_scale: Annotated[
        bool,
        typer.Option("--shared-scale", help="One colour scale for all filters (compare strengths), not one per filter."),
    ] = False,
    compare_init: Annotated[
        bool, typer.Option("--compare-init", help="Show how far each filter moved from its step-0 weights.")
    ] = False,
    examples: Annotated[
        int, typer.Option("--examples", help="Eval-split examples for dead fractions, patches, --visualize.", min=0)
    ] = 1024,
    visualize: Annotated[
        bool,
        typer.Option("--visualize", help="Optimize one input per unit (channel) to excite it most; draw a grid."),
    ] = False,
    units: Annotated[
        str | None, typer.Option("--units", help="Units to visualize: 0,3,5 or 0-7 (default: the first 16).")
    ] = None,
    steps: Annotated[int, typer.Option("--steps", help="Optimization steps for --visualize.", min=1)] = 512,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Folder for the PNGs. Default: RUN/filters/LAYER.")
    ] = None,
    checkpoint: CheckpointOpt = "latest",
    ema: EmaOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Show what a trained network learned: filter grids, filter health, feature maps, patches.

    Writes filters.png (the layer's kernels, mid-gray = 0; RGB for a first layer on
    colour images) to RUN/filters/LAYER/ or --out, and previews it in the terminal.
    The health table gives each filter's L2 norm, mean and std, the fraction of
    validation examples on which its ReLU is dead, and its most similar other filter;
    dead, near-zero and near-duplicate filters are flagged.

    Every conv can be inspected, including those inside residual and dense blocks
    (`--list` names them all: resblock2.conv1, denseblock1.layer3.conv2).

    **Receptive field**: feature_maps.png marks the input pixels that the most active
    position sees, the same size `cnncli conv-arith` reports for that layer.

    **--visualize** optimizes one input per unit to maximize the unit's mean response
    (a decorrelated Fourier parameterization, random jitter and scaling at every step),
    writes visualize.png (a grid; 1-D models give signals) and visualize.npy, and
    compares each unit's score with its mean response on real eval examples.

    Examples:

      cnncli inspect-filters runs/quickstart --list

      cnncli inspect-filters runs/quickstart

      cnncli inspect-filters runs/quickstart --layer conv2 --compare-init

      cnncli inspect-filters runs/quickstart --index 0

      cnncli inspect-filters runs/quickstart --image my_digit.png --patches

      cnncli inspect-filters runs/resnet20 --layer resblock3.conv1 --index 0

      cnncli inspect-filters runs/quickstart --layer conv2 --visualize --units 0-7
    """
    import os

    from cnncli.cli.eval import write_pngs
    from cnncli.inspect.filters import inspect_layer
    from cnncli.inspect.probe import conv_layers
    from cnncli.pictures import figures, images
    from cnncli.report import console as report
    from cnncli.report.eval import print_conv_list, print_filters
    from cnncli.runs.load import load_run

    loaded = load_run(run, checkpoint_arg(checkpoint), ema=ema)
    if list_:
        print_conv_list(conv_layers(loaded), workdir=str(loaded.workdir), step=loaded.step, json_out=json_out)
        return
    if visualize:
        if image is not None or index is not None or patches or compare_init:
            raise UsageError("--visualize draws optimized inputs only",
                             hint="run --image/--index/--patches/--compare-init without --visualize")  # fmt: skip
        _visualize(loaded, layer, units=units, steps=steps, examples=examples, out=out, json_out=json_out)
        return
    if units is not None:
        raise UsageError("--units selects units for --visualize", hint="add --visualize (or use --filters)")
    rep = inspect_layer(
        loaded, layer, shared=shared_scale, compare_init=compare_init, image=str(image) if image else None,
        index=index, patches=patches, top_k=top_k, max_filters=filters, examples=examples,
    )  # fmt: skip
    out_dir = out if out is not None else loaded.workdir / "filters" / rep.info.name
    value_range = loaded.data.get("value_range") or (0, 255)
    rep.pngs = write_pngs(lambda: figures.write_filter_pngs(rep, value_range, loaded.class_names, out_dir), out_dir,
                          rep.warnings)  # a read-only or full folder: the results still print  # fmt: skip
    preview = None
    if not json_out and report.is_interactive() and "NO_COLOR" not in os.environ:
        preview = images.terminal_image(figures.filter_grid_terminal(rep.grid))
    print_filters(rep, json_out=json_out, preview=preview)


def _visualize(loaded, layer: str | None, *, units: str | None, steps: int, examples: int, out: Path | None,
               json_out: bool) -> None:  # fmt: skip
    """``--visualize``: optimize, write the grid and the inputs, print the units."""
    import os

    import numpy as np

    from cnncli.cli.eval import write_pngs
    from cnncli.inspect.visualize import visualization_image, visualize, write_visualization
    from cnncli.pictures import images
    from cnncli.report import console as report
    from cnncli.report.filters import print_visualization

    vis = visualize(loaded, layer, units=units, steps=steps, examples=examples)
    value_range = loaded.data.get("value_range") or (0, 255)
    out_dir = out if out is not None else loaded.workdir / "filters" / vis.layer
    files = write_pngs(lambda: write_visualization(vis, value_range, out_dir), out_dir, vis.warnings)
    preview = None
    if not json_out and report.is_interactive() and "NO_COLOR" not in os.environ:
        preview = images.terminal_image(np.asarray(visualization_image(vis, value_range, target=32)))
    print_visualization(vis, checkpoint_step=loaded.step, pngs=files, json_out=json_out, preview=preview)
