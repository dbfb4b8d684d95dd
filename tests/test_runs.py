"""`cnncli runs`: the catalogue of run directories, statuses, filters, order, seed groups and diff."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import STEPS3, TINY_RECIPE, cli, json_lines, write_recipe

from cnncli.report.runs import RUN_KEYS
from cnncli.runs import marker
from cnncli.runs.catalog import RunEntry, catalogue, read_run
from cnncli.runs.compare import diff_runs, group_by_seed, seeds_vary


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> Path:
    """runs/a (learning rate 0.01) and runs/b (0.001): real finished runs of 3 steps; read-only."""
    from cnncli.config.recipe import load_recipe
    from cnncli.train.loop import fit

    root = tmp_path_factory.mktemp("runs")
    recipe = write_recipe(root, STEPS3)
    for name, lr in (("a", "0.01"), ("b", "0.001")):
        fit(load_recipe(recipe, [f"optimizer.learning_rate={lr}"]), root / "runs" / name, recipe_text=STEPS3)
    return root / "runs"


@pytest.fixture
def zoo(two_runs, tmp_path) -> Path:
    """A folder of runs in every state, made from copies of a real finished run."""
    root = tmp_path / "zoo"
    shutil.copytree(two_runs, root)
    done = root / "a"
    for name in ("interrupted", "failed", "running", "killed", "old", "half"):
        shutil.copytree(done, root / name)
        (root / name / "summary.json").unlink()
    marker.record_failure(root / "failed", RuntimeError("loss became nan at step 2"))
    marker.mark_running(root / "running")  # this test process: alive, on this host
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (root / "killed" / "process.json").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    _make_old(root / "old", done)
    (root / "half" / "recipe.json").write_text('{"data": {"source": "dig')  # killed mid-write (older cnncli)
    with open(root / "half" / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "eval_acc')
    (root / "empty").mkdir()
    return root


def _make_old(old: Path, done: Path) -> None:
    """A run of an older cnncli: fewer keys everywhere, no env.json, data.json or init.npz."""
    for name in ("env.json", "data.json", "init.npz", "curves.png"):
        (old / name).unlink(missing_ok=True)
    recipe = json.loads((done / "recipe.json").read_text())
    recipe["train"].pop("conv_backend")
    (old / "recipe.json").write_text(json.dumps(recipe))
    records = [{"epoch": r["epoch"], "step": r["step"], "eval_accuracy": r["eval_accuracy"]}
               for r in map(json.loads, (done / "metrics.jsonl").read_text().splitlines())]  # fmt: skip
    (old / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    summary = json.loads((done / "summary.json").read_text())
    (old / "summary.json").write_text(json.dumps({k: summary[k] for k in ("eval_accuracy", "epochs", "steps")}))


def test_json_lines_carry_the_pinned_keys_and_the_values_that_differ(two_runs, capsys):
    code, out, err = cli(["runs", str(two_runs), "--json"], capsys)
    assert code == 0, err
    runs = json_lines(out)
    assert [r["name"] for r in runs] == ["a", "b"]
    for r in runs:
        assert tuple(r) == RUN_KEYS  # pinned: scripts read these
        assert r["status"] == "finished" and r["steps"] == 3 and r["epochs"] == 1
        assert 0 <= r["eval_accuracy"] <= 1 and r["best_eval_accuracy"] >= r["eval_accuracy"]
        assert r["train_seconds"] > 0 and r["images_per_second"] > 0
        assert r["failure"] is None and r["notes"] == []
    assert runs[0]["recipe"] == {"optimizer.learning_rate": 0.01}
    assert runs[1]["recipe"] == {"optimizer.learning_rate": 0.001}
    summary = json.loads((two_runs / "a" / "summary.json").read_text())
    assert runs[0]["eval_accuracy"] == summary["eval_accuracy"]


def test_every_kind_of_directory_is_listed_with_what_is_known(zoo, capsys):
    code, out, err = cli(["runs", str(zoo), "--json"], capsys)
    assert code == 0 and "Traceback" not in err
    runs = {r["name"]: r for r in json_lines(out)}
    status = {name: r["status"] for name, r in runs.items()}
    assert status == {"a": "finished", "b": "finished", "interrupted": "interrupted", "failed": "failed",
                      "running": "running", "killed": "interrupted", "old": "finished", "half": "interrupted",
                      "empty": "empty"}  # fmt: skip
    assert runs["failed"]["failure"] == "loss became nan at step 2"
    assert any("which is gone" in n for n in runs["killed"]["notes"])
    assert runs["interrupted"]["steps"] == 3 and runs["interrupted"]["eval_accuracy"] == runs["a"]["eval_accuracy"]
    old = runs["old"]
    assert old["eval_accuracy"] == runs["a"]["eval_accuracy"] and old["images_per_second"] is None
    assert old["train_seconds"] is None and old["recipe"]["train.conv_backend"] is None  # a key it predates
    assert any("recipe.json" in n for n in runs["half"]["notes"])
    assert set(runs["half"]["recipe"]) == {"optimizer.learning_rate", "train.conv_backend"}
    assert set(runs["half"]["recipe"].values()) == {None}  # unknown
    assert runs["empty"]["steps"] is None and runs["empty"]["notes"] == []


def test_an_empty_folder_lists_nothing_and_a_missing_one_is_an_error(tmp_path, capsys):
    code, out, err = cli(["runs", str(tmp_path), "--json"], capsys)
    assert code == 0 and out == "" and "no runs under" in err
    code, out, err = cli(["runs", str(tmp_path / "nope")], capsys)
    assert code == 1 and "no such folder" in err and "Traceback" not in err


def test_where_filters_are_anded_and_read_values_as_toml(zoo, capsys):
    def names(*wheres):
        code, out, err = cli(["runs", str(zoo), "--json", *(x for w in wheres for x in ("--where", w))], capsys)
        assert code == 0, err
        return sorted(r["name"] for r in json_lines(out))

    assert names("status=finished") == ["a", "b", "old"]
    assert names("optimizer.learning_rate=1e-2") == names("optimizer.learning_rate=0.01")
    assert names("status=finished", "optimizer.learning_rate=0.001") == ["b"]
    assert names("status!=finished", "steps>=3") == ["failed", "half", "interrupted", "killed", "running"]
    assert names("train.conv_backend=auto", "status=finished") == ["a", "b"]


def test_a_bad_where_or_sort_key_is_a_usage_error_with_a_guess(zoo, capsys):
    code, _, err = cli(["runs", str(zoo), "--where", "optimizer.learnig_rate=0.01"], capsys)
    assert code == 2 and "did you mean 'optimizer.learning_rate'?" in err
    code, _, err = cli(["runs", str(zoo), "--where", "status=finishd"], capsys)
    assert code == 2 and "did you mean 'finished'?" in err
    code, _, err = cli(["runs", str(zoo), "--where", "status"], capsys)
    assert code == 2 and "expected KEY=VALUE" in err
    code, _, err = cli(["runs", str(zoo), "--sort", "eval_acuracy"], capsys)
    assert code == 2 and "did you mean 'eval_accuracy'?" in err


def test_sort_ascending_descending_and_missing_values_last(two_runs, tmp_path, capsys):
    root = tmp_path / "r"
    shutil.copytree(two_runs, root)
    (root / "empty").mkdir()
    code, out, _ = cli(["runs", str(root), "--json", "--sort", "optimizer.learning_rate"], capsys)
    assert [r["name"] for r in json_lines(out)] == ["b", "a", "empty"]
    code, out, _ = cli(["runs", str(root), "--json", "--sort=-optimizer.learning_rate"], capsys)
    assert [r["name"] for r in json_lines(out)] == ["a", "b", "empty"]


def test_a_table_for_people(zoo, capsys, monkeypatch):
    monkeypatch.setattr("cnncli.report.console.is_interactive", lambda: True)
    code, out, err = cli(["runs", str(zoo), "--where", "steps=3"], capsys)
    assert code == 0
    assert "optimizer.learning_rate" in out and "finished" in out and "interrupted" in out and "0.001" in out
    assert "failed: failed: loss became nan" in err
    assert "over seeds" not in out  # no seeds to group


def test_runs_diff_side_by_side(two_runs, capsys):
    code, out, err = cli(["runs", "diff", str(two_runs / "a"), str(two_runs / "b"), "--json"], capsys)
    assert code == 0, err
    diff = json.loads(out)
    assert diff["recipe"] == {"optimizer.learning_rate": {"a": 0.01, "b": 0.001}}
    acc = diff["metrics"]["eval_accuracy"]
    assert acc["delta"] == pytest.approx(acc["b"] - acc["a"])
    assert diff["metrics"]["status"] == {"a": "finished", "b": "finished", "delta": None}
    assert {"steps", "best_eval_accuracy", "train_seconds", "images_per_second", "num_params"} <= set(diff["metrics"])
    code, _, err = cli(["runs", "diff", str(two_runs / "a"), str(two_runs)], capsys)
    assert code == 1 and "not a run directory" in err


def test_runs_diff_for_people(two_runs, capsys, monkeypatch):
    monkeypatch.setattr("cnncli.report.console.is_interactive", lambda: True)
    code, out, _ = cli(["runs", "diff", str(two_runs / "a"), str(two_runs / "b")], capsys)
    assert code == 0 and "optimizer.learning_rate" in out and "0.01" in out and "B - A" in out


def _entry(name, lr, seed, acc) -> RunEntry:
    return RunEntry(name, Path(name), "finished", eval_accuracy=acc, best_eval_accuracy=acc,
                    recipe={"optimizer.learning_rate": lr, "train.seed": seed, "train.steps": 3})  # fmt: skip


def test_seed_groups_give_mean_std_min_max_per_setting():
    entries = [_entry("a", 0.1, 0, 0.5), _entry("b", 0.1, 1, 0.7), _entry("c", 0.01, 0, 0.9), _entry("d", 0.01, 1, 0.9)]
    groups = group_by_seed(entries)
    assert [g.setting for g in groups] == [{"optimizer.learning_rate": 0.1}, {"optimizer.learning_rate": 0.01}]
    first = groups[0].stats["eval_accuracy"]
    assert (first.n, first.mean, first.min, first.max) == (2, pytest.approx(0.6), 0.5, 0.7)
    assert first.std == pytest.approx(0.1414, abs=1e-4)  # sample std
    assert groups[0].seeds == (0, 1) and groups[1].stats["eval_accuracy"].std == 0
    assert seeds_vary(entries) and not seeds_vary(entries[::2])  # one run per setting: nothing to average
    assert diff_runs(entries[0], entries[2]).recipe == [("optimizer.learning_rate", 0.1, 0.01)]


def test_training_marks_running_and_records_a_failure_but_not_an_interrupt(tmp_path):
    import numpy as np

    from cnncli.config.recipe import load_recipe
    from cnncli.errors import TrainingError
    from cnncli.train.events import StepEnd
    from cnncli.train.loop import fit

    seen = []

    def stop_at_first_step(event):
        if isinstance(event, StepEnd):
            seen.append(read_run(tmp_path / "ok").status)
            raise KeyboardInterrupt  # as a second Ctrl-C: no checkpoint waited for, not a failure

    recipe = write_recipe(tmp_path, STEPS3.replace("[train]", "[train]\nlog_every = 1"))
    with pytest.raises(KeyboardInterrupt):
        fit(load_recipe(recipe), tmp_path / "ok", on_event=stop_at_first_step)
    assert seen == ["running"]
    assert not (tmp_path / "ok" / "process.json").exists() and not (tmp_path / "ok" / "failure.json").exists()

    x = np.random.default_rng(0).normal(size=(64, 6, 6, 1)).astype(np.float32)
    x[5] = 3e38  # finite but huge pixels: a non-finite loss in the first batches (see test_train)
    np.savez(tmp_path / "inf.npz", x_train=x, y_train=np.arange(64) % 4, x_test=x[:8], y_test=np.arange(8) % 4)
    bad = write_recipe(tmp_path, TINY_RECIPE.replace('source = "digits"', 'source = "npz:inf.npz"\nnormalize = false')
                       .replace("batch_size = 64", "batch_size = 8"), name="bad.toml")  # fmt: skip
    with pytest.raises(TrainingError):
        fit(load_recipe(bad), tmp_path / "nan")
    entry = read_run(tmp_path / "nan")
    assert entry.status == "failed" and "loss became nan" in entry.failure["message"]
    assert entry.failure["error"] == "TrainingError" and not (tmp_path / "nan" / "process.json").exists()


def test_a_refused_resume_is_not_a_failed_run(two_runs, tmp_path):
    from cnncli.config.recipe import load_recipe
    from cnncli.errors import CheckpointError
    from cnncli.train.loop import fit

    run = tmp_path / "a"
    shutil.copytree(two_runs / "a", run)
    recipe = write_recipe(tmp_path, STEPS3)
    with pytest.raises(CheckpointError, match="different recipe"):
        fit(load_recipe(recipe, ["train.seed=5"]), run)
    assert read_run(run).status == "finished" and not (run / "failure.json").exists()


def test_catalogue_names_runs_relative_to_the_folder(two_runs, tmp_path):
    nested = tmp_path / "runs" / "sweep"
    shutil.copytree(two_runs, nested)
    assert [e.name for e in catalogue(tmp_path / "runs")] == ["sweep/a", "sweep/b"]
    assert [e.name for e in catalogue(nested / "a")] == ["a"]
