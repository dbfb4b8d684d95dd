"""Images per second of the streaming pipeline alone, and of ResNet-20 training streamed vs in memory.

``pipeline``: batches of 128 read by `cnncli.data.stream.read_batches` (the code a streamed
run uses) from (a) an uncompressed npz of random 32x32x3 uint8 images (positional reads)
and (b) a folder of 256x256 JPEGs decoded and resized to 224x224 with Pillow, at 0
workers (threads of this process), 1 and 2 worker processes. Timed from the first batch
(worker start-up excluded; it is reported apart).

``train``: ResNet-20 on the same random 32x32 set, one epoch, ``data.pipeline = memory``
then ``stream`` (``--workers``), alternating ``--runs`` times; the images/s of the
summary (compile and worker start-up excluded from neither: it is the run's own clock),
the ratio of the medians and the median of each (memory, stream) pair's ratio (a pair
runs back to back, so it shares the machine's load of the moment).

    uv run python benchmarks/stream_throughput.py pipeline
    uv run python benchmarks/stream_throughput.py train --runs 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BATCH = 128


def make_npz(path: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), y_train=rng.integers(0, 10, n),
             x_test=rng.integers(0, 256, (512, 32, 32, 3), dtype=np.uint8), y_test=rng.integers(0, 10, 512))  # fmt: skip
    return path


def make_jpegs(root: Path, n: int, size: int = 256) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", n), ("test", 16)):
        for i in range(count):
            folder = root / split / f"c{i % 10}"
            folder.mkdir(parents=True, exist_ok=True)
            noise = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
            Image.fromarray(noise).resize((size, size), Image.BICUBIC).save(folder / f"{i:05d}.jpg", quality=90)
    return root


def time_reader(cfg, workers: int, batches: int) -> dict:
    from cnncli.data.stream import BatchReader, open_streamed, read_batches

    split, _, _ = open_streamed(cfg, "train")
    order = np.random.default_rng(0).permutation(len(split.records))
    reader = BatchReader(split.records, order, BATCH, (0, BATCH), split.example_shape, split.dtype)
    t0 = time.perf_counter()
    with read_batches(reader, 0, batches, workers=workers, prefetch=2, threads=2) as it:
        next(it)
        t1 = time.perf_counter()
        count = sum(1 for _ in it)
        t2 = time.perf_counter()
    return {
        "workers": workers,
        "startup_s": round(t1 - t0, 2),
        "images_per_second": round(count * BATCH / (t2 - t1), 1),
    }


def pipeline(args) -> None:
    from cnncli.config.recipe import DataConfig

    with tempfile.TemporaryDirectory() as tmp:
        npz = make_npz(Path(tmp) / "random.npz", 40 * BATCH)
        jpegs = make_jpegs(Path(tmp) / "jpegs", 12 * BATCH)
        cases = {"npz 32x32x3": (DataConfig(source=f"npz:{npz}"), 39),
                 "jpeg 256->224": (DataConfig(source=f"folder:{jpegs}", image_size=224, channels=3), 11)}  # fmt: skip
        for name, (cfg, batches) in cases.items():
            for workers in (0, 1, 2):
                rows = [time_reader(cfg, workers, batches) for _ in range(args.runs)]
                ips = [r["images_per_second"] for r in rows]
                print(json.dumps({"data": name, "workers": workers, "median": statistics.median(ips), "min": min(ips),
                                  "max": max(ips), "startup_s": statistics.median(r["startup_s"] for r in rows)}))  # fmt: skip


RESNET20 = """\
[data]
source = "npz:{npz}"
batch_size = 128
workers = {workers}

[model]
arch = "resnet20"

[optimizer]
name = "momentum"
learning_rate = 0.05

[train]
epochs = 1
seed = 0
"""


def train(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        npz = make_npz(Path(tmp) / "random.npz", args.images)
        recipe = Path(tmp) / "r20.toml"
        recipe.write_text(RESNET20.format(npz=npz, workers=args.workers))
        results: dict[str, list[float]] = {"memory": [], "stream": []}
        for run in range(args.runs):
            for kind in results:
                cmd = [sys.executable, "-m", "cnncli.cli.app", "train", str(recipe), "--workdir", f"{tmp}/{kind}{run}",
                       "--json", "--set", f"data.pipeline={kind}"]  # fmt: skip
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                results[kind].append(json.loads(out.splitlines()[-1])["images_per_second"])
        for kind, ips in results.items():
            print(json.dumps({"pipeline": kind, "workers": args.workers if kind == "stream" else None,
                              "median": round(statistics.median(ips), 1), "runs": [round(v, 1) for v in ips]}))  # fmt: skip
        ratio = statistics.median(results["stream"]) / statistics.median(results["memory"])
        # each stream run over the memory run just before it: the pair shares the machine's load of the moment
        paired = [s / m for m, s in zip(results["memory"], results["stream"])]
        print(json.dumps({"stream_over_memory": round(ratio, 3), "paired": [round(r, 3) for r in paired],
                          "median_paired": round(statistics.median(paired), 3)}))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("pipeline", "train"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--images", type=int, default=40 * BATCH)
    args = parser.parse_args()
    (pipeline if args.what == "pipeline" else train)(args)


if __name__ == "__main__":
    main()
