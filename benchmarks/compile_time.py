"""Cold start of a training step: model init, trace, lower and XLA compile, in seconds.

Run: ``uv run python benchmarks/compile_time.py [--model resnet20] [--runs 3]``

Each run is a fresh process with the persistent compilation cache off
(``CNNCLI_CACHE_DIR=off``), so nothing is reused; runs of the variants alternate.
Variants: ``default`` (what cnncli ships), ``threefry-init`` (parameters
initialized from threefry keys, the jax default, instead of rbg keys) and
``flax-bn`` (flax's BatchNorm and Conv call), ``onednn`` (``conv_backend =
"onednn"``; with the cache off nothing is recorded, so its first step times oneDNN's
implementations) and ``onednn-untuned`` (``CNNCLI_ONEDNN_TUNE=off``). "step" is what
`cnncli.train.program.build_program` times (trace + lower + compile of the train step); "init" is
the one ``nnx.jit`` program that initializes the model.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

MODELS = {"resnet20": ("resnet20", (32, 32, 3)), "resnet56": ("resnet56", (32, 32, 3)),
          "resnet110": ("resnet110", (32, 32, 3)), "lenet5": ("lenet5", (28, 28, 1))}  # fmt: skip


def child(model: str, variant: str) -> dict:
    """Runs in the fresh process: time each phase once."""
    t0 = time.perf_counter()
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from flax import nnx

    from cnncli.config.specs import model_specs
    from cnncli.models import build_model
    from cnncli.models.apply import make_step_config
    from cnncli.runtime.jaxsetup import configure
    from cnncli.train.program import split_model
    from cnncli.train.step import fresh_state, make_train_step

    configure()
    if variant == "flax-bn":
        sys.path.insert(0, os.path.dirname(__file__))
        from levers import flax_modules

        flax_modules().__enter__()
    t_import = time.perf_counter() - t0
    name, shape = MODELS[model]
    specs = model_specs(name, 10)
    key = 0 if variant == "threefry-init" else jax.random.key(0, impl="rbg")
    t0 = time.perf_counter()
    net = nnx.jit(lambda: build_model(specs, shape, 10, rngs=nnx.Rngs(params=key, dropout=1)))()
    jax.block_until_ready(nnx.state(net))
    t_init = time.perf_counter() - t0
    parts = split_model(net)
    tx = optax.sgd(0.01, momentum=0.9)
    backend = "onednn" if variant.startswith("onednn") else "xla"
    if variant == "onednn-untuned":
        os.environ["CNNCLI_ONEDNN_TUNE"] = "off"
    if backend == "onednn":  # build/load the extension outside the timed phases (a one-off, cached)
        from cnncli.native import onednn

        onednn.load()
    cfg = make_step_config({"mean": [0.0] * shape[-1], "std": [1.0] * shape[-1]}, num_classes=10, batch_size=128,
                           conv_backend=backend)  # fmt: skip
    step = make_train_step(parts.graphdef, parts.split_filters, tx, cfg)
    state = fresh_state(parts.params, parts.rest, tx)
    args = (jnp.zeros((256, *shape), jnp.uint8), jnp.zeros((256,), jnp.int32), jnp.arange(256, dtype=jnp.int32),
            np.int32(0), jax.random.key(0))  # fmt: skip
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    traced = step.trace(state, *args)
    t1 = time.perf_counter()
    lowered = traced.lower()
    t2 = time.perf_counter()
    compiled = lowered.compile()
    t3 = time.perf_counter()
    state = compiled(state, *args)
    jax.block_until_ready(state)
    t4 = time.perf_counter()
    return {"import": t_import, "init": t_init, "trace": t1 - t0, "lower": t2 - t1, "compile": t3 - t2,
            "step": t3 - t0, "first_step_run": t4 - t3}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20", choices=list(MODELS))
    parser.add_argument("--variants", default="default,threefry-init,flax-bn", help="of default, threefry-init, flax-bn, onednn, onednn-untuned")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    env = dict(os.environ, CNNCLI_CACHE_DIR="off")
    results: dict[str, list[dict]] = {v: [] for v in args.variants.split(",")}
    for _ in range(args.runs):
        for v in results:
            out = subprocess.run([sys.executable, __file__, "--child", args.model, v], env=env, check=True,
                                 capture_output=True, text=True).stdout  # fmt: skip
            results[v].append(json.loads(out.strip().splitlines()[-1]))
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{args.model}, cold (CNNCLI_CACHE_DIR=off), {args.runs} fresh processes per variant, alternating; "
          f"load average at the end {load}; median (min-max) seconds")  # fmt: skip
    keys = ["init", "trace", "lower", "compile", "step", "first_step_run"]
    print("| variant | " + " | ".join(keys) + " |\n|---|" + "---|" * len(keys))
    for v, runs in results.items():
        cells = []
        for k in keys:
            vals = [r[k] for r in runs]
            cells.append(f"{statistics.median(vals):.2f} ({min(vals):.2f}-{max(vals):.2f})")
        print(f"| {v} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
