"""Issue 18, rules 1, 2 and 5 tried once more as a hostile user would: what the first round left.

Each test asserts the exit code (1 a user error in a file or the data, 2 a usage error at
the shell: a bad ``--set``), the message, that no traceback reached stderr, and that
nothing was written that should not have been.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from helpers import TINY_RECIPE, cli, write_recipe


def _dry_run(tmp_path: Path, capsys, *sets: str, text: str = TINY_RECIPE) -> tuple[int, str, str, Path]:
    recipe = write_recipe(tmp_path, text)
    argv = ["train", str(recipe), *[a for s in sets for a in ("--set", s)], "--dry-run", "--json"]
    code, out, err = cli(argv, capsys)
    assert "Traceback" not in err
    return code, out, err, recipe


def _line(text: str, start: str) -> int:
    return next(i + 1 for i, line in enumerate(text.splitlines()) if line.startswith(start))


# ---------------------------------------------------------------- rule 2: a --set error names the --set


@pytest.mark.parametrize("item, message", [
    ("nosuch.key=1", "`nosuch`: unknown key"),
    ("TRAIN.SEED=1", "`TRAIN`: unknown key"),
    ("data.augment.0.op=flip_lr", "`data.augment`: Input should be a valid list"),
    ("data.mnist1d.seed=1", '`data`: data.mnist1d is read only with source = "mnist1d"'),  # the --set made [data.mnist1d]
])  # fmt: skip
def test_a_set_below_the_faulty_key_is_named_as_a_usage_error(tmp_path, capsys, item, message):
    """Today the error's location is shorter than the --set's path: it blamed tiny.toml (exit 1)."""
    code, out, err, recipe = _dry_run(tmp_path, capsys, item)
    assert code == 2 and out == ""
    assert f"error: --set {item}: {message}" in err and f"{recipe}" not in err
    assert os.listdir(tmp_path) == ["tiny.toml"]


def test_a_table_problem_of_the_file_is_not_blamed_on_a_set_below_it(tmp_path, capsys):
    """The file's own [data] is at fault (data.mnist1d with a digits source): --set data.batch_size does not own it."""
    text = TINY_RECIPE + "\n[data.mnist1d]\nnum_samples = 100\n"
    code, out, err, recipe = _dry_run(tmp_path, capsys, "data.batch_size=8", text=text)
    assert code == 1 and out == ""
    assert f"error: {recipe}:" in err and "data.mnist1d is read only with" in err and "--set" not in err


# ---------------------------------------------------------------- rule 2: no loose conversion


@pytest.mark.parametrize("item, message", [
    ("train.epochs=true", "`train.epochs`: expected a number, not a boolean"),
    ("train.seed=false", "`train.seed`: expected a number, not a boolean"),
    ("optimizer.learning_rate=true", "`optimizer.learning_rate`: expected a number, not a boolean"),
    ("data.channels=true", "`data.channels`: expected a number, not a boolean"),
    ("schedule.milestones=[1, true]", "`schedule.milestones`: item 1: expected a number, not a boolean"),
    ('train.tensorboard="yes"', "`train.tensorboard`: expected true or false (unquoted), not a string (got 'yes')"),
    ("data.normalize=1", "`data.normalize`: expected true or false (unquoted), not a number (got 1)"),
])  # fmt: skip
def test_a_boolean_is_not_a_number_nor_a_word_a_boolean(tmp_path, capsys, item, message):
    """Today epochs = true trained 1 epoch, seed = false was seed 0 and tensorboard = "yes" was true, all exit 0."""
    code, out, err, _ = _dry_run(tmp_path, capsys, item)
    assert code == 2 and out == "" and f"error: --set {item}: {message}" in err
    assert os.listdir(tmp_path) == ["tiny.toml"]


def test_a_loose_value_in_the_file_is_named_by_its_line(tmp_path, capsys):
    text = TINY_RECIPE.replace("epochs = 2", "epochs = true\ntensorboard = 'yes'")
    code, out, err, recipe = _dry_run(tmp_path, capsys, text=text)
    assert code == 1 and out == ""
    assert f"{recipe}:{_line(text, 'epochs')}: `train.epochs`: expected a number, not a boolean" in err
    assert f"{recipe}:{_line(text, 'tensorboard')}: `train.tensorboard`: expected true or false" in err


def test_an_int_for_a_float_and_a_yaml_number_written_as_text_stay_valid(tmp_path, capsys):
    """learning_rate = 1 (TOML int) and YAML's 1e-3 (a string to PyYAML) are the numbers they look like."""
    code, out, err, _ = _dry_run(tmp_path, capsys, "optimizer.learning_rate=1")
    assert code == 0 and '"learning_rate": 1.0' in out, err
    yaml_text = ('data:\n  source: digits\nmodel:\n  layers: ["gap", "dense"]\noptimizer:\n  learning_rate: 1e-3\n'
                 "train:\n  epochs: 1\n  tensorboard: no\n")  # fmt: skip
    recipe = write_recipe(tmp_path, yaml_text, "r.yaml")
    code, out, _ = cli(["train", str(recipe), "--dry-run", "--json"], capsys)
    assert code == 0 and '"learning_rate": 0.001' in out and '"tensorboard": false' in out


def test_a_sweep_refuses_infinite_and_boolean_values_before_anything_trains(tmp_path, capsys):
    """The schema itself refuses inf/NaN: every point of a sweep is checked before the first trains."""
    recipe = write_recipe(tmp_path)
    argv = ["train", str(recipe), "--sweep", "optimizer.learning_rate=0.01,inf", "--sweep", "train.seed=0,true",
            "--workdir", str(tmp_path / "runs")]  # fmt: skip
    code, _, err = cli(argv, capsys)
    assert code != 0 and "Traceback" not in err
    assert "--sweep optimizer.learning_rate=0.01,inf: inf: `optimizer.learning_rate` = inf: give a finite number" in err
    assert "--sweep train.seed=0,true: true: `train.seed`: expected a number, not a boolean" in err
    assert os.listdir(tmp_path) == ["tiny.toml"]


# ---------------------------------------------------------------- rule 2: bounds in the schema


def _folder(root: Path) -> Path:
    from PIL import Image

    for c, name in enumerate(("cat", "dog")):
        (root / "imgs" / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((6, 6, 3), 40 * (c + i), np.uint8)).save(root / "imgs" / name / f"{i}.png")
    return root / "imgs"


@pytest.mark.parametrize("item, message", [
    ("data.image_size=0", "`data.image_size`: sides must be at least 1 pixel, got 0"),
    ("data.image_size=[8, 0]", "`data.image_size`: sides must be at least 1 pixel, got [8, 0]"),
    ("data.image_size=[8, 8, 8]", "`data.image_size`: give one side (32) or [height, width], got [8, 8, 8]"),
    ("data.channels=2", "`data.channels`: images have 1 (grey), 3 (RGB) or 4 (RGBA) channels, got 2"),
])  # fmt: skip
def test_image_size_and_channels_out_of_bounds_name_the_set(tmp_path, capsys, item, message):
    """Today the folder loader refused them (exit 1) without naming the --set."""
    folder = _folder(tmp_path)
    code, out, err, _ = _dry_run(tmp_path, capsys, f"data.source=folder:{folder}", item)
    assert code == 2 and out == "" and f"error: --set {item}: {message}" in err
    assert sorted(os.listdir(tmp_path)) == ["imgs", "tiny.toml"]


def test_a_mesh_larger_than_the_devices_names_the_set_or_the_line(tmp_path, capsys):
    import jax

    n = jax.device_count() + 1
    code, out, err, _ = _dry_run(tmp_path, capsys, f"train.mesh.data={n}")
    assert code == 2 and out == ""
    assert f"error: --set train.mesh.data={n}: train.mesh = {{data = {n}, model = 1}} needs {n} devices" in err
    text = TINY_RECIPE + f"mesh = {{data = {n}}}\n"
    code, out, err, recipe = _dry_run(tmp_path, capsys, text=text)
    assert code == 1 and f"error: {recipe}:{_line(text, 'mesh')}: train.mesh = {{data = {n}" in err
    assert os.listdir(tmp_path) == ["tiny.toml"]


# ---------------------------------------------------------------- rule 1: pixels and labels


def _npz(path: Path, **arrays) -> Path:
    rng = np.random.default_rng(0)
    base = {"x_train": rng.random((60, 8, 8), np.float32), "y_train": np.arange(60) % 2,
            "x_test": rng.random((30, 8, 8), np.float32), "y_test": np.arange(30) % 2}  # fmt: skip
    np.savez(path, **{**base, **arrays})
    return path


def test_complex_pixels_are_refused_not_cast(tmp_path, capsys):
    """Today a complex image trained on its real part (the imaginary part silently dropped)."""
    x = np.random.default_rng(0).random((60, 8, 8)) * (1 + 1j)
    source = _npz(tmp_path / "d.npz", x_train=x)
    code, out, err, _ = _dry_run(tmp_path, capsys, f"data.source=npz:{source}")
    assert code == 1 and out == "" and "ComplexWarning" not in err
    assert "d.npz [train]: images have dtype complex128; complex pixels have no single value to train on" in err
    assert sorted(os.listdir(tmp_path)) == ["d.npz", "tiny.toml"]


def test_boolean_and_integer_pixels_are_read_as_float():
    from cnncli.data.base import check_arrays

    for dtype in (np.bool_, np.int16, np.uint32):
        split = check_arrays(np.ones((4, 3, 3), dtype), np.arange(4) % 2, "t", num_classes=2)
        assert split.x.dtype == np.float32 and split.x.shape == (4, 3, 3, 1) and split.x.max() == 1.0


def test_a_label_beyond_the_class_names_says_which_ids_are_valid(tmp_path, capsys):
    """Today: `labels range over [0, 2]; expected class ids 0..N-1`, with N nowhere."""
    y = np.arange(30) % 2
    y[7] = 2
    source = _npz(tmp_path / "d.npz", y_test=y, class_names=np.array(["cat", "dog"]))
    code, out, err, _ = _dry_run(tmp_path, capsys, f"data.source=npz:{source}")
    assert code == 1 and out == ""
    assert "d.npz [test]: labels range over [0, 2]; expected class ids 0..1 (2 class_names) (label 2 at index 7)" in err
    assert "N-1" not in err


# ---------------------------------------------------------------- rule 1: predict's inputs


def test_predict_says_what_is_wrong_with_an_input_file(trained_run, tmp_path, capsys):
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"not an array at all\n" * 4)
    objects = tmp_path / "objects.npy"
    np.save(objects, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(tmp_path / "complex.npy", np.ones((8, 8)) * 1j)
    nan = np.ones((8, 8))
    nan[3, 4] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    before = sorted(os.listdir(trained_run))
    cases = [
        (garbage, 1, f"error: {garbage} is not a .npy file"),
        (objects, 1, f"error: {objects}: cannot read as .npy: it holds Python objects (never unpickled)"),
        (tmp_path / "complex.npy", 1, "complex.npy: dtype complex128 is not integer, boolean or float pixels"),
        (tmp_path / "nan.npy", 1, "nan.npy: 1 values are NaN or infinite (the first at flat index 28)"),
        (tmp_path, 2, f"error: {tmp_path} is a directory, not an input file"),
    ]
    for path, want, message in cases:
        code, out, err = cli(["predict", str(trained_run), str(path), "--json"], capsys)
        assert (code, out) == (want, "") and message in err, (path, err)
        assert "allow_pickle" not in err and "no suffix" not in err and "Traceback" not in err
    assert sorted(os.listdir(trained_run)) == before


# ---------------------------------------------------------------- rule 1: eval's data


@pytest.mark.parametrize("arrays, message", [
    ({"x_test": np.where(np.arange(30)[:, None, None] == 3, np.nan, np.ones((30, 8, 8)))},
     "[test]: image 3 has a non-finite pixel (nan)"),
    ({"x_test": np.where(np.arange(30)[:, None, None] % 10 == 0, np.inf, np.ones((30, 8, 8)))},
     "[test]: image 0 has a non-finite pixel (inf); 3 images do"),
])  # fmt: skip
def test_eval_refuses_non_finite_pixels(trained_run, tmp_path, capsys, arrays, message):
    """Today NaN test pixels scored a meaningless accuracy, exit 0, with a numpy RuntimeWarning."""
    base = {"x_train": np.ones((10, 8, 8)), "y_train": np.arange(10), "x_test": np.ones((30, 8, 8)),
            "y_test": np.arange(30) % 10}  # fmt: skip
    np.savez(tmp_path / "x.npz", **{**base, **arrays})
    out_dir = tmp_path / "o"
    argv = ["eval", str(trained_run), "--source", f"npz:{tmp_path / 'x.npz'}", "--json", "-o", str(out_dir)]
    code, out, err = cli(argv, capsys)
    assert code == 1 and out == "" and message in err
    assert "Traceback" not in err and "RuntimeWarning" not in err
    assert not out_dir.exists() or not os.listdir(out_dir)

