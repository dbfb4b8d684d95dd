"""``npz:PATH``: the Keras ``mnist.npz`` convention.

Arrays ``x_train``, ``y_train``, ``x_test``, ``y_test``; images ``(N,H,W)`` (one
channel), ``(N,H,W,C)``, or ``(N,L)`` (1-D signals, one channel); uint8 or float.
An optional ``class_names`` array names the classes. Splits: ``train`` and ``test``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnncli.data.base import Split, check_arrays
from cnncli.errors import DataError

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # an npz is a zip archive (the second: an empty one)


def check_npz_file(file: Path) -> None:
    """Refuse what is not an npz before numpy reads it (it would offer to unpickle it)."""
    if file.is_dir():
        raise DataError(f"npz:{file} is a directory, not an npz file", hint="for a folder of images use folder:PATH")
    try:
        with open(file, "rb") as f:
            head = f.read(6)
    except OSError as err:
        raise DataError(f"npz:{file}: cannot read: {err.strerror or err}") from None
    if not head.startswith(ZIP_MAGIC):
        kind = " (a single .npy array)" if head.startswith(b"\x93NUMPY") else ""
        raise DataError(f"npz:{file} is not an npz file{kind}",
                        hint="save the arrays with numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)")


def _array(arrays, key: str, file: Path) -> np.ndarray:
    try:
        return arrays[key]
    except ValueError as err:
        if "allow_pickle" not in str(err):
            raise
        raise DataError(f"{file}: cannot read as npz: array {key!r} holds Python objects (never unpickled)",
                        hint="save numbers or strings as plain arrays, e.g. np.array(names, dtype=str)") from None


def _class_count(labels: list[np.ndarray], where: str) -> int:
    """1 + the largest label of both splits (a class only in the test split is still a class)."""
    values = np.concatenate([np.asarray(y).ravel() for y in labels]) if labels else np.zeros(0)
    if values.size == 0:
        raise DataError(f"{where}: no labels", hint="an npz dataset holds x_train, y_train, x_test, y_test")
    if not np.issubdtype(values.dtype, np.number) or not np.all(np.isfinite(values)):
        raise DataError(f"{where}: labels must be integer class ids (found {values.dtype} values)")
    return max(int(values.max()) + 1, 1)


def load_npz_split(path: str, split: str) -> tuple[Split, list[str], tuple[float, float]]:
    """Load one split (``train`` or ``test``) of an npz file."""
    file = Path(path)
    if not file.exists():
        hint = "check the path" if file.is_absolute() else "relative paths resolve against the recipe's folder"
        raise DataError(f"npz file not found: {file}", hint=hint)
    check_npz_file(file)
    if split not in ("train", "test"):
        raise DataError(f"{file}: unknown split {split!r}", hint="npz files have splits train and test")
    try:
        with np.load(file, allow_pickle=False) as arrays:  # never unpickle: data cannot run code
            keys = set(arrays.files)
            need = {f"x_{split}", f"y_{split}"}
            if not need <= keys:
                raise DataError(
                    f"{file}: missing arrays {sorted(need - keys)} (has {sorted(keys)})",
                    hint="an npz dataset holds x_train, y_train, x_test, y_test",
                )
            x, y = _array(arrays, f"x_{split}", file), _array(arrays, f"y_{split}", file)
            names = [str(n) for n in _array(arrays, "class_names", file)] if "class_names" in keys else None
            y_all = [_array(arrays, k, file) for k in ("y_train", "y_test") if k in keys]  # never one split alone
    except DataError:
        raise
    except Exception as err:
        raise DataError(f"{file}: cannot read as npz: {err}") from None
    num_classes = len(names) if names else _class_count(y_all, f"{file} [{split}]")
    data = check_arrays(x, y, where=f"{file} [{split}]", num_classes=num_classes, named=bool(names))
    names = names or [str(i) for i in range(num_classes)]
    if data.x.dtype == np.uint8:
        value_range = (0.0, 255.0)
    else:
        value_range = (float(data.x.min()), float(data.x.max())) if data.x.size else (0.0, 1.0)
    return data, names, value_range
