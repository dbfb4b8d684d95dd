"""Process-wide JAX settings cnncli applies before its first compilation.

A persistent XLA compilation cache (``~/.cache/cnncli/xla``, or ``$CNNCLI_CACHE_DIR``;
``CNNCLI_CACHE_DIR=off`` disables it): the second run of a recipe skips compiling
its train and eval steps. On this 2-core CPU that saves about 2 s of a 4 s start.

No XLA_FLAGS are set here: the XLA CPU options cnncli uses are passed per compiled
program (`cnncli.steps.xla_options`, ``jax.jit(..., compiler_options=...)``), which
works whenever the backend was started and touches no other program. Thread
settings are left to XLA (one intra-op thread per core); see BENCHMARKS.md, "Levers".
"""

from __future__ import annotations

import os
from pathlib import Path

_done = False


def configure() -> None:
    """Apply the settings once per process (idempotent)."""
    global _done
    if _done:
        return
    _done = True
    import jax

    cache = os.environ.get("CNNCLI_CACHE_DIR", str(Path.home() / ".cache" / "cnncli" / "xla"))
    if cache.lower() in ("", "off", "0", "none"):
        return
    try:
        Path(cache).mkdir(parents=True, exist_ok=True)
    except OSError:
        return  # read-only home: run without a cache
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)  # cache the small programs too
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
