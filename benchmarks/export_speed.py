"""Images per second of an exported model: onnxruntime and JAX (the deserialized StableHLO) against cnncli.

Exports a trained run both ways (into a temporary folder, verified as `cnncli export`
does), then times inference on its evaluation split's first examples at batch 64 and
batch 1:

- ``cnncli predict``: `cnncli.inspect.evaluate.Predictor`, the jitted logits function
  ``eval`` and ``predict`` use (one compiled batch size, the last batch padded);
- ``jax: exported.call``: the README's line, ``jax.export.deserialize(...).call(x)``;
- ``jax: jit(exported.call)``: the same, wrapped in ``jax.jit`` (one dispatch per call);
- ``onnxruntime``: ``InferenceSession.run`` on the CPU provider, default threads.

Each run times ``--images`` images (whole batches), after one compiling warm-up run;
the variants alternate within each run (this machine's speed drifts between runs), and
the table gives the median, min and max over ``--runs``.

    uv run cnncli train recipes/quickstart.toml --workdir runs/quickstart
    uv run python benchmarks/export_speed.py runs/quickstart
    uv run python benchmarks/export_speed.py runs/quickstart --runs 7 --images 4096
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import jax
import numpy as np


def cpu_model() -> str:
    """``lscpu``'s model name, and the cores this process may use."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        name = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        name = platform.processor() or platform.machine()
    return f"{name}, {len(os.sched_getaffinity(0))} cores"


def export_both(run, folder: Path) -> tuple[Path, Path]:
    """The run exported to StableHLO and ONNX in ``folder`` (each verified, as `cnncli export` does)."""
    from cnncli.export.exporter import export_run

    return (export_run(run, fmt="stablehlo", output=folder / "model.stablehlo").path,
            export_run(run, fmt="onnx", output=folder / "model.onnx").path)  # fmt: skip


def variants(run, hlo: Path, onnx: Path, batch: int):
    """name -> a function of a uint8 batch that returns host logits (the timed work)."""
    import onnxruntime as ort

    from cnncli.inspect.evaluate import Predictor

    exported = jax.export.deserialize(bytearray(hlo.read_bytes()))
    jitted = jax.jit(exported.call)
    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    predictor = Predictor(run, batch)
    return {
        "cnncli predict (logits fn)": lambda x: predictor.logits(x)[0],
        "jax: exported.call": lambda x: np.asarray(exported.call(x)),
        "jax: jit(exported.call)": lambda x: np.asarray(jitted(x)),
        "onnxruntime": lambda x: session.run(None, {"input": x})[0],
    }


def seconds(fn, batches: list[np.ndarray]) -> float:
    start = time.perf_counter()
    for xb in batches:
        fn(xb)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a trained run directory (e.g. runs/quickstart)")
    parser.add_argument("--images", type=int, default=2048, help="images per timed run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch-sizes", type=int, nargs="*", default=[64, 1])
    args = parser.parse_args()

    from cnncli.runs.load import load_run
    from cnncli.runs.splits import load_eval_split

    run = load_run(args.run)
    x = load_eval_split(run)[0].x
    print(f"cpu: {cpu_model()}; jax {jax.__version__}, onnxruntime {__import__('onnxruntime').__version__}; "
          f"{args.run} (checkpoint {run.step}), input {x.dtype} {'x'.join(map(str, x.shape[1:]))}; "
          f"{args.images} images per run, {args.runs} runs")  # fmt: skip
    print("\n| batch | path | images/s median | min | max |")
    print("|---:|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        hlo, onnx = export_both(run, Path(tmp))
        for batch in args.batch_sizes:
            xb = np.resize(x, (batch, *x.shape[1:])).astype(x.dtype)  # repeats the split if it is smaller
            batches = [xb] * max(1, args.images // batch)
            fns = variants(run, hlo, onnx, batch)
            for fn in fns.values():
                seconds(fn, batches[:2])  # compile and warm up
            rates = {name: [] for name in fns}
            for _ in range(args.runs):  # alternate: this machine's speed drifts between runs
                for name, fn in fns.items():
                    rates[name].append(len(batches) * batch / seconds(fn, batches))
            for name, values in rates.items():
                print(f"| {batch} | {name} | {statistics.median(values):,.0f} | {min(values):,.0f} | "
                      f"{max(values):,.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
