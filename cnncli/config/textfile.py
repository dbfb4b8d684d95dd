"""Text files a user hands in (recipes): read as UTF-8, a BOM accepted, a bad byte located.

A file saved by an editor that adds a UTF-8 byte-order mark (Windows Notepad) reads as
if it had none. A byte that is not UTF-8 (a file saved as Latin-1) is an error naming
the file, the line and the column, not a UnicodeDecodeError traceback.
"""

from __future__ import annotations

from pathlib import Path

from cnncli.errors import CnnCliError

BOM = b"\xef\xbb\xbf"


def read_text(path: Path, error: type[CnnCliError] = CnnCliError) -> str:
    """The file's text (UTF-8, without a leading BOM), or ``error`` naming where it is not UTF-8.

    Raises:
        error: a byte that is not UTF-8, with its line and column; a file that cannot be read.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise error(f"{path}: cannot be read: {err.strerror or err}", hint="check the path and its permissions") from None
    data = data[len(BOM):] if data.startswith(BOM) else data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise error(
            f"{path}:{line}: byte 0x{data[err.start]:02x} (column {column}) is not UTF-8",
            hint="save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)",
        ) from None
