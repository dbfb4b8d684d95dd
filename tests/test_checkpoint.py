"""Checkpoints: round trip, retention (latest N + best), checksums, shape mismatches."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnncli.checkpoint import Checkpoints, digests, from_tree, to_tree
from cnncli.errors import CheckpointError


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


def test_unknown_step_lists_committed_steps(tmp_path):
    store = Checkpoints(tmp_path / "ck", keep=2, async_save=False)
    store.save(1, state(), {})
    with pytest.raises(CheckpointError, match=r"(?s)no checkpoint at step 5 .*committed steps: \[1\]"):
        store.resolve(5)
    with pytest.raises(CheckpointError, match="expected latest, best or a step number"):
        store.resolve("newest")
    store.close()


def test_flipped_byte_is_detected(tmp_path):
    store = Checkpoints(tmp_path / "ck", keep=2, async_save=False)
    big = state()
    big["params"]["conv1"]["kernel"] = jnp.arange(4096.0).reshape(8, 8, 8, 8)
    store.save(1, big, {})
    store.close()
    # flip one byte in the middle of the largest array data file
    files = [p for p in (tmp_path / "ck" / "1" / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    target = max(files, key=lambda p: p.stat().st_size)
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    store = Checkpoints(tmp_path / "ck", keep=2, async_save=False)
    with pytest.raises(CheckpointError) as info:
        store.restore(1, big)
    assert str(tmp_path / "ck" / "1") in str(info.value)
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
