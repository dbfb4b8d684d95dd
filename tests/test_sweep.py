"""`cnncli train --sweep`: the grid, its validation before any training, skip and resume on a rerun."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from helpers import STEPS3, TINY_RECIPE, cli, json_lines, write_recipe

from cnncli.errors import UsageError
from cnncli.train.sweep import grid, parse_axes, parse_axis, point_name, split_values

SWEEP = ["--sweep", "optimizer.learning_rate=1e-3,1e-2", "--sweep", "train.seed=0,1"]
NAMES = [f"optimizer.learning_rate={lr},train.seed={seed}" for lr in ("0.001", "0.01") for seed in (0, 1)]


def test_values_split_on_top_level_commas_and_parse_as_toml():
    assert split_values("1e-3,3e-3") == ["1e-3", "3e-3"]
    assert split_values('[1,2],["a,b"],3') == ["[1,2]", '["a,b"]', "3"]
    axis = parse_axis('model.layers=["conv:c=8,k=3", "gap", "dense"],["gap","dense"]')
    assert axis.key == "model.layers" and len(axis.texts) == 2
    for bad in ("optimizer.learning_rate", "=1,2", "train.seed=0,,1", "train.seed=1,1", "lr=1e-3,0.001",
                "model.layers=[1,2", "train seed=1"):  # fmt: skip
        with pytest.raises(UsageError):
            parse_axis(bad)
    with pytest.raises(UsageError, match="swept twice"):
        parse_axes(["train.seed=0,1", "train.seed=2"], [])
    with pytest.raises(UsageError, match="also given with --set"):
        parse_axes(["train.seed=0,1"], ["train.seed=3"])


def test_points_are_named_after_their_values_in_grid_order():
    points = grid(parse_axes(["optimizer.learning_rate=1e-3,1e-2", "train.seed=0,1"], []))
    assert [p.name for p in points] == NAMES
    assert points[1].overrides == ("optimizer.learning_rate=1e-3", "train.seed=1")
    assert point_name({"data.source": "npz:a/b c.npz", "x.y": True}) == "data.source=npz_a_b_c.npz,x.y=true"
    long = point_name({"model.layers": ["conv:c=8,k=3,p=same"] * 20})
    assert len(long) == 200 and "/" not in long
    twins = grid(parse_axes(['data.source="npz:a/b.npz","npz:a_b.npz"'], []))
    assert len({p.name for p in twins}) == 2  # equal once sanitized: a digest tells them apart


def test_a_value_the_schema_refuses_stops_the_sweep_before_any_run_directory(tmp_path, capsys):
    recipe = write_recipe(tmp_path, STEPS3)
    folder = tmp_path / "sweep"
    code, out, err = cli(["train", str(recipe), "--sweep", "optimizer.learning_rate=0.01,-1,0",
                          "--sweep", "optimizer.nam=adam", "--workdir", str(folder)], capsys)  # fmt: skip
    assert code == 1 and out == ""
    assert "--sweep optimizer.learning_rate=0.01,-1,0: -1: " in err and "greater than 0" in err
    assert "--sweep optimizer.learning_rate=0.01,-1,0: 0: " in err
    assert "--sweep optimizer.nam=adam: adam: " in err and "did you mean `name`?" in err
    assert not folder.exists()


def test_malformed_or_conflicting_sweeps_are_usage_errors(tmp_path, capsys):
    recipe = write_recipe(tmp_path, STEPS3)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "recipe.json").write_text("{}")  # a run directory: no place for a sweep
    for extra in (["--sweep", "train.seed"], ["--sweep", "train.seed=0,1", "--resume-from", "latest"],
                  ["--sweep", "train.seed=0,1", "--set", "train.seed=2"],
                  ["--sweep", "train.seed=0,1", "--workdir", str(tmp_path / "run")]):  # fmt: skip
        code, _, err = cli(["train", str(recipe), "--workdir", str(tmp_path / "s"), *extra], capsys)
        assert code == 2 and ("--sweep" in err or "a sweep needs a folder of its own" in err), err
        assert "Traceback" not in err
    assert not (tmp_path / "s").exists()


def test_dry_run_lists_the_runs_and_trains_nothing(tmp_path, capsys):
    recipe = write_recipe(tmp_path, STEPS3)
    code, out, _ = cli(["train", str(recipe), *SWEEP, "--dry-run", "--json", "--workdir", str(tmp_path / "s")], capsys)
    assert code == 0
    rows = json_lines(out)
    assert [r["name"] for r in rows] == NAMES and {r["action"] for r in rows} == {"train"}
    assert not (tmp_path / "s").exists()


@pytest.mark.slow  # four real runs (about 6 s on 2 cores), then the same command again
def test_a_2x2_sweep_trains_four_runs_then_skips_them_on_a_rerun(tmp_path, capsys, monkeypatch):
    recipe = write_recipe(tmp_path, STEPS3)
    monkeypatch.chdir(tmp_path)  # the default folder: runs/tiny-sweep
    code, out, err = cli(["train", str(recipe), *SWEEP, "--json"], capsys)
    assert code == 0, err
    folder = tmp_path / "runs" / "tiny-sweep"
    first = json_lines(out)
    assert [s["workdir"] for s in first] == [f"runs/tiny-sweep/{n}" for n in NAMES]
    assert all(s["event"] == "summary" and s["steps"] == 3 for s in first)  # summaries only, no epoch lines
    assert sorted(p.name for p in folder.iterdir()) == NAMES
    mtimes = {n: (folder / n / "summary.json").stat().st_mtime_ns for n in NAMES}

    code, out, err = cli(["train", str(recipe), *SWEEP, "--json"], capsys)
    assert code == 0, err
    assert json_lines(out) == first  # the same summary lines, read back from summary.json
    assert {n: (folder / n / "summary.json").stat().st_mtime_ns for n in NAMES} == mtimes  # nothing trained

    code, out, _ = cli(["runs", str(folder), "--json", "--group-by-seed"], capsys)
    groups = json_lines(out)
    assert [g["setting"] for g in groups] == [{"optimizer.learning_rate": 0.001}, {"optimizer.learning_rate": 0.01}]
    assert all(g["runs"] == 2 and g["seeds"] == [0, 1] and g["eval_accuracy"]["n"] == 2 for g in groups)
    accs = [s["eval_accuracy"] for s in first[:2]]
    assert groups[0]["eval_accuracy"]["mean"] == pytest.approx(sum(accs) / 2)
    assert groups[0]["eval_accuracy"]["min"] == min(accs)


def test_a_rerun_resumes_an_interrupted_run_and_a_failed_run_does_not_stop_the_others(tmp_path, capsys, monkeypatch):
    x = np.random.default_rng(0).normal(size=(64, 6, 6, 1)).astype(np.float32)
    y = np.arange(64) % 4
    np.savez(tmp_path / "ok.npz", x_train=x, y_train=y, x_test=x[:8], y_test=y[:8])
    x[5] = 3e38  # finite but huge pixels: a non-finite loss in the first epoch (see test_train)
    np.savez(tmp_path / "inf.npz", x_train=x, y_train=y, x_test=x[:8], y_test=y[:8])
    recipe = write_recipe(tmp_path, TINY_RECIPE.replace('source = "digits"', "normalize = false")
                          .replace("batch_size = 64", "batch_size = 8").replace("epochs = 2", "epochs = 1"))  # fmt: skip
    argv = ["train", str(recipe), "--sweep", 'data.source="npz:inf.npz","npz:ok.npz"', "--workdir", str(tmp_path / "s")]
    code, out, err = cli([*argv, "--json"], capsys)
    assert code == 1 and "1 of 2 runs of the sweep failed: data.source=npz_inf.npz" in err
    assert "loss became nan" in err
    assert [s["workdir"] for s in json_lines(out)] == [str(tmp_path / "s" / "data.source=npz_ok.npz")]

    ok = tmp_path / "s" / "data.source=npz_ok.npz"
    (ok / "summary.json").unlink()  # as if killed after its last checkpoint
    monkeypatch.setattr("cnncli.report.console.is_interactive", lambda: True)  # the table at the end
    code, out, err = cli(argv, capsys)
    assert code == 1  # the bad one fails again
    assert "[1/2] training data.source=npz_inf.npz" in err  # it failed before its first checkpoint
    assert "[2/2] resuming data.source=npz_ok.npz" in err
    assert "failed" in out and "finished" in out and "data.source" in out
    assert (ok / "summary.json").exists()


def test_a_point_is_a_normal_run_skipped_when_finished_and_started_afresh_when_empty(tmp_path, capsys):
    recipe = write_recipe(tmp_path, STEPS3)
    folder = tmp_path / "s"
    argv = ["train", str(recipe), "--sweep", "train.seed=3", "--workdir", str(folder), "--json"]
    code, out, err = cli(argv, capsys)
    assert code == 0, err
    run = folder / "train.seed=3"
    assert json.loads((run / "recipe.json").read_text())["train"]["seed"] == 3
    mtime = (run / "summary.json").stat().st_mtime_ns
    code, again, err = cli(argv, capsys)
    assert code == 0 and again == out and (run / "summary.json").stat().st_mtime_ns == mtime  # skipped
    shutil.rmtree(run / "checkpoints")
    (run / "summary.json").unlink()  # killed before its first checkpoint: a rerun starts it afresh
    code, out, err = cli(argv, capsys)
    assert code == 0, err
    assert json_lines(out)[0]["resumed_from"] is None and json_lines(out)[0]["steps"] == 3
