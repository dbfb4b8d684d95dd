"""The one place cnncli touches orbax-checkpoint's private API (``orbax.checkpoint._src``).

`cnncli.runs.checkpoint_fs` hooks orbax's commit (write the manifest, fsync, fire test
faults) by subclassing ``AtomicRenameTemporaryPath``, which orbax passes to
``CheckpointManagerOptions(temporary_path_class=...)`` but does not export: it lives in
``orbax.checkpoint._src.path.atomicity``, free to move in any release. Everything cnncli
assumes about it is written down here:

- `PRIVATE_MODULE`.`PRIVATE_CLASS`: where the class is;
- `HOOKED_METHODS`: the methods the hook overrides or calls, whether orbax awaits them,
  and their parameters;
- `TMP_SUFFIX`, `COMMIT_MARKER`: the names orbax gives an uncommitted step directory and
  the file it writes just before the commit rename (orbax's ``TMP_DIR_SUFFIX`` and
  ``COMMIT_SUCCESS_FILE``).

All of it was verified against orbax-checkpoint `KNOWN_VERSION`; tests/test_checkpoint.py
checks it against the installed orbax. When a release moves the class or a method,
`atomic_rename_base` raises a `CheckpointError` naming the version and the symbol, with
the fix (pin orbax-checkpoint to `KNOWN_VERSION`), instead of an ``AttributeError`` deep
inside a save. orbax is imported only when the class is asked for (it takes seconds).
"""

from __future__ import annotations

import importlib
from importlib import metadata

from cnncli.errors import CheckpointError

KNOWN_VERSION = "0.12.8"  # the orbax-checkpoint release these assumptions were checked against
PRIVATE_MODULE = "orbax.checkpoint._src.path.atomicity"
PRIVATE_CLASS = "AtomicRenameTemporaryPath"
# name -> (async: orbax awaits it, parameters); the hook overrides create/finalize and calls get/get_final
HOOKED_METHODS: dict[str, tuple[bool, tuple[str, ...]]] = {
    "create": (True, ("self",)),
    "finalize": (True, ("self",)),
    "get": (False, ("self",)),
    "get_final": (False, ("self",)),
}
TMP_SUFFIX = ".orbax-checkpoint-tmp"  # orbax's TMP_DIR_SUFFIX: an uncommitted directory
COMMIT_MARKER = "commit_success.txt"  # orbax's COMMIT_SUCCESS_FILE, written just before the rename


def orbax_version() -> str:
    """The installed orbax-checkpoint version ("unknown" when its metadata is missing)."""
    try:
        return metadata.version("orbax-checkpoint")
    except metadata.PackageNotFoundError:
        return "unknown"


def moved(symbol: str, why: str) -> CheckpointError:
    """The error for an orbax release that no longer has what cnncli's commit hook uses."""
    return CheckpointError(
        f"orbax-checkpoint {orbax_version()} has no {symbol} as cnncli expects ({why}); "
        f"cnncli's checkpoint commit hook was written against orbax-checkpoint {KNOWN_VERSION}",
        hint=f"pin orbax-checkpoint=={KNOWN_VERSION} (e.g. `uv pip install 'orbax-checkpoint=={KNOWN_VERSION}'`)",
    )


def atomic_rename_base() -> type:
    """orbax's ``AtomicRenameTemporaryPath``, the base of cnncli's commit hook.

    Raises:
        CheckpointError: the private module or class is gone, or lacks a method of
            `HOOKED_METHODS` (names the installed version, the symbol and the pin).
    """
    symbol = f"{PRIVATE_MODULE}.{PRIVATE_CLASS}"
    try:
        module = importlib.import_module(PRIVATE_MODULE)
    except ImportError as err:
        raise moved(symbol, f"cannot import {PRIVATE_MODULE}: {err}") from None
    cls = getattr(module, PRIVATE_CLASS, None)
    if not isinstance(cls, type):
        raise moved(symbol, f"{PRIVATE_MODULE} has no class {PRIVATE_CLASS}")
    missing = [name for name in HOOKED_METHODS if not callable(getattr(cls, name, None))]
    if missing:
        raise moved(symbol, f"{PRIVATE_CLASS} has no method {', '.join(missing)}")
    return cls
