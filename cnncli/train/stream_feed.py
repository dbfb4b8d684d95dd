"""Streamed training data: each epoch's batches read by grain and put on the device ahead of the step.

The in-memory `cnncli.train.streams.Feed` keeps the training set on the device and
lets each step gather its batch. A `StreamFeed` gives the step its batch instead: the
epoch's order is the same function of (seed, epoch) (`epoch_permutation`, computed
here, on the host, once per epoch), so a dataset small enough for either pipeline gets
the same examples in the same batches both ways. Batches are read by grain (worker
processes, `cnncli.data.stream.read_batches`) and copied to the device
``data.prefetch`` steps ahead: the steps are dispatched asynchronously, so the next
batches are read and copied while the current step computes.

With several processes each reads only its rows of every global batch (the rows its
devices hold in the ``data`` axis); the global batch is assembled on the mesh by
``jax.make_array_from_process_local_data``.

One grain pipeline reads every remaining epoch of the run (`cnncli.data.stream.EpochBatches`
over global batch numbers), so worker processes start once per run, not once per epoch;
each epoch's order is written, as the epoch before it starts, to a temporary folder the
readers memory-map.

The position in the data is (epoch, index): the batches are a pure function of it, so
a checkpoint's (epoch, index) resumes the stream exactly, whatever the worker count.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np

from cnncli.data.stream import (
    MAX_NAMED,
    BatchReader,
    EpochBatches,
    StreamSplit,
    order_file,
    read_batches,
    worker_failure,
    write_order,
)
from cnncli.runtime import distributed


@dataclass
class BadExamples:
    """Unreadable examples met while streaming: each counted once, the first few named."""

    indices: set[int] = field(default_factory=set)
    named: list[str] = field(default_factory=list)
    where: str = ""

    def add(self, batch: dict[str, Any]) -> None:
        for index, (name, why) in zip(batch["bad_index"].tolist(), batch["bad"]):
            if index not in self.indices:
                self.indices.add(index)
                if len(self.named) < MAX_NAMED:
                    self.named.append(f"{name} ({why})")

    def warning(self) -> str | None:
        """One line for the summary's ``warnings``; None when every example was read."""
        if not self.indices:
            return None
        more = f"; and {len(self.indices) - len(self.named)} more" if len(self.indices) > len(self.named) else ""
        return (f"{self.where}: skipped {len(self.indices)} unreadable examples while streaming (each replaced in its "
                f"batch by the next readable one): {'; '.join(self.named)}{more} (set data.strict = true to fail instead)")  # fmt: skip


def _guarded(batches: Iterator[dict]) -> Iterator[dict]:
    """Batches, with grain's report of a dead worker process turned into an actionable `DataError`."""
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except Exception as err:
            failure = worker_failure(err)
            if failure is not None:
                raise failure from None
            raise
        yield batch


class _Opened:
    """The run's grain pipeline, opened now: a background thread waits for its first batch (workers take seconds).

    ``position`` is the global batch number (``epoch * steps_per_epoch + index``) the next
    `take` returns.
    """

    def __init__(self, reader, start: int, stop: int, workers: int, prefetch: int):
        self.position = start
        self._stack = contextlib.ExitStack()
        self._batches = self._stack.enter_context(read_batches(reader, start, stop, workers=workers, prefetch=prefetch))
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="cnncli-stream-open")
        self._first = self._pool.submit(next, self._batches, None)  # the iterator is touched by this thread only
        self._iter = _guarded(self._iterate())

    def _iterate(self) -> Iterator[dict]:
        first = self._first.result()
        if first is None:
            return
        yield first
        yield from self._batches

    def take(self) -> dict:
        batch = next(self._iter, None)
        if batch is None:
            raise RuntimeError(f"the stream ended before batch {self.position}")
        self.position += 1
        return batch

    def close(self) -> None:
        with contextlib.suppress(Exception):  # an error the epoch never asked for
            self._first.result()
        self._pool.shutdown()
        self._stack.close()


ORDERS_PREFIX = "cnncli-orders-"  # + the trainer's pid: a folder whose trainer is gone (kill -9) is removed


def _remove_stale_orders() -> None:
    """Remove the order folders of trainers that no longer run (a ``kill -9`` skips `StreamFeed.close`)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{ORDERS_PREFIX}*-*"):
        try:
            os.kill(int(folder.name[len(ORDERS_PREFIX) :].split("-")[0]), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (ValueError, OSError):  # not one of ours, or a process of another user: alive
            continue


@dataclass(frozen=True)
class StreamFeed:
    """The training split on disk and the arguments of each train step (see the module docstring)."""

    split: StreamSplit
    batch_size: int  # global
    steps_per_epoch: int
    shuffle_key: jax.Array
    augment_key: jax.Array  # replicated over the mesh
    placement: distributed.Placement
    permute: Callable[[jax.Array, int], jax.Array]  # jitted (shuffle key, epoch) -> int32 permutation
    workers: int
    prefetch: int
    strict: bool
    bad: BadExamples = field(default_factory=BadExamples)
    num_classes: int | None = None  # the classifier's width: a label past it is a bad example
    epochs: int = 1  # the run's: the pipeline reads up to the end of its last epoch
    _run: dict = field(default_factory=dict)  # the open pipeline ("pipe"), its orders' folder ("dir"), "written"

    @property
    def rows(self) -> tuple[int, int]:
        """This process's rows ``[lo, hi)`` of every global batch (all of them on one process)."""
        return self.rows_of(self.batch_size)

    def rows_of(self, batch_size: int) -> tuple[int, int]:
        """This process's rows ``[lo, hi)`` of a global batch of ``batch_size`` (training or evaluation)."""
        if self.placement.processes == 1:
            return 0, batch_size
        shape = (batch_size, *self.split.example_shape)
        spans = distributed.batch_sharded(self.placement.mesh).addressable_devices_indices_map(shape).values()
        starts = [s[0].start or 0 for s in spans]
        stops = [s[0].stop if s[0].stop is not None else batch_size for s in spans]
        return min(starts), max(stops)

    def _sharding(self):
        return distributed.batch_sharded(self.placement.mesh) if self.placement.multi else None

    def example_args(self) -> tuple:
        """``(x, y, key)`` as the step will take them, for compiling ahead of time."""
        sharding = self._sharding()
        x = jax.ShapeDtypeStruct((self.batch_size, *self.split.example_shape), self.split.dtype, sharding=sharding)
        y = jax.ShapeDtypeStruct((self.batch_size,), np.int32, sharding=sharding)
        return x, y, self.augment_key

    def order(self, epoch: int) -> np.ndarray:
        """The record index at each position of epoch ``epoch``: `epoch_permutation`, as in memory."""
        return np.asarray(distributed.host(self.permute(self.shuffle_key, epoch)))

    def _put(self, batch: dict[str, Any]) -> tuple:
        x, y = batch["x"], batch["y"]
        sharding = self._sharding()
        if self.placement.processes > 1:
            shape = (self.batch_size, *self.split.example_shape)
            return (jax.make_array_from_process_local_data(sharding, x, shape),
                    jax.make_array_from_process_local_data(sharding, y, (self.batch_size,)))  # fmt: skip
        if sharding is not None:
            return jax.device_put(x, sharding), jax.device_put(y, sharding)
        return jax.device_put(x), jax.device_put(y)

    def epoch(self, epoch: int, start: int) -> Iterator[tuple]:
        """``(x, y, key)`` for steps ``start ..`` of epoch ``epoch``, on the device, ``prefetch`` ahead.

        One grain pipeline reads all the run's remaining epochs (`EpochBatches`: worker
        processes start once per run); an epoch that picks up where the last one ended
        goes on reading it. Close the generator when stopping early: that closes the
        pipeline (`close`), which a later call opens again at its position.
        """
        first = epoch * self.steps_per_epoch + start
        for ahead_epoch in range(epoch, min(self.epochs, epoch + 1 + self._epochs_ahead())):
            self._order(ahead_epoch)
        for done in [e for e in self._run["written"] if e < epoch]:  # all read (a reader keeps its map)
            order_file(self._orders_dir(), done).unlink(missing_ok=True)
            self._run["written"].discard(done)
        if self._run.get("pipe") is not None and self._run["pipe"].position != first:
            self.close()
        if self._run.get("pipe") is None:
            self._run["pipe"] = self._open(first)
        pipe, ahead, finished = self._run["pipe"], collections.deque(), False
        given, count = 0, self.steps_per_epoch - start
        try:
            for _ in range(count):
                batch = pipe.take()
                self.bad.add(batch)
                ahead.append(self._put(batch))
                if len(ahead) > self.prefetch:
                    given += 1
                    finished = given == count  # the loop closes this generator right after the epoch's last step
                    yield (*ahead.popleft(), self.augment_key)
            while ahead:
                given += 1
                finished = given == count
                yield (*ahead.popleft(), self.augment_key)
        finally:
            if not finished or epoch + 1 >= self.epochs:  # stopped early, or the run's data is read
                self.close()

    def _epochs_ahead(self) -> int:
        """Epochs past the current one whose order the readers may need: their read-ahead spans this many."""
        buffered = (max(self.workers, 1) + 1) * (self.prefetch + 1)
        return 1 + buffered // max(self.steps_per_epoch, 1)

    def _order(self, epoch: int) -> None:
        """Write epoch ``epoch``'s order for the readers (once)."""
        if epoch not in self._run.setdefault("written", set()):
            write_order(self._orders_dir(), epoch, self.order(epoch))
            self._run["written"].add(epoch)

    def _orders_dir(self) -> str:
        if self._run.get("dir") is None:
            _remove_stale_orders()
            self._run["dir"] = tempfile.mkdtemp(prefix=f"{ORDERS_PREFIX}{os.getpid()}-")
        return self._run["dir"]

    def _open(self, first: int) -> _Opened:
        reader = BatchReader(self.split.records, None, self.batch_size, self.rows,
                             self.split.example_shape, self.split.dtype, strict=self.strict, where=self.split.where,
                             num_classes=self.num_classes)  # fmt: skip
        batches = EpochBatches(reader, self.steps_per_epoch, self._orders_dir())
        return _Opened(batches, first, self.epochs * self.steps_per_epoch, self.workers, self.prefetch)

    def close(self) -> None:
        """Stop the pipeline (its workers) and remove the orders: the run stopped, or its data is all read."""
        pipe, folder = self._run.pop("pipe", None), self._run.pop("dir", None)
        self._run.pop("written", None)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)  # first: a reader waiting for an order gives up
        if pipe is not None:
            pipe.close()

    def eval_batches(self, split: StreamSplit, batch_size: int) -> Iterator[tuple]:
        """An evaluation split as ``(x, y, mask)`` batches of one size (last padded, unreadable masked out).

        On one device, host arrays; on a mesh, split over its ``data`` axis. With several
        processes each reads only its rows of every batch, as in training, and the global
        batch is assembled on the mesh: the eval step's sums run over the whole batch, so
        the metrics are those of one process. (Unreadable examples are then counted by the
        process that met them: the summary's warning names those of the main process.)
        """
        rows = self.rows_of(batch_size)
        reader = BatchReader(split.records, None, batch_size, rows, split.example_shape, split.dtype,
                             pad=True, strict=self.strict, where=split.where)  # fmt: skip
        count = math.ceil(len(split.records) / batch_size)
        sharding = self._sharding()
        with read_batches(reader, 0, count, workers=0, prefetch=2, threads=max(1, self.workers)) as batches:
            for batch in _guarded(batches):
                self.bad.add(batch)
                arrays = batch["x"], batch["y"], batch["mask"]
                if self.placement.processes > 1:
                    yield tuple(jax.make_array_from_process_local_data(sharding, a, (batch_size, *a.shape[1:]))
                                for a in arrays)  # fmt: skip
                elif sharding is not None:
                    yield tuple(jax.device_put(a, sharding) for a in arrays)
                else:
                    yield arrays


def make_stream_feed(data, streams, placement: distributed.Placement, cfg, steps_per_epoch: int,
                     workers: int, num_classes: int | None = None, epochs: int = 1) -> StreamFeed:  # fmt: skip
    """The streamed feed of a run: ``data.train`` is a `StreamSplit`; ``cfg`` the recipe's `DataConfig`."""
    from cnncli.train.streams import epoch_permutation

    n = len(data.train.records)
    perm = lambda key, epoch: epoch_permutation(key, epoch, n)  # noqa: E731
    permute = jax.jit(perm, out_shardings=distributed.replicated(placement.mesh)) if placement.multi else jax.jit(perm)
    return StreamFeed(data.train, cfg.batch_size, steps_per_epoch, streams.shuffle, placement.replicate(streams.augment),
                      placement, permute, workers, cfg.prefetch, cfg.strict, BadExamples(where=cfg.source),
                      num_classes, epochs)  # fmt: skip
