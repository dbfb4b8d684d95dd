"""Scaling out on CPU: 4 forced devices, a (data, model) mesh, and two real processes.

Every case runs in subprocesses, because the device count is fixed when a process first
touches JAX (``XLA_FLAGS=--xla_force_host_platform_device_count=N``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from helpers import TINY_RECIPE, free_port, write_recipe

TIMEOUT = 240  # seconds per subprocess: import + compile + a few steps on 2 loaded cores


def env_with(devices: int | None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    if devices:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


# SGD with momentum: under Adam, a conv bias followed by batch norm has a zero gradient in
# exact arithmetic, so Adam's normalization turns float noise into full-size steps and
# two correct runs diverge; with SGD that noise stays at float precision.
SGD = ["--set", "optimizer.name=momentum", "--set", "optimizer.learning_rate=0.05"]


def train(recipe, workdir, *, devices=None, extra=()):
    cmd = [sys.executable, "-m", "cnncli.cli.app", "train", str(recipe), "--workdir", str(workdir), "--json", *SGD, *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, env=env_with(devices))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def params_of(workdir) -> dict[str, np.ndarray]:
    """The final parameters, restored on this (single-device) process."""
    from flax import nnx

    from cnncli.runs.checkpoint import flat_tree, to_tree
    from cnncli.runs.load import load_run

    return flat_tree(to_tree(nnx.state(load_run(workdir).model, nnx.Param)))


def assert_close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=2e-4, atol=2e-5, err_msg=key)


@pytest.mark.slow
def test_four_devices_match_one_and_restore_on_one(tmp_path):
    recipe = write_recipe(tmp_path, TINY_RECIPE)
    one = train(recipe, tmp_path / "one", extra=["--set", "train.epochs=1"])
    four = train(recipe, tmp_path / "four", devices=4, extra=["--set", "train.epochs=1"])
    assert one["devices"] == 1 and four["devices"] == 4 and four["mesh"] == {"data": 4, "model": 1}
    assert four["steps"] == one["steps"] == 1438 // 64
    assert four["train_loss"] == pytest.approx(one["train_loss"], rel=1e-5)
    assert_close(params_of(tmp_path / "one"), params_of(tmp_path / "four"))  # saved on 4, restored on 1
    env = json.loads((tmp_path / "four" / "env.json").read_text())
    assert env["mesh"] == {"axes": {"data": 4, "model": 1}, "devices": 4, "processes": 1}


@pytest.mark.slow
def test_a_model_axis_splits_dense_kernels_and_still_matches(tmp_path):
    recipe = write_recipe(tmp_path, TINY_RECIPE)
    train(recipe, tmp_path / "one", extra=["--set", "train.epochs=null", "--set", "train.steps=6"])
    mesh = train(recipe, tmp_path / "mesh", devices=4, extra=["--set", "train.epochs=null", "--set", "train.steps=6", "--set", "train.mesh={data = 2, model = 2}"])
    assert mesh["mesh"] == {"data": 2, "model": 2}
    assert_close(params_of(tmp_path / "one"), params_of(tmp_path / "mesh"))


SHARDING_PROBE = textwrap.dedent(
    """
    import json, sys
    import jax
    from cnncli.config.recipe import load_recipe
    from cnncli.train.resume import initial_state
    from cnncli.train.session import build_session, compile_program
    from cnncli.train.step import gather_batch
    from pathlib import Path

    sess = build_session(load_recipe(sys.argv[1], ["train.epochs=null", "train.steps=2"]), Path(sys.argv[2]))
    start = initial_state(sess)
    program = compile_program(sess, start.state, start.shardings)
    leaves = jax.tree.leaves(start.state)
    feed = sess.feed
    x_all, y_all, perm, index, _ = feed.args(feed.permutation(0), 0)
    batch, labels = jax.jit(lambda *a: gather_batch(*a, program.config))(x_all, y_all, perm, index)
    shards = sorted(s.data.shape[0] for s in batch.addressable_shards)
    print(json.dumps({
        "devices": len(jax.devices()),
        "state_replicated": all(x.sharding.is_fully_replicated for x in leaves),
        "state_devices": sorted({len(x.sharding.device_set) for x in leaves}),
        "data_replicated": feed.x.sharding.is_fully_replicated,
        "batch_spec": str(batch.sharding.spec), "batch_shards": shards, "labels_spec": str(labels.sharding.spec),
        "step_input_replicated": all(s.is_fully_replicated for s in jax.tree.leaves(program.train_step.input_shardings[0][0])),
    }))
    sess.checkpoints.close()
    """
)


def test_on_four_devices_params_are_replicated_and_the_batch_is_split(tmp_path):
    recipe = write_recipe(tmp_path, TINY_RECIPE)
    probe = tmp_path / "probe.py"
    probe.write_text(SHARDING_PROBE)
    proc = subprocess.run([sys.executable, str(probe), str(recipe), str(tmp_path / "run")], capture_output=True,
                          text=True, timeout=TIMEOUT, env=env_with(4))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    facts = json.loads(proc.stdout.strip().splitlines()[-1])
    assert facts == {
        "devices": 4,
        "state_replicated": True,
        "state_devices": [4],
        "data_replicated": True,
        "batch_spec": "P('data',)",
        "batch_shards": [16, 16, 16, 16],  # the global batch of 64, a quarter per device
        "labels_spec": "P('data',)",
        "step_input_replicated": True,
    }


def test_a_batch_that_does_not_split_names_the_nearest_sizes(tmp_path):
    recipe = write_recipe(tmp_path, TINY_RECIPE)
    cmd = [sys.executable, "-m", "cnncli.cli.app", "train", str(recipe), "--workdir", str(tmp_path / "w"), "--set", "data.batch_size=62"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, env=env_with(4))
    assert proc.returncode == 2  # a --set value that does not fit this machine: a usage error naming the --set
    assert "error: --set data.batch_size=62: data.batch_size = 62 does not split over 4 devices" in proc.stderr
    assert "use a multiple of 4: 60, 64" in proc.stderr
    assert not (tmp_path / "w").exists()  # refused before the run directory is written


@pytest.mark.slow
def test_two_processes_over_loopback_agree_with_one(tmp_path):
    recipe = write_recipe(tmp_path, TINY_RECIPE)
    one = train(recipe, tmp_path / "one", extra=["--set", "train.epochs=null", "--set", "train.steps=8"])
    port = free_port()
    workdir = tmp_path / "two"
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "cnncli.cli.app", "train", str(recipe), "--workdir", str(workdir), "--json",
             *SGD, "--set", "train.epochs=null", "--set", "train.steps=8", "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
             "--process-id", str(i)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env_with(None),
        )  # fmt: skip
        for i in range(2)
    ]
    try:
        outs = [p.communicate(timeout=TIMEOUT) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    summary = json.loads(outs[0][0].strip().splitlines()[-1])
    # only process 0 prints results (gloo's own "[Gloo] Rank 1 is connected" line aside)
    assert not [line for line in outs[1][0].splitlines() if line.startswith("{")]
    assert summary["processes"] == 2 and summary["devices"] == 2 and summary["steps"] == 8
    assert summary["train_loss"] == pytest.approx(one["train_loss"], rel=1e-5)
    assert_close(params_of(tmp_path / "one"), params_of(workdir))


def test_a_mesh_larger_than_the_machine_is_a_recipe_error(tmp_path, capsys):
    from cnncli.cli.app import main

    recipe = write_recipe(tmp_path, TINY_RECIPE)
    with pytest.raises(SystemExit) as info:
        main(["train", str(recipe), "--workdir", str(tmp_path / "w"), "--set", "train.mesh={data = 3}", "--json"])
    err = capsys.readouterr().err
    assert info.value.code == 2  # from a --set: a usage error naming it
    assert "error: --set train.mesh={data = 3}: train.mesh = {data = 3, model = 1} needs 3 devices; JAX sees 1" in err
    assert not (tmp_path / "w").exists()
