"""Start-up of the installed entry point: ``cnncli conv-arith 224 -k 7 -s 2 -p 3``, wall and CPU time.

    uv sync --compile-bytecode && uv run python -m compileall -q cnncli   # bytecode, as users have it
    uv run python benchmarks/startup.py --runs 21 [--peer OTHER/.venv/bin/cnncli]

Runs alternate between this checkout's entry point and ``--peer`` (another install, e.g. an
older revision in a git worktree with its own venv), so both see the same machine state;
prints the median and quartiles of each. Most of the time is typer (which coerces
parameters through pydantic) and Python itself: ``python -X importtime`` shows where.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ARGS = ["conv-arith", "224", "-k", "7", "-s", "2", "-p", "3"]


def one_run(exe: str) -> tuple[float, float]:
    """(wall, cpu) seconds of one run of ``exe ARGS``; cpu is the child's user + system time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([exe, *ARGS], capture_output=True, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--peer", help="another cnncli executable to time alternately")
    args = parser.parse_args()
    here = Path(sys.executable).with_name("cnncli")
    exes = {"this checkout": str(here if here.exists() else shutil.which("cnncli"))}
    if args.peer:
        exes["peer"] = args.peer
    for exe in exes.values():
        one_run(exe)  # warm the page cache
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in exes}
    for _ in range(args.runs):
        for name, exe in exes.items():
            times[name].append(one_run(exe))
    for name, pairs in times.items():
        wall = sorted(w for w, _ in pairs)
        q = len(wall) // 4
        cpu = statistics.median(c for _, c in pairs)
        print(f"{name}: wall median {statistics.median(wall) * 1e3:.0f} ms "
              f"(quartiles {wall[q] * 1e3:.0f}-{wall[-q - 1] * 1e3:.0f}), cpu median {cpu * 1e3:.0f} ms, "
              f"{len(wall)} runs  [{exes[name]}]")  # fmt: skip


if __name__ == "__main__":
    main()
