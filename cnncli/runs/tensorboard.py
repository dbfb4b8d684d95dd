"""A run's TensorBoard event files, ``<run>/tb/``: written with tensorboardX's protobufs, no TensorFlow.

`EventLog` is the only code that knows the folder and the file format; what is logged
under which tag is `cnncli.train.board`'s business. How it writes, and why:

- **Synchronously, on the caller's thread, into a plain file.** tensorboardX's
  `SummaryWriter` hands events to a worker thread through a bounded queue; a write error
  (a full disk) ends that thread silently and the next ``put`` on the full queue blocks
  training for ever, and its flush always fsyncs. Here the events are tensorboardX's
  protobufs framed as TFRecords (`EventLog._append`, tensorboardX's CRC-32C): one record
  per log interval (about 80 microseconds, most of it the pure-Python CRC), an error
  caught where it happens.
- **One events file per ``train`` invocation**, named as TensorBoard expects
  (``events.out.tfevents.<time>.<host>``) plus ``.<n>``, the number of event files
  already there, so two invocations within one second neither overwrite each other
  nor read back out of order (TensorBoard reads a folder's files in name order).
- **Every file starts with a ``SessionLog.START`` at the first step it will log.**
  TensorBoard drops what earlier files logged at that step or later, so a run resumed
  from a checkpoint older than its last logged step continues each curve with no step
  twice (`tensorboardX.SummaryWriter`'s ``purge_step``). TensorBoard ignores a run's
  first START, so a fresh run writes one too: the START of its first resume counts.
- **Flushed before each checkpoint** (`flush`), at most every `FLUSH_SECONDS` while
  training (`maybe_flush`), and on `close`: what a run logged up to a checkpoint reaches
  the operating system before that checkpoint commits, so a resume after a killed
  process finds no gap (fsync too with ``train.fsync``, which survives power loss, as
  the checkpoints then do).
- **A failure never stops training.** The first `OSError` (read-only folder, full disk)
  is reported once through ``on_failure`` and the log stops writing.
- **Hyperparameters as the HParams plugin's session-start summary only**, no
  ``Experiment`` summary (what TensorBoard's own ``hp.hparams`` writes): TensorBoard then
  builds the HParams table from every run's hyperparameters (the union, with the ones
  that differ marked) and takes each run's metrics from its scalar tags' last values.
  The events sit in ``tb/`` itself, so ``tensorboard --logdir runs`` shows one row per run
  (tensorboardX's ``add_hparams`` writes into a new timestamped subfolder each call).
"""

from __future__ import annotations

import io
import json
import os
import socket
import struct
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cnncli.runs.catalog import flatten
from cnncli.runs.layout import TB

FLUSH_SECONDS = 5.0  # while training: TensorBoard's default reload interval is 5 s
HParam = bool | int | float | str


def flatten_hparams(recipe: Mapping[str, Any]) -> dict[str, HParam]:
    """A resolved recipe (``recipe.json``) as flat scalar/string hyperparameters.

    Dotted keys as `cnncli.runs.catalog.flatten` makes them (``cnncli runs`` compares the
    same keys): ``{"train": {"seed": 0}}`` -> ``{"train.seed": 0}``. A list of strings is
    joined with spaces (``model.layers`` reads as the layer tokens); other lists are compact
    JSON; an unset value (None) is ``"null"``, as in ``recipe.json``: left out, it would not
    count as a difference (``ema_decay = 0.9`` against none), and TensorBoard shows the
    hyperparameters that differ between runs first.
    """
    return {key: _hparam(value) for key, value in flatten(dict(recipe)).items()}


def _hparam(value: Any) -> HParam:
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return " ".join(value)
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, separators=(",", ":"))
    return "null" if value is None else value


class EventLog:
    """Appends a run's TensorBoard events to a new file in ``<workdir>/tb/`` (see the module docstring).

    Every method is a no-op after the first failure, which ``on_failure`` receives as one
    message naming the folder and the error.
    """

    def __init__(self, workdir: Path, first_step: int, on_failure: Callable[[str], None], *,
                 fsync: bool = False) -> None:  # fmt: skip
        """Open a new events file and write its START at ``first_step`` (the first step this invocation logs).

        ``fsync``: `flush` also forces the file to disk (``train.fsync``, as checkpoints do);
        otherwise it hands the data to the operating system, which a killed process cannot lose.
        """
        from tensorboardX.proto.event_pb2 import Event, SessionLog

        self.directory = Path(workdir) / TB
        self.failed = False  # True once a write failed (``on_failure`` was called)
        self._on_failure, self._fsync = on_failure, fsync
        self._file = None
        self._flushed = time.monotonic()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            n = sum(1 for p in self.directory.iterdir() if ".tfevents." in p.name)
            name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{n:03d}"
            # "x": a new file, never another's; it lives until close or _fail, so no `with`
            self._file = open(self.directory / name, "xb")  # noqa: SIM115
            self._append(Event(wall_time=time.time(), file_version="brain.Event:2"))
            self._append(Event(wall_time=time.time(), step=first_step, session_log=SessionLog(status=SessionLog.START)))
        except OSError as err:
            self._fail(err)

    def _append(self, event) -> None:
        """One TFRecord: length, its masked CRC-32C, the serialized event, its masked CRC-32C (little-endian)."""
        from tensorboardX.record_writer import masked_crc32c

        data = event.SerializeToString()
        header = struct.pack("<Q", len(data))
        self._file.write(
            header + struct.pack("<I", masked_crc32c(header)) + data + struct.pack("<I", masked_crc32c(data))
        )

    def _fail(self, err: OSError) -> None:
        file, self._file, self.failed = self._file, None, True
        if file is not None:
            try:
                file.close()
            except OSError:
                pass
        self._on_failure(f"TensorBoard logging stopped: cannot write {self.directory}: {err}; training goes on")

    def _write(self, step: int, values: list) -> None:
        """One event holding ``values`` (tensorboardX ``Summary.Value``s) at ``step``."""
        if self._file is None:
            return
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.proto.summary_pb2 import Summary

        try:
            self._append(Event(wall_time=time.time(), step=step, summary=Summary(value=values)))
        except OSError as err:
            self._fail(err)

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        """Scalars at ``step``, one tag each."""
        from tensorboardX.proto.summary_pb2 import Summary

        self._write(step, [Summary.Value(tag=tag, simple_value=float(v)) for tag, v in values.items()])

    def images(self, step: int, images: Mapping[str, Any]) -> None:
        """RGB pictures at ``step`` (`PIL.Image.Image` or uint8 ``(H, W, 3)``), as PNGs."""
        if self._file is None:
            return
        from PIL import Image
        from tensorboardX.proto.summary_pb2 import Summary

        values = []
        for tag, picture in images.items():
            img = picture if isinstance(picture, Image.Image) else Image.fromarray(np.asarray(picture, np.uint8))
            png = io.BytesIO()
            img.convert("RGB").save(png, format="PNG")
            encoded = png.getvalue()
            image = Summary.Image(height=img.height, width=img.width, colorspace=3, encoded_image_string=encoded)
            values.append(Summary.Value(tag=tag, image=image))
        self._write(step, values)

    def hparams(self, hparams: Mapping[str, HParam], step: int = 0) -> None:
        """The run's hyperparameters (HParams plugin session start; its metrics are the scalar tags)."""
        if self._file is None:
            return
        from tensorboardX.summary import hparams as hparams_summaries

        _, start, _ = hparams_summaries(dict(hparams), {})
        self._write(step, list(start.value))

    def session_end(self, step: int) -> None:
        """Mark the run finished (the HParams table's status column)."""
        if self._file is None:
            return
        from tensorboardX.summary import hparams as hparams_summaries

        _, _, end = hparams_summaries({}, {})
        self._write(step, list(end.value))

    def flush(self) -> None:
        """Everything written so far to the operating system (and to disk with ``fsync``)."""
        if self._file is None:
            return
        try:
            self._file.flush()
            if self._fsync:
                os.fsync(self._file.fileno())
            self._flushed = time.monotonic()
        except OSError as err:
            self._fail(err)

    def maybe_flush(self) -> None:
        """`flush` when `FLUSH_SECONDS` passed since the last one (the cost stays off the log interval)."""
        if self._file is not None and time.monotonic() - self._flushed >= FLUSH_SECONDS:
            self.flush()

    def close(self) -> None:
        """Flush and close the file; later calls write nothing."""
        if self._file is None:
            return
        self.flush()
        if self._file is None:  # the flush failed
            return
        try:
            self._file.close()
            self._file = None
        except OSError as err:
            self._fail(err)
