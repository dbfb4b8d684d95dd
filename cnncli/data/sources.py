"""One table from source kind to loader: ``digits``, ``npz:PATH``, ``tfds:NAME``, ``folder:PATH``.

`LOADERS` maps each `cnncli.config.source.SOURCE_KINDS` entry to the functions that
read it. Each entry imports its loader module when first called (as timm's
``create_reader`` does): ``tensorflow_datasets`` takes seconds to import and Pillow
is needed only for folders, so reading the digits loads neither.

The loaders import `cnncli.data.base` and `cnncli.data.imageops`, never this module:
the dependency runs one way.

Sources: ``digits`` (scikit-learn's bundled handwritten digits, offline), ``npz:PATH``
(the Keras ``mnist.npz`` convention), ``tfds:NAME`` (a prepared TensorFlow Dataset),
``folder:PATH`` (``PATH/<split>/<class>/<image>``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from cnncli.config.source import DataSource
from cnncli.data.base import Dataset, Split, channel_stats
from cnncli.errors import DataError

Loaded = tuple[Split, list[str], tuple[float, float]]  # (images and labels, class names, raw value range)


@dataclass(frozen=True)
class Loader:
    """How one source kind is read.

    Attributes:
        load: ``load(arg, split, cfg) -> (Split, class names, value range)``; ``arg`` is the
            name or path after the colon, ``cfg`` the recipe's `DataConfig`.
        sizes: ``sizes(arg, cfg) -> {split: examples}`` without decoding images; None: count
            the ``train`` and ``test`` splits by loading them (cheap for digits and npz).
    """

    load: Callable[[str, str, Any], Loaded]
    sizes: Callable[[str, Any], dict[str, int]] | None = None


def _load_digits(arg: str, split: str, cfg) -> Loaded:
    from cnncli.data.digits import load_digits_split

    return load_digits_split(split)


def _load_npz(arg: str, split: str, cfg) -> Loaded:
    from cnncli.data.npz import load_npz_split

    return load_npz_split(arg, split)


def _load_tfds(arg: str, split: str, cfg) -> Loaded:
    from cnncli.data.tfds import load_tfds_split

    return load_tfds_split(arg, split, cfg)


def _tfds_sizes(arg: str, cfg) -> dict[str, int]:
    from cnncli.data.tfds import tfds_split_sizes

    return tfds_split_sizes(arg, cfg)


def _load_folder(arg: str, split: str, cfg) -> Loaded:
    from cnncli.data.folder import load_folder_split

    return load_folder_split(arg, split, cfg)


def _folder_sizes(arg: str, cfg) -> dict[str, int]:
    from cnncli.data.folder import folder_split_sizes

    return folder_split_sizes(arg)


LOADERS: MappingProxyType[str, Loader] = MappingProxyType({
    "digits": Loader(_load_digits),
    "npz": Loader(_load_npz),
    "tfds": Loader(_load_tfds, _tfds_sizes),
    "folder": Loader(_load_folder, _folder_sizes),
})  # fmt: skip


def _parse(source: str | DataSource) -> DataSource:
    if isinstance(source, DataSource):
        return source
    try:
        return DataSource.parse(source)
    except ValueError:
        raise DataError(f"unknown data source {source!r}", hint="use digits, npz:PATH, tfds:NAME or folder:PATH") from None


def _config(source: DataSource, cfg):
    """The recipe's `DataConfig`, or the defaults for ``source`` when there is none."""
    if cfg is not None:
        return cfg
    from cnncli.config.recipe import DataConfig

    return DataConfig(source=str(source))


def load_split(source: str | DataSource, split: str, cfg=None) -> Loaded:
    """Load one split of a source: the images, the class names and the raw value range.

    Args:
        source: ``digits``, ``npz:PATH``, ``tfds:NAME`` or ``folder:PATH`` (text or parsed).
        split: a split name; ``tfds`` and ``folder`` splits may be sliced: ``train[:90%]``.
        cfg: the recipe's `cnncli.config.recipe.DataConfig` (defaults when None).

    Returns:
        ``(Split(x, y), class_names, value_range)``; x is ``(N, *spatial, C)``, y int32.

    Raises:
        DataError: an unknown source; unprepared or missing data, unknown split or keys,
            over the memory budget.
    """
    spec = _parse(source)
    return LOADERS[spec.kind].load(spec.arg, split, _config(spec, cfg))


def split_sizes(source: str | DataSource, cfg=None) -> dict[str, int]:
    """Number of examples in each split of a source (tfds and folders: without decoding images).

    Digits and npz files report their ``train`` and ``test`` splits, counted by loading them.
    """
    spec = _parse(source)
    cfg = _config(spec, cfg)
    loader = LOADERS[spec.kind]
    if loader.sizes is not None:
        return loader.sizes(spec.arg, cfg)
    return {split: int(loader.load(spec.arg, split, cfg)[0].y.shape[0]) for split in ("train", "test")}


def load_dataset(cfg) -> Dataset:
    """Load the training and evaluation splits a recipe's ``[data]`` table names.

    Args:
        cfg: a `cnncli.config.recipe.DataConfig`.

    Returns:
        The `Dataset`, with per-channel mean/std of the training split (0/1 without ``normalize``).

    Raises:
        DataError: as `load_split`, or the two splits' images differ in shape.
    """
    source = _parse(cfg.source)
    train, names, value_range = load_split(source, cfg.train_split, cfg)
    evaluation, eval_names, _ = load_split(source, cfg.eval_split, cfg)
    if train.x.shape[1:] != evaluation.x.shape[1:]:
        raise DataError(
            f"{cfg.source}: split {cfg.train_split!r} has images {train.x.shape[1:]} but "
            f"{cfg.eval_split!r} has {evaluation.x.shape[1:]}"
        )
    if len(eval_names) > len(names):
        names = eval_names
    mean, std = channel_stats(train.x) if cfg.normalize else ([0.0], [1.0])
    channels = train.x.shape[-1]
    if not cfg.normalize:
        mean, std = [0.0] * channels, [1.0] * channels
    return Dataset(cfg.source, train, evaluation, names, mean, std, value_range)
