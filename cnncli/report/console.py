"""The only printer: rich output on a terminal, plain JSON for scripts.

Results and JSON go to stdout; progress, logs and errors go to stderr. Colour only
when the stream is a terminal and ``NO_COLOR`` is unset (https://no-color.org).

rich is imported by the functions that use it, not by this module: importing it costs
about 24 ms (``python -X importtime``), a tenth of ``conv-arith``'s start-up, and the
plain forms (a number, JSON) print without it.
"""

from __future__ import annotations

import codecs
import json
import os
import sys
from typing import TYPE_CHECKING, Any

from cnncli._json import to_jsonable
from cnncli.errors import CnnCliError

if TYPE_CHECKING:
    from rich.console import Console


# What a glyph becomes on an output that cannot encode it (PYTHONIOENCODING=ascii, a latin-1
# terminal): rich draws its own boxes and bars in ASCII there; these are cnncli's own glyphs.
_ASCII = {
    "\u00b7": ".", "\u2026": "...", "\u00d7": "x", "\u00b1": "+/-", "\u2014": "--", "\u2013": "-",
    "\u2192": "->", "\u2190": "<-", "\u2264": "<=", "\u2265": ">=", "\u2212": "-", "\u00b5": "u",
    "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2022": "*", "\u2713": "ok",
    "\u2581": ".", "\u2582": ",", "\u2583": "-", "\u2584": "=", "\u2585": "+", "\u2586": "*",
    "\u2587": "#", "\u2588": "#", "\u2580": "#", "\u258c": "#", "\u2590": "#",
}  # fmt: skip


def _ascii_glyph(ch: str) -> str:
    if ch in _ASCII:
        return _ASCII[ch]
    code = ord(ch)
    if 0x2500 <= code <= 0x257F:  # box drawing: lines and corners
        if code in (0x2500, 0x2501, 0x2504, 0x2505, 0x2508, 0x2509, 0x254C, 0x254D, 0x2550):
            return "-"
        if code in (0x2502, 0x2503, 0x2506, 0x2507, 0x250A, 0x250B, 0x254E, 0x254F, 0x2551):
            return "|"
        return "+"
    if 0x2580 <= code <= 0x259F:  # other block elements
        return "#"
    return "?"


def _ascii_errors(err: UnicodeError) -> tuple[str, int]:
    if not isinstance(err, UnicodeEncodeError):
        raise err
    return "".join(_ascii_glyph(ch) for ch in err.object[err.start : err.end]), err.end


def degrade_to_ascii() -> None:
    """Let stdout and stderr print what they cannot encode as ASCII look-alikes instead of crashing.

    On an output whose encoding has no room for cnncli's glyphs (``PYTHONIOENCODING=ascii``,
    ``LANG=C`` without UTF-8 coercion, a latin-1 terminal), ``·`` prints as ``.``, ``…``
    as ``...``, bars as ``#`` and anything else as ``?``, where Python would raise
    UnicodeEncodeError. JSON is ASCII already. Called once by the CLI before any output.
    """
    try:
        codecs.lookup_error("cnncli-ascii")
    except LookupError:
        codecs.register_error("cnncli-ascii", _ascii_errors)
    for stream in (sys.stdout, sys.stderr):
        try:
            "\u2501\u00b7\u2588".encode(getattr(stream, "encoding", None) or "ascii")
            continue  # a UTF-8 (or other Unicode) stream: nothing to do
        except (UnicodeEncodeError, LookupError):
            pass
        try:
            stream.reconfigure(errors="cnncli-ascii")
        except (AttributeError, ValueError, OSError):  # not a text stream we can reconfigure
            pass


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
        width=None if sys.stdout.isatty() else _columns(200),
    )


def _columns(default: int) -> int:
    """``$COLUMNS`` when it is a positive number (a pipe has no width of its own), else ``default``."""
    text = os.environ.get("COLUMNS", "").strip()
    return int(text) if text.isdigit() and int(text) > 0 else default


def stderr_console() -> Console:
    """A console on stderr for progress, warnings and errors."""
    from rich.console import Console

    on_tty = _color_ok(sys.stderr)
    return Console(file=sys.stderr, no_color=not on_tty, highlight=False, stderr=True)


def fits(console: Console, renderable) -> bool:
    """Whether ``renderable`` (a table) prints within the console's width without cutting a cell.

    rich squeezes a table that is too wide by wrapping its cells at spaces and, past
    that, by cutting them to ``…`` or dropping whole columns; a table fits when every
    column gets at least its longest word.
    """
    from rich.measure import Measurement

    unbounded = console.options.update_width(100_000)  # measured at the console's width, it would be clamped to it
    return Measurement.get(console, unbounded, renderable).minimum <= console.width


def fitted(console: Console, table):
    """``table`` when it `fits` ``console``, else its cells as text: one line per row,
    ``header value`` pairs after the first cell (wrapped, never cut)."""
    if fits(console, table):
        return table
    from rich.text import Text

    def plain(cell) -> str:
        return Text.from_markup(cell).plain if isinstance(cell, str) else str(cell)

    columns = list(table.columns)
    rows = list(zip(*(list(c.cells) for c in columns))) if columns else []
    headers = [plain(c.header) for c in columns]
    lines = [plain(table.title)] if table.title else []
    for row in rows:
        if table.show_header:
            pairs = ", ".join(f"{h} {plain(v)}" for h, v in zip(headers[1:], row[1:]) if plain(v) and h)
        else:  # a key-value table
            pairs = ", ".join(plain(v) for v in row[1:] if plain(v))
        lines.append(f"{plain(row[0])}: {pairs}" if pairs else plain(row[0]))
    if table.show_footer and columns:  # the totals row
        footers = [plain(c.footer) for c in columns]
        pairs = ", ".join(f"{h} {v}" for h, v in zip(headers[1:], footers[1:]) if v and h)
        lines.append(f"{footers[0]}: {pairs}" if pairs else footers[0])
    if table.caption:
        lines.append(plain(table.caption))
    return Text("\n".join(lines))


def is_interactive() -> bool:
    """True when stdout is a terminal (human output), False when piped (JSON lines)."""
    return sys.stdout.isatty()


def print_json(obj: Any) -> None:
    """One JSON object on one line of stdout, flushed (safe to pipe into ``jq``)."""
    _write(json.dumps(to_jsonable(obj), sort_keys=False) + "\n")


def print_lines(lines: list[str]) -> None:
    """Plain lines of text on stdout, no markup or styling (people and scripts read the same)."""
    _write("".join(f"{line}\n" for line in lines))


_stdout_gone = False


def _write(text: str) -> None:
    """Write and flush stdout; once its reader has gone (``| head -1``), drop the output and go on."""
    if _stdout_gone:
        return
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        stdout_closed()


def stdout_closed() -> None:
    """The reader of stdout went away: point stdout at /dev/null and say so once on stderr.

    A command that is still working (``train --json | head -1``) finishes its work, and
    everything it writes to the run directory is there; only its stdout is dropped.
    """
    global _stdout_gone
    if _stdout_gone:
        return
    _stdout_gone = True
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # what the failed flush left in the buffer goes there too
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout without a file descriptor (captured)
        pass
    try:
        warn("stdout was closed by its reader: the command goes on, its output is dropped")
    except OSError:  # stderr went with it (`|&`): nobody is left to tell
        pass


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
