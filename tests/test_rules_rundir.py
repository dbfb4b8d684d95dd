"""Issue 18, rules 3, 4 and 6: the run directory.

3. Nothing half-written: a ``train`` that fails before its first step leaves no run
   directory (the fixed recipe trains into the same name), and a ``--workdir`` holding
   files that are not a run's, a file, or a path under a file is refused.
4. One writer per run directory: ``train.lock``; a second ``train`` exits 1 at once
   naming the process that holds it; the lock of a killed process is taken over.
6. ``RUN/checkpoints/STEP`` given to eval, predict and inspect-filters means that step.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import STEPS3, TINY_RECIPE, cli, json_lines, write_recipe

TIMEOUT = 300  # seconds for any one child process (a loaded 2-core machine)


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# ---------------------------------------------------------------- rule 3: nothing half-written


def test_a_train_failing_before_its_first_step_leaves_no_run_directory(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_recipe(tmp_path, STEPS3, "r.toml")
    code, out, err = cli(["train", "r.toml", "--set", "data.batch_size=5000"], capsys)  # fails after the data loads
    assert code == 1 and "larger than the training split" in err and "Traceback" not in err
    assert _tree(tmp_path) == ["r.toml"]  # no runs/r, no runs/ either


@pytest.mark.slow
def test_a_failed_compile_leaves_no_run_and_the_fixed_recipe_reuses_the_name(tmp_path, capsys, monkeypatch):
    from cnncli.errors import ShapeError

    monkeypatch.chdir(tmp_path)
    write_recipe(tmp_path, STEPS3, "r.toml")

    def refuse(*args, **kwargs):
        raise ShapeError("the step does not compile (planted)")

    with monkeypatch.context() as m:
        m.setattr("cnncli.train.loop.compile_program", refuse)
        code, _, err = cli(["train", "r.toml", "--json"], capsys)
    assert code == 1 and "the step does not compile (planted)" in err and "Traceback" not in err
    assert _tree(tmp_path) == ["r.toml"]
    code, out, err = cli(["train", "r.toml", "--json"], capsys)  # fixed: trains into runs/r, not runs/r-2
    assert code == 0, err
    assert json_lines(out)[-1]["workdir"] == str(Path("runs") / "r")
    assert sorted(os.listdir(tmp_path / "runs")) == ["r"]
    assert not (tmp_path / "runs" / "r" / "train.lock").read_text() == ""  # the lock names its last holder


def test_a_workdir_of_someone_elses_files_is_refused(tmp_path, capsys):
    recipe = write_recipe(tmp_path, STEPS3)
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "holiday.jpg").write_bytes(b"not a run")
    code, out, err = cli(["train", str(recipe), "--workdir", str(photos)], capsys)
    assert code == 1 and out == "" and "Traceback" not in err
    assert f"{photos} is not a run directory and not empty: it holds holiday.jpg" in err
    assert "--allow-nonempty-workdir" in err
    assert os.listdir(photos) == ["holiday.jpg"]
    code, _, err = cli(["train", str(recipe), "--workdir", str(photos), "--profile", "1"], capsys)
    assert code == 1 and "is not a run directory and not empty" in err and os.listdir(photos) == ["holiday.jpg"]


@pytest.mark.slow
def test_allow_nonempty_workdir_trains_among_the_files(tmp_path, capsys):
    recipe = write_recipe(tmp_path, STEPS3)
    notes = tmp_path / "w"
    notes.mkdir()
    (notes / "notes.txt").write_text("mine")
    code, out, err = cli(["train", str(recipe), "--workdir", str(notes), "--allow-nonempty-workdir", "--json"], capsys)
    assert code == 0, err
    assert (notes / "notes.txt").read_text() == "mine" and (notes / "summary.json").exists()
    code, out, err = cli(["train", str(recipe), "--workdir", str(notes), "--json"], capsys)  # now a run: no flag needed
    assert code == 0, err


@pytest.mark.parametrize("where", ["file", "under"])
def test_a_workdir_that_is_a_file_or_under_one_is_a_clean_error(tmp_path, capsys, where):
    recipe = write_recipe(tmp_path, STEPS3)
    blocker = tmp_path / "taken"
    blocker.write_text("keep me")
    workdir = blocker if where == "file" else blocker / "run"
    code, out, err = cli(["train", str(recipe), "--workdir", str(workdir)], capsys)
    assert code == 1 and out == "" and "Traceback" not in err
    message = "is a file" if where == "file" else f"lies under {blocker}, which is a file"
    assert f"run directory {workdir} {message}" in err
    assert blocker.read_text() == "keep me" and sorted(os.listdir(tmp_path)) == ["taken", "tiny.toml"]


def test_discard_keeps_a_run_that_trained(tmp_path):
    from cnncli.runs import layout

    run = tmp_path / "run"
    (run / "checkpoints" / "3").mkdir(parents=True)
    (run / "recipe.json").write_text("{}")
    assert not layout.discard_untrained(run, created=True)
    assert (run / "recipe.json").exists()
    (run / "checkpoints" / "3").rmdir()
    (run / "mine.txt").write_text("x")
    assert layout.discard_untrained(run, created=True)
    assert os.listdir(run) == ["mine.txt"]  # only what training writes is removed


# ---------------------------------------------------------------- rule 4: one writer per run directory

HOLD = """\
import sys, time
from pathlib import Path
from cnncli.runs.layout import lock_run
lock_run(Path(sys.argv[1]))
print("locked", flush=True)
time.sleep(600)
"""


def _holder(workdir: Path) -> subprocess.Popen:
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(workdir)], stdout=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)  # fmt: skip
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_writer_is_refused_naming_the_holder_and_a_dead_holders_lock_is_taken_over(tmp_path, capsys):
    from cnncli.errors import CnnCliError
    from cnncli.runs import layout

    workdir = tmp_path / "w"
    proc = _holder(workdir)
    try:
        with pytest.raises(CnnCliError) as info:
            layout.lock_run(workdir)
        assert f"is being trained by process {proc.pid} on {socket.gethostname()} since " in info.value.message
        recipe = write_recipe(tmp_path, STEPS3)
        start = time.monotonic()
        code, out, err = cli(["train", str(recipe), "--workdir", str(workdir), "--json"], capsys)
        assert code == 1 and out == "" and "Traceback" not in err
        assert f"{workdir} is being trained by process {proc.pid} on {socket.gethostname()}" in err
        assert time.monotonic() - start < 30  # at once: before the data loads or anything compiles
        assert os.listdir(workdir) == ["train.lock"]  # the holder's files are left alone
    finally:
        proc.kill()  # SIGKILL: no clean-up; the lock file stays, naming a dead process
        proc.wait()
    assert layout.lock_holder(workdir)["pid"] == proc.pid
    lock = layout.lock_run(workdir)  # stale: taken over
    try:
        assert layout.lock_holder(workdir)["pid"] == os.getpid()
        again = layout.lock_run(workdir)  # the same process may take it again (counted)
        again.release()
    finally:
        lock.release()


@pytest.mark.slow
def test_two_train_processes_into_one_workdir(tmp_path):
    recipe = write_recipe(tmp_path, TINY_RECIPE.replace("epochs = 2", "epochs = 400"))
    workdir = tmp_path / "w"

    def train() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "cnncli.cli.app", "train", str(recipe), "--workdir", str(workdir),
                                 "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL)  # fmt: skip

    first = train()
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (workdir / "metrics.jsonl").exists():  # the first one trains
            assert first.poll() is None, first.communicate()[1]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        second = train()
        out, err = second.communicate(timeout=TIMEOUT)
        assert second.returncode == 1 and out == "" and "Traceback" not in err
        assert f"is being trained by process {first.pid} on {socket.gethostname()}" in err
        assert first.poll() is None  # the first one is unharmed
        first.send_signal(signal.SIGTERM)  # it saves a checkpoint and stops
        out, err = first.communicate(timeout=TIMEOUT)
        assert first.returncode == 143, err
    finally:
        first.kill()
    epochs = [json.loads(line)["epoch"] for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert epochs == sorted(set(epochs))  # no epoch written twice


# ---------------------------------------------------------------- rule 6: what a path says is what is used


def test_a_checkpoint_path_means_that_step(trained_run, tmp_path, capsys):
    steps = sorted(int(p.name) for p in (trained_run / "checkpoints").iterdir() if p.name.isdigit())
    first, latest = steps[0], steps[-1]
    assert first < latest
    path = str(trained_run / "checkpoints" / str(first))

    code, out, err = cli(["eval", path, "--json", "--out", str(tmp_path / "a")], capsys)
    assert code == 0, err
    by_path = json.loads(out)
    code, out, _ = cli(["eval", str(trained_run), "--checkpoint", str(first), "--json", "--out", str(tmp_path / "b")],
                       capsys)  # fmt: skip
    by_step = json.loads(out)
    code, out, _ = cli(["eval", str(trained_run), "--json", "--out", str(tmp_path / "c")], capsys)
    by_latest = json.loads(out)
    assert by_path["checkpoint_step"] == by_step["checkpoint_step"] == first != by_latest["checkpoint_step"]
    assert by_path["loss"] == by_step["loss"] != by_latest["loss"]
    assert by_path["confusion"] == by_step["confusion"]

    image = tmp_path / "x.npy"
    np.save(image, np.full((8, 8, 1), 7.0, np.float32))
    predictions = {}
    for name, args in (("path", [path]), ("step", [str(trained_run), "-c", str(first)]), ("latest", [str(trained_run)])):
        code, out, err = cli(["predict", *args, str(image), "--json"], capsys)
        assert code == 0, err
        predictions[name] = json.loads(out)
    assert predictions["path"] == predictions["step"] != predictions["latest"]
    assert predictions["path"]["checkpoint_step"] == first

    code, out, err = cli(["inspect-filters", path, "--list", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["checkpoint_step"] == first


def test_a_checkpoint_path_and_another_checkpoint_option_disagree(trained_run, capsys):
    steps = sorted(int(p.name) for p in (trained_run / "checkpoints").iterdir() if p.name.isdigit())
    path = trained_run / "checkpoints" / str(steps[0])
    code, out, err = cli(["eval", str(path), "--checkpoint", "best", "--json"], capsys)
    assert code == 2 and out == "" and "Traceback" not in err
    assert f"{path} is the checkpoint of step {steps[0]}, but --checkpoint says best" in err
    code, _, err = cli(["eval", str(trained_run / "checkpoints"), "--json"], capsys)
    assert code == 1 and "is not a checkpoint of the run" in err and "Traceback" not in err
