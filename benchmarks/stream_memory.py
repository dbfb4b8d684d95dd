"""Peak resident memory of a streamed run (trainer and grain's workers summed), at two dataset sizes.

Generates a folder of JPEGs (random smooth colour fields, ``--size`` pixels square, 10
classes) whose decoded pixels are ``--factor`` times ``data.memory_budget_mb``, trains a
small CNN on it for one epoch with ``data.pipeline = "auto"`` (it streams: the split is
over the budget), and samples the resident set size (``VmRSS``) of the trainer and every
process under it every 50 ms. Then the same with twice the images. A pipeline that
streams keeps the peak flat: doubling the data must raise it by less than 10%.

    uv run python benchmarks/stream_memory.py                      # 256 MiB budget, 4x and 8x
    uv run python benchmarks/stream_memory.py --budget-mb 16 --size 64 --workers 2

RSS counts pages shared between processes once per process (the workers' Python and
numpy), so the sum overstates what the machine lost; it is the bound a test can check.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

RECIPE = """\
[data]
source = "folder:{root}"
batch_size = 64
memory_budget_mb = {budget}
image_size = {size}
channels = 3
workers = {workers}

[model]
layers = ["conv:c=8,k=3,s=2,p=same", "relu", "conv:c=16,k=3,s=2,p=same", "relu", "gap", "dense"]

[train]
epochs = 1
seed = 0
eval_every = 1
"""


def make_jpeg_folder(root: Path, images: int, size: int, test: int = 64) -> Path:
    """``root/{train,test}/c<k>/<i>.jpg``: smooth random colour fields (JPEG-friendly, about 4 KB at 96x96)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", images), ("test", test)):
        for i in range(count):
            folder = root / split / f"c{i % 10}"
            folder.mkdir(parents=True, exist_ok=True)
            small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
            Image.fromarray(small).resize((size, size), Image.BILINEAR).save(folder / f"{i:06d}.jpg", quality=85)
    return root


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _tree(pid: int) -> set[int]:
    """``pid`` and every process under it (grain's workers and the resource tracker)."""
    found, todo = {pid}, [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*"):
            try:
                kids = {int(c) for c in (task / "children").read_text().split()}
            except OSError:
                continue
            todo += sorted(kids - found)
            found |= kids
    return found


def peak_rss(cmd: list[str], every: float = 0.05) -> tuple[int, int, str, str]:
    """Run ``cmd``; (peak summed RSS of its process tree in bytes, return code, stdout, stderr)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak, done = 0, threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, sum(_rss_kib(p) for p in _tree(proc.pid)) * 1024)
            time.sleep(every)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    done.set()
    sampler.join()
    return peak, proc.returncode, out, err


def measure(directory: Path, images: int, size: int, budget_mb: int, workers: int) -> dict:
    root = make_jpeg_folder(directory / f"jpegs-{images}", images, size)
    recipe = directory / f"stream-{images}.toml"
    recipe.write_text(RECIPE.format(root=root, budget=budget_mb, size=size, workers=workers))
    cmd = [
        sys.executable,
        "-m",
        "cnncli.cli.app",
        "train",
        str(recipe),
        "--workdir",
        str(directory / f"run-{images}"),
        "--json",
    ]
    peak, code, out, err = peak_rss(cmd)
    if code != 0:
        raise RuntimeError(err[-3000:])
    summary = json.loads(out.splitlines()[-1])
    return {"images": images, "pixels_mib": round(images * size * size * 3 / 2**20, 1), "peak_rss_mib": round(peak / 2**20, 1),
            "pipeline": summary["data_pipeline"]["kind"], "images_per_second": summary["images_per_second"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget-mb", type=int, default=256)
    parser.add_argument("--factor", type=float, default=4.0, help="decoded pixels / budget of the smaller dataset")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=None, help="where the JPEGs go (default: a temporary folder)")
    args = parser.parse_args()
    images = math.ceil(args.factor * args.budget_mb * 2**20 / (args.size * args.size * 3))
    with tempfile.TemporaryDirectory() as tmp:
        directory = args.dir or Path(tmp)
        rows = [measure(directory, n, args.size, args.budget_mb, args.workers) for n in (images, 2 * images)]
    for row in rows:
        print(json.dumps(row))
    print(json.dumps({"growth": round(rows[1]["peak_rss_mib"] / rows[0]["peak_rss_mib"] - 1, 3)}))


if __name__ == "__main__":
    main()
