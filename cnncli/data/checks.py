"""Checks a dataset passes before anything trains on it: examples in each split, at least 2 classes, finite
pixels, labels in range, every class present.

Small functions on numpy arrays, so every loader (and a streaming pipeline, chunk by
chunk) can call them; `check_dataset` runs them all on a loaded `Dataset`'s two
splits. Each error names the source, the split and the first offending example, and
says what to do::

    npz:data.npz [train]: image 17 has a non-finite pixel (nan); 3 images do
    npz:data.npz [train]: label 42 at index 5 is not a class id 0..9
    npz:data.npz: classes 10..41 have no training example (labels run 0..42: a stray label?)

A class without a training example is an error unless ``data.allow_missing_classes``
is set; then a `DataWarning` lists the classes, and training goes on.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from cnncli.data.base import DataWarning
from cnncli.errors import DataError

CHUNK = 4096  # images per np.isfinite pass: bounds the temporary boolean array


def nonfinite_rows(x: np.ndarray, offset: int = 0) -> tuple[int | None, int, str]:
    """(first index, how many, what) of the images in ``x`` holding a NaN or infinity; (None, 0, "") when none.

    ``offset`` is added to the index, for a chunk of a larger split. Integer images are
    always finite and are not scanned.
    """
    if not np.issubdtype(x.dtype, np.floating) or x.size == 0:
        return None, 0, ""
    first, count, what = None, 0, ""
    flat = x.reshape(x.shape[0], -1)
    for start in range(0, flat.shape[0], CHUNK):
        bad = ~np.isfinite(flat[start : start + CHUNK]).all(axis=1)
        hits = np.flatnonzero(bad)
        if hits.size and first is None:
            first = offset + start + int(hits[0])
            row = flat[start + int(hits[0])]
            what = "nan" if np.isnan(row).any() else "inf"
        count += int(hits.size)
    return first, count, what


def check_finite(x: np.ndarray, where: str, offset: int = 0) -> None:
    """Raise `DataError` naming ``where`` and the first image with a NaN or infinite pixel."""
    first, count, what = nonfinite_rows(x, offset)
    if first is not None:
        more = f"; {count} images do" if count > 1 else ""
        raise DataError(f"{where}: image {first} has a non-finite pixel ({what}){more}",
                        hint="fix or drop those images: a NaN or inf pixel makes the loss NaN or the model "
                        "learn nothing")  # fmt: skip


def check_labels(y: np.ndarray, num_classes: int, where: str, offset: int = 0) -> None:
    """Raise `DataError` naming ``where`` and the first label outside ``0..num_classes-1``."""
    y = np.asarray(y)
    bad = np.flatnonzero((y < 0) | (y >= num_classes))
    if bad.size:
        i = int(bad[0])
        more = f"; {bad.size} labels are out of range" if bad.size > 1 else ""
        raise DataError(f"{where}: label {int(y[i])} at index {offset + i} is not a class id 0..{num_classes - 1}"
                        f"{more}", hint="fix the labels, or give class names for every class id")  # fmt: skip


def missing_classes(y: np.ndarray, num_classes: int) -> list[int]:
    """The class ids in ``0..num_classes-1`` with no example in ``y``."""
    present = np.zeros(num_classes, bool)
    y = np.asarray(y)
    present[y[(y >= 0) & (y < num_classes)]] = True
    return [int(c) for c in np.flatnonzero(~present)]


def spans(ids: Sequence[int], limit: int = 8) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``0..2, 5, 7, 8``; more than ``limit`` pieces end with ``, ...``."""
    pieces: list[str] = []
    i = 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        pieces.append(str(ids[i]) if j == i else (f"{ids[i]}, {ids[j]}" if j == i + 1 else f"{ids[i]}..{ids[j]}"))
        i = j + 1
    return ", ".join(pieces[:limit]) + (", ..." if len(pieces) > limit else "")


def check_classes(y_train: np.ndarray, class_names: Sequence[str], where: str, *, allow_missing: bool) -> list[int]:
    """Every class has a training example: an error, or with ``allow_missing`` a `DataWarning`; the missing ids."""
    missing = missing_classes(y_train, len(class_names))
    if not missing:
        return missing
    named = [f"{c} ({class_names[c]})" if class_names[c] != str(c) else str(c) for c in missing]
    ids = spans(missing) if all(class_names[c] == str(c) for c in missing) else ", ".join(named[:8])
    top = int(np.max(y_train)) if np.size(y_train) else -1
    stray = f" (labels run 0..{top}: a stray label?)" if top == len(class_names) - 1 and len(missing) > 1 else ""
    noun = "class" if len(missing) == 1 else f"{len(missing)} classes"
    message = f"{where}: {noun} {ids} {'has' if len(missing) == 1 else 'have'} no training example{stray}"
    if not allow_missing:
        raise DataError(message, hint="fix the labels or the class folders, or set data.allow_missing_classes = "
                        "true to train anyway (those classes are then never predicted)")  # fmt: skip
    warnings.warn(DataWarning(f"{message}; training anyway (data.allow_missing_classes)"), stacklevel=2)
    return missing


def check_split(x: np.ndarray, y: np.ndarray, num_classes: int, where: str) -> None:
    """Finite pixels and labels in ``0..num_classes-1`` (one split, or one chunk of it)."""
    check_finite(x, where)
    check_labels(y, num_classes, where)


def check_counts(name: str, sizes: dict[str, int], class_names: Sequence[str]) -> None:
    """Every split holds examples and the data has at least 2 classes (``sizes``: split name -> examples).

    An empty evaluation split would be scored as accuracy 0 and loss 0, and a single class
    as accuracy 1.0: both say nothing, so both are errors.
    """
    for split, size in sizes.items():
        if size == 0:
            raise DataError(f"{name} [{split}]: the split has no examples",
                            hint="point data.train_split / data.eval_split at splits that hold data")  # fmt: skip
    if len(class_names) < 2:
        shown = f" ({class_names[0]!r})" if class_names else ""
        raise DataError(f"{name}: the data has {len(class_names)} class{'' if len(class_names) == 1 else 'es'}{shown}; "
                        "a classifier needs at least 2", hint="check the labels (all the same?) or the class folders "
                        "(only one?)")  # fmt: skip


def check_dataset(data, *, train_split: str, eval_split: str, allow_missing: bool = False) -> list[int]:
    """Check a loaded `cnncli.data.base.Dataset` before it trains; returns the class ids with no training example.

    Raises:
        DataError: a split with no examples, fewer than 2 classes, a non-finite pixel or an
            out-of-range label in either split (naming the split and the first index), or a
            class with no training example (unless ``allow_missing``: then a `DataWarning`).
    """
    check_counts(data.name, {train_split: int(data.train.x.shape[0]), eval_split: int(data.eval.x.shape[0])},
                 data.class_names)
    classes = len(data.class_names)
    check_split(data.train.x, data.train.y, classes, f"{data.name} [{train_split}]")
    check_split(data.eval.x, data.eval.y, classes, f"{data.name} [{eval_split}]")
    return check_classes(data.train.y, data.class_names, f"{data.name} [{train_split}]", allow_missing=allow_missing)
