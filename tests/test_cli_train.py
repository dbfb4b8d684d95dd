"""The `cnncli train` command: JSON lines, dry run, exit codes and messages."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import RESUME_RECIPE, TINY_RECIPE, cli, state_digest, write_recipe


def test_json_lines_parse_and_carry_the_pinned_keys(tmp_path, capsys):
    recipe = write_recipe(tmp_path, TINY_RECIPE)
    code, out, err = cli(["train", str(recipe), "--set", "train.epochs=2", "--workdir", str(tmp_path / "w"), "--json"], capsys)
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["event"] for line in lines] == ["epoch", "epoch", "summary"]
    final = lines[-1]
    for key in ("eval_accuracy", "eval_loss", "train_loss", "epochs", "steps", "train_seconds", "compile_seconds",
                "images_per_second", "workdir", "devices", "processes", "conv_backend"):  # fmt: skip
        assert key in final, key
    assert final["epochs"] == 2 and final["workdir"] == str(tmp_path / "w")
    env = json.loads((tmp_path / "w" / "env.json").read_text())  # the default, auto, chose one and said why
    assert final["conv_backend"] == env["conv_backend"] in ("xla", "onednn")
    assert final["conv_backend_note"] == env["conv_backend_note"]
    assert final["conv_backend_note"].startswith(f"conv_backend auto: {final['conv_backend']} (")
    assert final["images_per_second"] > 0 and final["compile_seconds"] > 0


def test_dry_run_json_compiles_nothing(tmp_path, capsys):
    recipe = write_recipe(tmp_path, TINY_RECIPE)
    code, out, _ = cli(["train", str(recipe), "--dry-run", "--json"], capsys)
    assert code == 0
    plan = json.loads(out)
    assert plan["params"] == plan["arith"]["total"]["params"] > 0
    assert plan["total_steps"] == 2 * (1438 // 64)
    assert plan["cost"]["train_flops_per_step"] == 3 * plan["arith"]["total"]["flops"] * 64
    assert plan["arith"]["output"] == [10]
    assert not (tmp_path / "runs").exists()


def test_dry_run_for_people(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("cnncli.report.console.is_interactive", lambda: True)  # as if stdout were a terminal
    recipe = write_recipe(tmp_path, TINY_RECIPE.replace("[train]", '[schedule]\nname = "cosine"\n\n[train]'))
    code, out, _ = cli(["train", str(recipe), "--dry-run"], capsys)
    assert code == 0
    assert "[optimizer]" in out and "conv1" in out and "learning rate" in out and "(step)" in out
    assert "\x1b[" not in out  # stdout is really a pipe: no escape codes


def test_bad_recipe_exits_1_with_the_message_and_no_traceback(tmp_path, capsys):
    recipe = write_recipe(tmp_path, TINY_RECIPE.replace("epochs = 2", "epoch = 2"))
    code, out, err = cli(["train", str(recipe)], capsys)
    assert code == 1 and out == ""
    assert f"error: {recipe}:15: `train.epoch`: unknown key; did you mean `epochs`?" in err
    assert "Traceback" not in err


def test_bad_override_and_missing_file(tmp_path, capsys):
    recipe = write_recipe(tmp_path, TINY_RECIPE)
    code, _, err = cli(["train", str(recipe), "--set", "train.epochs=0"], capsys)
    assert code == 2 and "`train.epochs`: Input should be greater than or equal to 1" in err  # a --set error is usage
    code, _, err = cli(["train", str(tmp_path / "missing.toml")], capsys)
    assert code == 1 and "recipe file not found" in err


def test_usage_errors_exit_2(capsys):
    code, _, err = cli(["train", "--no-such-flag", "x.toml"], capsys)
    assert code == 2


def test_help_teaches_and_explains_images_per_second(capsys):
    code, out, _ = cli(["train", "--help"], capsys)
    assert code == 0
    assert "images_per_second" in out and "compil" in out and "--dry-run" in out and "--set" in out


def test_version_and_top_level_help(capsys):
    from cnncli import __version__

    code, out, _ = cli(["--version"], capsys)
    assert code == 0 and out.strip() == f"cnncli {__version__}"
    code, out, _ = cli(["--help"], capsys)
    assert code == 0
    for command in ("train", "eval", "inspect-filters", "conv-arith"):
        assert command in out


def test_debug_shows_the_traceback(tmp_path):
    recipe = write_recipe(tmp_path, TINY_RECIPE.replace("epochs = 2", "epoch = 2"))
    proc = subprocess.run([sys.executable, "-m", "cnncli.cli.app", "--debug", "train", str(recipe)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "RecipeError" in proc.stderr


@pytest.mark.parametrize("fault, reason", [
    ("before_commit:enospc@20", "No space left on device"),
    ("after_state_write:eacces@20", "Permission denied"),
])  # fmt: skip
def test_disk_full_or_permission_denied_mid_save_exits_1_with_path_and_reason(tmp_path, capsys, monkeypatch, straight_run,
                                                                               fault, reason):  # fmt: skip
    recipe = write_recipe(tmp_path, RESUME_RECIPE)
    monkeypatch.setenv("CNNCLI_FAULT", fault)  # test-only hook: as root, chmod would not stop the write
    code, out, err = cli(["train", str(recipe), "--workdir", str(tmp_path / "w"), "--json"], capsys)
    monkeypatch.delenv("CNNCLI_FAULT")
    assert code == 1 and '"summary"' not in out
    assert f"error: saving checkpoint step 20 in {(tmp_path / 'w' / 'checkpoints').resolve()} failed: {reason}" in err
    assert "the last committed checkpoint, step 10, is intact" in err and "Traceback" not in err
    assert state_digest(tmp_path / "w") == state_digest(straight_run, 10)


def test_a_resumed_run_says_so_in_json_and_for_people(tmp_path, capsys, monkeypatch, straight_run):
    import shutil

    recipe = write_recipe(tmp_path, RESUME_RECIPE)
    shutil.copytree(straight_run, tmp_path / "w")
    code, out, err = cli(["train", str(recipe), "--workdir", str(tmp_path / "w"), "--resume-from", "30", "--json"], capsys)
    assert code == 0, err
    summary = json.loads(out.splitlines()[-1])
    assert summary["resumed_from"] == {"step": 30, "epoch": 1, "index": 8, "learning_rate": 0.01}
    assert "moved the newer checkpoints [40, 44]" in err  # a warning, on stderr
    monkeypatch.setattr("cnncli.report.console.is_interactive", lambda: True)
    code, out, err = cli(["train", str(recipe), "--workdir", str(tmp_path / "w"), "--resume-from", "40"], capsys)
    assert code == 0, err
    assert "resuming from step 40 (epoch 2 at batch 18, learning rate 0.01)" in err
    assert "resumed from" in out and "step 40" in out


def test_resume_from_needs_a_workdir_and_a_step(tmp_path, capsys):
    recipe = write_recipe(tmp_path, TINY_RECIPE)
    code, _, err = cli(["train", str(recipe), "--resume-from", "30"], capsys)
    assert code == 2 and "--resume-from needs --workdir" in err
    code, _, err = cli(["train", str(recipe), "--workdir", str(tmp_path / "w"), "--resume-from", "newest"], capsys)
    assert code == 2 and "expected latest or a step number" in err
    code, _, err = cli(["train", str(recipe), "--workdir", str(tmp_path / "w"), "--resume-from", "latest"], capsys)
    assert code == 1 and "no committed checkpoint" in err and not (tmp_path / "w").exists()


def test_profile_traces_steps_and_prints_the_top_ops(tmp_path, capsys):
    recipe = write_recipe(tmp_path, TINY_RECIPE)
    code, out, err = cli(["train", str(recipe), "--profile", "3", "--workdir", str(tmp_path / "p")], capsys)
    assert code == 0, err
    assert "3 steps traced into" in out and "ms/step" in out
    assert list((tmp_path / "p" / "profile").rglob("*.xplane.pb"))  # the trace TensorBoard/XProf read
    assert not (tmp_path / "p" / "metrics.jsonl").exists()  # nothing was trained for real


def test_ctrl_c_outside_training_exits_130_without_a_traceback(monkeypatch, capsys):
    from cnncli.runtime import jaxsetup

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(jaxsetup, "tune_host_malloc", interrupted)  # the first thing a jax command runs
    code, _, err = cli(["data", "info", "digits"], capsys)
    assert code == 130
    assert "Traceback" not in err


def test_resuming_a_finished_run_says_there_is_nothing_left(tmp_path, capsys, monkeypatch, straight_run):
    import shutil

    recipe = write_recipe(tmp_path, RESUME_RECIPE)
    shutil.copytree(straight_run, tmp_path / "w")
    monkeypatch.setattr("cnncli.report.console.is_interactive", lambda: True)
    code, out, err = cli(["train", str(recipe), "--workdir", str(tmp_path / "w")], capsys)
    assert code == 0, err
    assert "the run already finished its 44 steps: nothing left to train" in " ".join(err.split())
    assert "no step trained in this invocation" in " ".join((out + err).split())


@pytest.mark.parametrize(
    ("flags", "message", "hint"),
    [
        (["--epochs", "3"], "--epochs is not an option of cnncli train", "--set train.epochs=3"),
        (["--lr=0.1"], "--lr is not an option of cnncli train", "--set optimizer.learning_rate=0.1"),
        (["--batch-size", "64", "--json"], "--batch-size is not an option", "--set data.batch_size=64"),
        (["--seed"], "--seed is not an option", "--set train.seed=VALUE"),
        (["--seed", "-1"], "--seed is not an option", "--set train.seed=-1"),
    ],
)
def test_a_recipe_key_typed_as_a_flag_gets_the_set_that_does_it(tmp_path, capsys, flags, message, hint):
    recipe = write_recipe(tmp_path, TINY_RECIPE)
    code, out, err = cli(["train", str(recipe), *flags], capsys)
    assert code == 2 and out == ""
    assert message in err and f"hint: {hint}" in err
    assert not (tmp_path / "runs").exists()


def test_an_unknown_flag_that_is_no_recipe_key_keeps_clicks_message(tmp_path, capsys):
    recipe = write_recipe(tmp_path, TINY_RECIPE)
    code, _, err = cli(["train", str(recipe), "--bogus"], capsys)
    assert code == 2 and "No such option: --bogus" in err


def test_the_flag_hint_also_follows_debug_and_leaves_option_values_alone(tmp_path, capsys):
    recipe = write_recipe(tmp_path, TINY_RECIPE)
    code, _, err = cli(["--debug", "train", str(recipe), "--epochs", "3"], capsys)
    assert code == 2 and "hint: --set train.epochs=3" in err
    from cnncli.cli.app import recipe_flag_error

    assert recipe_flag_error(["train", str(recipe), "--workdir", "--lr"]) is None  # a (strange) path, click's to judge
    assert recipe_flag_error(["train", str(recipe), "--", "--epochs"]) is None
    assert recipe_flag_error(["train", str(recipe), "--epochs=3", "--help"]) is None  # help wins
    assert recipe_flag_error(["eval", "runs/x", "--epochs", "3"]) is None  # train only
