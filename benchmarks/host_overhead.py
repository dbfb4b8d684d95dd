"""Where a small network's step time goes outside the kernels: host dispatch against device work.

Run: ``uv run python benchmarks/host_overhead.py [--model lenet5] [--backends onednn,xla] [--rounds 3]``

cnncli's real step (`cnncli.train.profiling.synthetic_step`: training set on the
device, state donated, AOT compiled), called back to back as the train loop calls it
(a device read every 8 steps bounds the dispatch queue). Per step it reports the wall
time, the process's CPU time (every thread: XLA's, OpenMP's, Python's), the Python
main thread's CPU time (what it costs the host to prepare and dispatch a step: the
part a faster kernel cannot remove) and the median time a call takes to return
(asynchronous dispatch). On 2 cores, the step's device work can use at most
2 x wall of CPU time; main-thread CPU far below that means the host is not what
limits the step.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vs_pytorch import MODELS, machine  # noqa: E402


def measure(bench, steps: int) -> dict:
    import jax
    import numpy as np

    x, y, perm, _, key = bench.args
    spe = perm.shape[0] // bench.batch_size
    state, dispatch = bench.state, []
    thread0, cpu0, t0 = time.thread_time(), time.process_time(), time.perf_counter()
    for i in range(steps):
        a = time.perf_counter()
        state = bench.step(state, x, y, perm, np.int32(i % spe), key)
        dispatch.append(time.perf_counter() - a)
        if i % 8 == 7:
            jax.block_until_ready(state.step)
    jax.block_until_ready(state.step)
    wall = time.perf_counter() - t0
    bench.state = state
    ms = 1e3 / steps
    return {"img/s": steps * bench.batch_size / wall, "wall": wall * ms, "cpu": (time.process_time() - cpu0) * ms,
            "main": (time.thread_time() - thread0) * ms, "dispatch": statistics.median(dispatch) * 1e3}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lenet5", choices=list(MODELS))
    parser.add_argument("--backends", default="onednn,xla")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=80, help="steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, alternating the backends")
    args = parser.parse_args()
    from cnncli.train.profiling import synthetic_step

    model, shape = MODELS[args.model]
    benches = {}
    for backend in args.backends.split(","):
        benches[backend] = synthetic_step(model, shape, batch_size=args.batch_size, conv_backend=backend)
        benches[backend].run(3)
    rows: dict[str, list[dict]] = {b: [] for b in benches}
    for _ in range(args.rounds):
        for backend, bench in benches.items():
            rows[backend].append(measure(bench, args.steps))
    print(f"{args.model}, batch {args.batch_size}; {machine()}; {args.rounds} rounds x {args.steps} steps, medians\n")
    print("| conv backend | img/s | wall ms/step | process CPU ms/step | main thread CPU ms/step | dispatch ms |")
    print("|---|---|---|---|---|---|")
    for backend, results in rows.items():
        med = {k: statistics.median(r[k] for r in results) for k in results[0]}
        print(f"| {backend} | {med['img/s']:,.0f} | {med['wall']:.2f} | {med['cpu']:.2f} | {med['main']:.3f} "
              f"| {med['dispatch']:.3f} |")


if __name__ == "__main__":
    main()
