"""Option and argument types shared by the cnncli commands (typer ``Annotated`` aliases).

One declaration per option, so ``--json``, ``--checkpoint`` and ``--ema`` read and
behave the same in every command that has them. Light on purpose: typer only, so
importing a command module stays fast (``--help``, ``conv-arith``).

    from cnncli.cli._options import CheckpointOpt, JsonOpt, RunArg, checkpoint_arg

    def eval_run(run: RunArg, checkpoint: CheckpointOpt = "latest", json_out: JsonOpt = False): ...
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cnncli.errors import UsageError

RunArg = Annotated[
    Path, typer.Argument(help="Run directory made by `cnncli train` (or a checkpoint inside it).", show_default=False)
]
CheckpointOpt = Annotated[
    str,
    typer.Option("--checkpoint", "-c", help="Which checkpoint: latest, best (highest eval accuracy) or a step number."),
]
EmaOpt = Annotated[bool, typer.Option("--ema", help="Use the EMA weights (runs trained with train.ema_decay).")]


def json_opt(help_text: str, **kwargs):
    """A ``--json`` flag type with a command's own help text (extra `typer.Option` settings in ``kwargs``).

    For commands whose ``--json`` output differs (one object per epoch, default when
    piped); `JsonOpt` is the common one.
    """
    return Annotated[bool, typer.Option("--json", help=help_text, **kwargs)]


JsonOpt = json_opt("Print one JSON object on stdout instead of tables.")


def checkpoint_arg(text: str) -> str | int:
    """``latest``/``best``/a step number; anything else is a usage error (exit 2)."""
    text = text.strip().lower()
    if text in ("latest", "best"):
        return text
    if text.isascii() and text.isdigit():  # not `²`: isdigit takes it, int refuses it
        return int(text)
    raise UsageError(f"--checkpoint {text!r}: expected latest, best or a step number", hint="e.g. --checkpoint 220")


def source_arg(text: str | None) -> str | None:
    """A ``--source`` value (``digits``, ``npz:PATH``, ...); an unknown kind is a usage error (exit 2)."""
    if text is None:
        return None
    from cnncli.config.source import FORMS, DataSource

    try:
        DataSource.parse(text)
    except ValueError as err:
        raise UsageError(f"--source: {err}", hint=f"a source is one of {FORMS}") from None
    return text
