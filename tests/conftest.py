"""Shared fixtures: tiny real training runs on the bundled digits (CPU, seconds)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import RESUME_RECIPE, write_recipe

os.environ.setdefault("JAX_PLATFORMS", "cpu")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A real 2-epoch run of TINY_RECIPE on the digits; read-only for tests (copy to modify)."""
    from cnncli.config.recipe import load_recipe
    from cnncli.train.loop import fit

    root = tmp_path_factory.mktemp("trained")
    recipe = write_recipe(root)
    workdir = root / "run"
    fit(load_recipe(recipe), workdir, recipe_text=recipe.read_text())
    return workdir


@pytest.fixture(scope="session")
def straight_run(tmp_path_factory) -> Path:
    """RESUME_RECIPE trained 44 steps without interruption: the reference for resume tests."""
    from cnncli.config.recipe import load_recipe
    from cnncli.train.loop import fit

    root = tmp_path_factory.mktemp("straight")
    recipe = write_recipe(root, RESUME_RECIPE)
    fit(load_recipe(recipe), root / "run", recipe_text=recipe.read_text())
    return root / "run"
