"""The data source string, parsed once: ``digits``, ``mnist1d``, ``npz:PATH``, ``tfds:NAME``, ``folder:PATH``.

A recipe keeps ``data.source`` as the text the user wrote (so ``recipe.json`` and the
JSON Schema show a plain string); everything else reads it as a `DataSource`
(``DataConfig.source_spec``), so the ``kind:arg`` grammar is split here and only here.

Pure Python (no numpy, no pydantic): ``conv-arith RECIPE`` reads it in milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from cnncli.errors import did_you_mean

SOURCE_KINDS = ("digits", "mnist1d", "npz", "tfds", "folder")
NAMED_KINDS = ("npz", "tfds", "folder")  # kinds that need a name or path after the colon
PATH_KINDS = ("npz", "folder")  # their argument is a path: relative ones resolve against the recipe's folder
FORMS = "digits, mnist1d, npz:PATH, tfds:NAME, folder:PATH"


@dataclass(frozen=True)
class DataSource:
    """Where a dataset comes from: a source kind and its name or path.

    Attributes:
        kind: one of `SOURCE_KINDS`.
        arg: the text after the first colon: the npz file, the TFDS name, the image folder
            (empty for ``digits`` and ``mnist1d``).
    """

    kind: str
    arg: str = ""

    @classmethod
    def parse(cls, text: str) -> DataSource:
        """Parse ``kind`` or ``kind:arg``; the argument may itself hold colons (``npz:C:/d.npz``).

        Raises:
            ValueError: an unknown kind (with the closest valid one), or a missing name or path.
                A `ValueError`, so the recipe schema reports it at ``data.source`` with the line.
        """
        kind, _, arg = text.partition(":")
        if kind not in SOURCE_KINDS:
            guess = did_you_mean(kind, SOURCE_KINDS)
            hint = f"; did you mean {guess!r}?" if guess else ""
            raise ValueError(f"unknown data source {text!r}{hint} (valid: {FORMS})")
        if kind in NAMED_KINDS and not arg:
            raise ValueError(f"{kind} needs a name or path: {kind}:...")
        return cls(kind, arg)

    def __str__(self) -> str:
        """The source string, ``kind`` or ``kind:arg`` (as parsed, bar a bare trailing colon)."""
        return f"{self.kind}:{self.arg}" if self.arg else self.kind

    @property
    def stem(self) -> str:
        """A short name for file names: the file or folder name, the TFDS name, or the kind."""
        return Path(self.arg or self.kind).stem or str(self)

    def resolved(self, base: Path) -> DataSource:
        """This source with a relative ``npz``/``folder`` path made absolute against ``base``.

        ``~`` counts as absolute (it is expanded when the data is read); other kinds are
        returned unchanged.
        """
        if self.kind not in PATH_KINDS or Path(self.arg).expanduser().is_absolute():
            return self
        return replace(self, arg=str((base / self.arg).resolve()))


def resolve_source(text: str, base: Path) -> str:
    """``text`` with a relative ``npz``/``folder`` path resolved against ``base``.

    Text that does not parse is returned as it is: the recipe's validation reports it
    with the file and line.
    """
    try:
        source = DataSource.parse(text)
    except ValueError:
        return text
    resolved = source.resolved(base)
    return text if resolved is source else str(resolved)
