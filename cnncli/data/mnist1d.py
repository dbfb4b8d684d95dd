"""``mnist1d``: the MNIST-1D benchmark (Greydanus, 2020), generated offline.

Ten 1-D digit templates, padded, stretched, scaled, shifted, sheared and noised into
signals of ``final_seq_length`` samples (40 by default): input shape ``(L, 1)``,
channels last, 10 classes. The examples come from the ``mnist1d`` package's own
``make_dataset`` (no download: about 1 s for the default 5,000 examples, plus 0.8 s to
import the package, which pulls in matplotlib), with the recipe's ``[data.mnist1d]``
table as its arguments (`cnncli.config.recipe.Mnist1dConfig`; defaults: the package's
``get_dataset_args()``). ``make_dataset`` seeds NumPy's and Python's global random
generators; this module restores both afterwards, so generating data changes no other
random stream of the process.

Splits: ``train`` (the first ``train_split`` of the shuffled examples: 4,000 by
default), ``test`` (the rest: 1,000) and ``all``. Nothing is written to disk; a
process generates each argument set once (`_generate` is memoized), so a run's
train and eval splits cost one generation.
"""

from __future__ import annotations

import functools
import json
import random

import numpy as np

from cnncli.data.base import Split, check_arrays
from cnncli.errors import DataError

CLASS_NAMES = [str(i) for i in range(10)]
SPLITS = ("train", "test", "all")


def dataset_args(cfg=None) -> dict:
    """The ``make_dataset`` arguments of a ``[data.mnist1d]`` table (None: the defaults), as plain data."""
    from cnncli.config.recipe import Mnist1dConfig

    return (cfg if cfg is not None else Mnist1dConfig()).model_dump(mode="json")


@functools.lru_cache(maxsize=4)
def _generate(args_json: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_test, y_test)`` from ``make_dataset``; float32 ``(N, L)``, int32 labels."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as err:  # pragma: no cover - a dependency of cnncli
        raise DataError(f"the mnist1d source needs the mnist1d package ({err})", hint="uv sync") from None
    args = get_dataset_args()  # an ObjectView; its url is never used by make_dataset
    for key, value in json.loads(args_json).items():
        setattr(args, key, tuple(value) if key == "padding" else value)
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)
    finally:  # make_dataset seeds the global generators: leave them as they were
        np.random.set_state(np_state)
        random.setstate(py_state)

    x_train, x_test = (np.asarray(data[k], np.float32) for k in ("x", "x_test"))
    return x_train, np.asarray(data["y"], np.int32), x_test, np.asarray(data["y_test"], np.int32)


def load_mnist1d_split(split: str, cfg=None) -> tuple[Split, list[str], tuple[float, float]]:
    """One split of MNIST-1D as float32 ``(N, L, 1)`` signals and int32 labels.

    Args:
        split: ``train``, ``test`` or ``all``.
        cfg: the recipe's `cnncli.config.recipe.Mnist1dConfig` (``[data.mnist1d]``), or None for the defaults.

    Returns:
        ``(Split, class names "0".."9", value range)``; the signals are standardized over the
        whole dataset by ``make_dataset`` (mean 0, std 1), the range is the split's min and max.

    Raises:
        DataError: an unknown split, or a split left empty by ``num_samples``/``train_split``.
    """
    if split not in SPLITS:
        raise DataError(f"mnist1d: unknown split {split!r}", hint="mnist1d has splits train, test and all")
    args = dataset_args(cfg)
    x_train, y_train, x_test, y_test = _generate(json.dumps(args, sort_keys=True))
    if split == "train":
        x, y = x_train, y_train
    elif split == "test":
        x, y = x_test, y_test
    else:
        x, y = np.concatenate([x_train, x_test]), np.concatenate([y_train, y_test])
    if len(y) == 0:
        raise DataError(
            f"mnist1d: the {split} split is empty (num_samples = {args['num_samples']}, "
            f"train_split = {args['train_split']})",
            hint="raise data.mnist1d.num_samples or move data.mnist1d.train_split away from 0 and 1",
        )
    # check_arrays adds the channel axis: (N, L) -> (N, L, 1)
    data = check_arrays(x.copy(), y.copy(), where=f"mnist1d [{split}]", num_classes=len(CLASS_NAMES))
    return data, list(CLASS_NAMES), (float(data.x.min()), float(data.x.max()))
