"""Profile cnncli's train step on random data and print the top XLA ops by time.

Run: ``uv run python benchmarks/profile_step.py resnet20 --shape 32x32x3 [--steps 5]
[--out runs/profile-resnet20] [--precision bf16] [--hlo]``

With ``--conv-backend onednn`` it also lists the oneDNN implementation each
convolution pass ran. The step is the real one (`cnncli.train.profiling.synthetic_step`); the trace lands in
``--out`` (Perfetto JSON + XProf ``.xplane.pb``) and `cnncli.train.profiling.format_top_ops`
prints the table. ``--hlo`` also writes the optimized HLO next to it, to look up
what a fusion named in the table computes. For a recipe's own step use
``cnncli train RECIPE --profile N`` (same table, same trace layout).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cnncli.train.profiling import format_top_ops, profile_steps, synthetic_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="zoo name or quoted layer tokens")
    parser.add_argument("--shape", default="32x32x3", help="per-example input, channels last (default 32x32x3)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--conv-backend", default="xla", choices=["xla", "onednn"])
    parser.add_argument("--xla-defaults", action="store_true", help="compile with XLA's default CPU options")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("runs/profile"))
    parser.add_argument("--hlo", action="store_true", help="write the optimized HLO to OUT/step.hlo.txt")
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.shape.lower().split("x"))
    bench = synthetic_step(args.model, shape, batch_size=args.batch_size, precision=args.precision,
                           conv_backend=args.conv_backend,
                           compiler_options=None if args.xla_defaults else "auto")  # fmt: skip
    if args.hlo:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "step.hlo.txt").write_text(bench.step.as_text())
    report = profile_steps(bench.step, bench.state, bench.args, args.steps, args.out, batch_size=args.batch_size)
    report.compile_seconds = bench.compile_seconds
    print(format_top_ops(report, args.top))
    if args.conv_backend == "onednn":
        print_implementations()


def print_implementations() -> None:
    """Which oneDNN implementation each convolution pass ran (cnncli times them on first use)."""
    from cnncli.native import onednn

    print("\noneDNN implementation per convolution pass (a, b -> out; strides; groups)")
    for key, impl in sorted(onednn.implementations().items()):
        name, a, b, out, strides, *_, groups = key.split("|")
        shapes = [f.split(":")[1].rstrip(",").replace(",", "x") for f in (a, b, out)]
        print(f"  {name:<12} {shapes[0]}, {shapes[1]} -> {shapes[2]}; {strides.rstrip(',')}; {groups}  {impl}")


if __name__ == "__main__":
    main()
