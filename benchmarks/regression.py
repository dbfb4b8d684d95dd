"""CI speed check: cnncli's train step as a ratio to a hand-written JAX baseline step.

Run: ``uv run python benchmarks/regression.py`` (about 30 s on 2 busy cores).

Both steps train the same small CNN (``--model``, default the 2-conv CNN of
``vs_pytorch.py``) on the same batch with SGD + momentum 0.9, in one process,
alternating timed windows: cnncli's real step (`cnncli.train.profiling.synthetic_step`:
`cnncli.train.step.make_train_step`, on-device data, donation, cnncli's models and XLA
options) and a baseline written the plain way in about 30 lines of JAX (a params
dict, ``lax.conv_general_dilated``, ``lax.reduce_window`` max pooling, optax,
``jax.jit`` with donation; what a user would write first). A ratio is robust to the
machine's speed and load, which move both sides together; the absolute numbers are
not. Prints one line per model and ``ratio=...``; always exits 0 unless something
crashes, so noise never fails CI. Compare the ratio with BENCHMARKS.md (about 2.3 for
cnn2 on the 2-core EPYC since the tiles max pool); a drop well below that is a
regression worth a look.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

MODELS = {
    # name -> (cnncli tokens, input shape, baseline conv widths)
    "cnn2": ("conv:c=32,k=3,p=same relu maxpool:k=2 conv:c=64,k=3,p=same relu maxpool:k=2 flatten dense",
             (28, 28, 1), (32, 64)),  # fmt: skip
    "cnn2-small": ("conv:c=8,k=3,p=same relu maxpool:k=2 conv:c=16,k=3,p=same relu maxpool:k=2 flatten dense",
                   (28, 28, 1), (8, 16)),  # fmt: skip
}


def baseline_step(input_shape, widths, batch_size: int, num_classes: int = 10):
    """A plain JAX train step for conv-relu-maxpool x2, flatten, dense; returns (step, state, args)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from jax import lax

    h, w, c = input_shape
    key = jax.random.key(0)
    k1, k2, k3 = jax.random.split(key, 3)
    c1, c2 = widths
    params = {
        "w1": jax.random.normal(k1, (3, 3, c, c1)) * (2 / (9 * c)) ** 0.5, "b1": jnp.zeros(c1),
        "w2": jax.random.normal(k2, (3, 3, c1, c2)) * (2 / (9 * c1)) ** 0.5, "b2": jnp.zeros(c2),
        "w3": jax.random.normal(k3, ((h // 4) * (w // 4) * c2, num_classes)) * 0.01, "b3": jnp.zeros(num_classes),
    }  # fmt: skip
    tx = optax.sgd(0.01, momentum=0.9)

    def forward(p, x):
        for i in (1, 2):
            x = lax.conv_general_dilated(x, p[f"w{i}"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
            x = jax.nn.relu(x + p[f"b{i}"])
            x = lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        return x.reshape(x.shape[0], -1) @ p["w3"] + p["b3"]

    def loss_fn(p, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(forward(p, x), y).mean()

    def step(state, x_all, y_all, perm, index):
        p, opt = state
        idx = lax.dynamic_slice(perm, (index * batch_size,), (batch_size,))
        x = (jnp.take(x_all, idx, axis=0).astype(jnp.float32) - 127.5) / 64.0
        grads = jax.grad(loss_fn)(p, x, jnp.take(y_all, idx, axis=0))
        updates, opt = tx.update(grads, opt, p)
        return optax.apply_updates(p, updates), opt

    n = 4 * batch_size
    rng = np.random.default_rng(0)
    args = (jnp.asarray(rng.integers(0, 256, (n, *input_shape), dtype=np.uint8)),
            jnp.asarray(rng.integers(0, num_classes, (n,), dtype=np.int32)), jnp.asarray(rng.permutation(n).astype(np.int32)))  # fmt: skip
    return jax.jit(step, donate_argnums=(0,)), (params, tx.init(params)), args


def window(run_one, state, seconds: float, min_steps: int = 3):
    """Steps per second of ``state = run_one(state, i)`` for at least ``seconds``."""
    import jax

    t0, steps = time.perf_counter(), 0
    while steps < min_steps or time.perf_counter() - t0 < seconds:
        state = run_one(state, steps)
        steps += 1
        if steps % 4 == 0:  # dispatch is asynchronous: wait now and then, or the clock reads the queue
            jax.block_until_ready(state)
    jax.block_until_ready(state)
    return state, steps / (time.perf_counter() - t0)


def compare(name: str, batch_size: int, windows: int, seconds: float) -> float:
    import numpy as np

    from cnncli.train.profiling import synthetic_step

    tokens, shape, widths = MODELS[name]
    t0 = time.perf_counter()
    bench = synthetic_step(tokens, shape, batch_size=batch_size)
    t1 = time.perf_counter()
    base, base_state, base_args = baseline_step(shape, widths, batch_size)
    x, y, perm, _, key = bench.args

    def ours(state, i):
        return bench.step(state, x, y, perm, np.int32(i % 4), key)

    def theirs(state, i):
        return base(state, *base_args, np.int32(i % 4))

    states = {"cnncli": bench.state, "baseline": base_state}
    fns = {"cnncli": ours, "baseline": theirs}
    rates: dict[str, list[float]] = {k: [] for k in fns}
    for k in fns:  # warm-up (the baseline compiles here)
        states[k], _ = window(fns[k], states[k], 0.0, min_steps=2)
    print(f"{name}: cnncli set-up {t1 - t0:.1f} s (step compile {bench.compile_seconds:.1f} s), "
          f"baseline set-up and warm-up {time.perf_counter() - t1:.1f} s", flush=True)  # fmt: skip
    for r in range(windows):
        for k in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
            states[k], rate = window(fns[k], states[k], seconds)
            rates[k].append(rate * batch_size)
    med = {k: statistics.median(v) for k, v in rates.items()}
    ratio = med["cnncli"] / med["baseline"]
    print(f"{name}: cnncli {med['cnncli']:,.0f} img/s (min {min(rates['cnncli']):,.0f}, max {max(rates['cnncli']):,.0f}); "
          f"baseline {med['baseline']:,.0f} img/s (min {min(rates['baseline']):,.0f}, max {max(rates['baseline']):,.0f}); "
          f"ratio={ratio:.2f}", flush=True)  # fmt: skip
    return ratio


def main() -> int:
    t0 = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cnn2", help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--windows", type=int, default=5, help="timed windows per side (default 5)")
    parser.add_argument("--seconds", type=float, default=0.7, help="minimum seconds per window (default 0.7)")
    args = parser.parse_args()
    for name in args.model.split(","):
        compare(name, args.batch_size, args.windows, args.seconds)
    print(f"regression check done in {time.perf_counter() - t0:.0f} s (after imports)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
