"""Real processes, real signals: `kill -9`, SIGINT and SIGTERM against `cnncli train`.

Each test kills or interrupts a `cnncli train` subprocess, checks what is on disk, then
resumes to the end and compares a sha256 over every array with `straight_run`, the
same recipe trained without a break. Slow (each process pays the jax start-up).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import RESUME_RECIPE, state_digest, write_recipe

from cnncli.runs import checkpoint_fs as fs
from cnncli.runs.checkpoint import Checkpoints

pytestmark = pytest.mark.slow
TIMEOUT = 300  # seconds for any one cnncli process (a loaded 2-core machine)


def cnncli(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cnncli.cli.app", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=os.environ | (env or {}))  # fmt: skip


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
    return proc.returncode, out, err


def train(tmp_path: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    recipe = write_recipe(tmp_path, RESUME_RECIPE)
    return cnncli("train", str(recipe), "--workdir", str(tmp_path / "w"), "--json", *extra, env=env)


def wait_for_checkpoint(proc: subprocess.Popen, directory: Path) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not fs.committed_steps(directory):
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)


def resume_to_the_end(tmp_path: Path) -> dict:
    code, out, err = finish(train(tmp_path))
    assert code == 0, err
    return json.loads(out.splitlines()[-1])


@pytest.mark.parametrize("point, keep, committed", [
    ("before_write@20", 10, 10),
    ("after_state_write@20", 10, 10),
    ("before_commit@20", 10, 10),
    ("after_commit@20", 10, 20),
    ("during_prune@10", 1, 20),  # keep=1: committing 20 removes 10, killed midway
])  # fmt: skip
def test_kill_9_at_a_named_point_of_a_save(tmp_path, straight_run, point, keep, committed):
    code, _, err = finish(train(tmp_path, "--set", f"train.keep={keep}", env={fs.FAULT_ENV: point}))
    assert code == -signal.SIGKILL, err
    store = Checkpoints(tmp_path / "w" / "checkpoints", keep=keep, async_save=False)
    assert store.latest() == committed  # the partial save is never chosen
    assert not (tmp_path / "w" / "checkpoints" / fs.TRASH).exists()  # a half-done prune is finished on open
    store.close()
    assert state_digest(tmp_path / "w") == state_digest(straight_run, committed)
    summary = resume_to_the_end(tmp_path)
    assert summary["resumed_from"]["step"] == committed
    assert state_digest(tmp_path / "w") == state_digest(straight_run)


@pytest.mark.parametrize("seed", [0, 1])
def test_kill_9_from_outside_at_a_random_moment(tmp_path, straight_run, seed):
    proc = train(tmp_path, "--set", "train.checkpoint_every_steps=1")  # a save per step: about 3 s of saving
    wait_for_checkpoint(proc, tmp_path / "w" / "checkpoints")
    time.sleep(random.Random(seed).uniform(0.0, 1.0))
    proc.send_signal(signal.SIGKILL)
    code, _, _ = finish(proc)
    assert code == -signal.SIGKILL
    assert resume_to_the_end(tmp_path)["resumed_from"] is not None
    assert state_digest(tmp_path / "w") == state_digest(straight_run)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_saves_at_the_interrupted_step_and_exits_with_its_code(tmp_path, straight_run, sig, code):
    proc = train(tmp_path, "--set", "train.checkpoint_every_steps=1")
    wait_for_checkpoint(proc, tmp_path / "w" / "checkpoints")
    proc.send_signal(sig)
    returncode, _, err = finish(proc)
    assert returncode == code, err
    step = fs.committed_steps(tmp_path / "w" / "checkpoints")[-1]
    name = signal.Signals(sig).name
    assert f"{name}: stopped after step {step}; checkpoint saved in {(tmp_path / 'w' / 'checkpoints').resolve() / str(step)}" in err
    assert step < 44
    assert resume_to_the_end(tmp_path)["resumed_from"]["step"] == step
    assert state_digest(tmp_path / "w") == state_digest(straight_run)


def test_a_second_sigint_aborts_at_once(tmp_path, straight_run):
    proc = train(tmp_path, "--set", "train.checkpoint_every_steps=1")
    wait_for_checkpoint(proc, tmp_path / "w" / "checkpoints")
    proc.send_signal(signal.SIGINT)
    time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    t0 = time.monotonic()
    code, _, err = finish(proc)
    assert code == 130 and time.monotonic() - t0 < 10, err
    assert "error: interrupted twice: aborted without waiting" in err  # not a finished save-and-exit
    resume_to_the_end(tmp_path)
    assert state_digest(tmp_path / "w") == state_digest(straight_run)
