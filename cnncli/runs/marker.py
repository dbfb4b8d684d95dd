"""Two small files of a run directory that say whether it is training now and whether it failed.

::

    process.json   {"pid", "host", "started"}: written when training starts, removed when it
                   stops (finished, interrupted or failed alike). Only a process killed
                   outright (SIGKILL, out of memory, power loss) leaves it behind: a marker
                   whose pid is not alive on its host is stale and means nothing.
    failure.json   {"error", "message", "hint", "time"}: the error that stopped the last
                   attempt, when it had started training and was not interrupted (a
                   non-finite loss, a failed save, a bug); removed when the next attempt starts.

Training writes them (`cnncli.train.attempt`), `cnncli.runs.catalog` reads them. Runs
made before these files existed have neither: they read as finished or interrupted.
A pid is checked with ``kill(pid, 0)`` on the host that wrote it; on another host it
cannot be checked (`process_alive` says None), and a pid reused by an unrelated
process after a hard kill would read as alive (rare: pids wrap after ~4 million).
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

PROCESS = "process.json"
FAILURE = "failure.json"


def _write(path: Path, obj: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)  # atomic: a reader sees the old file or the new one


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def mark_running(workdir: Path) -> None:
    """Write ``process.json``: this process (pid, host) trains ``workdir`` from now on."""
    _write(Path(workdir) / PROCESS, {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})


def clear_running(workdir: Path) -> None:
    """Remove ``process.json`` (training in this process stopped)."""
    _remove(Path(workdir) / PROCESS)


def record_failure(workdir: Path, error: BaseException) -> None:
    """Write ``failure.json`` with ``error``'s type, message and hint."""
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    _write(Path(workdir) / FAILURE, {
        "error": type(error).__name__, "message": message, "hint": getattr(error, "hint", None), "time": time.time(),
    })  # fmt: skip


def clear_failure(workdir: Path) -> None:
    """Remove ``failure.json`` (a new attempt started)."""
    _remove(Path(workdir) / FAILURE)


def read_process(workdir: Path) -> dict[str, Any] | None:
    """``process.json`` as written, or None (absent or unreadable)."""
    return _read(Path(workdir) / PROCESS)


def read_failure(workdir: Path) -> dict[str, Any] | None:
    """``failure.json`` as written, or None (absent or unreadable)."""
    return _read(Path(workdir) / FAILURE)


def process_alive(info: dict[str, Any]) -> bool | None:
    """Is the process of a ``process.json`` alive? None when it ran on another host (unknowable here)."""
    pid = info.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    if info.get("host") != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)  # signal 0: only checks that the pid exists
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True
