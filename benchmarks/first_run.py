"""First run of a recipe on a fresh machine: wall time from the command to the first trained step.

Run: ``uv run python benchmarks/first_run.py [--recipes quickstart,resnet20] [--runs 3]``

Each measurement is a fresh ``cnncli train RECIPE --set train.steps=1`` process (the
real CLI, through `cnncli.cli.app.main`) with its own ``CNNCLI_CACHE_DIR``, so nothing
that cnncli caches (XLA's compiled programs, the oneDNN extension, oneDNN's
implementation choices) is reused unless the variant says so:

- ``fresh``: an empty cache and the default ``conv_backend`` (``auto``): the oneDNN
  extension is compiled with g++, every convolution pass times oneDNN's kernels, XLA
  compiles the step. What a user's very first ``cnncli train`` pays.
- ``fresh, extension prebuilt``: an empty cache except the compiled extension (copied
  from a ``fresh`` run's cache): what the first run pays when the extension ships built
  in the wheel (``hatch_build.py``; the kernel timing and XLA's compilation remain).

Every variant runs with ``CNNCLI_NO_PREBUILT=1``, so an extension shipped in this
install (an editable install whose build hook compiled it) does not hide the build.
- ``fresh, xla``: an empty cache, ``conv_backend = "xla"``: no extension at all.
- ``warm``: the ``fresh`` run's whole cache again (a second run on the same machine).

The time to the first trained step is taken in the child when its first
`cnncli.train.events.StepEnd` is made (``train.log_every = 1``: after the first step's
loss is read back, so the step has run), against the parent's clock just before it
started the process; ``total`` is the whole command (one step, an evaluation, a
checkpoint). Variants alternate, one run each per round. ``recipes/quickstart.toml``
is the digits CNN (offline); ``resnet20`` is the zoo ResNet-20 on random 32x32x3 uint8
images (``npz:``, 1,280 train / 256 test) with SGD, batch 128.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# Runs in the child: records when the first StepEnd is made, then runs the CLI as `cnncli` does.
PROBE = """
import os, sys, time
from cnncli.train import events
_init = events.StepEnd.__init__
def _first(self, *a, **k):
    _init(self, *a, **k)
    if not os.environ.get("_FIRST_STEP_SEEN"):
        os.environ["_FIRST_STEP_SEEN"] = "1"
        with open(os.environ["FIRST_STEP_FILE"], "w") as f:
            f.write(repr(time.time()))
events.StepEnd.__init__ = _first
from cnncli.cli.app import main
sys.argv = ["cnncli", *sys.argv[1:]]
main()
"""

RESNET20 = """\
[data]
source = "npz:{npz}"
batch_size = 128

[model]
arch = "resnet20"

[optimizer]
name = "momentum"
learning_rate = 0.1

[train]
steps = 1
seed = 0
"""


def resnet20_recipe(folder: Path) -> Path:
    import numpy as np

    rng = np.random.default_rng(0)
    npz = folder / "random32.npz"
    np.savez(npz, x_train=rng.integers(0, 256, (1280, 32, 32, 3), dtype=np.uint8),
             y_train=rng.integers(0, 10, 1280).astype(np.int64),
             x_test=rng.integers(0, 256, (256, 32, 32, 3), dtype=np.uint8),
             y_test=rng.integers(0, 10, 256).astype(np.int64))  # fmt: skip
    path = folder / "resnet20_random.toml"
    path.write_text(RESNET20.format(npz=npz))
    return path


def run_once(recipe: Path, cache: Path, workdir: Path, extra: list[str]) -> dict:
    """One fresh `cnncli train` process; seconds to its first trained step and to its end."""
    stamp = workdir.parent / (workdir.name + ".first-step")
    env = dict(os.environ, CNNCLI_CACHE_DIR=str(cache), FIRST_STEP_FILE=str(stamp), CNNCLI_NO_PREBUILT="1")
    env.pop("_FIRST_STEP_SEEN", None)
    argv = [sys.executable, "-c", PROBE, "train", str(recipe), "--workdir", str(workdir), "--json",
            "--set", "train.steps=1", "--set", "train.epochs=null", "--set", "train.log_every=1", *extra]  # fmt: skip
    t0 = time.time()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT)
    total = time.time() - t0
    if proc.returncode != 0:
        raise SystemExit(f"first_run: {' '.join(argv[3:])} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    summary = json.loads(proc.stdout.splitlines()[-1])
    return {"first_step": float(stamp.read_text()) - t0, "total": total, "conv_backend": summary["conv_backend"],
            "compile_seconds": summary["compile_seconds"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", default="quickstart,resnet20", help="quickstart and/or resnet20")
    parser.add_argument("--runs", type=int, default=3, help="rounds (each runs every variant once)")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="cnncli-first-run-"))
    try:
        recipes = {"quickstart": ROOT / "recipes" / "quickstart.toml"}
        if "resnet20" in args.recipes:
            recipes["resnet20"] = resnet20_recipe(scratch)
        rows = []
        for name in args.recipes.split(","):
            rows += measure(name, recipes[name], scratch, args.runs)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"\n{machine()}; load average at the end {load()}; "
          f"PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '(unset)')}")
    print(f"median of {args.runs} fresh processes per variant (min-max), seconds\n")
    print("| recipe | variant | conv backend | command to first trained step | whole command (1 step, eval, checkpoint) |")
    print("|---|---|---|---|---|")
    for name, variant, results in rows:
        first = [r["first_step"] for r in results]
        total = [r["total"] for r in results]
        print(f"| {name} | {variant} | {results[0]['conv_backend']} | {statistics.median(first):.1f} "
              f"({min(first):.1f}-{max(first):.1f}) | {statistics.median(total):.1f} ({min(total):.1f}-{max(total):.1f}) |")


def measure(name: str, recipe: Path, scratch: Path, runs: int) -> list:
    variants = ["fresh", "fresh, extension prebuilt", "fresh, xla", "warm"]
    results: dict[str, list] = {v: [] for v in variants}
    for r in range(runs):
        fresh_cache = scratch / f"{name}-{r}-fresh"
        for variant in variants:
            work = scratch / f"{name}-{r}-{variant.replace(', ', '-').replace(' ', '-')}"
            extra: list[str] = []
            if variant == "fresh":
                cache = fresh_cache
            elif variant == "fresh, extension prebuilt":
                cache = work.with_suffix(".cache")
                (cache / "native").mkdir(parents=True)
                for so in (fresh_cache / "native").glob("*.so"):
                    shutil.copy2(so, cache / "native" / so.name)
            elif variant == "fresh, xla":
                cache, extra = work.with_suffix(".cache"), ["--set", "train.conv_backend=xla"]
            else:  # warm: the fresh run's cache, everything in it
                cache = fresh_cache
            results[variant].append(run_once(recipe, cache, work, extra))
            print(f"  {name} round {r + 1}: {variant}: {results[variant][-1]}", file=sys.stderr, flush=True)
    return [(name, v, results[v]) for v in variants]


def machine() -> str:
    sys.path.insert(0, str(HERE))
    from vs_pytorch import machine as cpu

    return cpu()


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


if __name__ == "__main__":
    main()
