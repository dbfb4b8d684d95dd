"""Layer 0: plain JSON values from cnncli's results (dataclasses, tuples, numpy/jax arrays, paths).

Shared by the run directory's JSON files and the reporters' ``--json`` output, so a
result reads the same in a file and on stdout.
"""

from __future__ import annotations

import os
from typing import Any


def to_jsonable(obj: Any) -> Any:
    """Make dataclasses, tuples, numpy scalars and arrays JSON-serializable."""
    import dataclasses

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None  # JSON has no NaN/inf; null is what parsers accept
    if hasattr(obj, "tolist"):  # numpy / jax arrays and scalars
        return to_jsonable(obj.tolist())
    if hasattr(obj, "__fspath__"):
        return os.fspath(obj)
    return obj

