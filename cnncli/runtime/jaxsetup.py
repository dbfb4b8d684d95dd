"""Process-wide JAX settings cnncli applies before its first compilation.

A persistent XLA compilation cache (``xla/`` in cnncli's cache, `cnncli.config.cache`:
``~/.cache/cnncli/xla`` or ``$CNNCLI_CACHE_DIR/xla``; ``CNNCLI_CACHE_DIR=off`` disables
it): the second run of a recipe skips compiling its train and eval steps. On this 2-core CPU that saves about 2 s of a 4 s start.

No XLA_FLAGS are set here: the XLA CPU options cnncli uses are passed per compiled
program (`cnncli.models.apply.xla_options`, ``jax.jit(..., compiler_options=...)``), which
works whenever the backend was started and touches no other program. Thread
settings are left to XLA (one intra-op thread per core); see BENCHMARKS.md, "Levers".

Host memory (`tune_host_malloc`, glibc only): XLA CPU allocates each run's
temporary buffer afresh (306 MB for a ResNet-20 step at batch 128). glibc serves an
allocation that size from ``mmap`` and returns it with ``munmap``, so every step
paid about 75,000 page faults, zeroing fresh pages the kernel hands out (about a
third of ResNet-20's step time on the 2-core machine). cnncli keeps all threads on
glibc's main heap, without ``mmap`` for large blocks and without trimming, so the
block is reused from step to step: the resident size stays at its peak (1.25 GB
instead of 0.7 GB for ResNet-20) and the faults are gone. ``CNNCLI_MALLOC=system``
leaves glibc's defaults.
"""

from __future__ import annotations

import os

from cnncli.config.cache import cache_path

_done = False
_malloc_tuned: bool | None = None

# What tune_host_malloc sets: (glibc tunable name, mallopt parameter from malloc.h, value).
MALLOC_SETTINGS = (
    ("arena_max", -8, 1),  # new threads share the main heap, which can grow past 64 MB
    ("mmap_max", -4, 0),  # large blocks from the heap, not fresh mmaps
    ("trim_threshold", -1, 2**31 - 1),  # never hand the heap's top back
    ("top_pad", -2, 64 << 20),  # grow the heap in 64 MB steps
)


def glibc_tunables() -> str:
    """The same settings as a ``GLIBC_TUNABLES`` value, for another process (benchmarks' peers)."""
    return ":".join(f"glibc.malloc.{name}={value}" for name, _, value in MALLOC_SETTINGS)


def tune_host_malloc() -> bool:
    """Keep freed host memory for reuse (see the module docstring); True if applied.

    Call it before the XLA backend starts its threads (the CLI does, before any
    command that uses jax): a thread keeps the malloc arena it first used. Applied
    once per process; a no-op off glibc or with ``CNNCLI_MALLOC=system``.
    """
    global _malloc_tuned
    if _malloc_tuned is not None:
        return _malloc_tuned
    _malloc_tuned = False
    if os.environ.get("CNNCLI_MALLOC", "").lower() in ("system", "off", "0"):
        return False
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        if not libc.gnu_get_libc_version:  # glibc only: other libcs' mallopt differ
            return False
    except (OSError, AttributeError):
        return False
    ok = all(mallopt(param, value) == 1 for _, param, value in MALLOC_SETTINGS)
    _malloc_tuned = ok
    return ok


def configure() -> None:
    """Apply the settings once per process (idempotent)."""
    global _done
    if _done:
        return
    _done = True
    tune_host_malloc()
    import jax

    cache = cache_path("xla")
    if cache is None:
        return
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError:
        return  # read-only home: run without a cache
    jax.config.update("jax_compilation_cache_dir", str(cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)  # cache the small programs too
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
