"""``cnncli explain``: wall time of one image from the shell, and images per second per method.

1. ``cnncli explain RUN digit.png`` (Grad-CAM, the default) as a fresh process, start-up
   and compilation included: the first run with an empty compilation cache (cold), then
   ``--runs`` more with the cache it left (warm); median, min and max of the warm ones.
   ``cnncli predict RUN digit.png`` alternates with it, for the start-up both pay.
2. Each method on ``--images`` examples of the run's evaluation split (the predicted
   class as the target), in this process: one compiling warm-up, then ``--runs`` timed
   runs (compilation excluded), methods alternating within each run; images/s median,
   min and max.

    uv run cnncli train recipes/quickstart.toml --workdir runs/quickstart
    uv run python benchmarks/explain_speed.py runs/quickstart
    uv run python benchmarks/explain_speed.py runs/quickstart --runs 5 --images 256
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

METHODS = ("gradcam", "gradcam++", "saliency", "smoothgrad", "integrated-gradients", "occlusion")


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        name = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        name = "unknown CPU"
    return f"{name}, {len(os.sched_getaffinity(0))} cores"


def shell_times(run: Path, image: Path, runs: int, tmp: Path) -> dict[str, tuple[float, list[float]]]:
    """Per command: (cold seconds, warm seconds per run) as a new process; explain and predict alternate."""
    env = dict(os.environ, CNNCLI_CACHE_DIR=str(tmp / "cache"))
    cmds = {
        "explain": [sys.executable, "-m", "cnncli", "explain", str(run), str(image), "-o", str(tmp / "out"), "--json"],
        "predict": [sys.executable, "-m", "cnncli", "predict", str(run), str(image), "--json"],
    }
    times: dict[str, list[float]] = {k: [] for k in cmds}
    for _ in range(runs + 1):
        for name, cmd in cmds.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - t0)
    return {k: (v[0], v[1:]) for k, v in times.items()}


def method_rates(run_dir: Path, n: int, runs: int) -> dict[str, list[float]]:
    """Images per second of each method on ``n`` split examples, per run."""
    from cnncli.inspect.attribution import Explainer, MethodConfig
    from cnncli.inspect.evaluate import softmax
    from cnncli.inspect.explain import _logits, auto_layer
    from cnncli.runs.load import load_run
    from cnncli.runs.splits import load_eval_split

    run = load_run(run_dir)
    data, *_ = load_eval_split(run)
    x = np.resize(np.asarray(data.x, np.float32), (n, *data.x.shape[1:]))  # repeats the split if it is shorter
    ex = Explainer(run)
    targets = softmax(_logits(ex, x)).argmax(axis=1).astype(np.int32)
    layer = auto_layer(run)[0]
    cfgs = {m: MethodConfig(m, layer=layer if m.startswith("gradcam") else None) for m in METHODS}
    for cfg in cfgs.values():  # compile
        ex.maps(cfg, x, targets)
    rates: dict[str, list[float]] = {m: [] for m in METHODS}
    for _ in range(runs):
        for m, cfg in cfgs.items():
            rates[m].append(n / ex.maps(cfg, x, targets).seconds)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--images", type=int, default=256)
    args = parser.parse_args()
    print(f"CPU: {cpu_model()}; load average {os.getloadavg()[0]:.1f}")
    from PIL import Image

    from cnncli.runs.load import load_run
    from cnncli.runs.splits import load_eval_split

    run = load_run(args.run)
    data, *_ = load_eval_split(run)
    lo, hi = (run.data.get("value_range") or (0, 255))[:2]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        pixels = (np.asarray(data.x[0, ..., 0], np.float32) - lo) / (hi - lo) * 255
        Image.fromarray(pixels.astype(np.uint8)).save(tmp / "digit.png")
        shell = shell_times(args.run, tmp / "digit.png", args.runs, tmp)
    for name, (cold, warm) in shell.items():
        print(f"cnncli {name} RUN digit.png, wall time from the shell: cold cache {cold:.2f} s; warm median "
              f"{statistics.median(warm):.2f} s (min {min(warm):.2f}, max {max(warm):.2f}, {len(warm)} runs)")
    rates = method_rates(args.run, args.images, args.runs)
    print(f"\n{args.images} images per call, images/s over {args.runs} runs (compilation excluded):")
    print("| method | median | min | max |\n|---|---:|---:|---:|")
    for m, r in rates.items():
        print(f"| {m} | {statistics.median(r):,.0f} | {min(r):,.0f} | {max(r):,.0f} |")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
