"""One attempt at training a run, marked in its directory (`cnncli.runs.marker`).

While `cnncli.train.loop.fit` trains, ``process.json`` names this process, so
``cnncli runs`` can tell a run being trained from one that was interrupted. An
attempt that fails after it started (`RunStarted`: the resume point was accepted)
leaves ``failure.json``; an interrupt (Ctrl-C, SIGTERM) does not, and neither does a
refusal before the start (a resume with a changed recipe is not a failed run).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cnncli.runs import marker
from cnncli.train.events import Event, RunStarted
from cnncli.train.signals import Interrupted


class Attempt:
    """Context manager: ``process.json`` inside it; ``failure.json`` when it exits on an error."""

    def __init__(self, workdir: Path, *, enabled: bool = True):
        self.workdir = Path(workdir)
        self.enabled = enabled  # only process 0 writes the run directory
        self.started = False

    def __enter__(self) -> Attempt:
        if self.enabled:
            marker.mark_running(self.workdir)
        return self

    def watch(self, emit: Callable[[Event], None]) -> Callable[[Event], None]:
        """``emit``, noting when the run starts (and clearing the previous attempt's failure then)."""

        def forward(event: Event) -> None:
            if isinstance(event, RunStarted):
                self.started = True
                if self.enabled:
                    marker.clear_failure(self.workdir)
            emit(event)

        return forward

    def __exit__(self, kind, error, traceback) -> None:
        if not self.enabled:
            return
        marker.clear_running(self.workdir)
        if error is not None and self.started and not isinstance(error, (Interrupted, KeyboardInterrupt)):
            marker.record_failure(self.workdir, error)
