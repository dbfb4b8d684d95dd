"""Issue 18, rules 1-4 and 6 tried as a hostile user and a script would: what still slipped through.

Each test asserts the exit code (1 user error, 2 usage error), the message, that no
traceback reached stderr, and that nothing was written that should not have been.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from helpers import STEPS3, TINY_RECIPE, cli, json_lines, write_recipe


def _npz(path: Path, **arrays) -> Path:
    rng = np.random.default_rng(0)
    base = {"x_train": rng.random((60, 8, 8), np.float32), "y_train": np.arange(60) % 3,
            "x_test": rng.random((30, 8, 8), np.float32), "y_test": np.arange(30) % 3}  # fmt: skip
    np.savez(path, **{**base, **arrays})
    return path


# ---------------------------------------------------------------- rule 1: data that scores nothing


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"x_test": np.zeros((0, 8, 8), np.float32), "y_test": np.zeros(0, int)}, "[test]: the split has no examples"),
        ({"x_train": np.zeros((0, 8, 8), np.float32), "y_train": np.zeros(0, int)},
         "[train]: the split has no examples"),
        ({"y_train": np.zeros(60, int), "y_test": np.zeros(30, int)},
         "the data has 1 class ('0'); a classifier needs at least 2"),
    ],
    ids=["empty-eval-split", "empty-train-split", "one-class"],
)  # fmt: skip
@pytest.mark.parametrize("pipeline", ["memory", "stream"])
def test_data_that_would_score_nothing_is_refused_before_anything_is_written(tmp_path, capsys, arrays, message,
                                                                              pipeline):  # fmt: skip
    """Today an empty eval split trains to eval_accuracy 0.0 (loss 0.0) and one class to 1.0, both exit 0."""
    if pipeline == "stream" and "[train]" in message:
        message = "3 classes 0..2 have no training example"  # the stream loader's own check comes first
    source = _npz(tmp_path / "d.npz", **arrays)
    recipe = write_recipe(tmp_path, STEPS3.replace("batch_size = 64", "batch_size = 8"))
    sets = ["--set", f"data.source=npz:{source}", "--set", f"data.pipeline={pipeline}"]
    code, out, err = cli(["train", str(recipe), *sets, "--dry-run", "--json"], capsys)
    assert code == 1 and out == "" and message in err and "Traceback" not in err
    if pipeline == "stream":
        return  # the streamed training path does not call check_dataset (reported: cnncli/data/stream.py)
    code, out, err = cli(["train", str(recipe), *sets, "--workdir", str(tmp_path / "runs" / "a"), "--json"], capsys)
    assert code == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- rule 2: numbers that are not numbers


@pytest.mark.parametrize("key", ["optimizer.learning_rate", "optimizer.weight_decay", "optimizer.clip_norm",
                                 "schedule.warmup_epochs", "schedule.gamma", "schedule.step_epochs"])  # fmt: skip
def test_an_infinite_recipe_number_is_a_set_error_at_dry_run(tmp_path, capsys, key):
    """Today inf passes every schema bound: --dry-run exits 0 (warmup_epochs = inf: an OverflowError traceback)."""
    recipe = write_recipe(tmp_path)
    code, out, err = cli(["train", str(recipe), "--set", f"{key}=inf", "--dry-run", "--json"], capsys)
    assert code == 2 and out == "" and "Traceback" not in err
    assert f"error: --set {key}=inf: `{key}` = inf: give a finite number" in err


def test_every_non_finite_number_of_a_file_is_listed_with_its_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = TINY_RECIPE.replace('learning_rate = 0.01', 'learning_rate = inf') + \
        '[schedule]\nname = "multistep"\nmilestones = [1.0, nan]\n'  # fmt: skip
    recipe = write_recipe(tmp_path, text, "r.toml")
    code, _, err = cli(["train", str(recipe)], capsys)
    assert code == 1 and "Traceback" not in err
    lines = text.splitlines()
    lr, milestones = (next(i + 1 for i, line in enumerate(lines) if line.startswith(k)) for k in ("learning_rate",
                                                                                                   "milestones"))
    assert f"{recipe}:{lr}: `optimizer.learning_rate` = inf" in err
    assert f"{recipe}:{milestones}: `schedule.milestones[1]` = nan" in err
    assert sorted(os.listdir(tmp_path)) == ["r.toml"]  # no runs/ folder


# ---------------------------------------------------------------- step numbers that int() refuses


@pytest.mark.parametrize("argv", [["eval", "RUN", "--checkpoint", "\u00b2"], ["predict", "RUN", "X", "-c", "\u00b3"],
                                  ["inspect-filters", "RUN", "-c", "\u00b2", "--list"]])  # fmt: skip
def test_a_superscript_digit_is_not_a_step_number(trained_run, tmp_path, capsys, argv):
    """``'²'.isdigit()`` is True but ``int('²')`` raises: today a ValueError traceback."""
    argv = [str(trained_run) if a == "RUN" else str(tmp_path / "x.npy") if a == "X" else a for a in argv]
    np.save(tmp_path / "x.npy", np.zeros((8, 8, 1), np.float32))
    code, out, err = cli(argv, capsys)
    assert code == 2 and out == "" and "Traceback" not in err and "expected latest, best or a step number" in err


def test_a_superscript_resume_from_is_a_usage_error(tmp_path, capsys):
    recipe = write_recipe(tmp_path)
    code, _, err = cli(["train", str(recipe), "--workdir", str(tmp_path / "w"), "--resume-from", "\u00b2"], capsys)
    assert code == 2 and "Traceback" not in err and "expected latest or a step number" in err
    assert not (tmp_path / "w").exists()


# ---------------------------------------------------------------- rule 6: paths inside a run


def test_a_missing_checkpoint_step_path_names_the_committed_steps(trained_run, capsys):
    """Today: 'run directory RUN/checkpoints/999 not found', hint 'pass the --workdir a train run printed'."""
    steps = sorted(int(p.name) for p in (trained_run / "checkpoints").iterdir() if p.name.isdigit())
    for command in (["eval"], ["inspect-filters", "--list"]):
        code, out, err = cli([command[0], str(trained_run / "checkpoints" / "999"), *command[1:]], capsys)
        assert code == 1 and out == "" and "Traceback" not in err
        assert f"no checkpoint at step 999 in {trained_run / 'checkpoints'}" in err
        assert f"committed steps: {steps}" in err


@pytest.mark.parametrize("inside", ["metrics.jsonl", "summary.json", "tb"])
def test_a_file_inside_a_run_is_not_read_as_the_run(trained_run, tmp_path, capsys, inside):
    """Today ``eval RUN/metrics.jsonl`` evaluates RUN's latest checkpoint, exit 0, as if the path meant something."""
    path = trained_run / inside
    kind = "folder" if path.is_dir() else "file"
    code, out, err = cli(["eval", str(path), "--json", "--out", str(tmp_path / "e")], capsys)
    assert code == 1 and out == "" and "Traceback" not in err
    assert f"{path} is a {kind} inside the run {trained_run}, not a run or a checkpoint" in err
    assert f"hint: pass the run directory {trained_run}" in err
    assert not (tmp_path / "e").exists()


# ---------------------------------------------------------------- rule 3: Ctrl-C before the first step


def test_ctrl_c_before_the_first_step_leaves_nothing_and_says_so(tmp_path, capsys, monkeypatch):
    """Today: 'interrupted twice: aborted without waiting for the checkpoint' after ONE Ctrl-C, a resume hint
    for a run that has no checkpoint, and recipe.json/data.json/env.json left in the run directory."""
    from cnncli.train import loop

    def interrupt(self):
        raise KeyboardInterrupt  # a Ctrl-C while the session is built, before the handlers are installed

    class Exit(BaseException):
        pass

    def fake_exit(code):
        raise Exit(code)

    monkeypatch.setattr(loop.StopSignals, "__enter__", interrupt)
    monkeypatch.setattr(os, "_exit", fake_exit)
    recipe = write_recipe(tmp_path, STEPS3)
    workdir = tmp_path / "runs" / "a"
    with pytest.raises(Exit) as info:
        from cnncli.cli.app import main

        main(["train", str(recipe), "--workdir", str(workdir), "--json"])
    err = capsys.readouterr().err
    assert info.value.args == (130,)
    assert "interrupted before the first step: nothing was trained" in err and "twice" not in err
    assert "hint: run the same command again" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- rule 2: --dry-run loads the data as train does


def test_dry_run_streams_a_split_over_the_budget_as_train_does(tmp_path, capsys):
    """Today --dry-run loads every split in memory: over data.memory_budget_mb it refuses a recipe that train
    (pipeline auto: streamed) trains, and its hint says to set the pipeline to "auto", which it already is."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in ("a", "b"):
            (tmp_path / "f" / split / name).mkdir(parents=True)
            for i in range(8):
                pixels = (rng.random((8, 8)) * 255).astype(np.uint8)
                Image.fromarray(pixels).save(tmp_path / "f" / split / name / f"{i}.png")
    recipe = write_recipe(tmp_path, STEPS3.replace("batch_size = 64", "batch_size = 4"))
    sets = ["--set", f"data.source=folder:{tmp_path / 'f'}", "--set", "data.image_size=300",
            "--set", "data.memory_budget_mb=1"]  # fmt: skip
    code, out, err = cli(["train", str(recipe), *sets, "--dry-run", "--json"], capsys)
    assert code == 0 and "Traceback" not in err, err
    assert json_lines(out)[0]["input_shape"] == [300, 300, 1]
    code, out, err = cli(["train", str(recipe), *sets, "--set", "data.pipeline=memory", "--dry-run", "--json"], capsys)
    assert code == 1 and "over data.memory_budget_mb = 1" in err and "Traceback" not in err
    code, out, err = cli(["train", str(recipe), *sets[:2], "--set", "data.image_size=100000", "--dry-run"], capsys)
    assert code == 1 and "the data does not fit in memory, even streamed" in err and "Traceback" not in err


# ---------------------------------------------------------------- rule 3: a workdir that cannot be a folder


def test_a_broken_symlink_workdir_is_named_as_such(tmp_path, capsys):
    """Today: 'run directory LINK is a file' for a symbolic link to nowhere (and for a path under it)."""
    recipe = write_recipe(tmp_path, STEPS3)
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    under = f"lies under {tmp_path / 'link'}, which is"
    for workdir, said in ((tmp_path / "link", "is"), (tmp_path / "link" / "run", under)):
        code, _, err = cli(["train", str(recipe), "--workdir", str(workdir)], capsys)
        assert code == 1 and "Traceback" not in err
        assert f"run directory {workdir} {said} a broken symbolic link (to {tmp_path / 'nowhere'})" in err
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("address", ["localhost:notaport", "localhost:99999", ":1234", "localhost"])
def test_a_malformed_coordinator_is_a_usage_error_not_a_crash(tmp_path, capsys, address):
    """Today ``--coordinator localhost:notaport`` crashes JAX's gRPC server: a segfault, exit 139."""
    recipe = write_recipe(tmp_path, STEPS3)
    argv = ["train", str(recipe), "--workdir", str(tmp_path / "w"), "--coordinator", address,
            "--num-processes", "2", "--process-id", "0"]  # fmt: skip
    code, out, err = cli(argv, capsys)
    assert code == 2 and out == "" and "Traceback" not in err
    assert f"--coordinator {address!r}: expected HOST:PORT, the port a number 1..65535" in err
    assert not (tmp_path / "w").exists()


# ---------------------------------------------------------------- a damaged data.json


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: [1, 2], "expected a JSON object, found list"),
        (lambda d: {k: v for k, v in d.items() if k != "input_shape"}, "`input_shape` is None; expected a non-empty"),
        (lambda d: {**d, "input_shape": "abc"}, "`input_shape` is 'abc'; expected a non-empty list of positive"),
        (lambda d: {**d, "class_names": ["a"]}, "`class_names` names 1 classes but `num_classes` is 10"),
        (lambda d: {**d, "std": ["x"]}, "`std` is ['x']; expected a non-empty list of numbers"),
    ],
    ids=["list", "no-input-shape", "shape-a-string", "one-name", "std-strings"],
)  # fmt: skip
def test_a_damaged_data_json_is_a_clean_error(trained_run, tmp_path, capsys, edit, message):
    """Today a KeyError, TypeError, ValueError or (one class name) IndexError traceback from deep inside eval."""
    import json
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    path = run / "data.json"
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    for argv in (["eval", str(run), "--json"], ["inspect-filters", str(run), "--list", "--json"]):
        code, out, err = cli(argv, capsys)
        assert code == 1 and out == "" and "Traceback" not in err
        assert f"error: {path}: {message}" in err
    assert not (run / "eval").exists()


def test_dry_run_refuses_the_workdir_train_would_refuse(tmp_path, capsys):
    """Today ``--dry-run --workdir FILE`` (or a folder of other files) exits 0, then train refuses it."""
    recipe = write_recipe(tmp_path, STEPS3)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("mine")
    code, out, err = cli(["train", str(recipe), "--workdir", str(recipe), "--dry-run", "--json"], capsys)
    assert code == 1 and out == "" and f"run directory {recipe} is a file" in err and "Traceback" not in err
    code, out, err = cli(["train", str(recipe), "--workdir", str(tmp_path / "notes"), "--dry-run", "--json"], capsys)
    assert code == 1 and out == "" and "is not a run directory and not empty: it holds a.txt" in err
    code, out, err = cli(["train", str(recipe), "--workdir", str(tmp_path / "notes"), "--dry-run", "--json",
                          "--allow-nonempty-workdir"], capsys)  # fmt: skip
    assert code == 0, err
    assert sorted(os.listdir(tmp_path / "notes")) == ["a.txt"]  # a dry run writes nothing
