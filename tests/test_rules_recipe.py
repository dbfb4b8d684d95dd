"""Issue 18, rule 2: every recipe value that can be wrong is caught by ``--dry-run``.

All at once, before any compute, each problem with the file and line where it is
written, or the ``--set`` that set it (then a usage error, exit 2). Training refuses
the same recipes with the same lines and writes nothing.
"""

from __future__ import annotations

import os

import pytest
from helpers import TINY_RECIPE, cli, json_lines, write_recipe

MANY_WRONG = """\
[data]
source = "digits"
batch_size = 64

[[data.augment]]
op = "flip_lr"
p = 2

[[data.augment]]
op = "brightness"
max_delta = 5
p = -1

[model]
layers = ["conv:c=8,k=3,p=same", "relu", "gap", "dense:c=5"]

[train]
epochs = 1
freeze = ["conv9", "dense*"]
"""


def _run(tmp_path, capsys, monkeypatch, text, *args, name="r.toml"):
    monkeypatch.chdir(tmp_path)  # the default run directory, runs/<name>, lands here if anything is written
    path = write_recipe(tmp_path, text, name)
    before = sorted(os.listdir(tmp_path))
    code, out, err = cli(["train", name, *args], capsys)
    assert "Traceback" not in err
    assert sorted(os.listdir(tmp_path)) == before, "nothing may be written"
    return code, out, err, path


def test_dry_run_reports_every_problem_at_once_with_its_line(tmp_path, capsys, monkeypatch):
    code, out, err, _ = _run(tmp_path, capsys, monkeypatch, MANY_WRONG, "--dry-run")
    assert code == 1 and out == ""
    lines = err.splitlines()
    expected = [
        "r.toml:15: `model.layers`: the model's output is 5 per example, but the data has 10 classes; drop `c=`",
        "r.toml:7: `data.augment[0].p`: flip_lr needs a number in [0, 1], got 2",
        "r.toml:11: `data.augment[1].max_delta`: brightness needs a number in [0, 1], got 5",
        "r.toml:12: `data.augment[1].p`: brightness needs a number in [0, 1], got -1",
        "r.toml:19: `train.freeze`: 'conv9' matches no parameter (layers with parameters: conv1, dense1)",
    ]
    for want in expected:
        assert any(want in line for line in lines), (want, err)
    # training refuses the same, all at once, and leaves no run directory
    code, _, err2, _ = _run(tmp_path, capsys, monkeypatch, MANY_WRONG)
    assert code == 1 and all(any(want in line for line in err2.splitlines()) for want in expected)


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        ('["conv:c=8,k=3,p=same", "relu", "flatten"]', "output is 512 per example, but the data has 10 classes; "
         "it ends in `flatten`: add `dense` after it"),
        ('["conv:c=8,k=3,p=same", "relu"]', "output is 8x8x8 per example"),
        ('["conv:c=8,k=3", "maxpool:k=2", "conv:c=8,k=9", "gap", "dense"]', "`model.layers`: "),
    ],
)
def test_a_model_that_does_not_end_in_the_classes_is_refused_by_the_dry_run(tmp_path, capsys, monkeypatch,
                                                                               layers, message):  # fmt: skip
    text = TINY_RECIPE.replace(TINY_RECIPE[TINY_RECIPE.index("layers = ") : TINY_RECIPE.index("[optimizer]")],
                               f"layers = {layers}\n\n")  # fmt: skip
    code, _, err, _ = _run(tmp_path, capsys, monkeypatch, text, "--dry-run")
    assert code == 1 and message in err and "r.toml:" in err


def test_model_num_classes_must_be_the_class_count(tmp_path, capsys, monkeypatch):
    code, _, err, _ = _run(tmp_path, capsys, monkeypatch, TINY_RECIPE, "--dry-run", "--set", "model.num_classes=12")
    assert code == 2  # only a --set is at fault: a usage error
    assert "--set model.num_classes=12: `model.num_classes` = 12, but the data has 10 classes" in err


def test_freezing_every_parameter_is_refused_before_training(tmp_path, capsys, monkeypatch):
    code, _, err, _ = _run(tmp_path, capsys, monkeypatch, TINY_RECIPE, "--set", 'train.freeze=["*"]')
    assert code == 2 and "freezes every parameter; nothing to train" in err


@pytest.mark.parametrize(
    ("seed", "shown"),
    [(2**63, "would train as seed 0"), (2**64 + 5, "as seed 5"), (2**32, "would train as seed 0"),
     (-1, "would train as seed 4294967295")],
)  # fmt: skip
def test_seeds_that_would_wrap_are_refused(tmp_path, capsys, monkeypatch, seed, shown):
    text = TINY_RECIPE.replace("seed = 0", f"seed = {seed}")
    code, _, err, _ = _run(tmp_path, capsys, monkeypatch, text, "--dry-run")
    assert code == 1 and "r.toml:16: `train.seed`: seeds run from 0 to 4294967295" in err and shown in err
    code, _, err, _ = _run(tmp_path, capsys, monkeypatch, TINY_RECIPE, "--dry-run", "--set", f"train.seed={seed}")
    assert code == 2 and f"--set train.seed={seed}: `train.seed`: seeds run from 0" in err


def test_the_largest_seed_is_distinct_and_accepted(tmp_path):
    from cnncli.config.recipe import load_recipe

    recipe = load_recipe(write_recipe(tmp_path), ["train.seed=4294967295"])
    assert recipe.train.seed == 2**32 - 1 and recipe.digest() != load_recipe(write_recipe(tmp_path)).digest()


def test_unsorted_milestones_are_refused_with_their_line(tmp_path, capsys, monkeypatch):
    text = TINY_RECIPE + '\n[schedule]\nname = "multistep"\nmilestones = [3, 1]\n'
    code, _, err, _ = _run(tmp_path, capsys, monkeypatch, text, "--dry-run")
    assert code == 1 and "r.toml:20: `schedule.milestones`: milestones must be increasing epochs, e.g. [1.0, 3.0]" in err


def test_duplicate_yaml_keys_are_refused(tmp_path, capsys, monkeypatch):
    text = "model:\n  layers: [gap, dense]\ntrain:\n  epochs: 2\n  seed: 1\n  epochs: 3\n"
    code, _, err, _ = _run(tmp_path, capsys, monkeypatch, text, "--dry-run", name="r.yaml")
    assert code == 1 and "r.yaml:6: key 'epochs' is given twice (also on line 4)" in err


def test_a_set_error_names_the_set_and_is_a_usage_error(tmp_path, capsys, monkeypatch):
    cases = [
        (["--set", "train.epochs=0"], "--set train.epochs=0: `train.epochs`: Input should be greater than or equal to 1"),
        (["--set", "train.epoch=3"], "--set train.epoch=3: `train.epoch`: unknown key; did you mean `epochs`?"),
        (["--set", "train.epochs"], "--set 'train.epochs': expected KEY.PATH=VALUE"),
        (["--set", "train.epochs.x=1"], "--set 'train.epochs.x=1': 'epochs' is not a table"),
        (["--set", "train.steps=5"], "--set train.steps=5: `train`: give train.epochs or train.steps, not both"),
        (["--set", "data.augment=[{op='flip_lr', p=3}]"], "--set data.augment=[{op='flip_lr', p=3}]: "
         "`data.augment[0].p`: flip_lr needs a number in [0, 1], got 3"),
    ]  # fmt: skip
    for args, message in cases:
        code, out, err, _ = _run(tmp_path, capsys, monkeypatch, TINY_RECIPE, "--dry-run", *args)
        assert code == 2 and out == "" and message in err, (args, err)
        assert "tiny.toml:" not in err and "r.toml:" not in err


def test_a_file_error_keeps_its_line_and_exit_1_next_to_a_set_error(tmp_path, capsys, monkeypatch):
    text = TINY_RECIPE.replace("epochs = 2", "epochs = 0")
    code, _, err, _ = _run(tmp_path, capsys, monkeypatch, text, "--dry-run", "--set", "optimizer.learning_rate=-1")
    assert code == 1
    assert "r.toml:15: `train.epochs`" in err and "--set optimizer.learning_rate=-1: `optimizer.learning_rate`" in err


def test_a_recipe_path_that_is_a_directory_is_a_clean_error(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.toml").mkdir()
    code, _, err = cli(["train", "r.toml"], capsys)
    assert code == 1 and "r.toml: is a directory, not a recipe file" in err and "Traceback" not in err
    assert sorted(os.listdir(tmp_path)) == ["r.toml"]


def test_a_good_recipe_still_dry_runs(tmp_path, capsys, monkeypatch):
    code, out, _, _ = _run(tmp_path, capsys, monkeypatch, TINY_RECIPE, "--dry-run", "--json")
    assert code == 0 and json_lines(out)[0]["num_classes"] == 10 and json_lines(out)[0]["warnings"] == []


def test_data_keys_the_source_never_reads_are_refused(tmp_path, capsys, monkeypatch):
    text = TINY_RECIPE.replace("batch_size = 64", "batch_size = 64\nimage_size = 32\nchannels = 3")
    code, _, err, _ = _run(tmp_path, capsys, monkeypatch, text, "--dry-run")
    assert code == 1
    assert "r.toml:5: `data.image_size` is read only for folder: and tfds: sources, not digits" in err
    assert "r.toml:6: `data.channels` is read only for folder: and tfds: sources, not digits" in err
