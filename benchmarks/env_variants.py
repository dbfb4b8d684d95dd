"""cnncli's train step in processes that differ only in environment variables, alternating windows.

Run: ``uv run python benchmarks/env_variants.py --model resnet20 --backend onednn
--variants "default;OMP_WAIT_POLICY=passive;GOMP_SPINCOUNT=20000" [--windows 6] [--precision bf16]``

Some settings are read once per process, before anything runs: OpenMP's
(``OMP_*``, ``GOMP_*``, read when libgomp loads), glibc's malloc, XLA's flags. So
each variant is its own long-lived worker (`vs_pytorch.py`'s jax worker: cnncli's
real step, `cnncli.train.profiling.synthetic_step`, host malloc tuned as the CLI does),
started with ``VAR=VALUE`` pairs added to this process's environment (``default``: none),
and the windows alternate between the workers, rotating who goes first. Prints the
median images/s per variant with min-max.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vs_pytorch import MODELS, Worker, load  # noqa: E402


def parse_variant(text: str) -> dict[str, str]:
    """``"A=1 B=2"`` -> ``{"A": "1", "B": "2"}``; ``"default"`` -> ``{}``."""
    pairs = {}
    for item in text.split():
        if item == "default":
            continue
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"env_variants: {item!r} is not VAR=VALUE")
        pairs[key] = value
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20", choices=list(MODELS))
    parser.add_argument("--backend", default="onednn", choices=["xla", "onednn"])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--variants", required=True, help='";"-separated, each "VAR=VALUE ..." or "default" (unchanged)')
    parser.add_argument("--windows", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=3.0, help="minimum length of a window")
    args = parser.parse_args()
    variants = [v.strip() for v in args.variants.split(";") if v.strip()]
    me = [sys.executable, str(Path(__file__).resolve().parent / "vs_pytorch.py"), "--worker", "jax"]
    workers = {v: Worker(me, env=dict(os.environ, **parse_variant(v))) for v in variants}
    try:
        for v, w in workers.items():
            reply = w.ask(op="setup", model=args.model, conv_backend=args.backend, precision=args.precision)
            print(f"  {v}: compiled in {reply['compile_seconds']:.2f} s", file=sys.stderr)
        windows: dict[str, list[float]] = {v: [] for v in variants}
        for r in range(args.windows):
            for v in variants[r % len(variants):] + variants[: r % len(variants)]:
                windows[v].append(workers[v].ask(op="window", seconds=args.seconds)["images_per_second"])
    finally:
        for w in workers.values():
            w.close()
    print(f"{args.model}, {args.backend}, {args.precision}, batch 128; {args.windows} windows of >= {args.seconds:g} s per variant, "
          f"alternating; load average at the end {load()}")  # fmt: skip
    print("| environment | median img/s | min-max |")
    print("|---|---|---|")
    for v, rates in windows.items():
        print(f"| `{v}` | {statistics.median(rates):,.0f} | {min(rates):,.0f}-{max(rates):,.0f} |")


if __name__ == "__main__":
    main()
