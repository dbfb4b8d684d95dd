"""Max pooling on XLA CPU: forward+backward time of each exact implementation.

Run: ``uv run python benchmarks/pool_variants.py [--rounds 3] [--reps 10]``

Why: ``lax.reduce_window`` max differentiates through select-and-scatter, which
is slow on XLA CPU. `cnncli.models.pooling.max_pool` picks among three exact
implementations (``slices``, ``reshape``, ``reduce_window``); this measures them
so the choice (`pooling.choose_max_impl`, `pooling.SLICE_MAX_TAPS`) rests on
numbers, plus avg pooling (reduce_window sum vs reshape+mean) and a train-step
gradient of a small CNN with every max pool forced to ``reduce_window`` vs
``auto``.

Each case is one jitted ``grad(sum(pool(x)**2))`` (the backward includes the
forward), float32, timed after one warm-up call; the median of ``--reps`` calls
per round, rounds alternating between implementations because this machine's
speed drifts 10-20% between runs. Prints one markdown row per case and
implementation: milliseconds per call (median over rounds, min-max).
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cnncli.arith import layers
from cnncli.models import build_model, pooling

# name -> (input shape, window, strides, pads)
CASES = {
    "2x2/2, 128x32x32x32": ((128, 32, 32, 32), (2, 2), (2, 2), ((0, 0), (0, 0))),
    "2x2/2, 32x56x56x64": ((32, 56, 56, 64), (2, 2), (2, 2), ((0, 0), (0, 0))),
    "3x3/3, 32x56x56x64": ((32, 56, 56, 64), (3, 3), (3, 3), ((0, 0), (0, 0))),
    "4x4/4, 128x32x32x32": ((128, 32, 32, 32), (4, 4), (4, 4), ((0, 0), (0, 0))),
    "3x3/2 p1, 32x112x112x64 (ResNet stem)": ((32, 112, 112, 64), (3, 3), (2, 2), ((1, 1), (1, 1))),
    "3x3/1 p1, 128x32x32x32": ((128, 32, 32, 32), (3, 3), (1, 1), ((1, 1), (1, 1))),
    "5x5/2 p2, 128x32x32x32": ((128, 32, 32, 32), (5, 5), (2, 2), ((2, 2), (2, 2))),
    "1-D 2/2, 128x256x32": ((128, 256, 32), (2,), (2,), ((0, 0),)),
    "3-D 3x3x3/2 p1, 16x16x16x16x16": ((16, 16, 16, 16, 16), (3, 3, 3), (2, 2, 2), ((1, 1),) * 3),
}


def grad_fn(pool):
    return jax.jit(jax.grad(lambda x: jnp.sum(pool(x) ** 2)))


def time_call(fn, x, reps: int) -> float:
    """Median milliseconds of ``fn(x)`` over ``reps`` calls, after one warm-up call."""
    jax.block_until_ready(fn(x))
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(fn(x))
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def max_variants(window, strides, pads) -> dict:
    impls = ["reduce_window", "slices"]
    if window == strides and all(p == (0, 0) for p in pads):
        impls.append("reshape")
    return {impl: grad_fn(lambda x, i=impl: pooling.max_pool(x, window, strides, None, pads, impl=i)) for impl in impls}


def avg_variants(window) -> dict:
    def reshape_mean(x):
        return pooling._reshape_reduce(x, window, jnp.mean)

    return {"reduce_window sum": grad_fn(lambda x: pooling.avg_pool(x, window, window)), "reshape mean": grad_fn(reshape_mean)}


def model_variants() -> tuple[dict, np.ndarray]:
    """A small CNN's loss gradient with max pools forced to reduce_window, and auto."""
    specs = layers.parse_layers(
        "conv:c=32,k=3,p=same relu maxpool:k=2 conv:c=64,k=3,p=same relu maxpool:k=2 flatten dense:c=10"
    )
    model = build_model(specs, (32, 32, 3), 10, rngs=nnx.Rngs(0))
    variants = {}
    for impl in ("reduce_window", "auto"):
        model.set_attributes(impl=impl)
        graphdef, params = nnx.split(model)

        def loss(params, x, graphdef=graphdef):
            return jnp.mean(nnx.merge(graphdef, params, copy=True)(x) ** 2)

        variants[impl] = (lambda g: (lambda x: g(params, x)))(jax.jit(jax.grad(loss)))
    x = np.random.default_rng(0).normal(size=(128, 32, 32, 3)).astype(np.float32)
    return variants, x


def measure(title: str, variants: dict, x, rounds: int, reps: int) -> None:
    results = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            results[name].append(time_call(fn, x, reps))
    for name, times in results.items():
        med = statistics.median(times)
        print(f"| {title} | {name} | {med:.2f} | {min(times):.2f}-{max(times):.2f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args()
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}; ms per jitted grad call")
    print("| case | implementation | median ms | min-max |\n|---|---|---|---|")
    for title, (shape, window, strides, pads) in CASES.items():
        x = jax.random.normal(jax.random.key(0), shape)
        measure(f"max {title}", max_variants(window, strides, pads), x, args.rounds, args.reps)
    x = jax.random.normal(jax.random.key(0), (128, 32, 32, 32))
    measure("avg 2x2/2, 128x32x32x32", avg_variants((2, 2)), x, args.rounds, args.reps)
    variants, x = model_variants()
    measure("small CNN grad, batch 128, 32x32x3", variants, x, args.rounds, args.reps)


if __name__ == "__main__":
    main()
