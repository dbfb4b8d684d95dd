"""The streaming pipeline (`cnncli.data.stream`, `cnncli.data.records`): plans, pixels, batches, bad data.

Fast tests on tiny folders and npz files; the end-to-end runs (same weights as in
memory, kill -9 and resume, two processes, the memory bound) are in test_stream_runs.py.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from test_data_folder import make_folder

from cnncli.config.recipe import DataConfig
from cnncli.data.sources import load_split
from cnncli.data.stream import BatchReader, open_stream_dataset, open_streamed, plan_pipeline, read_batches
from cnncli.errors import DataError


def write_npz(path, n_train=40, n_test=12, shape=(6, 5), compressed=False):
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 255, (n_train, *shape), dtype=np.uint8), "y_train": np.arange(n_train) % 4,
              "x_test": rng.integers(0, 255, (n_test, *shape), dtype=np.uint8), "y_test": np.arange(n_test) % 4}  # fmt: skip
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


def reader_for(split, order, batch_size, **kw) -> BatchReader:
    return BatchReader(split.records, order, batch_size, (0, batch_size), split.example_shape, split.dtype, **kw)


@pytest.mark.parametrize("kind", ["npz", "folder"])
def test_a_streamed_split_holds_the_in_memory_pixels_and_labels(tmp_path, kind):
    source = f"npz:{write_npz(tmp_path / 'd.npz')}" if kind == "npz" else f"folder:{make_folder(tmp_path / 'f')}"
    cfg = DataConfig(source=source)
    memory, names, _ = load_split(source, "train", cfg)
    streamed, streamed_names, _ = open_streamed(cfg, "train")
    assert streamed_names == names
    assert streamed.x.shape == memory.x.shape and streamed.x.dtype == memory.x.dtype
    assert np.array_equal(streamed.x[:], memory.x) and np.array_equal(streamed.y, memory.y)


def test_streamed_statistics_equal_the_in_memory_ones_when_the_split_fits_the_sample(tmp_path):
    from cnncli.data.sources import load_dataset

    cfg = DataConfig(source=f"npz:{write_npz(tmp_path / 'd.npz')}")
    memory, streamed = load_dataset(cfg), open_stream_dataset(cfg)
    assert streamed.mean == memory.mean and streamed.std == memory.std
    assert streamed.meta() == memory.meta()


def test_batches_follow_the_order_and_a_resume_takes_up_at_its_batch(tmp_path):
    cfg = DataConfig(source=f"npz:{write_npz(tmp_path / 'd.npz')}")
    split, _, _ = open_streamed(cfg, "train")
    order = np.random.default_rng(1).permutation(40)
    reader = reader_for(split, order, 8)
    with read_batches(reader, 0, 5, workers=0, prefetch=2) as batches:
        whole = list(batches)
    assert [b["y"].tolist() for b in whole] == [(order[k * 8 : k * 8 + 8] % 4).tolist() for k in range(5)]
    assert np.array_equal(whole[1]["x"], split.x[order[8:16]])
    with read_batches(reader, 3, 5, workers=0, prefetch=1) as batches:
        resumed = list(batches)
    assert all(np.array_equal(a["x"], b["x"]) for a, b in zip(resumed, whole[3:]))


def test_auto_streams_only_what_does_not_fit_and_says_why(tmp_path):
    source = f"npz:{write_npz(tmp_path / 'd.npz', n_train=300, shape=(64, 64))}"  # 1.2 MiB of training images
    fits = plan_pipeline(DataConfig(source=source))
    assert fits.kind == "memory" and fits.workers is None
    assert fits.reason == "each split fits data.memory_budget_mb = 2048: train 1.2 MiB, test 0 MiB"
    over = plan_pipeline(DataConfig(source=source, memory_budget_mb=1, workers=3))
    assert over.to_dict() == {"kind": "stream", "reason": "over data.memory_budget_mb = 1: train 1.2 MiB, test 0 MiB",
                              "split_mib": {"train": 1.2, "test": 0.0}, "budget_mib": 1, "workers": 3}  # fmt: skip
    forced = plan_pipeline(DataConfig(source=source, pipeline="stream", workers=0))
    assert forced.kind == "stream" and forced.reason == "data.pipeline = 'stream'" and forced.workers == 0
    assert plan_pipeline(DataConfig(source=source, pipeline="memory", memory_budget_mb=1)).kind == "memory"
    assert plan_pipeline(DataConfig(source="digits")).reason.startswith("digits is a small bundled dataset")


def test_a_folder_over_the_budget_streams(tmp_path):
    root = make_folder(tmp_path / "f", per_class=(40, 4), size=(40, 40))  # 120 x 40x40x3 = 0.55 MiB
    plan = plan_pipeline(DataConfig(source=f"folder:{root}", memory_budget_mb=1, image_size=[400, 400]))
    assert plan.kind == "stream" and plan.reason.startswith("over data.memory_budget_mb = 1: train 54.9 MiB")


def test_a_compressed_npz_cannot_stream_and_says_how_to_make_one_that_does(tmp_path):
    path = write_npz(tmp_path / "c.npz", compressed=True)
    with pytest.raises(DataError, match="is compressed") as info:
        open_streamed(DataConfig(source=f"npz:{path}", pipeline="stream"), "train")
    assert "np.savez('OUT.npz', **d)" in str(info.value)


def test_a_missing_absolute_npz_streamed_gets_no_relative_path_hint(tmp_path):
    with pytest.raises(DataError) as info:
        open_streamed(DataConfig(source=f"npz:{tmp_path / 'missing.npz'}", pipeline="stream"), "train")
    assert info.value.hint == "check the path"


def broken_folder(tmp_path):
    root = make_folder(tmp_path / "f", per_class=(4, 2))
    (root / "train" / "green" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")  # header reads, decode fails
    return root


def test_an_unreadable_training_example_is_replaced_by_the_next_readable_one_and_named(tmp_path):
    root = broken_folder(tmp_path)
    cfg = DataConfig(source=f"folder:{root}", image_size=[10, 12], channels=3)  # no header pass: found mid-stream
    split, _, _ = open_streamed(cfg, "train")
    bad = split.records.paths.index(str(root / "train" / "green" / "1.png"))
    order = np.roll(np.arange(12), -bad)  # the bad file first, then the one that replaces it
    with read_batches(reader_for(split, order, 4), 0, 3, workers=0, prefetch=1) as batches:
        first, *rest = list(batches)
    assert first["bad"][0][0] == str(root / "train" / "green" / "1.png") and first["bad_index"].tolist() == [bad]
    assert np.array_equal(first["x"][0], first["x"][1]), "the next readable example takes the bad one's place"
    assert all(not b["bad"] for b in rest)


def test_strict_makes_an_unreadable_example_fatal_and_names_it(tmp_path):
    root = broken_folder(tmp_path)
    cfg = DataConfig(source=f"folder:{root}", image_size=[10, 12], channels=3)
    split, _, _ = open_streamed(cfg, "train")
    with pytest.raises(DataError, match=r"cannot read .*green/1.png") as info:
        with read_batches(reader_for(split, None, 12, strict=True), 0, 1, workers=0, prefetch=1) as batches:
            list(batches)
    assert "data.strict = false" in str(info.value)


def test_evaluation_batches_pad_the_last_and_mask_unreadable_examples(tmp_path):
    root = broken_folder(tmp_path)
    split, _, _ = open_streamed(DataConfig(source=f"folder:{root}", image_size=[10, 12], channels=3), "train")
    with read_batches(reader_for(split, None, 5, pad=True), 0, 3, workers=0, prefetch=1) as batches:
        masks = np.concatenate([b["mask"] for b in batches])
    bad = split.records.paths.index(str(root / "train" / "green" / "1.png"))
    assert masks.sum() == 11 and not masks[bad] and not masks[12:].any()


def test_the_header_pass_leaves_out_files_that_do_not_open(tmp_path):
    root = make_folder(tmp_path / "f", per_class=(4, 2))
    (root / "train" / "red" / "junk.png").write_bytes(b"not an image")
    split, _, _ = open_streamed(DataConfig(source=f"folder:{root}"), "train")
    assert len(split.records) == 12 and split.skipped[0][0].endswith("junk.png")


def test_the_header_pass_of_a_folder_reports_its_progress_through_a_callback(tmp_path, monkeypatch):
    from cnncli.data import stream

    root = make_folder(tmp_path / "f", per_class=(4, 2))  # 18 files in all, 12 of them training
    monkeypatch.setattr(stream, "PROGRESS_EVERY", 5)
    calls = []
    with stream.first_pass_progress(lambda where, done, total: calls.append((where, done, total))):
        open_streamed(DataConfig(source=f"folder:{root}"), "train")
    assert calls == [(f"folder:{root} [train]", done, 18) for done in (0, 5, 10, 15, 18)]
    calls.clear()
    open_streamed(DataConfig(source=f"folder:{root}"), "train")  # outside the block: nobody is told
    open_streamed(DataConfig(source=f"folder:{root}", image_size=[8, 8], channels=3), "train")  # no header pass
    assert calls == []


def test_the_first_pass_bar_waits_a_second_and_shows_only_on_a_terminal(monkeypatch):
    from cnncli.data.stream import FIRST_PASS
    from cnncli.report.progress import FirstPassBar, first_pass_bar

    bar = FirstPassBar(delay_s=3600)
    bar("folder:x [train]", 0, 1000)
    bar("folder:x [train]", 256, 1000)
    assert bar._progress is None  # a pass shorter than its delay draws nothing
    shown = FirstPassBar(delay_s=0)
    shown("folder:x [train]", 0, 1000)
    assert shown._progress is not None
    shown("folder:x [train]", 1000, 1000)
    assert shown._progress is None  # gone as the pass ends, before training draws its own bar
    with first_pass_bar(True):  # stderr is not a terminal under pytest
        assert FIRST_PASS.get() is None
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
    with first_pass_bar(False):  # --json
        assert FIRST_PASS.get() is None
    with first_pass_bar(True):
        assert isinstance(FIRST_PASS.get(), FirstPassBar)
    assert FIRST_PASS.get() is None


def test_a_prepared_tfds_split_streams_the_in_memory_pixels(tmp_path):
    import test_data_tfds as tiny

    tiny.TinyPatterns(data_dir=str(tmp_path)).download_and_prepare(file_format="array_record")
    cfg = DataConfig(source="tfds:tiny_patterns", data_dir=str(tmp_path), pipeline="stream")
    memory, names, _ = load_split(cfg.source, "train", cfg)
    streamed, streamed_names, _ = open_streamed(cfg, "train")
    assert streamed_names == names == tiny.NAMES and len(streamed.records) == tiny.TRAIN
    assert np.array_equal(streamed.x[:], memory.x) and np.array_equal(streamed.y[:], memory.y)
    assert plan_pipeline(cfg.model_copy(update={"pipeline": "auto"})).split_mib == {"train": 0.0, "test": 0.0}


def test_data_info_on_a_recipe_says_which_pipeline_it_gets_and_samples_a_streamed_split(tmp_path, capsys):
    import json

    from helpers import cli

    root = make_folder(tmp_path / "f", per_class=(6, 2))
    recipe = tmp_path / "big.toml"
    recipe.write_text(f'[data]\nsource = "folder:{root}"\nmemory_budget_mb = 1\nimage_size = 400\n\n'
                      '[model]\nlayers = ["gap", "dense"]\n\n[train]\nepochs = 1\n')  # fmt: skip
    code, out, err = cli(["data", "info", str(recipe), "--per-class", "0"], capsys)
    assert code == 0, err
    info = json.loads(out)
    assert info["pipeline"]["kind"] == "stream" and info["pipeline"]["reason"].startswith(
        "over data.memory_budget_mb = 1"
    )
    assert info["image_shape"] == [400, 400, 3] and info["class_counts"] == [6, 6, 6]
    assert info["statistics_from"] == 1  # a quarter of 1 MiB holds one 400x400x3 image


def test_the_pipeline_settings_are_not_trajectory_fields():
    from cnncli.config.recipe import Recipe
    from cnncli.config.trajectory import trajectory_changes

    old = Recipe.model_validate({"model": {"arch": "lenet5"}, "train": {"epochs": 1}}).to_dict()
    new = Recipe.model_validate({"model": {"arch": "lenet5"}, "train": {"epochs": 1},
                                 "data": {"pipeline": "stream", "workers": 3, "prefetch": 4}}).to_dict()  # fmt: skip
    assert trajectory_changes(old, new) == []
    assert Recipe.model_validate(old).digest() == Recipe.model_validate(new).digest()
    changed = Recipe.model_validate({"model": {"arch": "lenet5"}, "train": {"epochs": 1}, "data": {"batch_size": 32}})
    assert trajectory_changes(old, changed.to_dict()) == ["  data.batch_size: 64 -> 32"]


def test_data_preview_of_a_streamed_recipe_decodes_only_its_first_batch(tmp_path, capsys):
    from helpers import cli

    root = make_folder(tmp_path / "f", per_class=(6, 2))
    recipe = tmp_path / "big.toml"
    recipe.write_text(f'[data]\nsource = "folder:{root}"\nmemory_budget_mb = 1\nimage_size = 400\nbatch_size = 4\n\n'
                      '[model]\nlayers = ["gap", "dense"]\n\n[train]\nepochs = 1\n')  # fmt: skip
    code, out, err = cli(
        ["data", "preview", str(recipe), "--out", str(tmp_path / "p.png"), "--json", "-n", "4"], capsys
    )
    assert code == 0, err
    assert (tmp_path / "p.png").exists()


class DyingRecords:
    """Examples that kill the worker process reading them (as the kernel's out-of-memory killer would)."""

    def __len__(self):
        return 64

    def __getitem__(self, i):
        os._exit(3)

    def describe(self, i):
        return f"example {i}"


@pytest.mark.slow
def test_a_worker_that_dies_stops_the_stream_with_a_message_to_resume():
    from cnncli.train.stream_feed import _guarded

    reader = BatchReader(DyingRecords(), None, 8, (0, 8), (2,), np.dtype(np.float32))
    with pytest.raises(DataError, match=r"a data worker process died \(worker process was terminated unexpectedly "
                                         r"with exit code 3\): training stopped") as info:  # fmt: skip
        with read_batches(reader, 0, 8, workers=1, prefetch=1) as batches:
            list(_guarded(batches))
    assert "run the same command to resume" in str(info.value)


def test_a_resume_after_the_training_split_changed_size_warns_that_its_batches_differ():
    from types import SimpleNamespace

    from cnncli.train.resume import _data_changed

    sess = SimpleNamespace(data=SimpleNamespace(train=SimpleNamespace(x=np.zeros((90, 2)))))
    assert _data_changed(sess, {"step": 7, "pipeline": {"num_train": 90}}) is None
    assert _data_changed(sess, {"step": 7}) is None  # a checkpoint from before the pipeline position was saved
    assert _data_changed(sess, {"step": 7, "pipeline": {"num_train": 100}}) == (
        "the training split has 90 examples but had 100 when step 7 was saved: the batches from here on differ "
        "from those of an uninterrupted run"
    )


def test_one_pipeline_reads_every_epoch_of_a_run_and_a_resume_reopens_it_at_its_batch(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from cnncli.runtime.distributed import Placement
    from cnncli.train import stream_feed
    from cnncli.train.streams import SeedStreams

    cfg = DataConfig(source=f"npz:{write_npz(tmp_path / 'd.npz')}", batch_size=8, prefetch=1, workers=0)
    data = SimpleNamespace(train=open_streamed(cfg, "train")[0])
    opened, real = [], stream_feed._Opened
    monkeypatch.setattr(stream_feed, "_Opened", lambda *a, **k: opened.append(a[1]) or real(*a, **k))

    def feed():
        return stream_feed.make_stream_feed(data, SeedStreams(0), Placement(), cfg, 5, 0, 4, epochs=3)

    straight = feed()
    whole = [[np.asarray(x).tolist() for x, _, _ in straight.epoch(e, 0)] for e in range(3)]
    assert opened == [0], "three epochs, one pipeline"
    assert [len(w) for w in whole] == [5, 5, 5] and straight._run == {}  # closed after the last epoch
    for e in range(3):  # the in-memory order of each epoch, batch by batch
        order = straight.order(e)
        assert [w for w in whole[e]] == [data.train.x[order[k * 8 : k * 8 + 8]].tolist() for k in range(5)]
    opened.clear()
    resumed = feed()
    steps = resumed.epoch(1, 3)
    again = [[np.asarray(next(steps)[0]).tolist() for _ in range(2)]]
    steps.close()  # as the training loop does right after an epoch's last step: the pipeline stays open
    assert resumed._run["pipe"].position == 10
    again += [[np.asarray(x).tolist() for x, _, _ in resumed.epoch(2, 0)]]
    assert opened == [8] and again == [whole[1][3:], whole[2]]
    gen = resumed.epoch(0, 0)
    next(gen)
    gen.close()  # stopped mid-epoch: the pipeline and its orders are gone
    assert resumed._run == {}


def test_the_orders_of_a_trainer_that_was_killed_are_removed_by_the_next(tmp_path, monkeypatch):
    import subprocess
    import sys

    from cnncli.train import stream_feed

    monkeypatch.setattr(stream_feed.tempfile, "gettempdir", lambda: str(tmp_path))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"{stream_feed.ORDERS_PREFIX}{int(gone.stdout)}-abc"
    alive = tmp_path / f"{stream_feed.ORDERS_PREFIX}{os.getpid()}-def"
    for folder in (stale, alive):
        folder.mkdir()
        (folder / "order-0.npy").write_bytes(b"")
    stream_feed._remove_stale_orders()
    assert not stale.exists() and alive.exists()
