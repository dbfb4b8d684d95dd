"""Shared test helpers: the tiny recipes every training test uses, and a checkpoint digest.

Imported by tests as ``from helpers import ...`` (pytest puts tests/ on sys.path); fixtures
that build real runs from these live in conftest.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

TINY_RECIPE = """\
# A tiny recipe for tests: two conv layers on the 8x8 digits.
[data]
source = "digits"
batch_size = 64

[model]
layers = ["conv:c=8,k=3,p=same", "bn", "relu", "maxpool:k=2",
          "conv:c=16,k=3,p=same", "relu", "gap", "dense"]

[optimizer]
name = "adam"
learning_rate = 0.01

[train]
epochs = 2
seed = 0
"""


def write_recipe(directory: Path, text: str = TINY_RECIPE, name: str = "tiny.toml") -> Path:
    """Write a recipe file and return its path."""
    path = Path(directory) / name
    path.write_text(text)
    return path


# Trajectory fields as TINY_RECIPE: 22 steps per epoch (1438 digits // 64), 44 steps.
# Progress every step; a checkpoint every 10 steps, all kept, so any step can be compared.
RESUME_RECIPE = TINY_RECIPE + "log_every = 1\ncheckpoint_every_steps = 10\nkeep = 10\n"
STATE_PARTS = ("params", "rest", "opt", "ema", "step")  # what a bit-identical resume must reproduce


def state_digest(workdir: Path, step: int | str = "latest") -> str:
    """sha256 over every array (parameters, batch statistics, optimizer state, step) of a checkpoint."""
    from cnncli.runs.checkpoint import Checkpoints, tree_digest

    store = Checkpoints(Path(workdir) / "checkpoints", async_save=False)
    try:
        tree, _ = store.restore_tree(store.resolve(step))
    finally:
        store.close()
    return tree_digest(tree, STATE_PARTS)


STEPS3 = TINY_RECIPE.replace("epochs = 2", "steps = 3")  # 3 updates, one (partial) epoch: about a second


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run the real app in this process: (exit code, stdout, stderr)."""
    from cnncli.cli.app import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    return info.value.code, out, err


def json_lines(out: str) -> list[dict]:
    """Each line of ``out`` parsed as one JSON object."""
    return [json.loads(line) for line in out.splitlines()]


def free_port() -> int:
    """A TCP port free on loopback now: the coordinator of a two-process test."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
