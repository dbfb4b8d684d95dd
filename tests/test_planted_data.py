"""Data and checkpoint slips that leave every shape right: issue 18, rule 11.

- a ``folder:`` slice taken in folder order instead of the fixed shuffle: ``train[80%:]``
  is then the last class folder alone;
- an npz split's class count taken from that split's labels alone (a test split without
  the top class would score a model with fewer outputs than it has);
- the per-array checksum comparison removed from restore: a damaged array whose files
  still look whole (no manifest, or a manifest written over the damage) restores silently.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from cnncli.config.recipe import DataConfig
from cnncli.data.sources import load_dataset, load_split
from cnncli.errors import CheckpointError
from cnncli.runs import checkpoint_fs as fs
from cnncli.runs.checkpoint import Checkpoints


def _folder(root: Path, per_class: int = 10) -> Path:
    """root/train/<class>/<i>.png, 4 classes; each image's pixels hold its class and index (so rows are traceable)."""
    from PIL import Image

    for label, name in enumerate(("a", "b", "c", "d")):
        folder = root / "train" / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(np.full((4, 4), label * 50 + i, np.uint8)).save(folder / f"{i:02d}.png")
    return root


def _load(root: Path, split: str):
    return load_split(f"folder:{root}", split, DataConfig(source=f"folder:{root}"))[0]


def test_a_folder_tail_slice_mixes_classes_and_is_the_same_every_time(tmp_path):
    root = _folder(tmp_path / "f")
    tail = _load(root, "train[80%:]")
    assert len(tail.y) == 8  # 20% of 40 files
    counts = Counter(tail.y.tolist())
    assert len(counts) >= 3 and max(counts.values()) <= 4, counts  # folder order would give 8 of class d
    again = _load(root, "train[80%:]")
    assert np.array_equal(tail.x, again.x) and np.array_equal(tail.y, again.y)


def test_folder_slices_partition_the_split_in_a_shuffled_order(tmp_path):
    root = _folder(tmp_path / "f")
    whole = _load(root, "train")
    parts = [_load(root, s) for s in ("train[:25%]", "train[25%:50%]", "train[50%:75%]", "train[75%:]")]
    pixels = [v for p in parts for v in p.x[:, 0, 0, 0].tolist()]
    assert sorted(pixels) == sorted(whole.x[:, 0, 0, 0].tolist())  # disjoint and complete
    for part in parts:
        assert len(set(part.y.tolist())) >= 2, "each quarter holds more than one class folder"
        assert np.array_equal(part.y, part.x[:, 0, 0, 0] // 50)  # labels stay with their images


def test_an_npz_split_counts_the_classes_of_both_splits(tmp_path):
    x = np.zeros((8, 3, 3), np.uint8)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=np.arange(8) % 4, x_test=x[:3], y_test=np.array([0, 1, 2]))
    source = f"npz:{tmp_path / 'd.npz'}"
    for split in ("train", "test"):  # the test split has no class 3, and still has 4 classes
        _, names, _ = load_split(source, split)
        assert names == ["0", "1", "2", "3"], split
    data = load_dataset(DataConfig(source=source))
    assert data.class_names == ["0", "1", "2", "3"] and data.num_classes == 4


# ------------------------------------------------------------------ checkpoints


def _state(value: float) -> dict:
    return {"params": {"conv1": {"kernel": jnp.full((3, 3, 1, 4), value)}, "dense1": {"bias": jnp.arange(4.0) * value}},
            "step": jnp.int32(int(value))}  # fmt: skip


@pytest.mark.parametrize("manifest", ["missing", "rewritten over the damage"])
def test_restore_compares_every_array_with_its_saved_digest(tmp_path, manifest):
    store = Checkpoints(tmp_path / "ck", keep=3, async_save=False)
    store.save(1, _state(1.0), {"epoch": 1, "index": 0})
    store.save(2, _state(2.0), {"epoch": 2, "index": 0})
    store.close()
    step1 = tmp_path / "ck" / "1"
    # Step 1's arrays replaced by step 2's: every file readable, every value plausible, all of them wrong.
    shutil.rmtree(step1 / "state")
    shutil.copytree(tmp_path / "ck" / "2" / "state", step1 / "state")
    (step1 / fs.MANIFEST).unlink()
    if manifest != "missing":
        fs.write_manifest(step1, fsync=False)  # a manifest that agrees with the damaged files
        assert fs.verify_files(step1) == []
    store = Checkpoints(tmp_path / "ck", keep=3, async_save=False)
    try:
        with pytest.raises(CheckpointError) as info:
            store.restore_tree(1)
        assert f"checkpoint {step1} is corrupt: checksum mismatch in " in str(info.value)
        assert "params/conv1/kernel" in str(info.value) and "params/dense1/bias" in str(info.value)
        tree, _ = store.restore_tree(2)  # the untouched step still restores
        assert float(tree["params"]["conv1"]["kernel"][0, 0, 0, 0]) == 2.0
    finally:
        store.close()


def test_a_flipped_bit_in_an_array_without_a_manifest_is_an_error(tmp_path):
    store = Checkpoints(tmp_path / "ck", keep=2, async_save=False)
    big = _state(1.0)
    big["params"]["conv1"]["kernel"] = jnp.arange(4096.0).reshape(8, 8, 8, 8)
    store.save(1, big, {})
    store.close()
    step = tmp_path / "ck" / "1"
    (step / fs.MANIFEST).unlink()
    target = max((p for p in (step / "state").rglob("*") if p.is_file() and p.parent.name == "d"),
                 key=lambda p: p.stat().st_size)  # fmt: skip
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    store = Checkpoints(tmp_path / "ck", keep=2, async_save=False)
    try:
        damaged = r"is corrupt: (checksum mismatch in params/conv1/kernel|it cannot be read)"
        with pytest.raises(CheckpointError, match=damaged):
            store.restore_tree(1)
    finally:
        store.close()


def test_a_label_equal_to_the_class_count_is_out_of_range():
    """The one-past-the-end label: an npz's own class count can never produce it, streamed chunks and class names can."""
    from cnncli.data.checks import check_labels
    from cnncli.errors import DataError

    check_labels(np.array([0, 1, 1, 0]), 2, "src [train]")  # 0..1: fine
    with pytest.raises(DataError, match=r"^src \[train\]: label 2 at index 5 is not a class id 0\.\.1\n"):
        check_labels(np.array([0, 1, 2]), 2, "src [train]", offset=3)
