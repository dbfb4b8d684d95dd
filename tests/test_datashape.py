"""Peeking at a dataset's shape without loading it (conv-arith RECIPE)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from cnncli.config.datashape import peek
from cnncli.config.recipe import DataConfig


def test_digits_and_folder():
    assert peek(DataConfig(source="digits")) == ((8, 8, 1), 10)
    assert peek(DataConfig(source="folder:/x", image_size=32, channels=3)) == ((32, 32, 3), None)
    assert peek(DataConfig(source="folder:/x")) == (None, None)


def test_npz_shapes_and_classes(tmp_path):
    np.savez(tmp_path / "a.npz", x_train=np.zeros((5, 28, 28), np.uint8), y_train=np.array([0, 3, 1, 2, 2]),
             x_test=np.zeros((2, 28, 28)), y_test=np.zeros(2, int))  # fmt: skip
    assert peek(DataConfig(source=f"npz:{tmp_path / 'a.npz'}")) == ((28, 28, 1), 4)
    np.savez(tmp_path / "b.npz", x_train=np.zeros((5, 40)), y_train=np.zeros(5), x_test=np.zeros((1, 40)),
             y_test=np.zeros(1), class_names=np.array(["a", "b", "c"]))  # fmt: skip
    assert peek(DataConfig(source=f"npz:{tmp_path / 'b.npz'}")) == ((40, 1), 3)
    np.savez(tmp_path / "c.npz", x_train=np.zeros((5, 9, 9, 3)), y_train=np.zeros(5, np.uint8))
    assert peek(DataConfig(source=f"npz:{tmp_path / 'c.npz'}")) == ((9, 9, 3), 1)
    assert peek(DataConfig(source=f"npz:{tmp_path / 'missing.npz'}")) == (None, None)


def test_conv_arith_reads_a_recipe_without_numpy(tmp_path):
    np.savez(tmp_path / "d.npz", x_train=np.zeros((5, 12, 12), np.uint8), y_train=np.array([0, 1, 2, 3, 4]),
             x_test=np.zeros((2, 12, 12)), y_test=np.zeros(2, int))  # fmt: skip
    recipe = tmp_path / "r.toml"
    recipe.write_text('[data]\nsource = "npz:d.npz"\n[model]\nlayers = ["conv:c=4,k=3", "gap", "dense"]\n'
                      "[train]\nepochs = 1\n")  # fmt: skip
    code = (
        "import sys, json; from cnncli.cli.app import main\n"
        f"try: main(['conv-arith', {str(recipe)!r}, '--json'])\n"
        "except SystemExit as e: assert e.code in (0, None), e.code\n"
        "sys.stderr.write(json.dumps(['numpy' in sys.modules, 'jax' in sys.modules]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["input"] == [12, 12, 1] and out["output"] == [5]
    assert json.loads(proc.stderr.strip().splitlines()[-1]) == [False, False]
