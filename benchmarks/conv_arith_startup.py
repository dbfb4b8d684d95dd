"""Wall time of ``cnncli conv-arith`` from a cold process, next to bare Python.

Run: ``uv run python benchmarks/conv_arith_startup.py [--runs 10] [--peer OTHER/.venv/bin/cnncli]``

Each command runs as a fresh subprocess (what a user at the shell pays), stdout to a
pipe. Two untimed warm-up runs first, so the operating system's file cache and the
bytecode cache are warm, as for an installed CLI. The commands take turns, one run each
per round, so a machine whose speed drifts shows in every row alike; ``--peer`` adds the
conv-arith commands of another install (an older revision in a git worktree with its own
venv, say), timed in the same rounds. Bytecode goes to ``.bench/pycache``
(``PYTHONPYCACHEPREFIX``) so the source tree stays clean even where
``PYTHONDONTWRITEBYTECODE`` is set. Prints one markdown table row per command:
median, min and max seconds over the timed runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).with_name("cnncli")

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    'python -c "import cnncli.cli.app"': [sys.executable, "-c", "import cnncli.cli.app"],
    "cnncli conv-arith 224 -k 7 -s 2 -p 3": [str(CLI), "conv-arith", "224", "-k", "7", "-s", "2", "-p", "3"],
    "cnncli conv-arith 224x224x3 --arch resnet50": [str(CLI), "conv-arith", "224x224x3", "--arch", "resnet50"],
    "cnncli conv-arith 224x224x3 --arch resnet50 --json": [str(CLI), "conv-arith", "224x224x3", "--arch", "resnet50", "--json"],
}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(ROOT / ".bench" / "pycache")
    env.pop("FORCE_COLOR", None)
    return env


def one_run(argv: list[str], env: dict[str, str]) -> float:
    """Seconds of one run of ``argv``; fails loudly on a non-zero exit."""
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def time_commands(commands: dict[str, list[str]], runs: int, env: dict[str, str]) -> dict[str, list[float]]:
    """Seconds per run of each command, after two warm-up runs each, in alternating rounds."""
    for argv in commands.values():
        for _ in range(2):
            subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    times: dict[str, list[float]] = {label: [] for label in commands}
    for _ in range(runs):
        for label, argv in commands.items():
            times[label].append(one_run(argv, env))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="timed runs per command (default 10)")
    parser.add_argument("--peer", help="another cnncli executable whose conv-arith commands are timed alongside")
    args = parser.parse_args()
    env = _env()
    commands = dict(COMMANDS)
    if args.peer:
        commands |= {f"peer: {label}": [args.peer, *argv[1:]] for label, argv in COMMANDS.items() if argv[0] == str(CLI)}
    print(f"<!-- {platform.python_implementation()} {platform.python_version()}, {platform.machine()}, "
          f"{os.cpu_count()} CPUs, {args.runs} runs each after 2 warm-up runs -->")  # fmt: skip
    print("| command | median (s) | min (s) | max (s) |")
    print("|---|---|---|---|")
    for label, times in time_commands(commands, args.runs, env).items():
        print(f"| `{label}` | {statistics.median(times):.3f} | {min(times):.3f} | {max(times):.3f} |", flush=True)


if __name__ == "__main__":
    main()
