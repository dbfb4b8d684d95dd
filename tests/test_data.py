"""Data sources: the bundled digits and npz files, with their validation errors."""

from __future__ import annotations

import numpy as np
import pytest

from cnncli.config.recipe import DataConfig
from cnncli.config.source import SOURCE_KINDS
from cnncli.data.base import channel_stats
from cnncli.data.sources import LOADERS, load_dataset, load_split, split_sizes
from cnncli.errors import DataError


def test_digits_split_is_fixed_stratified_and_disjoint():
    train, names, value_range = load_split("digits", "train")
    test, _, _ = load_split("digits", "test")
    everything, _, _ = load_split("digits", "all")
    assert names == [str(i) for i in range(10)] and value_range == (0.0, 16.0)
    assert train.x.shape == (1438, 8, 8, 1) and test.x.shape == (359, 8, 8, 1)
    assert train.x.dtype == np.uint8 and train.y.dtype == np.int32
    assert everything.x.shape[0] == 1797 and int(everything.x.max()) == 16
    # stratified: every class has ~20% of its examples in test
    counts = np.bincount(test.y, minlength=10) / np.bincount(everything.y, minlength=10)
    assert np.all(np.abs(counts - 0.2) < 0.02)
    # disjoint: no test image (with its label) is a training image at the same index set
    again, _, _ = load_split("digits", "test")
    assert np.array_equal(again.x, test.x)


@pytest.mark.slow  # importing sklearn (and scipy) takes ~3-9 s
def test_digits_match_scikit_learn():
    from sklearn.datasets import load_digits

    everything, _, _ = load_split("digits", "all")
    bunch = load_digits()
    assert np.array_equal(everything.x[..., 0], bunch.images.astype(np.uint8))
    assert np.array_equal(everything.y, bunch.target)


def test_unknown_digits_split():
    with pytest.raises(DataError, match="digits: unknown split 'val'"):
        load_split("digits", "val")


def make_npz(path, x_train, y_train, x_test, y_test, **extra):
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, **extra)
    return path


def test_npz_grayscale_and_stats(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (20, 6, 6), dtype=np.uint8)
    y = np.arange(20) % 3
    path = make_npz(tmp_path / "d.npz", x, y, x[:5], y[:5])
    data = load_dataset(DataConfig(source=f"npz:{path}"))
    assert data.input_shape == (6, 6, 1) and data.num_classes == 3
    assert data.class_names == ["0", "1", "2"]
    assert data.mean == pytest.approx([float(x.mean())]) and data.std == pytest.approx([float(x.std())])


def test_npz_one_dimensional_signals_and_class_names(tmp_path):
    x = np.random.default_rng(0).normal(size=(12, 40)).astype(np.float32)
    y = np.arange(12) % 2
    path = make_npz(tmp_path / "s.npz", x, y, x[:4], y[:4], class_names=np.array(["noise", "tone"]))
    data = load_dataset(DataConfig(source=f"npz:{path}"))
    assert data.input_shape == (40, 1) and data.class_names == ["noise", "tone"]
    assert data.train.x.dtype == np.float32


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        (np.zeros((4, 2, 2, 2, 2, 2)), np.zeros(4), "images have shape (4, 2, 2, 2, 2, 2)"),
        (np.zeros((4, 5, 5)), np.zeros(3), "labels have shape (3,); expected (4,)"),
        (np.zeros((4, 5, 5)), np.array([0, 1, -1, 0]), "labels range over [-1, 1]"),
        (np.zeros((4, 5, 5)), np.array([0.5, 1, 1, 0]), "labels have dtype float64"),
    ],
)
def test_npz_errors_name_the_file_and_problem(tmp_path, x, y, message):
    path = make_npz(tmp_path / "bad.npz", x, y, x, y)
    with pytest.raises(DataError) as info:
        load_split(f"npz:{path}", "train")
    assert str(path) in str(info.value) and message in str(info.value)


def test_npz_missing_arrays_and_file(tmp_path):
    path = tmp_path / "m.npz"
    np.savez(path, x_train=np.zeros((2, 3, 3)))
    with pytest.raises(DataError, match=r"missing arrays \['y_train'\]"):
        load_split(f"npz:{path}", "train")
    with pytest.raises(DataError, match="npz file not found"):
        load_split(f"npz:{tmp_path / 'none.npz'}", "train")


def test_npz_pickles_are_refused(tmp_path):
    path = tmp_path / "p.npz"
    np.savez(path, x_train=np.array([object()], dtype=object), y_train=np.zeros(1), x_test=np.zeros(1), y_test=np.zeros(1))
    with pytest.raises(DataError, match="cannot read as npz"):
        load_split(f"npz:{path}", "train")


def test_channel_stats_per_channel():
    x = np.stack([np.full((4, 3, 3), 2.0), np.full((4, 3, 3), 5.0)], axis=-1)
    mean, std = channel_stats(x)
    assert mean == [2.0, 5.0] and std == [1.0, 1.0]  # constant channels are left unscaled


def test_every_source_kind_has_a_loader():
    assert set(LOADERS) == set(SOURCE_KINDS)


def test_an_unknown_source_names_the_valid_ones():
    with pytest.raises(DataError, match="unknown data source 'hdf5:x.h5'") as info:
        load_split("hdf5:x.h5", "train")
    assert "use digits, mnist1d, npz:PATH, tfds:NAME or folder:PATH" in str(info.value)


def test_split_sizes_of_digits_and_npz_count_train_and_test(tmp_path):
    assert split_sizes("digits") == {"train": 1438, "test": 359}
    x, y = np.zeros((7, 4, 4), np.uint8), np.arange(7) % 2
    path = make_npz(tmp_path / "s.npz", x, y, x[:3], y[:3])
    assert split_sizes(f"npz:{path}") == {"train": 7, "test": 3}
