"""Images per second of the in-memory input pipeline alone, on the device.

What the train step does before the model, nothing after: gather a batch from the
on-device uint8 training set by the epoch's permutation, convert and normalize it,
one-hot the labels, and run the recipe's augmentation, one jitted call per batch
(as `cnncli.train.step.make_train_step` does). Compare with the train step's images/s in
BENCHMARKS.md: as long as this is far higher, data never starves the step.

Data: random uint8 images shaped like CIFAR-10 (N x 32 x 32 x 3, 10 classes).
Each run is one epoch (N // batch steps) after one compiled warm-up epoch; runs of
the pipelines alternate, and the table gives the median, min and max over ``--runs``.

    uv run python benchmarks/input_pipeline.py
    uv run python benchmarks/input_pipeline.py --runs 7 --images 10000 --batch-size 128
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from cnncli.data.augment.core import make_augment
from cnncli.data.base import Dataset, Split, channel_stats
from cnncli.models.apply import StepConfig, preprocess

PIPELINES = {
    "none": [],
    "crop+flip": [{"op": "random_crop", "padding": 4}, {"op": "flip_lr"}],
    "reflect-crop+flip": [{"op": "random_crop", "padding": 4, "mode": "reflect"}, {"op": "flip_lr"}],
    "crop+flip+cutout": [{"op": "random_crop", "padding": 4}, {"op": "flip_lr"}, {"op": "cutout", "size": 8}],
    "randaugment+cutmix": [{"op": "flip_lr"}, {"op": "randaugment", "n": 2, "m": 9}, {"op": "cutmix"}],
}


def make_dataset(n: int) -> Dataset:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, (n,), dtype=np.int32)
    mean, std = channel_stats(x)
    return Dataset("random-cifar", Split(x, y), Split(x[:1], y[:1]), [str(i) for i in range(10)], mean, std)


def make_batch_fn(data: Dataset, ops: list[dict], batch_size: int):
    """Jitted ``(x_all, y_all, perm, index, key) -> (x, targets)``: the step's input half."""
    cfg = StepConfig(num_classes=10, mean=tuple(data.mean), std=tuple(data.std), batch_size=batch_size)
    augment = make_augment(ops, data) if ops else None

    def batch(x_all, y_all, perm, index, key):
        idx = jax.lax.dynamic_slice(perm, (index * batch_size,), (batch_size,))
        x = preprocess(jnp.take(x_all, idx, axis=0), cfg)
        targets = jax.nn.one_hot(jnp.take(y_all, idx, axis=0), cfg.num_classes)
        if augment is not None:
            x, targets = augment(jax.random.fold_in(key, index), x, targets)
        return x, targets

    return jax.jit(batch)


def epoch_seconds(fn, x_all, y_all, perm, key, steps: int) -> float:
    start = time.perf_counter()
    out = None
    for index in range(steps):
        out = fn(x_all, y_all, perm, np.int32(index), key)
    jax.block_until_ready(out)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--pipelines", nargs="*", default=list(PIPELINES), choices=list(PIPELINES))
    args = parser.parse_args()

    data = make_dataset(args.images)
    x_all, y_all = jax.device_put(data.train.x), jax.device_put(data.train.y)
    perm = jax.random.permutation(jax.random.key(1), args.images).astype(jnp.int32)
    key = jax.random.key(2)
    steps = args.images // args.batch_size
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), {platform.processor() or platform.machine()}; "
          f"jax {jax.__version__}; {args.images} images 32x32x3 uint8, batch {args.batch_size}, "
          f"{steps} steps per run, {args.runs} runs")  # fmt: skip
    fns, compile_s = {}, {}
    for name in args.pipelines:
        fns[name] = make_batch_fn(data, PIPELINES[name], args.batch_size)
        t0 = time.perf_counter()
        jax.block_until_ready(fns[name](x_all, y_all, perm, np.int32(0), key))
        compile_s[name] = time.perf_counter() - t0
        epoch_seconds(fns[name], x_all, y_all, perm, key, steps)  # warm-up epoch
    rates = {name: [] for name in args.pipelines}
    for _ in range(args.runs):  # alternate pipelines: this machine's speed drifts between runs
        for name, fn in fns.items():
            rates[name].append(steps * args.batch_size / epoch_seconds(fn, x_all, y_all, perm, key, steps))
    print("\n| pipeline | ops | images/s median | min | max | compile s |")
    print("|---|---|---:|---:|---:|---:|")
    for name, values in rates.items():
        ops = ", ".join(op["op"] + ("(reflect)" if op.get("mode") == "reflect" else "") for op in PIPELINES[name])
        print(f"| {name} | {ops or 'gather + normalize only'} | {statistics.median(values):,.0f} | {min(values):,.0f} | "
              f"{max(values):,.0f} | {compile_s[name]:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
