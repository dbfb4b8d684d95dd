"""Which kernels the convolutions of a trace use: the conv-backend setting.

"xla" (lax) or "onednn" (`cnncli.native.onednn`, ``[train] conv_backend``). Read at
trace time, so it is part of what a compiled step is; set around a trace with
`conv_backend`. `cnncli.models.ops` (convolutions) and `cnncli.models.norm` (BatchNorm's
native channel sums) both read it, so it lives below both.
"""

from __future__ import annotations

import contextlib
import contextvars

_CONV_BACKEND: contextvars.ContextVar[str] = contextvars.ContextVar("cnncli_conv_backend", default="xla")
CONV_BACKENDS = ("xla", "onednn")


@contextlib.contextmanager
def conv_backend(name: str):
    """Trace the convolutions inside with backend ``name`` (see `CONV_BACKENDS`)."""
    if name not in CONV_BACKENDS:
        raise ValueError(f"unknown conv backend {name!r}; expected one of {CONV_BACKENDS}")
    token = _CONV_BACKEND.set(name)
    try:
        yield
    finally:
        _CONV_BACKEND.reset(token)


def current_conv_backend() -> str:
    """The conv backend of the trace in progress (`conv_backend`; "xla" outside one)."""
    return _CONV_BACKEND.get()
