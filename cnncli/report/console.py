"""The only printer: rich output on a terminal, plain JSON for scripts.

Results and JSON go to stdout; progress, logs and errors go to stderr. Colour only
when the stream is a terminal and ``NO_COLOR`` is unset (https://no-color.org).

rich is imported by the functions that use it, not by this module: importing it costs
about 24 ms (``python -X importtime``), a tenth of ``conv-arith``'s start-up, and the
plain forms (a number, JSON) print without it.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Any

from cnncli._json import to_jsonable
from cnncli.errors import CnnCliError

if TYPE_CHECKING:
    from rich.console import Console


def _color_ok(stream) -> bool:
    return "NO_COLOR" not in os.environ and stream.isatty()


def stdout_console() -> Console:
    """A console on stdout: styled on a terminal, plain (no ANSI codes) when piped."""
    from rich.console import Console

    on_tty = _color_ok(sys.stdout)
    return Console(
        file=sys.stdout,
        no_color=not on_tty,
        force_terminal=on_tty,
        highlight=False,
        soft_wrap=not sys.stdout.isatty(),
        width=None if sys.stdout.isatty() else 200,
    )


def stderr_console() -> Console:
    """A console on stderr for progress, warnings and errors."""
    from rich.console import Console

    on_tty = _color_ok(sys.stderr)
    return Console(file=sys.stderr, no_color=not on_tty, highlight=False, stderr=True)


def is_interactive() -> bool:
    """True when stdout is a terminal (human output), False when piped (JSON lines)."""
    return sys.stdout.isatty()


def print_json(obj: Any) -> None:
    """One JSON object on one line of stdout, flushed (safe to pipe into ``jq``)."""
    sys.stdout.write(json.dumps(to_jsonable(obj), sort_keys=False) + "\n")
    sys.stdout.flush()


def print_lines(lines: list[str]) -> None:
    """Plain lines of text on stdout, no markup or styling (people and scripts read the same)."""
    sys.stdout.write("".join(f"{line}\n" for line in lines))
    sys.stdout.flush()


def print_error(err: CnnCliError) -> None:
    """An error message on stderr: ``error: ...`` and its hint, no traceback."""
    from rich.markup import escape

    console = stderr_console()
    console.print(f"[bold red]error:[/] {escape(err.message)}", markup=True, highlight=False, soft_wrap=True)
    if err.hint:
        console.print(f"  [dim]hint:[/] {escape(err.hint)}", markup=True, highlight=False, soft_wrap=True)


def warn(message: str) -> None:
    """A warning on stderr."""
    from rich.markup import escape

    stderr_console().print(f"[yellow]warning:[/] {escape(message)}", markup=True, highlight=False, soft_wrap=True)
