"""Fixed-size batches over host arrays: index ranges, and a padded last batch with its mask."""

from __future__ import annotations

import numpy as np


def batches(n: int, batch_size: int):
    """(start, stop) index ranges covering ``n`` examples in fixed-size batches."""
    for start in range(0, n, batch_size):
        yield start, min(start + batch_size, n)


def pad_batch(x, y, batch_size: int):
    """Pad a short last batch to ``batch_size`` (so eval compiles once) and return the mask."""
    n = x.shape[0]
    mask = np.zeros(batch_size, bool)
    mask[:n] = True
    if n == batch_size:
        return x, y, mask
    pad = batch_size - n
    x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
    y = np.concatenate([y, np.zeros((pad,), y.dtype)])
    return x, y, mask

