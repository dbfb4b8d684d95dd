"""A/B of the speed levers on cnncli's train step, in one process, alternating windows.

Run: ``uv run python benchmarks/levers.py [--model resnet20] [--windows 8] [--variants a,b,...]``

Each variant is cnncli's real step (`cnncli.train.profiling.synthetic_step`) built with
one lever changed; the windows alternate between variants, and each reports wall
images/s and process CPU milliseconds per step. On a shared machine the CPU time
is the steadier number (time the process was descheduled does not count), so the
table shows both. Variants:

- ``default``: what cnncli ships (`cnncli.models.apply.xla_options`, `cnncli.models.norm.BatchNorm`).
- ``xla-defaults``: no cnncli XLA options (XLA's default YNNPACK fusion set).
- ``flax-bn``: `nnx.BatchNorm` and `nnx.Conv.__call__` instead of cnncli's.
- ``flax-bn+xla-defaults``: both of the above (the code before issue #8).
- ``xnn-greedy``: plus ``xla_cpu_experimental_xnn_graph_fusion_mode=GREEDY``.
- ``pool-reduce-window``: max pools through ``lax.reduce_window`` (models with max pools).
- ``pool-slices``: 2x2/2-style max pools through the slices path instead of tiles.
- ``bn-xhat``: BatchNorm's backward reducing ``dy * xhat`` (xhat kept from the forward).
- ``bn-xla-sums``: BatchNorm's sums as XLA reductions (``onednn/bn-xla-sums``: the
  oneDNN step without `cnncli.native.onednn.channel_sums`).
- ``bn-relu-unfused``: BatchNorm and the ReLU after it as two ops (autodiff writes
  the masked gradient) instead of `BatchNorm(x, relu=True)`.
- ``bf16``: ``precision = "bf16"`` (mixed precision).
- ``ynn=T1+T2``: exactly these YNNPACK fusion types (``eltwise``, ``reduce``,
  ``individual_dot``, ``individual_convolution``, ``dot``).
- ``opt:KEY=VALUE+KEY=VALUE``: exactly these XLA options (``true``/``false`` as bools).
- ``onednn``, ``onednn-bf16``: ``conv_backend = "onednn"`` (fp32, bf16);
  ``onednn/VARIANT``: the oneDNN step with another variant's change, e.g.
  ``onednn/xla-defaults``, ``onednn/pool-slices``, ``onednn/opt:...``.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
import unittest.mock

import jax

MODELS = {
    "resnet20": ("resnet20", (32, 32, 3)),
    "lenet5": ("lenet5", (28, 28, 1)),
    "cnn2": ("conv:c=32,k=3,p=same relu maxpool:k=2 conv:c=64,k=3,p=same relu maxpool:k=2 flatten dense", (28, 28, 1)),
}


@contextlib.contextmanager
def flax_modules():
    """Build with flax's BatchNorm and Conv call (the pre-#8 modules)."""
    from flax import nnx

    from cnncli.models import ops

    class FlaxBatchNorm(nnx.BatchNorm):  # takes cnncli's relu= (BatchNorm then ReLU, two ops)
        def __call__(self, x, relu=False):
            y = super().__call__(x)
            return jax.nn.relu(y) if relu else y

    saved = ops.BatchNorm, ops.PaddedConv.__call__
    ops.BatchNorm = lambda f, momentum, epsilon, rngs: FlaxBatchNorm(f, momentum=momentum, epsilon=epsilon, rngs=rngs)
    ops.PaddedConv.__call__ = lambda self, x, out_sharding=None: nnx.Conv.__call__(self, x)
    try:
        yield
    finally:
        ops.BatchNorm, ops.PaddedConv.__call__ = saved


@contextlib.contextmanager
def bn_xhat_backward():
    """BatchNorm's backward as before: dscale = sum(dy * xhat), xhat kept from the forward."""
    import jax.numpy as jnp

    from cnncli.models import norm

    def old_bwd(epsilon, native, relu, res, cotangents):  # XLA's reductions whatever `native` says
        x, mean, inv, scale, bias = res
        dy = cotangents[0].astype(jnp.float32)
        axes = tuple(range(x.ndim - 1))
        n = x.size // x.shape[-1]
        xhat = (x.astype(jnp.float32) - mean) * inv
        if relu:  # BatchNorm(x, relu=True): the ReLU's mask, as norm._bwd applies it
            dy = jnp.where(xhat * scale.astype(jnp.float32) + bias.astype(jnp.float32) > 0.0, dy, 0.0)
        dbias = jnp.sum(dy, axis=axes)
        dscale = jnp.sum(dy * xhat, axis=axes)
        dx = (scale.astype(jnp.float32) * inv / n) * (n * dy - dbias - xhat * dscale)
        return dx.astype(x.dtype), dscale.astype(scale.dtype), dbias.astype(bias.dtype)

    norm._batch_norm_train.defvjp(norm._forward, old_bwd)
    try:
        yield
    finally:
        norm._batch_norm_train.defvjp(norm._forward, norm._bwd)


def bn_xla_sums():
    """BatchNorm's per-channel sums as XLA reductions also under the oneDNN backend."""
    from cnncli.models import norm

    return unittest.mock.patch.object(norm, "_native_sums", lambda x: False)


def bn_relu_unfused():
    """BatchNorm then a separate ReLU (autodiff's masked gradient written out)."""
    from cnncli.models import norm

    original = norm.batch_norm_train

    def unfused(x, scale, bias, epsilon, native=False, relu=False):
        y, mean, var = original(x, scale, bias, epsilon, native=native)
        return (jax.nn.relu(y) if relu else y), mean, var

    return unittest.mock.patch.object(norm, "batch_norm_train", unfused)


def pools_as(choose):
    """Max pools built with ``choose(default_choice) -> impl`` instead of cnncli's choice."""
    from cnncli.models import pooling

    default = pooling.choose_max_impl
    return unittest.mock.patch.object(pooling, "choose_max_impl", lambda *a: choose(default(*a)))


def slices_pools():
    """Max pools as the slices path (the choice for 2x2/2 pools before the tiles path)."""
    return pools_as(lambda impl: "slices" if impl == "tiles" else impl)


def reduce_window_pools():
    return pools_as(lambda impl: "reduce_window")


def build(variant: str, model: str, shape, batch_size: int):
    from cnncli.models.apply import CPU_COMPILER_OPTIONS
    from cnncli.train.profiling import synthetic_step

    options: dict | str | None = "auto"
    precision = "fp32"
    context = contextlib.nullcontext()
    backend = "xla"
    if variant.startswith("onednn"):  # onednn, onednn-bf16, onednn/<another variant>
        backend = "onednn"
        variant = variant.partition("/")[2] or variant
    if "xla-defaults" in variant:
        options = None
    if variant.startswith("flax-bn"):
        context = flax_modules()
    if variant == "xnn-greedy":
        options = dict(CPU_COMPILER_OPTIONS, xla_cpu_experimental_xnn_graph_fusion_mode="XNN_GRAPH_FUSION_MODE_GREEDY")
    if variant.startswith("ynn="):  # ynn=ELTWISE+REDUCE: exactly these YNNPACK fusion types
        types = ",".join(f"LIBRARY_FUSION_TYPE_{t.upper()}" for t in variant[4:].split("+"))
        options = {"xla_cpu_experimental_ynn_fusion_type": types}
    if variant.startswith("opt:"):  # opt:KEY=VALUE+KEY=VALUE: exactly these XLA options
        options = {k: {"true": True, "false": False}.get(v, v) for k, v in (kv.split("=", 1) for kv in variant[4:].split("+"))}
    if variant == "pool-slices":
        context = slices_pools()
    if variant == "bn-xhat":
        context = bn_xhat_backward()
    if variant == "bn-xla-sums":
        context = bn_xla_sums()
    if variant == "bn-relu-unfused":
        context = bn_relu_unfused()
    if variant == "pool-reduce-window":
        context = reduce_window_pools()
    if variant in ("bf16", "onednn-bf16"):
        precision = "bf16"
    with context:
        return synthetic_step(model, shape, batch_size=batch_size, compiler_options=options, precision=precision,
                              conv_backend=backend)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20", choices=list(MODELS))
    parser.add_argument("--variants", default="default,xla-defaults,flax-bn,flax-bn+xla-defaults")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="steps per window (default 3)")
    args = parser.parse_args()
    model, shape = MODELS[args.model]
    benches = {}
    for v in args.variants.split(","):
        benches[v] = build(v, model, shape, args.batch_size)
        print(f"{v}: step compiled in {benches[v].compile_seconds:.2f} s", flush=True)
    wall: dict[str, list[float]] = {v: [] for v in benches}
    cpu: dict[str, list[float]] = {v: [] for v in benches}
    for b in benches.values():
        b.run(2)
    for r in range(args.windows):
        order = list(benches)[r % len(benches):] + list(benches)[: r % len(benches)]
        for v in order:
            c0 = time.process_time()
            seconds = benches[v].run(args.steps)
            cpu[v].append((time.process_time() - c0) / args.steps * 1e3)
            wall[v].append(args.steps * args.batch_size / seconds)
    base = statistics.median(cpu[next(iter(benches))])
    print(f"\n{args.model}, batch {args.batch_size}, {args.windows} windows x {args.steps} steps, alternating")
    print("| variant | median img/s (wall) | min-max | median CPU ms/step | min | CPU time vs first |\n|---|---|---|---|---|---|")
    for v in benches:
        med = statistics.median(cpu[v])
        print(f"| {v} | {statistics.median(wall[v]):,.0f} | {min(wall[v]):,.0f}-{max(wall[v]):,.0f} | {med:,.0f} | "
              f"{min(cpu[v]):,.0f} | {med / base:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
