"""Shared fixtures: tiny real training runs on the bundled digits (CPU, seconds).

The suite never touches the user's cache: before anything imports cnncli, the whole
session (this process, xdist's workers and every subprocess a test starts, which inherit
the environment) gets a temporary ``CNNCLI_CACHE_DIR``, removed when the session ends.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from helpers import RESUME_RECIPE, write_recipe

os.environ.setdefault("JAX_PLATFORMS", "cpu")

for _name in ("COLUMNS", "LINES"):  # a terminal's size must not change what the tests read
    os.environ.pop(_name, None)

# Set by the process that made the session's cache (xdist's controller, or a plain
# pytest); its workers inherit both variables and reuse the folder. CNNCLI_TEST_CACHE_DIR
# names a folder to keep between sessions instead (faster: compiled programs and the
# oneDNN extension are reused), never the user's own cache.
_OWNER = "CNNCLI_TEST_CACHE_OWNER"
if os.environ.get(_OWNER) is None:
    _kept = os.environ.get("CNNCLI_TEST_CACHE_DIR")
    os.environ["CNNCLI_CACHE_DIR"] = _kept or tempfile.mkdtemp(prefix="cnncli-test-cache-")
    os.environ[_OWNER] = "kept" if _kept else str(os.getpid())
    os.environ.setdefault("MPLCONFIGDIR", os.path.join(os.environ["CNNCLI_CACHE_DIR"], "matplotlib"))  # its font cache


def pytest_unconfigure(config) -> None:
    if os.environ.get(_OWNER) == str(os.getpid()):  # only the process that made it removes it
        shutil.rmtree(os.environ["CNNCLI_CACHE_DIR"], ignore_errors=True)


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
