"""Host malloc tuning (`cnncli.runtime.jaxsetup.tune_host_malloc`) on and off, fresh processes, alternating.

Run: ``uv run python benchmarks/malloc.py [--model resnet20] [--runs 3] [--backends xla,onednn]``

glibc's settings are per process and must be made before JAX starts its threads,
so every measurement is its own process: ``CNNCLI_MALLOC=system`` (glibc's
defaults) against cnncli's settings, for each conv backend, alternating. Each
process compiles cnncli's real step (`cnncli.train.profiling.synthetic_step`), warms up,
then times 3 windows and reports the median images/s, the minor page faults per
step (``getrusage``) and the peak resident size.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

MODELS = {
    "resnet20": ("resnet20", (32, 32, 3), 8),
    "cnn2": ("conv:c=32,k=3,p=same relu maxpool:k=2 conv:c=64,k=3,p=same relu maxpool:k=2 flatten dense",
             (28, 28, 1), 40),
    "lenet5": ("lenet5", (28, 28, 1), 100),
}  # fmt: skip


def child(model: str, backend: str) -> dict:
    import resource

    from cnncli.runtime.jaxsetup import tune_host_malloc

    tuned = tune_host_malloc()  # before JAX starts (a no-op under CNNCLI_MALLOC=system)
    from cnncli.train.profiling import synthetic_step

    tokens, shape, steps = MODELS[model]
    bench = synthetic_step(tokens, shape, conv_backend=backend)
    bench.run(3)
    rates, faults = [], []
    for _ in range(3):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0 = time.perf_counter()
        bench.run(steps)
        rates.append(steps * bench.batch_size / (time.perf_counter() - t0))
        faults.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / steps)
    return {"tuned": tuned, "img_s": statistics.median(rates), "faults_per_step": statistics.median(faults),
            "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20", choices=list(MODELS))
    parser.add_argument("--backends", default="xla,onednn")
    parser.add_argument("--runs", type=int, default=3, help="fresh processes per variant (default 3)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    variants = [(b, m) for b in args.backends.split(",") for m in ("system", "cnncli")]
    results: dict[tuple, list[dict]] = {v: [] for v in variants}
    for r in range(args.runs):
        for backend, mode in variants[r % len(variants):] + variants[: r % len(variants)]:
            env = dict(os.environ)
            env.pop("CNNCLI_MALLOC", None)
            if mode == "system":
                env["CNNCLI_MALLOC"] = "system"
            out = subprocess.run([sys.executable, __file__, "--model", args.model, "--child", args.model, backend],
                                 capture_output=True, text=True, env=env, check=True)  # fmt: skip
            results[(backend, mode)].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{args.model}, batch 128, {args.runs} fresh processes per variant, alternating; "
          f"load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")  # fmt: skip
    print("| conv backend | malloc | median img/s (min-max) | page faults / step | peak RSS (MB) |")
    print("|---|---|---|---|---|")
    for (backend, mode), rs in results.items():
        rates = [x["img_s"] for x in rs]
        print(f"| {backend} | {'glibc defaults' if mode == 'system' else 'cnncli'} | {statistics.median(rates):,.0f} "
              f"({min(rates):,.0f}-{max(rates):,.0f}) | {statistics.median(x['faults_per_step'] for x in rs):,.0f} | "
              f"{statistics.median(x['max_rss_mb'] for x in rs):,.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
