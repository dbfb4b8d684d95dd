"""What training reports, as typed events: the library never prints.

`cnncli.train.loop.fit` sends these to its ``on_event`` callback;
`cnncli.report.train` turns them into a rich progress display or JSON lines. Plain
data only (no jax, no numpy), so a reporter imports them for free.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RunStarted:
    workdir: Path
    num_params: int
    steps_per_epoch: int
    total_steps: int
    epochs: int
    devices: list[str]
    input_shape: tuple[int, ...]
    num_classes: int
    num_train: int
    resumed_step: int | None = None  # the checkpoint's step (completed updates); None: a fresh run
    resumed_epoch: int | None = None  # completed epochs at that step
    resumed_index: int | None = None  # the next batch of that epoch (0: the epoch starts afresh)
    resumed_lr: float | None = None  # the learning rate of the next update
    warnings: tuple[str, ...] = ()  # leftovers of interrupted saves, low disk space, ...
    notes: tuple[str, ...] = ()  # choices made for the user (conv_backend = "auto"), shown on a terminal


@dataclass(frozen=True)
class ExtensionBuild:
    cache_dir: Path  # the oneDNN extension is about to be compiled (first use, seconds) into here


@dataclass(frozen=True)
class Compiled:
    seconds: float  # wall time of tracing + XLA compilation of the train step


@dataclass(frozen=True)
class StepEnd:
    step: int  # completed updates
    epoch: int  # 1-based epoch in progress
    total_steps: int
    loss: float  # mean training loss since the last StepEnd
    accuracy: float
    learning_rate: float
    images_per_second: float


@dataclass(frozen=True)
class EpochEnd:
    record: dict[str, Any]  # the metrics.jsonl record of this epoch


@dataclass(frozen=True)
class CheckpointSaved:
    step: int
    path: Path


@dataclass(frozen=True)
class RunWarning:
    message: str  # something went wrong that does not stop training (TensorBoard logging failed, ...)


@dataclass(frozen=True)
class RunFinished:
    summary: dict[str, Any]


Event = ExtensionBuild | RunStarted | Compiled | StepEnd | EpochEnd | CheckpointSaved | RunWarning | RunFinished


# A sweep (`cnncli.train.sweep`) sends these around each grid point's own run events.


@dataclass(frozen=True)
class SweepPointStarted:
    index: int  # 0-based position in the grid
    total: int  # points in the grid
    name: str  # the point's folder name, e.g. optimizer.learning_rate=0.001,train.seed=0
    workdir: Path
    resume: bool  # the point's run directory has checkpoints (interrupted or failed before): fit resumes it


@dataclass(frozen=True)
class SweepPointSkipped:
    index: int
    total: int
    name: str
    workdir: Path
    reason: str  # "finished" or "running" (another process trains it now)
    summary: dict[str, Any] | None  # the finished run's summary.json


@dataclass(frozen=True)
class SweepPointFailed:
    index: int
    total: int
    name: str
    workdir: Path
    message: str  # the error that stopped this point; the sweep goes on with the next
    hint: str | None = None


SweepEvent = SweepPointStarted | SweepPointSkipped | SweepPointFailed
