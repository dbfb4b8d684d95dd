"""The training loop's mutable state, in one visible place.

`LoopState` is everything that changes while `cnncli.train.loop.fit` runs: the
on-device `TrainState`, the data position (epoch, next batch), the training clock,
the checkpoint cadence, and the evaluation history behind best-so-far and early
stopping (`Progress`). Everything else a run reads is frozen (`Session`, `Program`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cnncli.train.clock import Clock, SaveTimer


@dataclass
class Progress:
    """Evaluated epochs so far: the history, the best accuracy, and epochs without a gain."""

    best_accuracy: float = -1.0
    best_epoch: int = 0
    epochs_without_gain: int = 0
    history: list[dict] = field(default_factory=list)

    @classmethod
    def replay(cls, records: list[dict]) -> Progress:
        """The progress of a resumed run: its evaluated ``metrics.jsonl`` records, tracked in order."""
        progress = cls(history=[r for r in records if "eval_accuracy" in r])
        for record in progress.history:
            progress.track(record)
        return progress

    def track(self, record: dict) -> bool:
        """Update the best-so-far with an evaluated epoch; True when it did not improve.

        A tie moves ``best_epoch`` to the later epoch, as ``--checkpoint best`` does (the
        newest of equally accurate checkpoints), but does not count as an improvement for
        early stopping.
        """
        acc = record["eval_accuracy"]
        if acc >= self.best_accuracy:
            improved = acc > self.best_accuracy
            self.best_accuracy, self.best_epoch = acc, record["epoch"]
            if improved:
                self.epochs_without_gain = 0
                return False
        self.epochs_without_gain += 1
        return True

    def patience_over(self, patience: int | None) -> bool:
        """True when ``train.early_stopping`` epochs passed without a gain."""
        return patience is not None and self.epochs_without_gain >= patience


@dataclass
class LoopState:
    """What the loop changes as it trains (see the module docstring)."""

    state: Any  # the `cnncli.train.step.TrainState`, on the device; donated to each step
    epoch: int  # completed epochs (0-based index of the epoch in progress)
    index: int  # the next batch of that epoch
    progress: Progress
    saves: SaveTimer
    clock: Clock = field(default_factory=Clock)
    stopped_early: bool = False
