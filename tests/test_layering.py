"""Module layering (docs: /work/shared/DESIGN.md): conv-arith never touches jax or numpy.

Imports are read with `ast` (module level and inside functions), then a subprocess
checks what running ``conv-arith`` really loads.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "cnncli"
HEAVY = {"jax", "jaxlib", "flax", "numpy", "tensorflow", "tensorflow_datasets", "optax", "orbax"}
# The conv-arith path: these modules, and every cnncli module they import, stay light.
ARITH_PATH = [
    "errors", "arith.layers", "arith.formulas", "arith.geometry", "arith.blocks", "arith.draw", "arith.zoo", "report.console", "report.arith",
    "cli.arith", "cli.arith_run", "cli.arith_explain", "config.datashape",
]  # fmt: skip
NO_RICH = ["errors", "arith.layers", "arith.formulas", "arith.geometry", "arith.blocks", "arith.draw", "arith.zoo", "config.datashape"]
# Loaded only for a recipe INPUT (pydantic); not part of the tokens/--arch path.
LAZY_EXTERNAL = {"config.recipe"}


def imports(module: str, *, top_level_only: bool = False) -> set[str]:
    """Absolute module names imported by ``cnncli.<module>`` (relative imports resolved)."""
    path = SRC / module.replace(".", "/")
    tree = ast.parse((path / "__init__.py" if path.is_dir() else path.with_suffix(".py")).read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    if top_level_only:  # include imports nested in module-level try/if blocks
        nodes = [n for stmt in tree.body if not isinstance(stmt, (ast.FunctionDef, ast.ClassDef)) for n in ast.walk(stmt)]
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = "cnncli" + (f".{base}" if base else "")
            names.add(base)
            if base == "cnncli":  # from cnncli import arith, zoo
                names.update(f"cnncli.{alias.name}" for alias in node.names)
    return names


def roots(names: set[str]) -> set[str]:
    return {name.split(".")[0] for name in names}


def local(names: set[str]) -> set[str]:
    return {name.split(".", 1)[1] for name in names if name.startswith("cnncli.") and (SRC / f"{name.split('.', 1)[1]}.py").exists()}


@pytest.mark.parametrize("module", ARITH_PATH)
def test_arith_path_never_imports_heavy_modules(module):
    assert not roots(imports(module)) & HEAVY


@pytest.mark.parametrize("module", NO_RICH)
def test_pure_modules_import_no_rich(module):
    assert "rich" not in roots(imports(module))


def test_arith_path_is_closed():
    """Every cnncli module reachable from cli_arith (lazy imports included) is on the path."""
    seen, todo = set(), ["cli.arith"]
    while todo:
        module = todo.pop()
        seen.add(module)
        todo += sorted(local(imports(module)) - seen - LAZY_EXTERNAL)
    assert seen <= set(ARITH_PATH), seen - set(ARITH_PATH)


def test_cli_arith_module_level_imports():
    allowed = {"typer", "cnncli.errors", "cnncli.arith.layers", "cnncli.arith.formulas", "cnncli.arith.geometry", "cnncli.arith.zoo",
               "cnncli.report.console", "cnncli.report.arith", "cnncli", "cnncli.arith", "cnncli.cli", "__future__", "typing"}  # fmt: skip
    assert imports("cli.arith", top_level_only=True) <= allowed


def test_cli_imports_heavy_modules_only_inside_functions():
    assert not roots(imports("cli.app", top_level_only=True)) & HEAVY


def _loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {sorted(HEAVY)!r} if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return set(proc.stdout.split())


def test_importing_cli_arith_loads_no_jax_or_numpy():
    assert _loaded_after("import cnncli.cli.arith, cnncli.cli.arith_run, cnncli.cli.arith_explain, cnncli.arith.draw") == set()


def test_running_conv_arith_loads_no_jax_or_numpy():
    code = (
        "import contextlib, io\nfrom cnncli.cli.app import main\n"
        "for args in (['224x224x3', '--arch', 'resnet50'], ['224', '-k', '7', '-s', '2', '-p', '3'], ['--draw'],\n"
        "             ['32', '--solve', '16'], ['28x28x1', 'conv:c=4,k=3', 'gap', 'dense:c=10', '--json']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n            main(['conv-arith', *args])\n        except SystemExit as exc:\n"
        "            assert exc.code in (0, None), (args, exc.code)"
    )
    assert _loaded_after(code) == set()
