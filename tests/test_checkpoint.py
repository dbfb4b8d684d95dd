"""Checkpoints: round trip, retention, checksums, atomic commit, injected save failures.

Failures are injected with the test-only fault hook (``CNNCLI_FAULT``): tests run as
root here, and chmod does not stop root from writing.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnncli.errors import CheckpointError
from cnncli.runs import checkpoint_fs as fs
from cnncli.runs.checkpoint import (
    Checkpoints,
    digests,
    from_tree,
    state_nbytes,
    to_tree,
    tree_digest,
)


def state(value: float = 1.0):
    return {
        "params": {"conv1": {"kernel": jnp.full((3, 3, 1, 2), value)}, "dense1": {"bias": jnp.zeros(2)}},
        "opt": (jnp.array([value, 2.0]), {"count": jnp.int32(7)}),
        "key": jax.random.key(3),
        "step": jnp.int32(5),
    }


def test_tree_round_trip_with_typed_keys():
    s = state(2.5)
    tree = to_tree(s)
    assert tree["params"]["conv1"]["kernel"].shape == (3, 3, 1, 2)
    assert tree["key"].dtype == np.uint32  # raw key data
    back = from_tree(state(0.0), tree)
    assert float(back["params"]["conv1"]["kernel"][0, 0, 0, 0]) == 2.5
    assert jnp.array_equal(jax.random.key_data(back["key"]), jax.random.key_data(s["key"]))


def test_save_restore_and_retention(tmp_path):
    store = Checkpoints(tmp_path / "ck", keep=2)
    for step, acc in [(10, 0.5), (20, 0.9), (30, 0.6), (40, 0.7)]:
        store.save(step, state(step), {"metrics": {"eval_accuracy": acc}, "epoch": step // 10, "index": 0})
    store.wait()
    assert store.steps() == [20, 30, 40]  # last two, plus the best (20)
    assert store.latest() == 40 and store.best() == 20
    assert store.resolve("best") == 20 and store.resolve("latest") == 40 and store.resolve("30") == 30
    restored, meta = store.restore(30, state(0.0))
    assert float(restored["params"]["conv1"]["kernel"][0, 0, 0, 0]) == 30.0
    assert meta["epoch"] == 3 and meta["step"] == 30
    store.close()
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["20", "30", "40"]  # no empty .deleting/ left


def test_unknown_step_lists_committed_steps(tmp_path):
    store = Checkpoints(tmp_path / "ck", keep=2, async_save=False)
    store.save(1, state(), {})
    with pytest.raises(CheckpointError, match=r"(?s)no checkpoint at step 5 .*committed steps: \[1\]"):
        store.resolve(5)
    with pytest.raises(CheckpointError, match="expected latest, best or a step number"):
        store.resolve("newest")
    store.close()


def _flip_a_byte(step_dir):
    """Flip one byte in the middle of the checkpoint's largest array data file; return the file."""
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    target = max(files, key=lambda p: p.stat().st_size)
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    return target


def test_flipped_byte_is_detected(tmp_path):
    store = Checkpoints(tmp_path / "ck", keep=2, async_save=False)
    big = state()
    big["params"]["conv1"]["kernel"] = jnp.arange(4096.0).reshape(8, 8, 8, 8)
    store.save(1, big, {})
    store.close()
    target = _flip_a_byte(tmp_path / "ck" / "1")
    store = Checkpoints(tmp_path / "ck", keep=2, async_save=False)
    with pytest.raises(CheckpointError) as info:
        store.restore(1, big)
    assert f"checkpoint {tmp_path / 'ck' / '1'} is corrupt" in str(info.value)
    assert f"damaged: {target}: contents changed (sha256 mismatch)" in str(info.value)
    store.close()


def test_shape_mismatch_is_an_error():
    tree = to_tree(state())
    other = state()
    other["params"]["conv1"]["kernel"] = jnp.zeros((5, 5, 1, 2))
    with pytest.raises(CheckpointError, match=r"params/conv1/kernel has shape \(3, 3, 1, 2\), model expects \(5, 5, 1, 2\)"):
        from_tree(other, tree)


def test_digests_change_with_content():
    a = digests(to_tree(state(1.0)))
    b = digests(to_tree(state(1.0)))
    c = digests(to_tree(state(1.5)))
    assert a == b and a != c and "params/conv1/kernel" in a


def saved(tmp_path, steps=(1,), keep=1, async_save=False, **kw):
    store = Checkpoints(tmp_path / "ck", keep=keep, async_save=async_save, **kw)
    for step in steps:
        store.save(step, state(float(step)), {"epoch": 0, "index": step})
    store.wait()
    return store


def test_truncated_file_and_broken_metadata_are_errors_naming_the_file(tmp_path):
    saved(tmp_path).close()
    data = max((tmp_path / "ck" / "1").rglob("d/*"), key=lambda p: p.stat().st_size)
    size = data.stat().st_size
    data.write_bytes(data.read_bytes()[: size // 2])
    store = Checkpoints(tmp_path / "ck", async_save=False)
    with pytest.raises(CheckpointError, match=f"damaged: {data}: {size // 2} of {size} bytes \\(truncated\\)"):
        store.restore_tree(1)
    meta = tmp_path / "ck" / "1" / "meta" / "metadata"
    meta.write_text(meta.read_text()[:-7])
    with pytest.raises(CheckpointError, match=f"is corrupt: {meta} is unreadable"):
        store.restore_tree(1)
    store.close()


@pytest.mark.parametrize("async_save", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("fault, reason", [
    ("before_write:enospc", "No space left on device"),
    ("after_state_write:eacces", "Permission denied"),
    ("before_commit:eio", "Input/output error"),
])  # fmt: skip
def test_a_failed_save_stops_with_path_and_reason_and_keeps_the_previous_step(tmp_path, monkeypatch, fault, reason, async_save):
    store = saved(tmp_path, async_save=async_save)
    before = tree_digest(store.restore_tree(1)[0])
    monkeypatch.setenv(fs.FAULT_ENV, f"{fault}@2")
    with pytest.raises(CheckpointError) as info:
        store.save(2, state(2.0), {"epoch": 0, "index": 2})
        store.wait()  # async: the failure happens in the background and is raised here
    message = str(info.value)
    assert f"saving checkpoint step 2 in {tmp_path / 'ck'} failed: {reason}" in message
    assert "the last committed checkpoint, step 1, is intact" in message
    for again in (store.wait, store.poll, lambda: store.save(3, state(), {})):  # never swallowed
        with pytest.raises(CheckpointError, match="saving checkpoint step 2"):
            again()
    monkeypatch.delenv(fs.FAULT_ENV)
    reopened = Checkpoints(tmp_path / "ck", keep=1, async_save=False)
    assert reopened.steps() == [1] and tree_digest(reopened.restore_tree(1)[0]) == before
    if not fault.startswith("before_write"):  # the uncommitted directory is ignored and reported
        assert any("2.orbax-checkpoint-tmp: an unfinished save" in w for w in reopened.warnings)
    reopened.close()


def test_a_background_failure_is_raised_by_poll_without_waiting_for_a_save(tmp_path, monkeypatch):
    store = saved(tmp_path, async_save=True)
    monkeypatch.setenv(fs.FAULT_ENV, "before_commit:enospc@2")
    store.save(2, state(), {})  # returns at once: the write goes on in the background
    deadline = time.monotonic() + 30
    with pytest.raises(CheckpointError, match="No space left on device"):
        while time.monotonic() < deadline:
            store.poll()
            time.sleep(0.01)
    with pytest.raises(CheckpointError):
        store.close()


def test_keep_removes_old_steps_only_after_the_new_one_commits(tmp_path, monkeypatch):
    seen = []
    real = fs.discard

    def spy(directory, step):
        seen.append((step, fs.committed_steps(directory)))
        return real(directory, step)

    monkeypatch.setattr(fs, "discard", spy)
    store = Checkpoints(tmp_path / "ck", keep=1)
    for step in (1, 2, 3):
        store.save(step, state(float(step)), {"metrics": {"eval_accuracy": 0.5}})
        assert step == 1 or store.steps()  # never zero committed checkpoints, even mid-save
    store.close()
    assert seen == [(1, [1, 2]), (2, [2, 3])]  # each deletion saw its successor committed
    assert store.steps() == [3] and not (tmp_path / "ck" / fs.TRASH).exists()  # emptied, then removed on close


def test_a_prune_killed_midway_leaves_nothing_that_looks_committed(tmp_path, monkeypatch):
    store = saved(tmp_path, steps=(1,))
    monkeypatch.setenv(fs.FAULT_ENV, "during_prune:eio@1")  # step 1 renamed into .deleting/, then "killed"
    with pytest.raises(CheckpointError, match="removing old checkpoints after step 2"):
        store.save(2, state(2.0), {})
    assert (tmp_path / "ck" / fs.TRASH / "1").is_dir() and store.steps() == [2]
    monkeypatch.delenv(fs.FAULT_ENV)
    reopened = Checkpoints(tmp_path / "ck", keep=1, async_save=False)
    assert not (tmp_path / "ck" / fs.TRASH).exists() and reopened.steps() == [2] and reopened.warnings == []
    reopened.close()


def test_temporary_and_unmarked_directories_are_never_listed_but_reported(tmp_path):
    saved(tmp_path, steps=(1,)).close()
    (tmp_path / "ck" / "5.orbax-checkpoint-tmp" / "state").mkdir(parents=True)
    (tmp_path / "ck" / "7" / "state").mkdir(parents=True)
    store = Checkpoints(tmp_path / "ck", async_save=False)
    assert store.steps() == [1] and store.latest() == 1 and store.resolve("latest") == 1
    assert [w.split(":")[0] for w in store.warnings] == [str(tmp_path / "ck" / "5.orbax-checkpoint-tmp"), str(tmp_path / "ck" / "7")]
    store.close()


def test_a_mistyped_fault_hook_fails_loudly(tmp_path, monkeypatch):
    monkeypatch.setenv(fs.FAULT_ENV, "before_comit")
    with pytest.raises(CheckpointError, match="CNNCLI_FAULT='before_comit': expected POINT"):
        Checkpoints(tmp_path / "ck")


def test_disk_preflight_counts_keep_plus_two_copies(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(fs.shutil, "disk_usage", lambda path: usage(10**10, 0, 4_000_000))
    store = Checkpoints(tmp_path / "ck", keep=2)
    assert state_nbytes(state()) == 72 + 8 + 8 + 4 + 8 + 4  # kernel, bias, opt, count, key data, step
    assert store.disk_warning(1_000_000) is None  # 4 copies of 1 MB fit in 4 MB
    warning = store.disk_warning(1_000_001)
    assert "need about 4.0 MB (state 1.0 MB x (keep 2 + 2)), but only 4.0 MB are free" in warning
    store.close()


@pytest.mark.parametrize("fsync", [False, True])
def test_fsync_flushes_every_file_and_directory_of_a_step(tmp_path, monkeypatch, fsync):
    synced = []
    monkeypatch.setattr(fs.os, "fsync", lambda fd: synced.append(fd))
    saved(tmp_path, fsync=fsync).close()
    step_dir = tmp_path / "ck" / "1"
    entries = [p for p in step_dir.rglob("*")] + [step_dir, step_dir.parent]
    assert (len(synced) >= len(entries)) if fsync else synced == []


class Bomb:
    """A pickle that creates a file when loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_checkpoint_files_are_never_unpickled(tmp_path, monkeypatch):
    saved(tmp_path).close()
    marker = tmp_path / "unpickled"
    bomb = pickle.dumps(Bomb(marker))
    ck = tmp_path / "ck"
    for place in ("bomb.pkl", "2.orbax-checkpoint-tmp/state/checkpoint", "1/state/checkpoint", "1/state/d/bomb.pkl"):
        (ck / place).parent.mkdir(parents=True, exist_ok=True)
        (ck / place).write_bytes(bomb)

    def refuse(*args, **kwargs):
        raise AssertionError("pickle used while restoring a checkpoint")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(np, "load", lambda *a, allow_pickle=False, **k: refuse() if allow_pickle else None)
    store = Checkpoints(ck, async_save=False)
    with pytest.raises(CheckpointError) as info:  # planted inside the step: refused, unread
        store.restore_tree(1)
    assert f"{ck / '1' / 'state' / 'checkpoint'}: not written by the save (unexpected file)" in str(info.value)
    for place in ("1/state/checkpoint", "1/state/d/bomb.pkl"):
        (ck / place).unlink()
    tree, meta = store.restore_tree(1)  # beside it (and in a leftover temporary dir): never read
    assert float(tree["params"]["conv1"]["kernel"][0, 0, 0, 0]) == 1.0 and meta["step"] == 1
    store.close()
    assert not marker.exists()


SAVE_FROM_4_DEVICES = """
import sys, jax, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from cnncli.runs.checkpoint import Checkpoints
assert jax.device_count() == 4
store = Checkpoints(sys.argv[1], keep=10)
tree, meta = store.restore_tree(store.latest())
mesh = Mesh(np.array(jax.devices()), ("d",))
place = lambda x: jax.device_put(x, NamedSharding(mesh, P("d") if x.ndim and x.shape[0] % 4 == 0 else P()))
tree = jax.tree.map(place, tree)
print(sum(not x.sharding.is_fully_replicated for x in jax.tree.leaves(tree)))  # arrays split over 4 devices
store.save(meta["step"] + 1, tree, meta)
store.close()
"""


@pytest.mark.slow
def test_a_checkpoint_saved_from_4_devices_evaluates_on_1(straight_run, tmp_path):
    import os
    import shutil

    run = tmp_path / "run"
    shutil.copytree(straight_run, run)
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"} | {"JAX_PLATFORMS": "cpu"}
    four = subprocess.run([sys.executable, "-c", SAVE_FROM_4_DEVICES, str(run / "checkpoints")], capture_output=True,
                          text=True, timeout=300, env=env | {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})  # fmt: skip
    assert four.returncode == 0, four.stderr
    assert int(four.stdout) >= 2  # conv kernels and more were really sharded
    one = subprocess.run([sys.executable, "-m", "cnncli.cli.app", "eval", str(run), "--checkpoint", "45", "--json"],
                         capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert one.returncode == 0, one.stderr
    summary = json.loads((straight_run / "summary.json").read_text())
    assert json.loads(one.stdout)["accuracy"] == summary["eval_accuracy"]


LARGE_SAVE = """
import sys, numpy as np
from cnncli.runs.checkpoint import Checkpoints, tree_digest, to_tree
big = lambda v: {"w%d" % i: np.full((1024, 1024, 8), v + i, np.float32) for i in range(6)}  # 6 x 32 MB
store = Checkpoints(sys.argv[1], keep=1, async_save=True)
store.save(1, big(1.0), {"epoch": 0, "index": 0})
store.wait()
print(tree_digest(to_tree(big(1.0))), tree_digest(to_tree(big(2.0))), flush=True)
store.save(2, big(2.0), {"epoch": 0, "index": 0})
store.close()
print("done", flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kill_9_at_a_random_moment_of_a_large_save_never_loses_the_previous_step(tmp_path, seed):
    import random
    import signal

    rng = random.Random(seed)
    proc = subprocess.Popen([sys.executable, "-c", LARGE_SAVE, str(tmp_path / "ck")], stdout=subprocess.PIPE, text=True)
    try:
        first, second = proc.stdout.readline().split()  # step 1 has committed; step 2 starts now
        time.sleep(rng.uniform(0.0, 3.0))  # the 192 MB save takes about 3 s here, commit included
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        proc.kill()
        proc.stdout.close()
    store = Checkpoints(tmp_path / "ck", keep=1, async_save=False)
    steps = store.steps()
    assert steps in ([1], [2], [1, 2]), steps
    if 1 in steps:
        assert tree_digest(store.restore_tree(1)[0]) == first
    if 2 in steps:  # it committed before the kill: then it is whole
        assert tree_digest(store.restore_tree(2)[0]) == second
    else:
        assert store.latest() == 1  # the partial save is never chosen
    store.close()


def test_setting_aside_twice_within_one_second_keeps_both(tmp_path):
    from cnncli.runs import checkpoint_fs as fs

    for n in (1, 2):
        (tmp_path / "44").mkdir()
        (tmp_path / "44" / "x").write_text(str(n))
        target = fs.set_aside(tmp_path, [44], "20261127-000000")
        assert (target / "44" / "x").read_text() == str(n)
    assert sorted(p.name for p in (tmp_path / fs.SUPERSEDED).iterdir()) == ["20261127-000000", "20261127-000000-2"]


def test_a_corrupt_checkpoint_points_to_the_newest_earlier_one_for_train_and_eval(tmp_path):
    store = Checkpoints(tmp_path / "ck", keep=3, async_save=False)
    big = state()
    big["params"]["conv1"]["kernel"] = jnp.arange(4096.0).reshape(8, 8, 8, 8)  # data files to damage
    for step in (1, 2, 3):
        store.save(step, big, {})
    store.close()
    _flip_a_byte(tmp_path / "ck" / "3")
    store = Checkpoints(tmp_path / "ck", keep=3, async_save=False)
    with pytest.raises(CheckpointError) as info:
        store.restore(3, big)
    run = (tmp_path / "ck").resolve().parent
    assert info.value.hint == (
        f"the newest earlier checkpoint is step 2: `cnncli train RECIPE --workdir {run} --resume-from 2` "
        f"continues from it, `cnncli eval {run} --checkpoint 2` evaluates it"
    )
    store.close()


# ------------------------------------------------- orbax's private commit class
def test_the_orbax_adapter_assumptions_hold_for_the_installed_orbax():
    """What the commit hook assumes of orbax's private AtomicRenameTemporaryPath (`orbax_adapter`)."""
    import importlib
    import inspect

    from cnncli.runs import orbax_adapter as adapter

    module = importlib.import_module(adapter.PRIVATE_MODULE)
    cls = getattr(module, adapter.PRIVATE_CLASS)
    assert adapter.atomic_rename_base() is cls
    for name, (is_async, params) in adapter.HOOKED_METHODS.items():
        method = getattr(cls, name)
        assert inspect.iscoroutinefunction(method) == is_async, name
        assert tuple(inspect.signature(method).parameters) == params, name
    assert (module.TMP_DIR_SUFFIX, module.COMMIT_SUCCESS_FILE) == (adapter.TMP_SUFFIX, adapter.COMMIT_MARKER)
    assert issubclass(fs.commit_hook_class(fsync=False), cls)


def test_a_moved_orbax_class_is_a_clear_error_naming_version_symbol_and_pin(tmp_path, monkeypatch):
    from cnncli.runs import orbax_adapter as adapter

    monkeypatch.setitem(sys.modules, adapter.PRIVATE_MODULE, None)  # the import fails, as for a moved module
    monkeypatch.setattr(adapter, "orbax_version", lambda: "9.9.9")
    with pytest.raises(CheckpointError) as info:
        Checkpoints(tmp_path / "ckpt")
    symbol = "orbax.checkpoint._src.path.atomicity.AtomicRenameTemporaryPath"
    assert info.value.message.startswith(f"orbax-checkpoint 9.9.9 has no {symbol} as cnncli expects (cannot import ")
    assert info.value.message.endswith(f"written against orbax-checkpoint {adapter.KNOWN_VERSION}")
    assert info.value.hint == f"pin orbax-checkpoint=={adapter.KNOWN_VERSION} (e.g. `uv pip install 'orbax-checkpoint=={adapter.KNOWN_VERSION}'`)"


def test_an_orbax_class_without_a_hooked_method_is_a_clear_error(monkeypatch):
    import types

    from cnncli.runs import orbax_adapter as adapter

    stub = types.ModuleType(adapter.PRIVATE_MODULE)
    stub.AtomicRenameTemporaryPath = type("AtomicRenameTemporaryPath", (), {"create": lambda self: None})
    monkeypatch.setitem(sys.modules, adapter.PRIVATE_MODULE, stub)
    with pytest.raises(CheckpointError, match=r"AtomicRenameTemporaryPath has no method finalize, get, get_final\)"):
        fs.commit_hook_class(fsync=False)
    del stub.AtomicRenameTemporaryPath
    with pytest.raises(CheckpointError, match=r"atomicity has no class AtomicRenameTemporaryPath\)"):
        fs.commit_hook_class(fsync=False)
