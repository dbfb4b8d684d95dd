"""The CPU's practical matrix-multiply peak, in GFLOP/s: the denominator of MFU.

Run: ``uv run python benchmarks/matmul_peak.py [--n 2048] [--windows 5] [--seconds 1]``

A jitted ``jnp.dot`` of two n x n matrices (2 n^3 FLOPs per call), float32, and
bfloat16 with float32 accumulation (``preferred_element_type``); also NumPy's
float32 matmul for reference. Each window repeats the product for at least
``--seconds``; prints median, min and max GFLOP/s over the windows, alternating the
kinds. `measure` is also called by ``benchmarks/vs_pytorch.py`` in the same run as
the training measurements.
"""

from __future__ import annotations

import argparse
import statistics
import time


def measure(dtype: str = "float32", *, n: int = 2048, seconds: float = 1.0) -> dict:
    """One window: GFLOP/s of ``dot(a, b)`` on n x n operands (``numpy`` = NumPy float32)."""
    import numpy as np

    flops = 2 * n**3
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    if dtype == "numpy":
        fn = lambda: a @ b  # noqa: E731
        block = lambda r: r  # noqa: E731
    else:
        import jax
        import jax.numpy as jnp

        if dtype == "bfloat16":
            a, b = jnp.asarray(a, jnp.bfloat16), jnp.asarray(b, jnp.bfloat16)
            dot = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
        else:
            a, b = jnp.asarray(a), jnp.asarray(b)
            dot = jax.jit(jnp.dot)
        fn = lambda: dot(a, b)  # noqa: E731
        block = jax.block_until_ready
    block(fn())  # compile and warm up
    calls = 0
    t0 = time.perf_counter()
    while calls < 2 or time.perf_counter() - t0 < seconds:
        block(fn())
        calls += 1
    dt = time.perf_counter() - t0
    return {"dtype": dtype, "n": n, "gflops": flops * calls / dt / 1e9, "calls": calls}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    kinds = ["float32", "bfloat16", "numpy"]
    results: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(args.windows):
        for k in kinds:
            results[k].append(measure(k, n=args.n, seconds=args.seconds)["gflops"])
    print(f"| matmul {args.n}x{args.n} | median GFLOP/s | min-max | windows |\n|---|---|---|---|")
    labels = {"float32": "jax float32", "bfloat16": "jax bfloat16 -> float32 accumulate", "numpy": "numpy float32"}
    for k, v in results.items():
        print(f"| {labels[k]} | {statistics.median(v):.0f} | {min(v):.0f}-{max(v):.0f} | {len(v)} |")


if __name__ == "__main__":
    main()
