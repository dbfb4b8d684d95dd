"""Issue 18, rule 1: data is checked before it trains.

Non-finite pixels, labels outside the classes, classes without a training example,
folder splits with different class folders, empty class folders and files that are not
npz archives are refused before anything is compiled or written, each naming the source,
the split and the first offending example.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from helpers import cli, json_lines, write_recipe

NPZ_RECIPE = """\
[data]
source = "npz:d.npz"
batch_size = 8
normalize = false

[model]
layers = ["conv:c=4,k=3,p=same", "relu", "gap", "dense"]

[train]
steps = 1
"""


def _npz(path, *, n=32, classes=4, test_labels=None, **overrides):
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.normal(size=(n, 6, 6, 1)).astype(np.float32),
        "y_train": np.arange(n) % classes,
        "x_test": rng.normal(size=(8, 6, 6, 1)).astype(np.float32),
        "y_test": np.arange(8) % classes if test_labels is None else np.asarray(test_labels),
    }
    arrays.update(overrides)
    np.savez(path, **arrays)
    return path


def _train(tmp_path, capsys, *extra, pipeline: str = "auto"):
    recipe = write_recipe(tmp_path, NPZ_RECIPE.replace("[data]\n", f'[data]\npipeline = "{pipeline}"\n'))
    code, out, err = cli(["train", str(recipe), "--workdir", str(tmp_path / "run"), *extra], capsys)
    assert "Traceback" not in err
    return code, out, err


def _nothing_written(tmp_path):
    assert not (tmp_path / "run").exists()
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("split", "value", "name"), [("train", np.nan, "nan"), ("train", np.inf, "inf"), ("test", -np.inf, "inf")]
)
def test_a_non_finite_pixel_names_the_split_and_the_first_index(tmp_path, capsys, split, value, name):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(32 if split == "train" else 8, 6, 6, 1)).astype(np.float32)
    x[5, 1, 2, 0] = value
    x[7, 0, 0, 0] = value
    _npz(tmp_path / "d.npz", **{f"x_{split}": x})
    code, out, err = _train(tmp_path, capsys)
    assert code == 1 and out == ""
    assert f"d.npz [{split}]: image 5 has a non-finite pixel ({name}); 2 images do" in err
    _nothing_written(tmp_path)


def test_a_non_finite_pixel_is_refused_by_the_dry_run_too(tmp_path, capsys):
    x = np.zeros((32, 6, 6, 1), np.float32)
    x[0, 0, 0, 0] = np.nan
    _npz(tmp_path / "d.npz", x_train=x)
    code, _, err = _train(tmp_path, capsys, "--dry-run")
    assert code == 1 and "[train]: image 0 has a non-finite pixel (nan)" in err


def test_a_stray_label_is_an_error_naming_the_missing_classes(tmp_path, capsys):
    y = np.arange(32) % 4
    y[9] = 42  # one stray label: without the check, 43 classes and 39 of them never seen
    _npz(tmp_path / "d.npz", y_train=y)
    code, _, err = _train(tmp_path, capsys)
    assert code == 1
    assert "classes 4..41 have no training example (labels run 0..42: a stray label?)" in err
    assert "data.allow_missing_classes" in err
    _nothing_written(tmp_path)


def test_allow_missing_classes_trains_with_a_warning_listing_them(tmp_path, capsys):
    y = np.arange(32) % 3  # class 3 appears only in the test split
    _npz(tmp_path / "d.npz", y_train=y, test_labels=np.arange(8) % 4)
    code, _, err = _train(tmp_path, capsys, "--dry-run")
    assert code == 1 and "d.npz [train]: class 3 has no training example" in err
    code, out, err = _train(tmp_path, capsys, "--dry-run", "--json", "--set", "data.allow_missing_classes=true")
    assert code == 0
    plan = json_lines(out)[0]
    assert plan["num_classes"] == 4
    assert any("class 3 has no training example; training anyway" in w for w in plan["warnings"])
    assert "warning:" in err and "class 3 has no training example" in err


def test_labels_outside_the_named_classes_are_refused(tmp_path, capsys):
    _npz(tmp_path / "d.npz", class_names=np.array(["a", "b", "c"]))  # labels run 0..3
    code, _, err = _train(tmp_path, capsys)
    assert code == 1 and "d.npz [train]" in err and "class ids" in err
    _nothing_written(tmp_path)


def test_check_labels_names_the_first_out_of_range_index():
    from cnncli.data.checks import check_labels
    from cnncli.errors import DataError

    with pytest.raises(DataError, match=r"^src \[test\]: label 7 at index 12 is not a class id 0\.\.4; 2 labels"):
        check_labels(np.array([0, 7, 1, -1]), 5, "src [test]", offset=11)


def test_nonfinite_rows_scans_in_chunks_and_adds_the_offset(monkeypatch):
    from cnncli.data import checks

    monkeypatch.setattr(checks, "CHUNK", 3)  # the hit lies in the third chunk
    x = np.ones((10, 2, 2), np.float32)
    x[7, 1, 1] = np.nan
    x[8, 0, 0] = np.inf
    assert checks.nonfinite_rows(x, offset=100) == (107, 2, "nan")
    assert checks.nonfinite_rows(np.ones((4, 2), np.uint8)) == (None, 0, "")  # integer images are not scanned
    assert checks.spans([0, 1, 2, 5, 7, 8]) == "0..2, 5, 7, 8"


def test_an_npz_class_count_comes_from_both_splits(tmp_path):
    from cnncli.data.npz import load_npz_split

    # train holds classes 0..3; the test split only 0..1: its class list must still have 4 classes
    _npz(tmp_path / "d.npz", test_labels=np.arange(8) % 2)
    test, names, _ = load_npz_split(str(tmp_path / "d.npz"), "test")
    assert names == ["0", "1", "2", "3"] and set(test.y.tolist()) == {0, 1}
    # and a class only the test split has is a class of the train split's list too
    _npz(tmp_path / "e.npz", classes=3, test_labels=[0, 1, 2, 3, 0, 1, 2, 3])
    _, names, _ = load_npz_split(str(tmp_path / "e.npz"), "train")
    assert names == ["0", "1", "2", "3"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"x_train,y_train\n1,2\n", "is not an npz file"),
        (None, "is not an npz file (a single .npy array)"),
        ("dir", "is a directory, not an npz file"),
    ],
)
@pytest.mark.parametrize("pipeline", ["memory", "stream"])
def test_a_file_that_is_not_an_npz_says_so(tmp_path, capsys, content, expected, pipeline):
    path = tmp_path / "d.npz"
    if content is None:
        with open(path, "wb") as f:
            np.save(f, np.zeros(3))
    elif content == "dir":
        path.mkdir()
    else:
        path.write_bytes(content)
    code, _, err = _train(tmp_path, capsys, pipeline=pipeline)
    assert code == 1 and expected in err and "BadZipFile" not in err
    assert "allow_pickle" not in err and "pickle" not in err.lower().replace("never unpickled", "")
    _nothing_written(tmp_path)
    if pipeline == "stream":  # and the streamed split opened directly
        from cnncli.config.recipe import DataConfig
        from cnncli.data.stream import open_streamed
        from cnncli.errors import DataError

        with pytest.raises(DataError, match=re.escape(expected)):
            open_streamed(DataConfig(source=f"npz:{path}", pipeline="stream"), "train")


def test_an_npz_holding_python_objects_is_refused_without_numpys_message(tmp_path, capsys):
    _npz(tmp_path / "d.npz", class_names=np.array([object(), "b"], dtype=object))
    code, _, err = _train(tmp_path, capsys)
    assert code == 1 and "array 'class_names' holds Python objects (never unpickled)" in err
    assert "allow_pickle" not in err


def test_a_missing_absolute_npz_gets_no_relative_path_hint(tmp_path, capsys):
    from cnncli.data.npz import load_npz_split
    from cnncli.errors import DataError

    with pytest.raises(DataError) as info:
        load_npz_split(str(tmp_path / "missing.npz"), "train")
    assert info.value.hint == "check the path"
    with pytest.raises(DataError) as info:
        load_npz_split("missing.npz", "train")
    assert "recipe's folder" in info.value.hint


# ---------------------------------------------------------------- folders

FOLDER_RECIPE = NPZ_RECIPE.replace('source = "npz:d.npz"', 'source = "folder:images"')


def _images(root, layout):
    from PIL import Image

    for split, classes in layout.items():
        for name, count in classes.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(np.full((6, 6), 30 * i % 256, np.uint8)).save(folder / f"{i}.png")


def test_folder_splits_must_have_the_same_class_folders(tmp_path, capsys):
    _images(tmp_path / "images", {"train": {"cat": 8, "dog": 8}, "test": {"cat": 2, "dog": 2, "bird": 2}})
    recipe = write_recipe(tmp_path, FOLDER_RECIPE)
    code, _, err = cli(["train", str(recipe), "--workdir", str(tmp_path / "run")], capsys)
    assert code == 1 and "Traceback" not in err
    assert "split 'train' has no class folder 'bird' (found in test)" in err
    _nothing_written(tmp_path)


def test_an_empty_class_folder_is_an_error(tmp_path, capsys):
    _images(tmp_path / "images", {"train": {"cat": 8, "dog": 8}, "test": {"cat": 2, "dog": 2}})
    (tmp_path / "images" / "train" / "emu").mkdir()
    (tmp_path / "images" / "test" / "emu").mkdir()
    (tmp_path / "images" / "test" / "emu" / ".DS_Store").write_bytes(b"")  # hidden files are no images
    recipe = write_recipe(tmp_path, FOLDER_RECIPE)
    code, _, err = cli(["train", str(recipe), "--workdir", str(tmp_path / "run")], capsys)
    assert code == 1 and "Traceback" not in err
    assert "class folder" in err and "emu holds no images" in err
    _nothing_written(tmp_path)


def test_folder_classes_that_match_load(tmp_path):
    from cnncli.data.folder import index_folder

    _images(tmp_path / "images", {"train": {"cat": 2, "dog": 2}, "test": {"cat": 1, "dog": 1}})
    index = index_folder(tmp_path / "images")
    assert index.classes == ["cat", "dog"] and len(index.files["train"]) == 4


# ---------------------------------------------------------------- --source of eval


def test_source_arg_is_a_usage_error_with_did_you_mean():
    from cnncli.cli._options import source_arg
    from cnncli.errors import UsageError

    assert source_arg("npz:x.npz") == "npz:x.npz" and source_arg(None) is None
    with pytest.raises(UsageError, match=r"^--source: unknown data source 'digit'; did you mean 'digits'\?"):
        source_arg("digit")
    with pytest.raises(UsageError, match=r"^--source: unknown data source 'foo:bar'"):
        source_arg("foo:bar")


@pytest.mark.parametrize(("source", "message"), [("foo:bar", "unknown data source 'foo:bar'"),
                                                 ("digit", "did you mean 'digits'?")])  # fmt: skip
def test_eval_with_an_unknown_source_is_a_usage_error(trained_run, capsys, source, message):
    code, out, err = cli(["eval", str(trained_run), "--source", source, "--json"], capsys)
    assert code == 2 and out == "" and "Traceback" not in err and message in err
