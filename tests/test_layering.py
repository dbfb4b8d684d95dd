"""The package's dependency order (docs/architecture.md), and what conv-arith really loads.

The order itself is import-linter's contracts in pyproject.toml (layers, the pure-Python
conv arithmetic, no cycles between siblings; imports inside functions count). These
tests run them, show once that an upward import breaks them, and then check in real
processes what no static tool sees: which heavy modules a command actually imports.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("jax", "jaxlib", "flax", "numpy", "tensorflow", "tensorflow_datasets", "optax", "orbax")

LINT = "import sys\nfrom importlinter.cli import lint_imports\nsys.exit(lint_imports(no_cache=True))"


def _lint(cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    """Run import-linter on the package under ``cwd`` (its pyproject.toml), in a child process.

    ``no_cache``: nothing is written outside temporary directories.
    """
    env = {"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([sys.executable, "-c", LINT], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_import_contracts_hold():
    proc = _lint(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Contracts: 4 kept, 0 broken." in proc.stdout


def test_an_upward_import_breaks_the_contracts_and_names_the_chain(tmp_path):
    """The contracts can fail: conv arithmetic that reaches for the train step is refused."""
    shutil.copytree(ROOT / "cnncli", tmp_path / "cnncli", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    formulas = tmp_path / "cnncli" / "arith" / "formulas.py"
    formulas.write_text(formulas.read_text() + "\n\ndef _upward():\n    from cnncli.train import step  # noqa\n")
    proc = _lint(tmp_path, pythonpath=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "cnncli.arith is not allowed to import cnncli.train" in proc.stdout
    assert "cnncli.arith.formulas -> cnncli.train.step" in proc.stdout
    assert "Conv arithmetic is pure Python" in proc.stdout.split("Broken contracts")[1]  # jax, through the step


def _loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {sorted(HEAVY)!r} if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return set(proc.stdout.split())


def test_importing_the_cli_loads_no_heavy_module():
    """Every command module imports jax, numpy and the rest inside its command function."""
    assert _loaded_after("import cnncli.cli.app, cnncli.__main__") == set()


def test_running_conv_arith_loads_no_jax_or_numpy():
    code = (
        "import contextlib, io\nfrom cnncli.cli import main\n"
        "for args in (['224x224x3', '--arch', 'resnet50'], ['224', '-k', '7', '-s', '2', '-p', '3'], ['--draw'],\n"
        "             ['32', '--solve', '16'], ['28x28x1', 'conv:c=4,k=3', 'gap', 'dense:c=10', '--json']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n            main(['conv-arith', *args])\n        except SystemExit as exc:\n"
        "            assert exc.code in (0, None), (args, exc.code)"
    )
    assert _loaded_after(code) == set()


def test_python_dash_m_cnncli_runs_the_app():
    proc = subprocess.run([sys.executable, "-m", "cnncli", "conv-arith", "32", "-k", "3", "-s", "2"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "15"
