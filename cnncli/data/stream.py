"""Datasets larger than memory: which pipeline a recipe gets, streamed splits, and batches read by grain.

`plan_pipeline` decides ``data.pipeline = "auto"`` from sizes alone (no image is
decoded): memory when each split fits ``data.memory_budget_mb``, else stream, with the
reason in words. `open_streamed` opens a split as a `StreamSplit`: a record source
(`cnncli.data.records`) and its shape, with ``x`` and ``y`` that decode only the
examples indexed (pictures of the worst mistakes, the first examples for
``inspect-filters``), never the whole split.

`read_batches` is the pipeline: a ``grain.MapDataset`` over batch numbers, each batch
read by a `BatchReader` (decode, convert, resize) in grain's worker processes
(``data.workers``; 0 reads in threads of this process), ``data.prefetch`` batches
ahead per worker. Elements come back in batch order whatever the worker count (grain
slices the batches round-robin over workers and interleaves them back), so the
batches depend on (order, batch size) only.

A bad example never crashes an epoch: a training batch takes the next readable
example of the epoch's order in its place, an evaluation batch masks it out; either
way the batch reports it (``bad``), and the caller counts and names it. With
``data.strict = true`` the first one raises `DataError` instead.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnncli.config.source import DataSource
from cnncli.data.base import Dataset, channel_stats
from cnncli.data.imageops import MIB
from cnncli.errors import DataError

STATS_SHARE = 4  # the normalization sample takes at most 1/4 of the memory budget
STATS_MAX = 50_000  # examples: enough for per-channel mean/std to 3 digits
SAMPLE_SEED = 0  # fixed: the statistics are part of the dataset, not of the run
MAX_NAMED = 3  # bad examples named in a warning


def default_workers(kind: str = "folder") -> int:
    """Worker processes when ``data.workers`` is unset.

    Sources that decode (``folder``, ``tfds``): half the cores (the train step needs the
    rest), 1 to 4. Sources that only copy bytes (``npz``, arrays): 0, threads of the
    trainer, since a batch's trip through a worker process costs more than reading it
    (BENCHMARKS.md: 53,000 img/s of 32x32x3 in threads, 2,200 through one worker).
    """
    if kind not in ("folder", "tfds"):
        return 0
    return max(1, min(4, (os.cpu_count() or 2) // 2))


# ------------------------------------------------------------------ streamed splits


class LazyImages:
    """The images of a record source as an array-like: ``shape``, ``dtype``, and indexing that decodes."""

    def __init__(self, records, example_shape: tuple[int, ...], dtype, where: str):
        self.records, self.where = records, where
        self.shape = (len(records), *example_shape)
        self.dtype = np.dtype(dtype)

    ndim = property(lambda self: len(self.shape))
    size = property(lambda self: math.prod(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def _one(self, i: int) -> np.ndarray:
        try:
            return self.records[int(i)][0]
        except Exception as err:
            raise DataError(f"{self.where}: cannot read {self.records.describe(int(i))}: {type(err).__name__}: {err}",
                            hint="fix or remove the file") from None  # fmt: skip

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self._one(key)
        index = np.arange(len(self))[key]
        return np.stack([self._one(i) for i in index]) if len(index) else np.zeros((0, *self.shape[1:]), self.dtype)

    def __array__(self, dtype=None, copy=None):
        raise DataError(f"{self.where}: a streamed split is not read into memory whole",
                        hint="read batches with cnncli.data.stream.read_batches")  # fmt: skip


class LazyLabels:
    """Labels of a record source that keeps them with the examples (TFDS): read when indexed."""

    def __init__(self, records):
        self.records = records
        self.shape = (len(records),)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return np.int32(self.records.label(int(key)))
        return np.asarray([self.records.label(int(i)) for i in np.arange(len(self))[key]], np.int32)


@dataclass
class StreamSplit:
    """A split read from disk as it is needed (see the module docstring)."""

    records: Any  # a `cnncli.data.records` source: len(), [i] -> (image, label), describe(i)
    example_shape: tuple[int, ...]
    dtype: np.dtype
    where: str  # "folder:PATH [train]", for messages
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason) found unreadable while indexing

    @property
    def x(self) -> LazyImages:
        return LazyImages(self.records, self.example_shape, self.dtype, self.where)

    @property
    def y(self):
        labels = getattr(self.records, "labels", None)
        if labels is None:
            labels = getattr(self.records, "y", None)
        return np.asarray(labels, np.int32) if labels is not None else LazyLabels(self.records)

    @property
    def nbytes(self) -> int:
        return len(self.records) * math.prod(self.example_shape) * self.dtype.itemsize


# ------------------------------------------------------------------ opening a split


def _open_npz(path: str, split: str, cfg) -> tuple[StreamSplit, list[str], tuple[float, float]]:
    import zipfile

    from cnncli.data.npz import _array, check_npz_file
    from cnncli.data.records import NpzRecords, npz_member

    file = Path(path)
    if not file.exists():
        hint = "check the path" if file.is_absolute() else "relative paths resolve against the recipe's folder"
        raise DataError(f"npz file not found: {file}", hint=hint)
    check_npz_file(file)  # the in-memory loader's words for a directory, a .npy or a file that is no zip
    if split not in ("train", "test"):
        raise DataError(f"{file}: unknown split {split!r}", hint="npz files have splits train and test")
    try:
        member = npz_member(file, f"x_{split}")
        with np.load(file, allow_pickle=False) as arrays:  # reads only the members named below; never unpickles
            keys = set(arrays.files)
            if f"y_{split}" not in keys:
                raise DataError(f"{file}: missing array 'y_{split}' (has {sorted(keys)})",
                                hint="an npz dataset holds x_train, y_train, x_test, y_test")  # fmt: skip
            y = np.asarray(_array(arrays, f"y_{split}", file)).reshape(-1)
            names = [str(n) for n in _array(arrays, "class_names", file)] if "class_names" in keys else None
            y_all = np.concatenate(
                [np.asarray(_array(arrays, k, file)).reshape(-1) for k in ("y_train", "y_test") if k in keys]
            )
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise DataError(f"{file}: cannot read as npz: {err}") from None
    num_classes = len(names) if names else int(y_all.max()) + 1
    where = f"{file} [{split}]"
    if y.shape[0] != member.shape[0]:
        raise DataError(f"{where}: {y.shape[0]} labels for {member.shape[0]} images")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(f"{where}: labels range over [{y.min()}, {y.max()}]; expected class ids 0..N-1")
    records = NpzRecords(str(file), member, y.astype(np.int32))
    return (
        StreamSplit(records, records.example_shape, records.dtype, where),
        names or [str(i) for i in range(num_classes)],
        (0.0, 255.0),
    )


FIRST_PASS: contextvars.ContextVar[Callable[[str, int, int], None] | None] = contextvars.ContextVar(
    "cnncli_first_pass", default=None
)
PROGRESS_EVERY = 256  # headers between two progress reports


@contextlib.contextmanager
def first_pass_progress(callback: Callable[[str, int, int], None] | None) -> Iterator[None]:
    """Within the block, the header pass of a streamed folder reports ``callback(where, done, total)``.

    The CLI passes a progress bar here (`cnncli.report.progress`); the data layer never
    draws anything itself.
    """
    token = FIRST_PASS.set(callback)
    try:
        yield
    finally:
        FIRST_PASS.reset(token)


def read_headers(paths: list[Path], where: str, progress: Callable[[str, int, int], None] | None = None) -> dict:
    """``{path: header or why it cannot be read}`` for every file (`cnncli.data.folder._header`), reporting progress.

    ``progress`` (default: the one `first_pass_progress` set) is called with ``(where, done,
    total)`` as it starts, every `PROGRESS_EVERY` files and at the end.
    """
    from cnncli.data.folder import _header

    progress = progress if progress is not None else FIRST_PASS.get()
    headers = {}
    if progress is not None:
        progress(where, 0, len(paths))
    for done, path in enumerate(paths, 1):
        headers[path] = _header(path)
        if progress is not None and (done % PROGRESS_EVERY == 0 or done == len(paths)):
            progress(where, done, len(paths))
    return headers


def _open_folder(path: str, split: str, cfg) -> tuple[StreamSplit, list[str], tuple[float, float]]:
    from cnncli.data.folder import MODES, _defaults, _select, index_folder
    from cnncli.data.records import FolderRecords

    root = Path(path).expanduser()
    where = f"folder:{root} [{split}]"
    index = index_folder(root)
    entries = _select(index, split, where)
    skipped: list[tuple[str, str]] = []
    if cfg.image_size is not None and cfg.channels is not None:  # nothing to learn from the headers
        size, channels = _defaults([], cfg, where)
    else:  # the first pass: every header of every split, as the in-memory loader reads them
        headers = read_headers([p for files in index.files.values() for p, _ in files], where)
        size, channels = _defaults(list(headers.values()), cfg, where)
        skipped = [(str(p), headers[p]) for p, _ in entries if isinstance(headers[p], str)]
        entries = [(p, label) for p, label in entries if not isinstance(headers[p], str)]
    if not entries:
        raise DataError(f"{where}: no readable images", hint="put images in class folders")
    records = FolderRecords(
        [str(p) for p, _ in entries], np.asarray([c for _, c in entries], np.int32), size, MODES[channels]
    )
    split_ = StreamSplit(records, (*size, channels), np.dtype(np.uint8), where, skipped)
    return split_, index.classes, (0.0, 255.0)


def _open_tfds(name: str, split: str, cfg) -> tuple[StreamSplit, list[str], tuple[float, float]]:
    from cnncli.data.records import TfdsRecords
    from cnncli.data.tfds import open_split

    source, info, keys, shape, where = open_split(name, split, cfg)
    label = info.features[keys[1]]
    names = list(getattr(label, "names", None) or [])
    if not names:
        raise DataError(f"{where}: the label feature {keys[1]!r} has no class names, needed to stream",
                        hint="set data.label_key to a ClassLabel feature, or data.pipeline = \"memory\"")  # fmt: skip
    records = TfdsRecords(name, split, cfg.data_dir, keys, shape, len(source))
    return StreamSplit(records, shape, np.dtype(np.uint8), where), names, (0.0, 255.0)


def _open_arrays(source: str, split: str, cfg) -> tuple[StreamSplit, list[str], tuple[float, float]]:
    from cnncli.data.records import ArrayRecords
    from cnncli.data.sources import load_split

    data, names, value_range = load_split(source, split, cfg)
    records = ArrayRecords(data.x, data.y)
    return StreamSplit(records, tuple(data.x.shape[1:]), data.x.dtype, f"{source} [{split}]"), names, value_range


def open_streamed(cfg, split: str, source: str | None = None) -> tuple[StreamSplit, list[str], tuple[float, float]]:
    """Open one split of ``cfg.source`` (or ``source``) for streaming: indexes files, decodes nothing.

    Sources without a record reader (``digits``, ``mnist1d``: small, generated or bundled)
    stream from their arrays in memory, so every source can take ``data.pipeline = "stream"``.

    Returns:
        ``(StreamSplit, class names, raw value range)``.
    """
    spec = DataSource.parse(source or cfg.source)
    openers = {"npz": _open_npz, "folder": _open_folder, "tfds": _open_tfds}
    if spec.kind in openers:
        return openers[spec.kind](spec.arg, split, cfg)
    return _open_arrays(str(spec), split, cfg)


# ------------------------------------------------------------------ the plan


@dataclass(frozen=True)
class PipelinePlan:
    """Which pipeline a recipe gets, and why (``env.json``, the run summary, ``data info``)."""

    kind: str  # "memory" or "stream"
    reason: str
    split_mib: dict[str, float]  # estimated uint8/float32 size of each split in memory
    budget_mib: int
    workers: int | None = None  # streaming worker processes (None: memory)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "reason": self.reason, "split_mib": self.split_mib, "budget_mib": self.budget_mib,
                "workers": self.workers}  # fmt: skip


def _estimate_bytes(cfg, split: str) -> int | None:
    """A split's size in memory from its headers, without decoding; None for bundled sources (small)."""
    spec = cfg.source_spec
    if spec.kind == "npz":
        return _npz_bytes(spec.arg, split)
    if spec.kind == "tfds":
        return _tfds_bytes(spec.arg, split, cfg)
    if spec.kind == "folder":
        return _folder_estimate(spec.arg, split, cfg)
    return None


def _npz_bytes(path: str, split: str) -> int | None:
    """Bytes of ``x_<split>`` from its ``.npy`` header (read through the zip: compressed members too).

    None when the file cannot tell (missing, not a zip, no such array): the in-memory
    loader then reports the problem in its own words.
    """
    import zipfile

    try:
        with zipfile.ZipFile(Path(path)) as archive, archive.open(f"x_{split}.npy") as member:
            version = np.lib.format.read_magic(member)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(member)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None
    itemsize = 1 if dtype == np.uint8 else 4  # loaded as uint8 or float32
    return math.prod(shape) * itemsize


def _tfds_bytes(name: str, split: str, cfg) -> int:
    """Examples x the shape they are read at, from the dataset's info (nothing is read)."""
    from cnncli.data.tfds import _target_shape, feature_keys, open_source

    where = f"tfds:{name} [{split}]"
    source = open_source(name, split, cfg.data_dir)
    keys = feature_keys(source.dataset_info, cfg, where)
    return len(source) * math.prod(_target_shape(source.dataset_info.features[keys[0]], cfg, where))


def _folder_estimate(path: str, split: str, cfg) -> int:
    """Files x (size, channels): from the recipe, else from the headers of up to 64 files spread over the split."""
    from cnncli.data.folder import _defaults, _header, _select, index_folder

    root = Path(path).expanduser()
    where = f"folder:{root} [{split}]"
    entries = _select(index_folder(root), split, where)
    sample = (
        [entries[i][0] for i in np.linspace(0, len(entries) - 1, min(64, len(entries))).astype(int)] if entries else []
    )
    try:
        size, channels = _defaults([_header(p) for p in sample], cfg, where)
    except DataError:  # mixed sizes in the sample: the loader will say so; estimate from the largest
        headers = [h for h in (_header(p) for p in sample) if not isinstance(h, str)]
        size, channels = max((s for s, _ in headers), default=(1, 1)), cfg.channels or 3
    return len(entries) * math.prod(size) * channels


def plan_pipeline(cfg) -> PipelinePlan:
    """The pipeline of a recipe's ``[data]`` (see the module docstring); reads headers, decodes nothing.

    Raises:
        DataError: as opening the source does (missing files, unknown splits).
    """
    budget = cfg.memory_budget_mb
    n_workers = cfg.workers if cfg.workers is not None else default_workers(cfg.source_spec.kind)
    sizes: dict[str, float] = {}
    if cfg.pipeline != "memory":
        for split in dict.fromkeys((cfg.train_split, cfg.eval_split)):
            nbytes = _estimate_bytes(cfg, split)
            if nbytes is not None:
                sizes[split] = round(nbytes / MIB, 1)
    if cfg.pipeline != "auto":
        kind, reason = cfg.pipeline, f"data.pipeline = {cfg.pipeline!r}"
    elif not sizes:
        kind, reason = "memory", f"{cfg.source_spec.kind} is a small bundled dataset: it is always read into memory"
    else:
        over = {s: mib for s, mib in sizes.items() if mib > budget}
        listed = ", ".join(f"{s} {mib:g} MiB" for s, mib in sizes.items())
        if over:
            kind, reason = "stream", f"over data.memory_budget_mb = {budget}: {listed}"
        else:
            kind, reason = "memory", f"each split fits data.memory_budget_mb = {budget}: {listed}"
    return PipelinePlan(kind, reason, sizes, budget, n_workers if kind == "stream" else None)


# ------------------------------------------------------------------ batches


@dataclass
class BatchReader:
    """Reads batch ``k``: the examples at positions ``[k*B + lo, k*B + hi)`` of ``order`` (grain's map function).

    ``rows = (lo, hi)`` is this process's share of each global batch (all of it on one
    process). Training (``pad=False``) replaces an unreadable example with the next
    readable one in ``order``; evaluation (``pad=True``) pads the last batch and masks
    unreadable examples and padding out.
    """

    records: Any
    order: np.ndarray | None  # record index at each position; None: the identity
    batch_size: int
    rows: tuple[int, int]
    example_shape: tuple[int, ...]
    dtype: np.dtype
    pad: bool = False
    strict: bool = False
    where: str = ""
    num_classes: int | None = None  # labels outside 0..num_classes-1 are bad examples too

    def _check(self, example) -> tuple[np.ndarray, int]:
        x, y = example
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise ValueError("a NaN or infinite pixel")
        if y < 0 or (self.num_classes is not None and y >= self.num_classes):
            raise ValueError(f"label {y} outside 0..{(self.num_classes or 0) - 1}")
        return x, y

    def _record(self, position: int) -> int:
        return int(position if self.order is None else self.order[position])

    def _read(self, position: int, bad: list[tuple[int, str]]):
        index = self._record(position)
        try:
            return self._check(self.records[index])
        except Exception as err:  # Pillow, TFDS and OSError raise many kinds for a bad file or record
            reason = f"{type(err).__name__}: {err}"
            if self.strict:
                raise DataError(f"{self.where}: cannot read {self.records.describe(index)}: {reason}",
                                hint="fix or remove it, or set data.strict = false to skip unreadable examples") from None  # fmt: skip
            bad.append((index, reason))
            return None

    def __call__(self, k: int) -> dict[str, Any]:
        lo, hi = self.rows
        total = len(self.records) if self.order is None else len(self.order)
        x = np.zeros((hi - lo, *self.example_shape), self.dtype)
        y = np.zeros((hi - lo,), np.int32)
        mask = np.zeros((hi - lo,), bool)
        bad: list[tuple[int, str]] = []
        for row, position in enumerate(range(k * self.batch_size + lo, k * self.batch_size + hi)):
            if position >= total:
                continue  # padding of the last evaluation batch
            example = self._read(position, bad)
            step = 1
            while example is None and not self.pad and step < total:  # training: the next readable example
                example = self._read((position + step) % total, bad)
                step += 1
            if example is None:
                if not self.pad:
                    raise DataError(f"{self.where}: no readable example left", hint="check the data")
                continue
            x[row], y[row], mask[row] = example[0], example[1], True
        return {"x": x, "y": y, "mask": mask, "bad": [(self.records.describe(i), why) for i, why in bad],
                "bad_index": np.asarray([i for i, _ in bad], np.int64)}  # fmt: skip


ORDER_WAIT_S = 0.005  # between two looks for an epoch's order not written yet


def order_file(directory: str, epoch: int) -> Path:
    """Where `EpochBatches` finds the order of epoch ``epoch`` (written by the trainer, `write_order`)."""
    return Path(directory) / f"order-{epoch}.npy"


def write_order(directory: str, epoch: int, order: np.ndarray) -> None:
    """Write an epoch's order for the readers, whole or not at all (a rename)."""
    target = order_file(directory, epoch)
    if target.exists():
        return
    partial = target.with_suffix(".partial.npy")
    np.save(partial, np.asarray(order, np.int32))
    os.replace(partial, target)


@dataclass
class EpochBatches:
    """Global batch ``g`` of a run: batch ``g % steps_per_epoch`` of epoch ``g // steps_per_epoch`` (grain's map function).

    One grain pipeline then reads every remaining epoch, so worker processes start once
    per run, not once per epoch. Each epoch's order is read from ``orders`` (a folder the
    trainer writes ahead, `write_order`), memory-mapped, and waited for if the readers run
    ahead of it; the batch itself is `BatchReader`'s, so the batches are the same
    function of (epoch, index) as one epoch's pipeline.
    """

    reader: BatchReader  # its ``order`` is replaced by each epoch's
    steps_per_epoch: int
    orders: str
    _cache: dict = field(default_factory=dict, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_cache": {}}

    def _epoch(self, epoch: int) -> BatchReader:
        if epoch not in self._cache:
            path = order_file(self.orders, epoch)
            while not path.exists():  # the trainer writes it when the epoch before it starts
                if not Path(self.orders).is_dir():  # the run closed its pipeline: nobody will read this batch
                    raise EOFError("the stream was closed")
                time.sleep(ORDER_WAIT_S)
            self._cache = {e: r for e, r in self._cache.items() if e >= epoch - 1}
            order = np.load(path, mmap_mode="r")
            self._cache[epoch] = dataclasses.replace(self.reader, order=order)
        return self._cache[epoch]

    def __call__(self, g: int) -> dict[str, Any]:
        epoch, k = divmod(int(g), self.steps_per_epoch)
        return self._epoch(epoch)(k)


def _watch_parent(worker: int, count: int) -> None:
    """In each worker process: exit when the trainer is gone (``kill -9`` leaves no orphan decoding)."""
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="cnncli-parent-watch").start()


def _absl_parsed() -> None:
    """grain's worker processes read absl flags; outside an absl app they must be marked parsed (STACK-NOTES)."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


@contextlib.contextmanager
def read_batches(reader: BatchReader, start: int, stop: int, *, workers: int, prefetch: int,
                 threads: int = 1) -> Iterator[Iterator[dict[str, Any]]]:  # fmt: skip
    """Batches ``start .. stop - 1`` of ``reader``, in order, read ahead by grain; closed (workers stopped) on exit.

    Args:
        workers: worker processes (0: ``threads`` threads of this process).
        prefetch: batches read ahead per worker (or in all, without workers).
    """
    import grain

    ds = grain.MapDataset.range(start, stop).map(reader)
    if workers > 0:
        _absl_parsed()
        options = grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=prefetch)
        per_worker = ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=1))
        # Batches come back pickled through grain's queue, not in shared memory: as fast here (3,300 vs 3,150
        # img/s of 32x32x3 batches of 128) and nothing left for the resource tracker to call leaked at exit.
        per_worker = grain.experimental.WithOptionsIterDataset(
            per_worker, grain.experimental.DatasetOptions(min_shm_size=2**62)
        )
        iterable = per_worker.mp_prefetch(options, worker_init_fn=_watch_parent)
    else:
        iterable = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=prefetch))
    iterator = iter(iterable)
    try:
        yield iterator
    finally:
        iterator.close()


def worker_failure(err: BaseException) -> DataError | None:
    """A `DataError` for grain's report of a worker process that died; None for any other error."""
    text = str(err)
    if isinstance(err, RuntimeError) and "terminated unexpectedly" in text:
        return DataError(f"a data worker process died ({text.split('. ')[0].lower()}): training stopped",
                         hint="the last checkpoint is intact: run the same command to resume; if it happens again, "
                         "lower data.workers or check memory (dmesg shows the kernel's out-of-memory kills)")  # fmt: skip
    return None


# ------------------------------------------------------------------ statistics and the dataset


def sample_indices(n: int, example_bytes: int, budget_mb: int) -> np.ndarray:
    """Which examples the statistics read: all of a small split, else a fixed random subset, sorted."""
    cap = min(STATS_MAX, max(1, budget_mb * MIB // STATS_SHARE // max(example_bytes, 1)))
    if n <= cap:
        return np.arange(n)
    return np.sort(np.random.default_rng(SAMPLE_SEED).choice(n, cap, replace=False))


def read_examples(
    split: StreamSplit, indices: np.ndarray, *, threads: int = 2, strict: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The readable examples among ``indices`` as arrays (unreadable ones left out), read by grain threads."""
    size = 256
    reader = BatchReader(split.records, np.asarray(indices), size, (0, size), split.example_shape, split.dtype,
                         pad=True, strict=strict, where=split.where)  # fmt: skip
    xs, ys = [], []
    with read_batches(reader, 0, -(-len(indices) // size), workers=0, prefetch=2, threads=threads) as batches:
        for batch in batches:
            xs.append(batch["x"][batch["mask"]])
            ys.append(batch["y"][batch["mask"]])
    if not xs:
        return np.zeros((0, *split.example_shape), split.dtype), np.zeros((0,), np.int32)
    return np.concatenate(xs), np.concatenate(ys)


def open_stream_dataset(cfg) -> Dataset:
    """The training and evaluation splits of a recipe's ``[data]`` as `StreamSplit`s, with training statistics.

    Normalization statistics come from the training split (all of it when the sample
    fits a quarter of the budget, so a small dataset gets exactly the in-memory numbers;
    else a fixed sample of up to 50,000 examples).
    """
    train, names, value_range = open_streamed(cfg, cfg.train_split)
    evaluation, eval_names, _ = open_streamed(cfg, cfg.eval_split)
    if train.example_shape != evaluation.example_shape:
        raise DataError(f"{cfg.source}: split {cfg.train_split!r} has images {train.example_shape} but "
                        f"{cfg.eval_split!r} has {evaluation.example_shape}")  # fmt: skip
    if len(eval_names) > len(names):
        names = eval_names
    if isinstance(train.y, np.ndarray):  # labels known without decoding: the in-memory checks (`cnncli.data.checks`)
        from cnncli.data.checks import check_classes, check_labels

        check_labels(train.y, len(names), train.where)
        check_classes(train.y, names, train.where, allow_missing=getattr(cfg, "allow_missing_classes", False))
    channels = train.example_shape[-1]
    mean, std = [0.0] * channels, [1.0] * channels
    if cfg.normalize or train.dtype != np.uint8:
        example_bytes = math.prod(train.example_shape) * train.dtype.itemsize
        x, _ = read_examples(train, sample_indices(len(train.records), example_bytes, cfg.memory_budget_mb))
        if cfg.normalize:
            mean, std = channel_stats(x)
        if train.dtype != np.uint8 and x.size:
            value_range = (float(x.min()), float(x.max()))
    return Dataset(cfg.source, train, evaluation, names, mean, std, value_range)


def streams_split(cfg, split: str) -> bool:
    """Whether one split (``eval``, ``inspect-filters``) is read in batches: ``data.pipeline``, or over the budget."""
    if cfg.pipeline != "auto":
        return cfg.pipeline == "stream"
    nbytes = _estimate_bytes(cfg, split)
    return nbytes is not None and nbytes > cfg.memory_budget_mb * MIB
