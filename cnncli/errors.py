"""Errors a user can act on.

Every error cnncli raises for bad input is a `CnnCliError`: its message names the
file, key or value at fault and says what to do. The CLI prints the message (no
traceback unless ``--debug``) and exits with ``exit_code``: 1 for user errors
(bad recipe, missing data, corrupt checkpoint), 2 for usage errors (bad flags or
tokens typed at the shell).

This module imports nothing heavy; it is safe everywhere.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class CnnCliError(Exception):
    """Base class: an error caused by the user's input, with an actionable message."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class UsageError(CnnCliError):
    """Bad flags or arguments on the command line (exit code 2)."""

    exit_code = 2


class LayerError(UsageError):
    """A layer token that does not parse, or layer keys that make no sense."""


class ShapeError(CnnCliError):
    """A layer that cannot be applied to its input shape (e.g. kernel larger than input)."""


class RecipeError(CnnCliError):
    """A recipe file that does not load or validate."""


class DataError(CnnCliError):
    """A dataset that is missing, unprepared, or has the wrong shape or labels."""


class CheckpointError(CnnCliError):
    """A checkpoint that is missing, partial, corrupt, or does not match the run."""


class TrainingError(CnnCliError):
    """Training stopped for a reason the user must see (non-finite loss, ...)."""


class ExportError(CnnCliError):
    """A model that cannot be exported in the asked format (layers it cannot express, a missing converter)."""


class ExportMismatchError(ExportError):
    """An exported model whose outputs differ from cnncli's own beyond the tolerance (nothing is written)."""


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """The closest valid choice to ``word``, or None when nothing is close.

    Args:
        word: what the user typed.
        choices: the valid spellings.

    Returns:
        The best match by `difflib` similarity (cutoff 0.6), or None.
    """
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return matches[0] if matches else None


def unknown_choice(what: str, word: str, choices: Iterable[str]) -> str:
    """A message for an unknown name: did-you-mean if close, else the valid list.

    >>> unknown_choice("layer kind", "conv2", ["conv", "dense"])
    "unknown layer kind 'conv2'; did you mean 'conv'? (valid: conv, dense)"
    """
    choices = sorted(choices)
    guess = did_you_mean(word, choices)
    msg = f"unknown {what} {word!r}"
    if guess:
        msg += f"; did you mean {guess!r}?"
    return msg + f" (valid: {', '.join(choices)})"
