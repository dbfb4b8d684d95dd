"""A progress bar on stderr for the first pass over a big image folder (reading every file's header).

Shown only on a terminal, never under ``--json``, and only once the pass has taken more
than a second (a small folder shows nothing); it disappears when the pass ends.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator

DELAY_S = 1.0  # a pass shorter than this shows no bar


class FirstPassBar:
    """``bar(where, done, total)``: the callback of `cnncli.data.stream.first_pass_progress`."""

    def __init__(self, delay_s: float = DELAY_S):
        self.delay_s = delay_s
        self.started: dict[str, float] = {}  # where -> when its pass began (its first report)
        self._progress = None
        self._tasks: dict[str, int] = {}

    def __call__(self, where: str, done: int, total: int) -> None:
        now = time.perf_counter()
        began = self.started.setdefault(where, now - 1e-9)
        if self._progress is None and done < total and now - began >= self.delay_s:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            from cnncli.report.console import stderr_console

            self._progress = Progress(TextColumn("reading image headers {task.description}"), BarColumn(),
                                      MofNCompleteColumn(), TimeRemainingColumn(), console=stderr_console(),
                                      transient=True)  # fmt: skip
            self._progress.start()
        if self._progress is not None:
            if where not in self._tasks:
                from rich.markup import escape

                self._tasks[where] = self._progress.add_task(escape(where), total=total)  # "[train]" is no markup
            self._progress.update(self._tasks[where], completed=done)
            if done >= total:  # the pass is over: the bar goes before training draws its own
                self.close()

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress, self._tasks = None, {}


@contextlib.contextmanager
def first_pass_bar(enabled: bool) -> Iterator[None]:
    """Show `FirstPassBar` for folder header passes within the block, when ``enabled`` and stderr is a terminal."""
    from cnncli.data.stream import first_pass_progress

    if not (enabled and sys.stderr.isatty()):
        yield
        return
    bar = FirstPassBar()
    try:
        with first_pass_progress(bar):
            yield
    finally:
        bar.close()
