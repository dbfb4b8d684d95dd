"""Where cnncli keeps its caches: one override for all of them.

``$CNNCLI_CACHE_DIR`` when set, else ``$XDG_CACHE_HOME/cnncli``, else ``~/.cache/cnncli``.
Each cache is a folder inside it: ``xla/`` (compiled programs, `cnncli.runtime.jaxsetup`)
and ``native/`` (the oneDNN extension and its implementation choices,
`cnncli.native.onednn`). ``CNNCLI_CACHE_DIR=off`` keeps nothing between processes.
Deleting the folder is always safe: everything in it is rebuilt on use.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "CNNCLI_CACHE_DIR"
OFF = ("off", "0", "none", "no", "false")


def cache_root() -> Path | None:
    """The folder all of cnncli's caches live in, or None with ``CNNCLI_CACHE_DIR=off``."""
    value = os.environ.get(ENV)
    if value is not None and value.strip():
        if value.strip().lower() in OFF:
            return None
        return Path(value).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "cnncli"


def cache_path(name: str) -> Path | None:
    """One cache's folder (``xla``, ``native``) inside `cache_root`; None when caching is off."""
    root = cache_root()
    return None if root is None else root / name
