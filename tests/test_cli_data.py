"""`cnncli data prepare | info | preview`: messages, JSON, PNG grids and the terminal preview."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow_datasets as tfds
from helpers import TINY_RECIPE, cli, write_recipe


class TinyCliDigits(tfds.core.GeneratorBasedBuilder):
    """A 4x4 dataset with Tensor features: prepared offline, without TensorFlow."""

    VERSION = tfds.core.Version("0.1.0")

    def _info(self):
        features = tfds.features.FeaturesDict(
            {"image": tfds.features.Tensor(shape=(4, 4, 1), dtype=np.uint8), "label": tfds.features.ClassLabel(num_classes=2)}
        )
        return tfds.core.DatasetInfo(builder=self, features=features, supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(6)}

    def _generate_examples(self, count):
        for i in range(count):
            yield i, {"image": np.full((4, 4, 1), 40 * i, np.uint8), "label": i % 2}


def png_size(path):
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def colour_folder(root):
    from PIL import Image

    for split in ("train", "test"):
        for name, value in (("dark", 40), ("light", 220)):
            (root / split / name).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (6, 6), (value, value, value - i)).save(root / split / name / f"{i}.png")
    (root / "train" / "dark" / "bad.png").write_bytes(b"junk")
    return root


def test_data_help_lists_the_commands(capsys):
    code, out, _ = cli(["data", "--help"], capsys)
    assert code == 0 and all(name in out for name in ("prepare", "info", "preview"))


def test_prepare_refuses_sources_that_need_no_preparing(capsys):
    code, _, err = cli(["data", "prepare", "folder:photos"], capsys)
    assert code == 2 and "only tfds:NAME sources are prepared" in err


def test_prepare_says_how_to_get_tensorflow_without_touching_the_network(tmp_path, capsys, monkeypatch):
    from cnncli.data import tfds as tfds_source

    monkeypatch.setattr(tfds_source, "has_tensorflow", lambda: False)
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", lambda *a, **k: pytest.fail("downloaded"))
    code, _, err = cli(["data", "prepare", "tfds:mnist", "--data-dir", str(tmp_path)], capsys)
    assert code == 1
    assert "needs TensorFlow" in err and "the network" in err and "uv pip install tensorflow-cpu" in err


def test_prepare_writes_array_record_once(tmp_path, capsys):
    argv = ["data", "prepare", "tfds:tiny_cli_digits", "--data-dir", str(tmp_path), "--json"]
    code, out, _ = cli(argv, capsys)
    first = json.loads(out)
    assert code == 0 and first["already"] is False
    assert list((tmp_path / "tiny_cli_digits" / "0.1.0").glob("*.array_record*"))
    code, out, _ = cli(argv, capsys)
    assert code == 0 and json.loads(out)["already"] is True
    code, out, _ = cli(["data", "info", "tfds:tiny_cli_digits", "--data-dir", str(tmp_path), "--out", str(tmp_path / "g.png")], capsys)
    info = json.loads(out)
    assert info["split_sizes"] == {"train": 6} and info["class_counts"] == [3, 3] and info["image_shape"] == [4, 4, 1]


def test_info_on_a_folder_reports_stats_warns_and_draws_one_row_per_class(tmp_path, capsys):
    root = colour_folder(tmp_path / "shades")
    grid = tmp_path / "out" / "grid.png"
    code, out, err = cli(["data", "info", f"folder:{root}", "--out", str(grid), "--per-class", "4"], capsys)
    assert code == 0, err
    info = json.loads(out)  # piped: JSON
    # train holds 7 files, one unreadable: the split read reports what it holds, like the class counts
    assert info["classes"] == ["dark", "light"] and info["split_sizes"] == {"test": 6, "train": 6}
    assert info["class_counts"] == [3, 3] and info["image_shape"] == [6, 6, 3]
    assert info["mean"][0] == pytest.approx(130.0) and info["std"][0] == pytest.approx(90.0)
    assert "warning:" in err and "skipped 1 of 7" in err and "bad.png" in err
    width, height = png_size(grid)
    assert width > height, "two rows (classes) of four tiles"


def test_info_under_mock_data(tmp_path, capsys):
    with tfds.testing.mock_data(num_examples=5):
        code, out, err = cli(["data", "info", "tfds:mnist", "--out", str(tmp_path / "m.png"), "--per-class", "1"], capsys)
    info = json.loads(out)
    assert code == 0, err
    assert info["classes"] == [str(i) for i in range(10)] and info["image_shape"] == [28, 28, 1]


def test_preview_draws_the_first_augmented_batch_with_mixed_labels(tmp_path, capsys):
    text = TINY_RECIPE.replace("batch_size = 64", 'batch_size = 16\n[[data.augment]]\nop = "mixup"\nalpha = 1.0')
    recipe = write_recipe(tmp_path, text)
    out_png = tmp_path / "preview.png"
    code, out, err = cli(["data", "preview", str(recipe), "--out", str(out_png), "-n", "6"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["preview"] == str(out_png) and len(result["labels"]) == 6
    assert any("%" in label and "+" in label for label in result["labels"]), result["labels"]
    assert png_size(out_png)[0] > 6 * 64


def test_preview_without_augment_shows_the_raw_first_batch(tmp_path):
    import jax

    from cnncli.config.recipe import load_recipe
    from cnncli.data.sources import load_dataset
    from cnncli.train.preview import augmented_batch

    recipe = load_recipe(write_recipe(tmp_path))
    data = load_dataset(recipe.data)
    images, targets = augmented_batch(recipe, data, 5)
    perm = jax.random.permutation(jax.random.fold_in(jax.random.fold_in(jax.random.key(0), 1), 0), len(data.train.y))
    index = np.asarray(perm[:5])
    np.testing.assert_allclose(images, data.train.x[index] / 16.0, atol=1e-5)  # digits range over 0..16
    np.testing.assert_array_equal(targets.argmax(axis=1), data.train.y[index])


def test_target_labels_name_one_class_or_the_two_largest_parts():
    from cnncli.report.data import target_label

    names = ["cat", "dog", "owl"]
    assert target_label(np.array([0.0, 1.0, 0.0]), names) == "dog"
    assert target_label(np.array([0.62, 0.38, 0.0]), names) == "cat 62% + dog 38%"
    assert target_label(np.array([0.0, 0.0, 0.0, 1.0]), names) == "3"  # past the names: the index


def test_preview_rejects_an_unknown_op_naming_its_key(tmp_path, capsys):
    recipe = write_recipe(tmp_path, TINY_RECIPE + '\n[[data.augment]]\nop = "flip_lr"\n[[data.augment]]\nop = "blur"\n')
    code, _, err = cli(["data", "preview", str(recipe)], capsys)
    assert code == 1 and "data.augment[1].op: unknown augmentation op 'blur'" in err


def test_half_blocks_pack_two_pixel_rows_per_line():
    from cnncli.report.data import half_blocks

    images = np.zeros((2, 4, 4, 1), np.float32)
    images[0, :2] = 1.0  # first image: white top half
    text = half_blocks(images, max_columns=80)
    lines = text.split("\n")
    assert len(lines) == 2 and lines[0].count("▀") == 9  # 2 images x 4 columns + 1 gap column
    assert "\x1b[38;2;255;255;255m\x1b[48;2;255;255;255m▀" in lines[0] and lines[0].endswith("\x1b[0m")
    assert "\x1b[38;2;0;0;0m" in lines[1]
