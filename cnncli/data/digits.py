"""The handwritten digits bundled with scikit-learn: 1,797 real 8x8 images, 10 classes.

Offline and fast (0.02 s). Pixel values are 0..16. The train/test split is fixed:
stratified by class, 20% test, seed 0, so every run and every machine sees the same
split (1,438 train / 359 test).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from cnncli.data.base import Split
from cnncli.errors import DataError

SPLIT_SEED = 0  # fixed: the split is part of the dataset, not of the run
TEST_FRACTION = 0.2


def _split_indices(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split: the same fraction of every class goes to test."""
    rng = np.random.default_rng(SPLIT_SEED)
    train, test = [], []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        n_test = int(round(len(idx) * TEST_FRACTION))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _read_bundled() -> tuple[np.ndarray, np.ndarray]:
    """Read ``digits.csv.gz`` from scikit-learn's package data without importing sklearn.

    Importing sklearn pulls in scipy (about 3 s here); the file itself reads in 20 ms.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise DataError("the digits dataset needs scikit-learn", hint="uv sync (it is a dependency)")
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    table = np.loadtxt(path, delimiter=",", dtype=np.int64)  # 64 pixels + label per row
    x = table[:, :64].reshape(-1, 8, 8, 1).astype(np.uint8)
    return x, table[:, 64].astype(np.int32)


def load_digits_split(split: str) -> tuple[Split, list[str], tuple[float, float]]:
    """Load ``train``, ``test`` or ``all`` of the digits as uint8 (N, 8, 8, 1), values 0..16."""
    x, y = _read_bundled()
    train_idx, test_idx = _split_indices(y)
    chosen = {"train": train_idx, "test": test_idx, "all": np.arange(len(y))}.get(split)
    if chosen is None:
        raise DataError(f"digits: unknown split {split!r}", hint="digits has splits train, test and all")
    names = [str(i) for i in range(10)]
    return Split(x[chosen], y[chosen]), names, (0.0, 16.0)
