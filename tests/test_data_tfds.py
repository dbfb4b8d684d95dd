"""``tfds:NAME``: offline, under ``tfds.testing.mock_data`` and with a dataset this file prepares itself."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from cnncli.config.recipe import DataConfig, validate
from cnncli.data.sources import load_dataset, load_split, split_sizes
from cnncli.errors import DataError

SIDE, TRAIN, TEST = 8, 30, 12  # pixels; examples per split
NAMES = ["ring", "bar", "dot"]


class TinyPatterns(tfds.core.GeneratorBasedBuilder):
    """Generated 8x8 grey images written as array_record: a ``Tensor`` image and a ``ClassLabel``.

    Features are named ``pixels`` and ``kind`` (not ``image``/``label``) and the image
    is a ``Tensor`` (encoding an ``Image`` feature needs TensorFlow), so the keys come
    from ``supervised_keys``. Pixel values encode the example: ``10 * label + index % 10``.
    """

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        features = tfds.features.FeaturesDict({
            "pixels": tfds.features.Tensor(shape=(SIDE, SIDE, 1), dtype=np.uint8),
            "kind": tfds.features.ClassLabel(names=NAMES),
            "note": tfds.features.Text(),
        })  # fmt: skip
        return tfds.core.DatasetInfo(builder=self, features=features, supervised_keys=("pixels", "kind"))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(TRAIN), "test": self._generate_examples(TEST)}

    def _generate_examples(self, count):
        for i in range(count):
            label = i % 3
            yield i, {"pixels": np.full((SIDE, SIDE, 1), 10 * label + i % 10, np.uint8), "kind": label, "note": f"#{i}"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A data_dir holding tiny_patterns, prepared offline as array_record."""
    root = tmp_path_factory.mktemp("tfds")
    TinyPatterns(data_dir=str(root)).download_and_prepare(file_format="array_record")
    return root


def config(data_dir, **fields) -> DataConfig:
    return DataConfig(source="tfds:tiny_patterns", data_dir=str(data_dir), **fields)


def test_a_prepared_dataset_reads_as_uint8_arrays_in_its_stored_order(data_dir):
    data = load_dataset(config(data_dir))
    assert data.train.x.shape == (TRAIN, SIDE, SIDE, 1) and data.eval.x.shape == (TEST, SIDE, SIDE, 1)
    assert data.train.x.dtype == np.uint8 and data.train.y.dtype == np.int32
    assert data.class_names == NAMES
    values = data.train.x[:, 0, 0, 0].astype(int)  # 10 * label + index % 10, whatever order TFDS stored
    np.testing.assert_array_equal(values // 10, data.train.y)
    assert sorted(values % 10) == sorted(i % 10 for i in range(TRAIN))


def test_slices_make_disjoint_validation_sets(data_dir):
    cfg = config(data_dir)
    head, _, _ = load_split(cfg.source, "train[:80%]", cfg)
    tail, _, _ = load_split(cfg.source, "train[80%:]", cfg)
    whole, _, _ = load_split(cfg.source, "train", cfg)
    assert len(head.y) == 24 and len(tail.y) == 6
    np.testing.assert_array_equal(np.concatenate([head.x, tail.x]), whole.x)
    assert split_sizes(cfg.source, cfg) == {"train": TRAIN, "test": TEST}


def test_recipe_overrides_resize_convert_and_pick_keys(data_dir):
    split, names, value_range = load_split("tfds:tiny_patterns", "test", config(data_dir, image_size=[4, 6], channels=3))
    assert split.x.shape == (TEST, 4, 6, 3) and value_range == (0.0, 255.0)
    explicit, _, _ = load_split("tfds:tiny_patterns", "test", config(data_dir, image_key="pixels", label_key="kind"))
    assert explicit.x.shape == (TEST, SIDE, SIDE, 1)
    with pytest.raises(DataError, match=r"no feature 'pixel'; did you mean 'pixels'\? \(features: pixels, kind, note\)"):
        load_split("tfds:tiny_patterns", "test", config(data_dir, image_key="pixel"))


def test_unknown_split_lists_the_splits(data_dir):
    with pytest.raises(DataError, match=r"cannot read split 'valid'") as info:
        load_split("tfds:tiny_patterns", "valid", config(data_dir))
    assert "splits: train, test" in str(info.value)


def test_an_unprepared_dataset_fails_at_once_with_the_directory_and_the_command(tmp_path):
    start = time.perf_counter()
    with pytest.raises(DataError) as info:
        load_dataset(DataConfig(source="tfds:mnist", data_dir=str(tmp_path)))
    assert time.perf_counter() - start < 5, "must never wait on network retries"
    message = str(info.value)
    assert f"looked in {tmp_path / 'mnist'}" in message
    assert f"cnncli data prepare tfds:mnist --data-dir {tmp_path}" in message


def test_an_unknown_dataset_suggests_the_closest_name(tmp_path):
    with pytest.raises(DataError, match=r"tfds:mnsit: no such TFDS dataset; did you mean tfds:mnist\?"):
        load_split("tfds:mnsit", "train", DataConfig(source="tfds:mnsit", data_dir=str(tmp_path)))


def test_mock_data_reads_image_features_and_class_names():
    with tfds.testing.mock_data(num_examples=6), pytest.warns(UserWarning, match="no training example"):
        # 6 random mock labels cannot cover 10 classes: allowed here, with the warning that lists them
        data = load_dataset(DataConfig(source="tfds:fashion_mnist", allow_missing_classes=True))
        cifar, names, _ = load_split("tfds:cifar10", "train", DataConfig(source="tfds:cifar10", channels=1, image_size=16))
    assert data.train.x.shape == (6, 28, 28, 1) and data.class_names[:2] == ["T-shirt/top", "Trouser"]
    assert cifar.x.shape == (6, 16, 16, 1) and len(names) == 10


def test_a_split_over_the_memory_budget_fails_before_reading():
    with tfds.testing.mock_data(num_examples=400):  # 400 * 32*32*3 bytes = 1.17 MiB > 1 MiB
        start = time.perf_counter()
        with pytest.raises(DataError, match=r"need 2 MiB in memory, over data.memory_budget_mb = 1; streaming") as info:
            load_split("tfds:cifar10", "train", DataConfig(source="tfds:cifar10", memory_budget_mb=1))
        assert time.perf_counter() - start < 2, "nothing is decoded"
    assert "--set data.memory_budget_mb=3" in str(info.value)


def test_trains_end_to_end_on_the_prepared_dataset(data_dir, tmp_path):
    from cnncli.train.loop import fit

    recipe = validate({
        "data": {"source": "tfds:tiny_patterns", "data_dir": str(data_dir), "batch_size": 10, "eval_split": "test",
                 "augment": [{"op": "flip_lr"}]},
        "model": {"layers": ["conv:c=4,k=3,p=same", "relu", "gap", "dense"]},
        "train": {"epochs": 2},
    })  # fmt: skip
    summary = fit(recipe, tmp_path / "run")
    assert summary["steps"] == 2 * (TRAIN // 10) and 0.0 <= summary["eval_accuracy"] <= 1.0
    saved = json.loads((tmp_path / "run" / "data.json").read_text())
    assert saved["class_names"] == NAMES and saved["input_shape"] == [SIDE, SIDE, 1]
