"""``source = "mnist1d"``: MNIST-1D generated offline by the mnist1d package, through the recipe and the CLI."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from helpers import cli, json_lines

from cnncli.config.recipe import DataConfig, Mnist1dConfig, load_recipe
from cnncli.data.mnist1d import load_mnist1d_split
from cnncli.data.sources import load_split, split_sizes
from cnncli.errors import DataError, RecipeError

ROOT = Path(__file__).resolve().parents[1]

SMALL = """\
[data]
source = "mnist1d"
batch_size = 20

[data.mnist1d]
num_samples = 200
final_seq_length = 24

[model]
layers = ["conv:c=4,k=5,s=2,p=1", "relu", "conv:c=4,k=3,s=2,p=1", "relu", "flatten", "dense"]

[optimizer]
name = "adam"
learning_rate = 0.01

[train]
steps = 3
seed = 0
"""


def test_defaults_are_the_packages_own():
    from mnist1d.data import get_dataset_args

    package = get_dataset_args(as_dict=True)
    package.pop("url")  # where the package's pickled copy lives; make_dataset never reads it
    ours = Mnist1dConfig().model_dump()
    assert ours == {**package, "padding": list(package["padding"])}


@pytest.mark.slow  # two generations of 5,000 examples (about 4 s each on a loaded 2-core machine)
def test_default_splits_are_the_canonical_dataset():
    from mnist1d.data import get_dataset_args, make_dataset

    train, names, value_range = load_split("mnist1d", "train")
    test, _, _ = load_split("mnist1d", "test")
    assert train.x.shape == (4000, 40, 1) and train.x.dtype == np.float32 and test.x.shape == (1000, 40, 1)
    assert names == [str(i) for i in range(10)] and train.y.dtype == np.int32
    assert sorted(set(train.y.tolist())) == list(range(10))
    assert value_range == (float(train.x.min()), float(train.x.max()))
    state = random.getstate(), np.random.get_state()[1].copy()
    reference = make_dataset(get_dataset_args())  # the package's own call, same seed
    random.setstate(state[0])
    np.testing.assert_array_equal(train.x[..., 0], reference["x"].astype(np.float32))
    np.testing.assert_array_equal(test.y, reference["y_test"])
    assert split_sizes("mnist1d") == {"train": 4000, "test": 1000}


def test_arguments_seed_and_no_global_side_effects():
    from cnncli.data import mnist1d

    np.random.seed(7)
    random.seed(7)
    before = np.random.get_state()[1].copy(), random.random()
    random.seed(7)
    mnist1d._generate.cache_clear()
    small = Mnist1dConfig(num_samples=200, final_seq_length=24, train_split=0.75)
    a, _, _ = load_mnist1d_split("train", small)
    assert np.array_equal(np.random.get_state()[1], before[0]) and random.random() == before[1]  # untouched
    mnist1d._generate.cache_clear()
    b, _, _ = load_mnist1d_split("train", small)  # generated again: the same examples
    other, _, _ = load_mnist1d_split("train", small.model_copy(update={"seed": 1}))
    everything, _, _ = load_mnist1d_split("all", small)
    assert a.x.shape == (150, 24, 1) and np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
    assert not np.array_equal(a.x, other.x)
    assert everything.x.shape == (200, 24, 1) and np.array_equal(everything.x[:150], a.x)


def test_split_errors():
    with pytest.raises(DataError, match=r"mnist1d: unknown split 'valid'") as info:
        load_split("mnist1d", "valid")
    assert "train, test and all" in info.value.hint
    with pytest.raises(DataError, match=r"the train split is empty \(num_samples = 10, train_split = 0.05\)"):
        load_mnist1d_split("train", Mnist1dConfig(num_samples=10, train_split=0.05))


def test_recipe_keys_are_validated(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text(SMALL.replace("num_samples = 200", "num_sample = 200"))
    with pytest.raises(RecipeError, match=r"`data.mnist1d.num_sample`: unknown key; did you mean `num_samples`\?"):
        load_recipe(path)
    path.write_text(SMALL.replace('source = "mnist1d"', 'source = "digits"'))
    with pytest.raises(RecipeError, match=r'data.mnist1d is read only with source = "mnist1d"'):
        load_recipe(path)
    path.write_text(SMALL.replace("final_seq_length = 24", "padding = [60, 36]"))
    with pytest.raises(RecipeError, match=r"padding must be \[low, high\] with 0 <= low <= high"):
        load_recipe(path)
    path.write_text(SMALL)
    recipe = load_recipe(path, ["data.mnist1d.seed=3"])
    assert recipe.data.mnist1d.seed == 3 and recipe.to_dict()["data"]["mnist1d"]["final_seq_length"] == 24
    assert DataConfig(source="digits").mnist1d is None


def test_input_shape_is_known_without_generating(tmp_path):
    from cnncli.config.datashape import peek

    assert peek(DataConfig(source="mnist1d")) == ((40, 1), 10)
    assert peek(DataConfig(source="mnist1d", mnist1d=Mnist1dConfig(final_seq_length=24))) == ((24, 1), 10)


def test_shipped_recipe_layer_table(capsys):
    code, out, err = cli(["conv-arith", str(ROOT / "recipes" / "mnist1d_cnn.toml"), "--json"], capsys)
    assert code == 0, err
    table = json.loads(out)
    assert table["input"] == [40, 1]
    assert [row["output"] for row in table["layers"] if row["kind"] == "conv"] == [[19, 32], [10, 32], [5, 32]]
    assert table["output"] == [10]


@pytest.mark.slow  # three commands, each generating and compiling
def test_data_info_train_and_eval_through_the_cli(tmp_path, capsys):
    code, out, err = cli(["data", "info", "mnist1d", "--out", str(tmp_path / "grid.png"), "--json"], capsys)
    assert code == 0, err
    info = json.loads(out)
    assert info["split_sizes"] == {"train": 4000, "test": 1000} and info["image_shape"] == [40, 1]
    assert len(info["classes"]) == 10 and info["class_counts"] == [398, 396, 411, 394, 394, 402, 401, 404, 402, 398]

    recipe = tmp_path / "small.toml"
    recipe.write_text(SMALL)
    code, out, err = cli(["train", str(recipe), "--workdir", str(tmp_path / "run"), "--json"], capsys)
    assert code == 0, err
    summary = json_lines(out)[-1]
    assert summary["steps"] == 3 and 0 <= summary["eval_accuracy"] <= 1
    data = json.loads((tmp_path / "run" / "data.json").read_text())
    assert data["input_shape"] == [24, 1] and data["name"] == "mnist1d"
    code, out, err = cli(["eval", str(tmp_path / "run"), "--json", "--out", str(tmp_path / "eval")], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["num_examples"] == 40 and result["accuracy"] == pytest.approx(summary["eval_accuracy"])


def test_num_samples_that_is_not_a_multiple_of_ten_is_refused(tmp_path):
    from cnncli.config.recipe import load_recipe
    from cnncli.errors import RecipeError

    path = tmp_path / "r.toml"
    path.write_text('[data]\nsource = "mnist1d"\n[data.mnist1d]\nnum_samples = 15\n[model]\nlayers = ["gap", "dense"]\n')
    with pytest.raises(RecipeError, match=r"r.toml:4: .*num_samples is a tenth per class: give a multiple of 10 "
                                          r"\(e.g. 10\), got 15"):  # fmt: skip
        load_recipe(path)
