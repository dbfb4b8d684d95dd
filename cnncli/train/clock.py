"""Time in the training loop: the training-only clock and the checkpoint cadence."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Clock:
    """Training time only: excludes compilation, evaluation and checkpointing."""

    seconds: float = 0.0
    images: int = 0
    started: float | None = None

    def start(self) -> None:
        self.started = time.perf_counter()

    def stop(self, images: int) -> None:
        if self.started is not None:
            self.seconds += time.perf_counter() - self.started
            self.images += images
            self.started = None

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


@dataclass
class SaveTimer:
    """When the next periodic checkpoint is due (``train.checkpoint_every_steps/minutes``).

    Which steps get saved never changes the run: saving does not touch the state, so a
    time-based cadence keeps resumes exact.
    """

    every_steps: int | None = None  # save when step % every_steps == 0
    every_seconds: float | None = None  # save when this many seconds passed since the last save
    last: float = field(default_factory=time.monotonic)  # time.monotonic() seconds at the last save

    def due(self, step: int) -> bool:
        """True when ``step`` (completed updates) should be checkpointed."""
        if self.every_steps and step % self.every_steps == 0:
            return True
        return bool(self.every_seconds) and time.monotonic() - self.last >= self.every_seconds

    def reset(self) -> None:
        """Start the interval again (after any checkpoint, periodic or not)."""
        self.last = time.monotonic()
