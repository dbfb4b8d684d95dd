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

from cnncli.errors import UsageError

data_app = typer.Typer(
    name="data",
    help="Prepare, describe and preview datasets (tfds:NAME, folder:PATH, digits, npz:PATH).",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

SourceArg = Annotated[str, typer.Argument(help="tfds:NAME, folder:PATH, digits or npz:PATH.", show_default=False)]
DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", help="TFDS data directory (default: TFDS's own: $TFDS_DATA_DIR or ~/tensorflow_datasets)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object (default when piped).")]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="Where to write the PNG grid.")]


def _json_mode(flag: bool) -> bool:
    from cnncli.report import console as report

    return flag or not report.is_interactive()


def _loading(fn, *args):
    """Call a data loader, showing its `DataWarning`s as ``warning:`` lines on stderr."""
    from cnncli.data.imageops import DataWarning
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
    from cnncli.report import console as report
    from cnncli.report import data as report_data

    kind, _, name = source.partition(":")
    if kind != "tfds" or not name:
        raise UsageError(f"{source!r}: only tfds:NAME sources are prepared",
                         hint="folders, digits and npz files are read as they are")  # fmt: skip
    from cnncli.data.tfds import prepare as prepare_tfds

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


def _split_sizes(cfg) -> dict[str, int]:
    from cnncli.data.base import load_split
    from cnncli.data.imageops import split_sizes

    if cfg.source.split(":", 1)[0] in ("tfds", "folder"):
        return split_sizes(cfg.source, cfg)
    return {s: int(load_split(cfg.source, s, cfg)[0].y.shape[0]) for s in ("train", "test")}


def _class_rows(data, names: list[str], value_range, per_class: int):
    """One grid row per class: its first ``per_class`` images (unit scale), blank tiles after.

    Returns:
        (images ``(classes * per_class, H, W, C)``, labels: the class name on each row's first tile).
    """
    import numpy as np

    lo, hi = value_range
    images = np.ones((len(names) * per_class, *data.x.shape[1:]), np.float32)  # white: no example
    labels = [""] * len(images)
    for c, name in enumerate(names):
        chosen = np.flatnonzero(data.y == c)[:per_class]
        images[c * per_class : c * per_class + len(chosen)] = (data.x[chosen].astype(np.float32) - lo) / max(hi - lo, 1e-12)
        labels[c * per_class] = f"{c}: {name}"
    return images, labels


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
    """Classes, split sizes, image shape, per-channel mean/std and a PNG grid of samples per class.

    The grid goes to `--out` (default: `<source>-samples.png` here).

    Examples:

      cnncli data info tfds:cifar10

      cnncli data info folder:photos --split train --out photos.png
    """
    from cnncli.data.base import channel_stats, load_split
    from cnncli.report import data as report_data

    cfg = _config(source, data_dir=str(data_dir) if data_dir else None, image_key=image_key, label_key=label_key)
    sizes = _loading(_split_sizes, cfg)
    data, names, value_range = _loading(load_split, cfg.source, split, cfg)
    mean, std = channel_stats(data.x)
    counts = [int((data.y == c).sum()) for c in range(len(names))]
    if split in sizes:  # the split read here: what it holds, unreadable files skipped (sizes counts files)
        sizes[split] = int(len(data.y))
    grid = None
    if per_class and len(data.y) and data.x.ndim == 4:
        images, labels = _class_rows(data, names, value_range, per_class)
        slug = re.sub(r"[^\w.-]+", "_", source.rsplit("/", 1)[-1].replace(":", "-")).strip("_") or "data"
        grid = report_data.save_grid(images, labels, per_class, out or Path(f"{slug}-samples.png"))
    result = {
        "source": source, "split": split, "split_sizes": sizes, "classes": names, "class_counts": counts,
        "image_shape": list(data.x.shape[1:]), "dtype": str(data.x.dtype), "value_range": list(value_range),
        "mean": mean, "std": std, "grid": str(grid) if grid else None,
    }  # fmt: skip
    report_data.print_info(result, _json_mode(json_out))


def _label(weights, names: list[str]) -> str:
    """``cat``, or ``cat 62% + dog 38%`` for a mixed target row."""
    order = weights.argsort()[::-1]
    if weights[order[0]] >= 0.995:
        return names[order[0]] if order[0] < len(names) else str(order[0])
    parts = [f"{names[i] if i < len(names) else i} {weights[i]:.0%}" for i in order[:2] if weights[i] > 0.005]
    return " + ".join(parts)


def augmented_batch(recipe, data, count: int):
    """The first ``count`` examples of training step 1, as the network sees them.

    Replays the session's streams (shuffle key ``fold_in(key(seed), 1)``, epoch 0;
    augment key ``fold_in(fold_in(key(seed), 2), step 0)``) on a whole batch, so
    batch-level ops (mixup, cutmix) mix exactly as in training.

    Returns:
        (unit-scale images ``(count, *spatial, C)``, target rows ``(count, K)``), numpy.
    """
    import jax
    import numpy as np

    from cnncli.data.augment.core import Context, make_augment

    root = jax.random.key(recipe.train.seed)
    n = data.train.x.shape[0]
    batch = min(recipe.data.batch_size, n)
    perm = jax.random.permutation(jax.random.fold_in(jax.random.fold_in(root, 1), 0), n)[:batch]
    ctx, index = Context.from_data(data), np.asarray(perm)
    x = (data.train.x[index].astype(np.float32) - np.asarray(data.mean, np.float32)) / np.asarray(data.std, np.float32)
    targets = jax.nn.one_hot(data.train.y[index], recipe.model.num_classes or data.num_classes)
    if recipe.data.augment:
        augment = jax.jit(make_augment(recipe.data.augment, data))
        x, targets = augment(jax.random.fold_in(jax.random.fold_in(root, 2), 0), x, targets)
    unit = np.clip(np.asarray(x * ctx.scale + ctx.offset), 0.0, 1.0)
    return unit[:count], np.asarray(targets)[:count]


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
    from cnncli.data.base import load_dataset
    from cnncli.report import data as report_data

    loaded = load_recipe(recipe, list(set_ or []))
    data = _loading(load_dataset, loaded.data)
    images, targets = augmented_batch(loaded, data, count)
    if images.ndim != 4:
        raise UsageError(f"preview draws 2-D images; this data has examples of shape {data.input_shape}")
    labels = [_label(row, data.class_names) for row in targets]
    path = report_data.save_grid(images, labels, 8, out or Path(f"{recipe.stem}-preview.png"))
    json_mode = _json_mode(json_out)
    if not json_mode and "NO_COLOR" not in os.environ:
        report_data.show_in_terminal(images, labels)
    report_data.print_written("preview", path, json_mode, {"labels": labels})
