"""``tfds:NAME``: TensorFlow Datasets, read through ``tfds.data_source`` (no TensorFlow).

A prepared dataset (array_record files, random access) is read example by example,
its images decoded with Pillow, and stacked into one uint8 array. Nothing here ever
downloads: every read passes ``download=False``, so an unprepared dataset fails in
milliseconds with the directory it looked in and the command that prepares it
(offline, ``tfds.load`` would retry the network for minutes). Preparing is the
explicit step `prepare` (``cnncli data prepare tfds:NAME``).

The image and label features come from the dataset's ``info`` (the first ``Image``
and ``ClassLabel`` features, else its ``supervised_keys``); ``data.image_key`` and
``data.label_key`` override them. Split names and slices are TFDS's own
(``train[:90%]``, ``train[90%:]``).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import sys

import numpy as np

from cnncli.data.base import Split
from cnncli.data.imageops import (
    check_budget,
    convert_channels,
    resize_images,
    target_size,
)
from cnncli.errors import DataError, did_you_mean

CHUNK = 1024  # examples per __getitems__ call: one array_record read batch
TF_INSTALL = "uv pip install tensorflow-cpu"  # optional: only `data prepare` of image datasets needs it


def _quiet(fn):
    """Silence absl's INFO/WARNING chatter ("Variant folder ... has no dataset_info.json") in ``fn``."""

    @functools.wraps(fn)
    def quiet(*args, **kwargs):
        logger = logging.getLogger("absl")
        level = logger.level
        logger.setLevel(logging.ERROR)
        try:
            return fn(*args, **kwargs)
        finally:
            logger.setLevel(level)

    return quiet


def _tfds():
    import tensorflow_datasets as tfds

    return tfds


@_quiet
def builder(name: str, data_dir: str | None):
    """The TFDS builder for ``name`` (registered, or read from files in ``data_dir``); never downloads."""
    tfds = _tfds()
    try:
        return tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        known = tfds.list_builders(with_community_datasets=False)  # local registry: no network
        guess = did_you_mean(name, known)
        raise DataError(
            f"tfds:{name}: no such TFDS dataset" + (f"; did you mean tfds:{guess}?" if guess else ""),
            hint="the catalog: https://www.tensorflow.org/datasets/catalog/overview",
        ) from None


def _command(name: str, data_dir: str | None) -> str:
    return f"cnncli data prepare tfds:{name}" + (f" --data-dir {data_dir}" if data_dir else "")


@_quiet
def open_source(name: str, split: str, data_dir: str | None):
    """``tfds.data_source`` for one split, failing at once (no network) with what to do."""
    tfds = _tfds()
    try:
        return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except tfds.core.registered.DatasetNotFoundError:
        builder(name, data_dir)  # raises the did-you-mean DataError
        raise
    except Exception as err:  # unprepared, prepared as tfrecord, unknown split, bad slice
        raise _explain(name, split, data_dir, err) from None


def _explain(name: str, split: str, data_dir: str | None, err: Exception) -> DataError:
    found = builder(name, data_dir)
    where = found.data_dir  # the versioned directory: DATA_DIR/NAME[/CONFIG]/VERSION
    if not found.is_prepared():
        return DataError(
            f"tfds:{name} is not prepared: looked in {where}",
            hint=f"prepare it once (downloads; needs the network): {_command(name, data_dir)}; "
            "or set data.data_dir to the directory where it is prepared",
        )
    file_format = str(getattr(found.info, "file_format", "")).lower()
    if "array_record" not in file_format:
        return DataError(
            f"tfds:{name} in {where} was prepared as {file_format or 'tfrecord'} (by tfds.load), which "
            "needs TensorFlow to read; cnncli reads array_record files",
            hint=f"prepare an array_record copy elsewhere: cnncli data prepare tfds:{name} --data-dir DIR, "
            "then set data.data_dir = DIR",
        )
    splits = ", ".join(found.info.splits) or "none recorded"
    return DataError(f"tfds:{name}: cannot read split {split!r} from {where}: {err}",
                     hint=f"splits: {splits}; slices look like train[:90%] or train[90%:]")  # fmt: skip


def feature_keys(info, cfg, where: str) -> tuple[str, str]:
    """The (image, label) feature keys: recipe overrides, else guessed from ``info``."""
    tfds = _tfds()
    features = info.features
    names = list(features.keys())
    supervised = tuple(info.supervised_keys or ()) if isinstance(info.supervised_keys, (tuple, list)) else ()
    images = [k for k in names if isinstance(features[k], tfds.features.Image)]
    labels = [k for k in names if isinstance(features[k], tfds.features.ClassLabel)]
    image_key = cfg.image_key or (images[0] if images else (supervised[0] if supervised else None))
    label_key = cfg.label_key or (labels[0] if labels else (supervised[1] if len(supervised) > 1 else None))
    for what, key, setting in (("image", image_key, "image_key"), ("label", label_key, "label_key")):
        if key is None or key not in names:
            guess = did_you_mean(str(key), names) if key else None
            problem = f"no feature {key!r}" + (f"; did you mean {guess!r}?" if guess else "") if key else (
                f"cannot tell which feature holds the {what}")  # fmt: skip
            raise DataError(f"{where}: {problem} (features: {', '.join(names)})",
                            hint=f"set data.{setting} to one of: {', '.join(names)}")  # fmt: skip
    return image_key, label_key


def _target_shape(feature, cfg, where: str) -> tuple[int, int, int]:
    """(height, width, channels) of the arrays to build, from the feature and the recipe."""
    shape = tuple(feature.shape)
    if len(shape) == 2:  # a (H, W) Tensor feature: one channel
        shape = (*shape, 1)
    if len(shape) != 3:
        raise DataError(f"{where}: images have shape {shape}; expected (height, width[, channels])",
                        hint="set data.image_key to the feature that holds 2-D images")  # fmt: skip
    if np.dtype(feature.np_dtype) != np.uint8:
        raise DataError(f"{where}: images have dtype {np.dtype(feature.np_dtype)}; cnncli reads uint8 images "
                        "from TFDS", hint="set data.image_key to a uint8 image feature")  # fmt: skip
    size = target_size(cfg.image_size) or shape[:2]
    if None in size:
        raise DataError(f"{where}: images vary in size {shape[:2]}", hint="set data.image_size = [height, width]")
    channels = cfg.channels or shape[2] or 3
    return (int(size[0]), int(size[1]), int(channels))


def _examples(source, indices: list[int]) -> list[dict]:
    try:
        return list(source.__getitems__(indices))
    except TypeError:  # tfds.testing.mock_data sources support only source[i]
        return [source[i] for i in indices]


def _read(source, keys: tuple[str, str], shape: tuple[int, int, int], where: str):
    """All examples of a source as uint8 (N, H, W, C) images and int64 labels."""
    image_key, label_key = keys
    n = len(source)
    x = np.empty((n, *shape), np.uint8)
    y = np.empty((n,), np.int64)
    for start in range(0, n, CHUNK):
        indices = list(range(start, min(start + CHUNK, n)))
        images = []
        for i, example in zip(indices, _examples(source, indices)):
            image = np.asarray(example[image_key])
            image = image[..., None] if image.ndim == 2 else image
            images.append(resize_images(image[None], shape[:2])[0])  # no-op when the size matches
            y[i] = int(example[label_key])
        x[indices[0] : indices[-1] + 1] = convert_channels(np.stack(images), shape[2], where)
    return x, y


def open_split(name: str, split: str, cfg):
    """A prepared TFDS split opened for reading: ``(source, info, (image key, label key), shape, where)``.

    Shared by the in-memory loader and the streamed one (`cnncli.data.stream`); nothing is decoded.
    """
    where = f"tfds:{name} [{split}]"
    source = open_source(name, split, cfg.data_dir)
    info = source.dataset_info
    keys = feature_keys(info, cfg, where)
    return source, info, keys, _target_shape(info.features[keys[0]], cfg, where), where


@_quiet
def load_tfds_split(name: str, split: str, cfg) -> tuple[Split, list[str], tuple[float, float]]:
    """Read one split (``train``, ``test[:50%]``, ...) of a prepared TFDS dataset into memory."""
    source, info, keys, shape, where = open_split(name, split, cfg)
    check_budget(where, len(source), shape, cfg.memory_budget_mb)
    x, y = _read(source, keys, shape, where)
    label = info.features[keys[1]]
    names = list(getattr(label, "names", None) or [str(i) for i in range(int(y.max(initial=-1)) + 1)])
    if y.size and (y.min() < 0 or y.max() >= len(names)):
        raise DataError(f"{where}: labels in {keys[1]!r} range over [{y.min()}, {y.max()}], "
                        f"but there are {len(names)} classes", hint="set data.label_key to the class label")  # fmt: skip
    return Split(x, y.astype(np.int32)), names, (0.0, 255.0)


@_quiet
def tfds_split_sizes(name: str, cfg) -> dict[str, int]:
    """Examples per split: from the prepared dataset's info, else by opening each usual split."""
    found = builder(name, cfg.data_dir)
    if found.is_prepared() and found.info.splits:
        return {split: int(info.num_examples) for split, info in found.info.splits.items()}
    sizes, first_error = {}, None
    for split in ("train", "validation", "test"):  # tfds.testing.mock_data answers any split
        try:
            sizes[split] = len(open_source(name, split, cfg.data_dir))
        except DataError as err:
            first_error = first_error or err
    if not sizes:
        raise first_error
    return sizes


def has_tensorflow() -> bool:
    """True when TensorFlow is installed (looked up, not imported: importing takes ~3.4 s)."""
    return importlib.util.find_spec("tensorflow") is not None


def needs_tensorflow(features) -> bool:
    """True when preparing encodes features that TFDS can only encode with TensorFlow."""
    tfds = _tfds()
    kinds = (tfds.features.Image, tfds.features.Video)
    return any(isinstance(f, kinds) for f in getattr(features, "values", lambda: [])())


@_quiet
def prepare(name: str, data_dir: str | None) -> tuple[str, bool]:
    """Download and prepare a TFDS dataset as array_record; needs the network.

    Returns:
        (the prepared directory, True if it was already prepared).

    Raises:
        DataError: unknown dataset, TensorFlow missing for image datasets, download failure.
    """
    found = builder(name, data_dir)
    if found.is_prepared():
        if "array_record" not in str(getattr(found.info, "file_format", "")).lower():
            raise _explain(name, "train", data_dir, RuntimeError("tfrecord"))
        return str(found.data_dir), True
    if not has_tensorflow() and needs_tensorflow(found.info.features):
        raise DataError(
            f"preparing tfds:{name} needs TensorFlow (TFDS encodes its images with it) and the network; "
            "training on the prepared data needs neither",
            hint=f"install it into this environment: {TF_INSTALL}; then run {_command(name, data_dir)} again",
        )
    try:
        with contextlib.redirect_stdout(sys.stderr):  # TFDS prints progress; stdout is for results
            found.download_and_prepare(file_format="array_record")
    except ModuleNotFoundError as err:
        raise DataError(f"preparing tfds:{name} needs {err.name}", hint=f"{TF_INSTALL} (or pip install {err.name})") from None
    except Exception as err:
        raise DataError(f"preparing tfds:{name} in {found.data_dir} failed: {err}",
                        hint="this step downloads the dataset: check the network, then run it again") from None  # fmt: skip
    return str(found.data_dir), False
