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


def load_npz_split(path: str, split: str) -> tuple[Split, list[str], tuple[float, float]]:
    """Load one split (``train`` or ``test``) of an npz file."""
    file = Path(path)
    if not file.exists():
        raise DataError(f"npz file not found: {file}", hint="relative paths resolve against the recipe's folder")
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
            x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
            names = [str(n) for n in arrays["class_names"]] if "class_names" in keys else None
            y_all = np.concatenate([arrays[k] for k in ("y_train", "y_test") if k in keys], axis=None)
    except DataError:
        raise
    except Exception as err:
        raise DataError(f"{file}: cannot read as npz: {err}") from None
    num_classes = len(names) if names else int(y_all.max()) + 1
    data = check_arrays(x, y, where=f"{file} [{split}]", num_classes=num_classes)
    names = names or [str(i) for i in range(num_classes)]
    if data.x.dtype == np.uint8:
        value_range = (0.0, 255.0)
    else:
        value_range = (float(data.x.min()), float(data.x.max())) if data.x.size else (0.0, 1.0)
    return data, names, value_range
