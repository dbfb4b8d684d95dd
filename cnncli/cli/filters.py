"""``cnncli inspect-filters``: the command function (heavy imports inside)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cnncli.cli._options import CheckpointOpt, EmaOpt, JsonOpt, RunArg, checkpoint_arg


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
        int, typer.Option("--examples", help="Eval-split examples for dead-ReLU fractions and patches.", min=0)
    ] = 1024,
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

    **Receptive field**: feature_maps.png marks the input pixels that the most active
    position sees, the same size `cnncli conv-arith` reports for that layer.

    Examples:

      cnncli inspect-filters runs/quickstart --list

      cnncli inspect-filters runs/quickstart

      cnncli inspect-filters runs/quickstart --layer conv2 --compare-init

      cnncli inspect-filters runs/quickstart --index 0

      cnncli inspect-filters runs/quickstart --image my_digit.png --patches
    """
    import os

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
    rep = inspect_layer(
        loaded, layer, shared=shared_scale, compare_init=compare_init, image=str(image) if image else None,
        index=index, patches=patches, top_k=top_k, max_filters=filters, examples=examples,
    )  # fmt: skip
    out_dir = out if out is not None else loaded.workdir / "filters" / rep.info.name
    rep.pngs = figures.write_filter_pngs(rep, loaded.data.get("value_range") or (0, 255), loaded.class_names, out_dir)
    preview = None
    if not json_out and report.is_interactive() and "NO_COLOR" not in os.environ:
        preview = images.terminal_image(figures.filter_grid_terminal(rep.grid))
    print_filters(rep, json_out=json_out, preview=preview)
