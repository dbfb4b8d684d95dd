"""Ctrl-C and SIGTERM during training: stop after the current step, save, exit 130/143.

`StopSignals` is a context manager: inside it, SIGINT or SIGTERM only sets a flag
that the loop reads after each step (it then saves a checkpoint and raises
`Interrupted`); a second SIGINT raises `KeyboardInterrupt` at once, without waiting
for a save. Leaving the block restores the previous handlers.
"""

from __future__ import annotations

import shlex
import signal
from pathlib import Path

from cnncli.errors import CnnCliError


class Interrupted(CnnCliError):
    """Training was stopped by SIGINT/SIGTERM after saving a checkpoint."""

    def __init__(self, message: str, exit_code: int, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.exit_code = exit_code


class StopSignals:
    """SIGINT/SIGTERM handlers that ask the loop to stop (see the module docstring)."""

    def __init__(self) -> None:
        self.signum: int | None = None  # the first signal received
        self._old: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: abort at once, without waiting for a save
        self.signum = signum

    def __enter__(self) -> StopSignals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. inside a test runner thread)
                pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    @property
    def requested(self) -> bool:
        """True once a signal asked training to stop."""
        return self.signum is not None

    def interrupted(self, step: int | None, checkpoint: Path, workdir: Path) -> Interrupted:
        """The error to raise once ``checkpoint`` (of ``step``) is saved: exit 130 (SIGINT) or 143 (SIGTERM)."""
        sigint = self.signum == signal.SIGINT
        return Interrupted(
            f"{'SIGINT' if sigint else 'SIGTERM'}: stopped after step {step}; checkpoint saved in {checkpoint}",
            exit_code=130 if sigint else 143,  # 128 + the signal number, as shells do
            hint=f"resume with: cnncli train RECIPE --workdir {workdir}",
        )


def resume_command(recipe: str | Path, sets: list[str], workdir: str | Path, *, allow_recipe_change: bool = False) -> str:
    """The ``cnncli train`` command that resumes this run, quoted for a POSIX shell.

    The recipe path as given and every ``--set`` of the interrupted command: the resumed
    recipe must be the same, or the resume is refused as a recipe change.
    """
    args = ["cnncli", "train", str(recipe)]
    for item in sets:
        args += ["--set", item]
    args += ["--workdir", str(workdir)]
    if allow_recipe_change:
        args.append("--allow-recipe-change")
    return shlex.join(args)
