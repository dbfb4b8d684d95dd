"""Recipe loading: strict schema, pinned error messages, overrides, paths, JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cnncli.config.recipe import (
    apply_overrides,
    json_schema,
    load_recipe,
    parse_override,
)
from cnncli.errors import RecipeError

ROOT = Path(__file__).resolve().parents[1]

GOOD = """\
[data]
source = "digits"

[model]
layers = ["conv:c=8,k=3", "relu", "gap", "dense"]

[train]
epochs = 2
"""


def write(tmp_path: Path, text: str, name: str = "r.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(path: Path, overrides=None) -> str:
    with pytest.raises(RecipeError) as info:
        load_recipe(path, overrides)
    return str(info.value)


def test_defaults_fill_in(tmp_path):
    recipe = load_recipe(write(tmp_path, GOOD))
    assert recipe.data.batch_size == 64
    assert recipe.optimizer.name == "adamw"
    assert recipe.schedule.name == "constant"
    assert recipe.train.epochs == 2 and recipe.train.seed == 0


def test_unknown_key_names_file_line_and_closest_key(tmp_path):
    path = write(tmp_path, GOOD.replace("epochs = 2", "epoch = 2"))
    assert error_of(path) == f"{path}:8: `train.epoch`: unknown key; did you mean `epochs`?"


def test_unknown_section(tmp_path):
    path = write(tmp_path, GOOD + "\n[trian]\nseed = 1\n")
    assert error_of(path) == f"{path}:10: `trian`: unknown key; did you mean `train`?"


def test_wrong_type_and_impossible_values(tmp_path):
    path = write(tmp_path, GOOD.replace('source = "digits"', 'source = "digits"\nbatch_size = 0'))
    assert error_of(path) == f"{path}:3: `data.batch_size`: Input should be greater than or equal to 1 (got 0)"
    path = write(tmp_path, GOOD.replace("epochs = 2", 'epochs = "two"'))
    assert "`train.epochs`: Input should be a valid integer" in error_of(path)


def test_unknown_choices_list_the_valid_ones(tmp_path):
    path = write(tmp_path, GOOD + '\n[optimizer]\nname = "adamx"\n')
    assert error_of(path) == (
        f"{path}:11: `optimizer.name`: unknown value 'adamx'; did you mean 'adam'? "
        "(valid: sgd, momentum, nesterov, adam, adamw, rmsprop, adagrad, adadelta, lamb, lion, nadam, radam)"
    )
    path = write(tmp_path, GOOD + '\n[schedule]\nname = "cosin"\n')
    assert "`schedule.name`: unknown value 'cosin'; did you mean 'cosine'?" in error_of(path)


def test_bad_layer_token_and_arch(tmp_path):
    path = write(tmp_path, GOOD.replace('"conv:c=8,k=3"', '"conv:c=8,k=3,q=1"'))
    assert error_of(path) == (
        f"{path}:5: `model.layers`: layer 'conv:c=8,k=3,q=1': unknown key for conv 'q' "
        "(valid: bias, c, d, g, k, op, p, pm, s)"
    )
    path = write(tmp_path, GOOD.replace('layers = ["conv:c=8,k=3", "relu", "gap", "dense"]', 'arch = "resnet21"'))
    msg = error_of(path)
    assert "`model.arch`: unknown architecture 'resnet21'; did you mean" in msg
    assert "resnet20" in msg


def test_layers_and_arch_are_exclusive(tmp_path):
    path = write(tmp_path, GOOD.replace("[model]", '[model]\narch = "lenet5"'))
    assert "give exactly one of model.layers or model.arch" in error_of(path)


def test_epochs_or_steps(tmp_path):
    path = write(tmp_path, GOOD.replace("epochs = 2", "seed = 1"))
    assert "give train.epochs or train.steps" in error_of(path)
    path = write(tmp_path, GOOD.replace("epochs = 2", "epochs = 2\nsteps = 5"))
    assert "not both" in error_of(path)


def test_unknown_source(tmp_path):
    path = write(tmp_path, GOOD.replace('"digits"', '"digit"'))
    assert error_of(path) == (
        f"{path}:2: `data.source`: unknown data source 'digit'; did you mean 'digits'? "
        "(valid: digits, mnist1d, npz:PATH, tfds:NAME, folder:PATH)"
    )


def test_overrides_are_validated_like_the_file(tmp_path):
    path = write(tmp_path, GOOD)
    recipe = load_recipe(path, ["train.epochs=3", "optimizer.learning_rate=0.01", "data.source=digits"])
    assert recipe.train.epochs == 3 and recipe.optimizer.learning_rate == 0.01
    assert "`train.epoch`: unknown key; did you mean `epochs`?" in error_of(path, ["train.epoch=3"])
    assert "expected KEY.PATH=VALUE" in error_of(path, ["train.epochs"])


def test_parse_override_reads_toml_values():
    assert parse_override("a.b=3") == (["a", "b"], 3)
    assert parse_override("a=0.5") == (["a"], 0.5)
    assert parse_override('a=["x", "y"]') == (["a"], ["x", "y"])
    assert parse_override("a=true") == (["a"], True)
    assert parse_override("a=digits") == (["a"], "digits")
    assert apply_overrides({"a": {"b": 1}}, ["a.c=2"]) == {"a": {"b": 1, "c": 2}}
    assert apply_overrides({"a": {"b": 1, "c": 2}}, ["a.b=null"]) == {"a": {"c": 2}}


def test_null_override_switches_epochs_to_steps(tmp_path):
    recipe = load_recipe(write(tmp_path, GOOD), ["train.epochs=null", "train.steps=7"])
    assert recipe.train.epochs is None and recipe.train.steps == 7


def test_relative_paths_resolve_against_the_recipe_folder(tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    path = write(sub, GOOD.replace('"digits"', '"npz:data/x.npz"'))
    recipe = load_recipe(path)
    assert recipe.data.source == f"npz:{(sub / 'data' / 'x.npz').resolve()}"


def test_yaml_is_loaded_safely(tmp_path):
    text = "data:\n  source: digits\nmodel:\n  layers: [gap, dense]\ntrain:\n  epochs: 1\n"
    assert load_recipe(write(tmp_path, text, "r.yaml")).train.epochs == 1
    evil = "model: !!python/object/apply:os.system ['echo hi']\ntrain: {epochs: 1}\n"
    assert "not valid YAML" in error_of(write(tmp_path, evil, "e.yaml"))


def test_missing_file_and_bad_toml(tmp_path):
    assert "recipe file not found" in error_of(tmp_path / "nope.toml")
    assert "not valid TOML" in error_of(write(tmp_path, "[data\n"))


def test_shipped_recipes_validate():
    for path in sorted((ROOT / "recipes").glob("*.toml")):
        load_recipe(path)


def test_json_schema_file_is_fresh():
    on_disk = json.loads((ROOT / "recipes" / "recipe.schema.json").read_text())
    assert on_disk == json_schema(), "regenerate: uv run python -m cnncli.config.recipe > recipes/recipe.schema.json"


def test_digest_changes_with_trajectory_fields(tmp_path):
    a = load_recipe(write(tmp_path, GOOD))
    b = load_recipe(write(tmp_path, GOOD), ["train.seed=1"])
    assert a.digest() != b.digest() and a.digest() == load_recipe(write(tmp_path, GOOD)).digest()
