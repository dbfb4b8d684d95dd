"""``cnncli data``: prepare a TFDS dataset, describe any source, preview augmentation.

Heavy modules (jax, tensorflow_datasets, Pillow) are imported inside the commands.
Warnings raised while loading (skipped files) are shown as ``warning:`` lines on
stderr; results go to stdout (JSON when piped or with ``--json``).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Annotated

import typer

from cnncli.cli._options import json_opt
from cnncli.errors import UsageError

data_app = typer.Typer(
    name="data",
    help="Prepare, describe and preview datasets (tfds:NAME, folder:PATH, digits, npz:PATH).",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

SourceArg = Annotated[str, typer.Argument(help="digits, mnist1d, npz:PATH, tfds:NAME or folder:PATH.", show_default=False)]
DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", help="TFDS data directory (default: TFDS's own: $TFDS_DATA_DIR or ~/tensorflow_datasets)."),
]
JsonOpt = json_opt("Print one JSON object (default when piped).")
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="Where to write the PNG grid.")]


def _json_mode(flag: bool) -> bool:
    from cnncli.report import console as report

    return flag or not report.is_interactive()


def _loading(fn, *args):
    """Call a data loader, showing its `DataWarning`s as ``warning:`` lines on stderr."""
    from cnncli.data.base import DataWarning
    from cnncli.report import console as report

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        result = fn(*args)
    for item in caught:
        if issubclass(item.category, DataWarning):
            report.warn(str(item.message))
        else:
            warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)
    return result


def _tfds_name(source: str) -> str:
    """The NAME of a ``tfds:NAME`` source; anything else is a usage error."""
    from cnncli.config.source import DataSource

    try:
        parsed = DataSource.parse(source)
    except ValueError:
        parsed = None
    if parsed is None or parsed.kind != "tfds":
        raise UsageError(f"{source!r}: only tfds:NAME sources are prepared",
                         hint="folders, digits and npz files are read as they are")  # fmt: skip
    return parsed.arg


@data_app.command("prepare", no_args_is_help=True)
def prepare(source: SourceArg, data_dir: DataDirOpt = None, json_out: JsonOpt = False) -> None:
    """Download and prepare a TFDS dataset as array_record, once, so `train` can read it offline.

    This step needs the network. TFDS also needs TensorFlow to encode image datasets
    while preparing (training on the prepared files needs neither); install it into
    the environment with `uv pip install tensorflow-cpu` (about 1.4 GB).

    Examples:

      cnncli data prepare tfds:mnist

      cnncli data prepare tfds:cifar10 --data-dir /data/tfds
    """
    name = _tfds_name(source)
    from cnncli.data.tfds import prepare as prepare_tfds
    from cnncli.report import console as report
    from cnncli.report import data as report_data

    report.stderr_console().print(f"preparing tfds:{name} (downloads: needs the network) ...")
    path, already = prepare_tfds(name, str(data_dir) if data_dir else None)
    label = "already prepared" if already else "prepared"
    report_data.print_written(label, Path(path), _json_mode(json_out), {"source": source, "already": already})


def _config(source: str, **fields):
    import pydantic

    from cnncli.config.recipe import DataConfig

    try:
        return DataConfig(source=source, **{k: v for k, v in fields.items() if v is not None})
    except pydantic.ValidationError as err:
        raise UsageError("; ".join(e["msg"].removeprefix("Value error, ") for e in err.errors())) from None


def _recipe_data(source: str, **fields):
    """A recipe file's ``[data]`` (with the command line's overrides), or None when ``source`` is a source."""
    path = Path(source)
    if path.suffix not in (".toml", ".yaml", ".yml") or not path.is_file():
        return None
    from cnncli.config.recipe import load_recipe

    data = load_recipe(path, []).data
    return data.model_copy(update={k: v for k, v in fields.items() if v is not None})


def _grid_path(source: str) -> Path:
    """The default sample grid: ``<source>-samples.png`` here, e.g. ``tfds-cifar10-samples.png``."""
    slug = re.sub(r"[^\w.-]+", "_", source.rsplit("/", 1)[-1].replace(":", "-")).strip("_") or "data"
    return Path(f"{slug}-samples.png")


@data_app.command("info", no_args_is_help=True)
def info(
    source: SourceArg,
    data_dir: DataDirOpt = None,
    split: Annotated[str, typer.Option("--split", help="Split to describe, e.g. train or test[:10%].")] = "train",
    out: OutOpt = None,
    per_class: Annotated[int, typer.Option("--per-class", min=0, help="Samples per class in the grid (0: none).")] = 8,
    image_key: Annotated[str | None, typer.Option("--image-key", help="TFDS feature holding the image.")] = None,
    label_key: Annotated[str | None, typer.Option("--label-key", help="TFDS feature holding the label.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Classes, split sizes, image shape, per-channel mean/std, the pipeline it gets, and a PNG grid per class.

    The grid goes to `--out` (default: `<source>-samples.png` here). Given a recipe file
    instead of a source, its `[data]` table is described, with the pipeline (memory or
    stream) that recipe gets and why (split sizes against `data.memory_budget_mb`). A
    split over the budget is described from a fixed sample, never read whole.

    Examples:

      cnncli data info tfds:cifar10

      cnncli data info recipes/imagenette.toml

      cnncli data info folder:photos --split train --out photos.png
    """
    from cnncli.data.summary import class_rows, summarize_split
    from cnncli.report import data as report_data

    recipe_cfg = _recipe_data(source, data_dir=str(data_dir) if data_dir else None, image_key=image_key,
                              label_key=label_key)  # fmt: skip
    cfg = recipe_cfg or _config(source, data_dir=str(data_dir) if data_dir else None, image_key=image_key,
                                label_key=label_key)  # fmt: skip
    summary, data = _loading(summarize_split, cfg, split, recipe_cfg)
    grid = None
    if per_class and len(data.y) and data.x.ndim == 4:
        images, labels = class_rows(data, summary.classes, summary.value_range, per_class)
        grid = report_data.save_grid(images, labels, per_class, out or _grid_path(source))
    report_data.print_info({**summary.to_dict(), "grid": str(grid) if grid else None}, _json_mode(json_out))


@data_app.command("preview", no_args_is_help=True)
def preview(
    recipe: Annotated[Path, typer.Argument(help="Recipe file (.toml or .yaml).", show_default=False)],
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a recipe key: KEY.PATH=VALUE.")] = None,
    out: OutOpt = None,
    count: Annotated[int, typer.Option("--count", "-n", min=1, help="Examples to show.")] = 32,
    json_out: JsonOpt = False,
) -> None:
    """A PNG grid of augmented training examples with their (mixed) labels: what the network sees.

    Shows the first examples of training step 1, augmented by the recipe's
    `[[data.augment]]` ops with the recipe's seed. On a terminal a small version is
    also drawn in colour. The grid goes to `--out` (default: `<recipe>-preview.png`).

    Examples:

      cnncli data preview recipes/resnet20_cifar10.toml

      cnncli data preview recipes/resnet20_cifar10.toml --set 'data.augment=[{op="cutmix"}]'
    """
    import os

    from cnncli.config.recipe import load_recipe
    from cnncli.data.sources import load_dataset
    from cnncli.data.stream import open_stream_dataset, plan_pipeline
    from cnncli.report import data as report_data
    from cnncli.train.preview import augmented_batch

    loaded = load_recipe(recipe, list(set_ or []))
    streamed = plan_pipeline(loaded.data).kind == "stream"  # only step 1's examples are decoded
    data = _loading(open_stream_dataset if streamed else load_dataset, loaded.data)
    images, targets = augmented_batch(loaded, data, count)
    if images.ndim != 4:
        raise UsageError(f"preview draws 2-D images; this data has examples of shape {data.input_shape}")
    labels = [report_data.target_label(row, data.class_names) for row in targets]
    path = report_data.save_grid(images, labels, 8, out or Path(f"{recipe.stem}-preview.png"))
    json_mode = _json_mode(json_out)
    if not json_mode and "NO_COLOR" not in os.environ:
        report_data.show_in_terminal(images, labels)
    report_data.print_written("preview", path, json_mode, {"labels": labels})
