"""``folder:PATH``: images in ``PATH/<split>/<class>/*.png|jpg|jpeg|bmp|webp``.

Decoded with Pillow, converted to ``data.channels`` (default: 3 if any image in any
split is in colour, else 1) and resized to ``data.image_size`` (default: the size all
images share; a folder of mixed sizes must name one). Class names are the sorted
class folder names over all splits, so every split labels a class the same way.

A file that cannot be read is skipped, and one `DataWarning` counts them and names
the first few; with ``data.strict = true`` the first one is fatal instead. Either
way it happens while loading, never mid-epoch.

Slices (``train[:90%]``, ``train[90%:]``) select from a fixed shuffle (seed 0) of the
split's files, so a validation slice holds every class and never overlaps the rest.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnncli.data.base import DataWarning, Split
from cnncli.data.imageops import (
    check_budget,
    parse_split,
    slice_range,
    target_size,
)
from cnncli.errors import DataError, did_you_mean

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")  # Pillow modes without colour
MODES = {1: "L", 3: "RGB", 4: "RGBA"}  # data.channels -> Pillow mode
MAX_NAMED = 3  # unreadable files named in a warning
SLICE_SEED = 0  # fixed: a slice is part of the dataset, not of the run


@dataclass
class FolderIndex:
    """The files of an image folder: sorted class names and, per split, (path, label) pairs."""

    root: Path
    classes: list[str]
    files: dict[str, list[tuple[Path, int]]]


def _images(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.suffix.lower() in EXTENSIONS and not p.name.startswith("."))


def _subdirs(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))


def index_folder(root: Path) -> FolderIndex:
    """List ``root/<split>/<class>/<image>`` files (no image is opened)."""
    if not root.is_dir():
        what = "is a file, not a directory" if root.exists() else "no such directory"
        hint = "check the path" if root.is_absolute() else "relative paths resolve against the recipe's folder"
        raise DataError(f"folder:{root}: {what}", hint=hint)
    layout = "expected PATH/<split>/<class>/<image>, e.g. PATH/train/cat/001.png and PATH/test/cat/101.png"
    splits = {s.name: _subdirs(s) for s in _subdirs(root)}
    if any(_images(s) for s in _subdirs(root)):
        raise DataError(f"folder:{root}: images directly under a split or class folder", hint=layout)
    classes = sorted({c.name for dirs in splits.values() for c in dirs})
    if not classes:
        raise DataError(f"folder:{root}: no class folders found", hint=layout)
    _same_classes(root, splits, classes)
    label = {name: i for i, name in enumerate(classes)}
    files = {
        split: [(p, label[c.name]) for c in dirs for p in _images(c)] for split, dirs in splits.items()
    }  # fmt: skip
    return FolderIndex(root, classes, files)


def _same_classes(root: Path, splits: dict[str, list[Path]], classes: list[str]) -> None:
    """Every split has every class folder, and none is empty: else a class trains or scores against nothing."""
    for split, dirs in splits.items():
        lacks = [c for c in classes if c not in {d.name for d in dirs}]
        if lacks:
            found = [s for s, others in splits.items() if lacks[0] in {d.name for d in others}]
            named = ", ".join(repr(c) for c in lacks[:5]) + (f" and {len(lacks) - 5} more" if len(lacks) > 5 else "")
            raise DataError(f"folder:{root}: split {split!r} has no class folder {named} (found in {', '.join(found)})",
                            hint="every split needs the same class folders (a class missing from training is never "
                            "learned, one missing from test is never scored): add the folder, or remove the class "
                            "from every split")  # fmt: skip
    for dirs in splits.values():
        for folder in dirs:
            if not _images(folder):
                raise DataError(f"folder:{root}: class folder {folder} holds no images",
                                hint=f"put images ({', '.join(EXTENSIONS)}) in it, or remove that class from every "
                                "split")  # fmt: skip


def folder_split_sizes(path: str) -> dict[str, int]:
    """Number of image files in each split of a folder dataset."""
    index = index_folder(Path(path).expanduser())
    return {split: len(files) for split, files in index.files.items()}


def _header(path: Path) -> tuple[tuple[int, int], bool] | str:
    """((height, width), is_colour) from the file header, or why it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return (image.height, image.width), image.mode not in GREY_MODES
    except Exception as err:  # Pillow raises many kinds for bad files
        return f"{type(err).__name__}: {err}"


def _defaults(headers: list, cfg, where: str) -> tuple[tuple[int, int], int]:
    """(height, width) and channels: the recipe's, else what the images have."""
    readable = [h for h in headers if not isinstance(h, str)]
    channels = cfg.channels or (3 if any(colour for _, colour in readable) else 1)
    if channels not in MODES:
        raise DataError(f"{where}: data.channels = {channels}; image folders give 1, 3 or 4 channels")
    size = target_size(cfg.image_size)
    if size is None:
        sizes = Counter(s for s, _ in readable)
        if len(sizes) > 1:
            (common, count), *_ = sizes.most_common()
            listed = ", ".join(f"{h}x{w} ({n})" for (h, w), n in sizes.most_common(4))
            raise DataError(f"{where}: images have {len(sizes)} different sizes: {listed}",
                            hint=f"resize them all: set data.image_size = [{common[0]}, {common[1]}]")  # fmt: skip
        size = next(iter(sizes)) if sizes else (1, 1)
    return size, channels


def _select(index: FolderIndex, split: str, where: str) -> list[tuple[Path, int]]:
    spec = parse_split(split, where)
    if spec.name not in index.files:
        guess = did_you_mean(spec.name, index.files)
        raise DataError(f"{where}: no split folder {index.root / spec.name}" + (f"; did you mean {guess!r}?" if guess else ""),
                        hint=f"splits here: {', '.join(index.files) or 'none'}; one split can be sliced: "
                        "train_split = 'train[:90%]', eval_split = 'train[90%:]'")  # fmt: skip
    files = index.files[spec.name]
    if not spec.sliced:
        return files
    order = np.random.default_rng(SLICE_SEED).permutation(len(files))
    start, stop = slice_range(spec, len(files))
    return [files[i] for i in np.sort(order[start:stop])]


def _decode(path: Path, size: tuple[int, int], mode: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert(mode)  # decodes the whole file: truncated files fail here
        if (image.height, image.width) != size:
            image = image.resize((size[1], size[0]), Image.BILINEAR)
        array = np.asarray(image, dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array


decode_image = _decode  # the streaming pipeline (`cnncli.data.records`) decodes one file the same way


def _report_bad(bad: list[tuple[Path, str]], total: int, where: str, strict: bool) -> None:
    if not bad:
        return
    if strict:
        path, reason = bad[0]
        raise DataError(f"{where}: cannot read {path}: {reason}",
                        hint="fix or remove the file, or set data.strict = false to skip unreadable files")  # fmt: skip
    named = "; ".join(f"{p} ({reason})" for p, reason in bad[:MAX_NAMED])
    more = f"; and {len(bad) - MAX_NAMED} more" if len(bad) > MAX_NAMED else ""
    warnings.warn(DataWarning(f"{where}: skipped {len(bad)} of {total} files that could not be read: "
                              f"{named}{more} (set data.strict = true to fail instead)"), stacklevel=2)  # fmt: skip


def load_folder_split(path: str, split: str, cfg) -> tuple[Split, list[str], tuple[float, float]]:
    """Read one split of an image folder into uint8 ``(N, H, W, C)`` images and int32 labels."""
    root = Path(path).expanduser()
    where = f"folder:{root} [{split}]"
    index = index_folder(root)
    entries = _select(index, split, where)
    headers = {p: _header(p) for files in index.files.values() for p, _ in files}
    size, channels = _defaults(list(headers.values()), cfg, where)
    check_budget(where, len(entries), (*size, channels), cfg.memory_budget_mb)
    x = np.empty((len(entries), *size, channels), np.uint8)
    y = np.empty((len(entries),), np.int32)
    bad: list[tuple[Path, str]] = []
    kept = 0
    for file, label in entries:
        header = headers[file]
        try:
            if isinstance(header, str):
                raise OSError(header)
            x[kept] = _decode(file, size, MODES[channels])
        except Exception as err:
            bad.append((file, str(err) if isinstance(header, str) else f"{type(err).__name__}: {err}"))
            continue
        y[kept] = label
        kept += 1
    _report_bad(bad, len(entries), where, cfg.strict)
    if kept == 0:
        raise DataError(f"{where}: no readable images", hint=f"put images ({', '.join(EXTENSIONS)}) in class folders")
    return Split(x[:kept], y[:kept]), index.classes, (0.0, 255.0)
