"""Streamed training end to end: the in-memory weights, kill -9 and resume, evaluation, bad files.

Slow: real runs (each pays JAX's start-up and a compile; grain's workers take seconds to
start). The digits are written as an uncompressed npz and as a folder of PNGs, so the
same 1,438 examples can be trained in memory and streamed.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import TINY_RECIPE, state_digest, write_recipe

from cnncli.runs import checkpoint_fs as fs

pytestmark = pytest.mark.slow
TIMEOUT = 300  # seconds for any one cnncli process (a loaded 2-core machine)


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> dict[str, Path]:
    """The digits as ``npz`` (uncompressed: it streams) and as ``folder`` (8x8 grey PNGs)."""
    from PIL import Image

    from cnncli.data.sources import load_split

    root = tmp_path_factory.mktemp("digits")
    train, _, _ = load_split("digits", "train")
    test, _, _ = load_split("digits", "test")
    np.savez(root / "digits.npz", x_train=train.x, y_train=train.y, x_test=test.x, y_test=test.y)
    for split, data in (("train", train), ("test", test)):
        for i, (x, y) in enumerate(zip(data.x, data.y)):
            folder = root / "folder" / split / f"d{y}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(x[..., 0]).save(folder / f"{i:04d}.png")
    return {"npz": root / "digits.npz", "folder": root / "folder"}


def recipe_for(directory: Path, source: str, extra: str = "") -> Path:
    text = TINY_RECIPE.replace('source = "digits"', f'source = "{source}"')
    return write_recipe(directory, text.replace("[model]", extra + "\n[model]"))


def fit_here(recipe: Path, workdir: Path, *overrides: str) -> dict:
    from cnncli.config.recipe import load_recipe
    from cnncli.train.loop import fit

    return fit(load_recipe(recipe, list(overrides)), workdir, recipe_text=recipe.read_text())


def test_streamed_runs_end_with_the_in_memory_weights_whatever_the_worker_count(tmp_path, digits):
    recipe = recipe_for(tmp_path, f"npz:{digits['npz']}")
    memory = fit_here(recipe, tmp_path / "memory", "data.pipeline=memory")
    streamed = fit_here(recipe, tmp_path / "w0", "data.pipeline=stream", "data.workers=0")
    workers = fit_here(recipe, tmp_path / "w2", "data.pipeline=stream", "data.workers=2")
    assert memory["data_pipeline"]["kind"] == "memory" and streamed["data_pipeline"]["kind"] == "stream"
    assert workers["data_pipeline"]["workers"] == 2
    for key in ("train_loss", "eval_loss", "eval_accuracy"):
        assert memory[key] == streamed[key] == workers[key], key
    assert state_digest(tmp_path / "memory") == state_digest(tmp_path / "w0") == state_digest(tmp_path / "w2")
    env = json.loads((tmp_path / "w2" / "env.json").read_text())
    assert env["data_pipeline"]["reason"] == "data.pipeline = 'stream'"


def test_a_folder_over_its_budget_streams_and_evaluates_to_what_training_logged(tmp_path, digits, capsys):
    from helpers import cli

    recipe = recipe_for(
        tmp_path, f"folder:{digits['folder']}", "memory_budget_mb = 1\nworkers = 1\nimage_size = 32\nchannels = 1"
    )
    summary = fit_here(recipe, tmp_path / "run")
    assert summary["data_pipeline"]["kind"] == "stream"
    assert summary["data_pipeline"]["reason"].startswith("over data.memory_budget_mb = 1: train")
    code, out, err = cli(["eval", str(tmp_path / "run"), "--json", "--worst", "4"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["accuracy"] == pytest.approx(summary["eval_accuracy"], abs=1e-12)
    assert result["num_examples"] == 359 and len(result["worst"]) == 4
    assert (tmp_path / "run" / "eval" / "test" / "worst.png").exists()
    code, out, err = cli(["inspect-filters", str(tmp_path / "run"), "--patches", "--examples", "64", "--json",
                          "--out", str(tmp_path / "filters")], capsys)  # fmt: skip
    assert code == 0, err
    assert (tmp_path / "filters" / "patches.png").exists()


def cnncli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cnncli.cli.app", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def children(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found |= {int(c) for c in (task / "children").read_text().split()}
        except OSError:
            pass
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("seed", [0])
def test_kill_9_mid_epoch_with_workers_running_resumes_to_identical_weights(tmp_path, digits, seed):
    # a folder over its budget (28x28 gray: 1438 x 784 bytes > 1 MiB), so the default pipeline ("auto") streams it
    extra = "memory_budget_mb = 1\nworkers = 2\nimage_size = 28\nchannels = 1"
    recipe = recipe_for(tmp_path, f"folder:{digits['folder']}", extra)
    train = ["train", str(recipe), "--workdir", str(tmp_path / "w"), "--json",
             "--set", "train.checkpoint_every_steps=3", "--set", "train.log_every=1"]  # fmt: skip
    straight = fit_here(recipe, tmp_path / "straight", "train.checkpoint_every_steps=3")
    assert straight["data_pipeline"]["kind"] == "stream"
    assert straight["data_pipeline"]["reason"].startswith("over data.memory_budget_mb = 1")
    proc = cnncli(*train)
    deadline = time.monotonic() + TIMEOUT
    while not fs.committed_steps(tmp_path / "w" / "checkpoints"):
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    time.sleep(random.Random(seed).uniform(0.0, 0.5))
    workers = children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == -signal.SIGKILL
    steps = fs.committed_steps(tmp_path / "w" / "checkpoints")
    assert steps[-1] % 22, f"killed mid-epoch: the last checkpoint {steps[-1]} is not an epoch's end"
    deadline = time.monotonic() + 10
    while any(alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in workers if alive(p)], "grain's workers outlived the killed trainer"
    resumed = subprocess.run([sys.executable, "-m", "cnncli.cli.app", *train], capture_output=True, text=True,
                             timeout=TIMEOUT)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads(resumed.stdout.splitlines()[-1])
    assert summary["resumed_from"]["step"] == steps[-1]
    assert summary["eval_accuracy"] == straight["eval_accuracy"]
    assert state_digest(tmp_path / "w") == state_digest(tmp_path / "straight")


def test_unreadable_files_met_mid_stream_are_counted_in_the_summary_and_strict_stops(tmp_path, digits):
    import shutil

    root = tmp_path / "folder"
    shutil.copytree(digits["folder"], root)
    for name in ("0003.png", "0010.png"):
        bad = next(root.glob(f"train/*/{name}"))
        bad.write_bytes(bad.read_bytes()[:40])  # truncated: the header reads, decoding fails
    extra = 'pipeline = "stream"\nworkers = 0\nimage_size = 8\nchannels = 1'
    recipe = recipe_for(tmp_path, f"folder:{root}", extra)
    summary = fit_here(recipe, tmp_path / "run", "train.epochs=1")
    (warning,) = [w for w in summary["warnings"] if "unreadable" in w]
    assert "skipped 2 unreadable examples while streaming" in warning and "0003.png" in warning
    from cnncli.errors import DataError

    with pytest.raises(DataError, match=r"cannot read .*00(03|10)\.png"):
        fit_here(recipe, tmp_path / "strict", "train.epochs=1", "data.strict=true")


SHARD_PROBE = """
import dataclasses, json, sys
from pathlib import Path
from cnncli.runtime.distributed import initialize
initialize(sys.argv[3], 2, int(sys.argv[4]))
from cnncli.config.recipe import load_recipe
from cnncli.train.session import build_session

class Recorder:  # the examples this process really reads
    def __init__(self, records):
        self.records, self.read = records, []
    def __len__(self):
        return len(self.records)
    def __getitem__(self, i):
        self.read.append(int(i))
        return self.records[i]

sess = build_session(load_recipe(sys.argv[1], ["data.pipeline=stream", "data.workers=0"]), Path(sys.argv[2]))
recorder = sess.stream.split.records = Recorder(sess.stream.split.records)
stream = dataclasses.replace(sess.stream, epochs=1)  # one epoch: the pipeline reads none of the next one ahead
shapes = [x.shape for x, y, key in stream.epoch(0, 0)]
evaluation = sess.data.eval
evaluation.records = Recorder(evaluation.records)
eval_shapes = [x.shape for x, y, mask in stream.eval_batches(evaluation, 64)]
print(json.dumps({"rows": list(stream.rows), "read": recorder.read, "global_batch": list(shapes[0]),
                  "order": stream.order(0).tolist(), "steps": len(shapes), "eval_read": evaluation.records.read,
                  "eval_batch": list(eval_shapes[0]), "eval_size": len(evaluation.records)}))
sess.checkpoints.close()
"""


def two_processes(args_of, tmp_path) -> list[str]:
    from helpers import free_port
    from test_distributed import env_with

    port = free_port()
    procs = [subprocess.Popen(args_of(i, port), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env_with(None)) for i in range(2)]  # fmt: skip
    try:
        outs = [p.communicate(timeout=TIMEOUT) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    return [out for out, _ in outs]


def test_two_processes_each_read_their_half_of_every_batch_and_train_as_one(tmp_path, digits):
    from test_distributed import SGD, assert_close, params_of

    recipe = recipe_for(tmp_path, f"npz:{digits['npz']}")
    probe = tmp_path / "probe.py"
    probe.write_text(SHARD_PROBE)
    outs = two_processes(
        lambda i, port: [sys.executable, str(probe), str(recipe), str(tmp_path / "p"), f"127.0.0.1:{port}", str(i)],
        tmp_path,
    )
    first, second = (json.loads(out.strip().splitlines()[-1]) for out in outs)
    assert first["rows"] == [0, 32] and second["rows"] == [32, 64] and first["global_batch"] == [64, 8, 8, 1]
    assert not set(first["read"]) & set(second["read"]), "no process decodes another's examples"
    epoch = first["order"][: first["steps"] * 64]
    assert sorted(first["read"] + second["read"]) == sorted(epoch) and first["order"] == second["order"]
    assert first["eval_batch"] == [64, 8, 8, 1] and not set(first["eval_read"]) & set(second["eval_read"])
    assert sorted(first["eval_read"] + second["eval_read"]) == list(range(first["eval_size"]))

    steps = [
        "--set",
        "train.epochs=null",
        "--set",
        "train.steps=8",
        "--set",
        "data.pipeline=stream",
        "--set",
        "data.workers=1",
    ]
    one = subprocess.run([sys.executable, "-m", "cnncli.cli.app", "train", str(recipe), "--workdir", str(tmp_path / "one"),
                          "--json", *SGD, *steps], capture_output=True, text=True, timeout=TIMEOUT)  # fmt: skip
    assert one.returncode == 0, one.stderr[-2000:]
    outs = two_processes(lambda i, port: [sys.executable, "-m", "cnncli.cli.app", "train", str(recipe), "--workdir",
                                          str(tmp_path / "two"), "--json", *SGD, *steps, "--coordinator", f"127.0.0.1:{port}",
                                          "--num-processes", "2", "--process-id", str(i)], tmp_path)  # fmt: skip
    summary = json.loads(outs[0].strip().splitlines()[-1])
    assert summary["processes"] == 2 and summary["data_pipeline"]["kind"] == "stream"
    single = json.loads(one.stdout.splitlines()[-1])
    assert summary["train_loss"] == pytest.approx(single["train_loss"], rel=1e-5)
    # each process read only its rows of every evaluation batch too: the sums over the mesh are one process's
    assert summary["eval_accuracy"] == pytest.approx(single["eval_accuracy"], abs=1e-6)
    assert summary["eval_loss"] == pytest.approx(single["eval_loss"], rel=1e-5)
    assert_close(params_of(tmp_path / "one"), params_of(tmp_path / "two"))


def test_peak_memory_of_a_streamed_run_stays_flat_when_the_data_doubles(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "stream_memory", Path(__file__).parents[1] / "benchmarks" / "stream_memory.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    small = bench.measure(tmp_path, 1456, 64, budget_mb=4, workers=1)  # 17 MiB of pixels: 4x the budget
    large = bench.measure(tmp_path, 2912, 64, budget_mb=4, workers=1)
    assert small["pipeline"] == large["pipeline"] == "stream"
    assert large["peak_rss_mib"] < 1.10 * small["peak_rss_mib"], (small, large)
    assert large["peak_rss_mib"] < 1536, "trainer and worker together stay under 1.5 GiB"


def test_the_imagenette_recipe_streams_end_to_end_under_mock_data(tmp_path):
    import math

    import tensorflow_datasets as tfds

    path = Path(__file__).resolve().parents[1] / "recipes" / "imagenette.toml"
    header = path.read_text().split("\n\n", 1)[0]
    assert "# Run:" in header and "# Result:  NOT TRAINED HERE" in header
    short = ["train.epochs=1", "data.batch_size=4", "data.eval_batch_size=8", "data.workers=0",  # mock data: this process
             "data.image_size=[32, 32]", "data.pipeline=stream", "model.arch=resnet20"]  # fmt: skip
    with tfds.testing.mock_data(num_examples=24):
        summary = fit_here(path, tmp_path / "run", *short)
    assert summary["data_pipeline"]["kind"] == "stream" and summary["steps"] == 6
    assert math.isfinite(summary["train_loss"]) and 0.0 <= summary["eval_accuracy"] <= 1.0
