"""Issue 18, rules 5, 9 and 10: OS and encoding conditions, hermetic tests, clean multi-process output.

No traceback for any OS or encoding condition: a run folder that cannot take the PNGs
(eval and inspect-filters still print their results), an OSError or UnicodeError that
nothing else caught, recipes that are folders, not UTF-8 or carry a BOM, an ASCII-only
output encoding, a reader that closes the pipe, late tensorstore callbacks and Ctrl-C in
awkward places. The suite's cache is a temporary folder, never the user's; gloo's
connection lines stay off stdout.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import types
from pathlib import Path

import pytest
from helpers import STEPS3, TINY_RECIPE, cli, free_port, write_recipe

PY = [sys.executable, "-m", "cnncli"]


def run_cli(*args: str, env: dict | None = None, cwd=None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*PY, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env=os.environ | (env or {}))  # fmt: skip


def files_under(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")} if path.exists() else set()


# --- a run folder that cannot take the PNGs ---------------------------------------------------


def blocked_copy(trained_run: Path, tmp_path: Path) -> Path:
    """A copy of the run whose eval/ and filters/ are files: no PNG can be written under them."""
    run = shutil.copytree(trained_run, tmp_path / "run")
    for name in ("eval", "filters"):
        shutil.rmtree(run / name, ignore_errors=True)
        (run / name).write_text("in the way\n")
    return run


def test_eval_prints_its_results_when_the_pngs_cannot_be_written(trained_run, tmp_path, capsys):
    run = blocked_copy(trained_run, tmp_path)
    before = files_under(run)
    code, out, err = cli(["eval", str(run), "--json", "--worst", "2"], capsys)
    assert code == 0 and "Traceback" not in err
    data = json.loads(out)
    assert data["num_examples"] == 359 and data["pngs"] == {}
    message = (f"the PNGs could not be written ({run / 'eval' / 'test'}: Not a directory); the results are complete "
               "without them (--out DIR writes them elsewhere)")  # fmt: skip
    assert message in data["warnings"] and f"warning: {message}" in " ".join(err.split())
    code, out, err = cli(["eval", str(run)], capsys)
    assert code == 0 and "per class" in out and "wrote confusion" not in err and "could not be written" in err
    assert files_under(run) == before  # nothing written, nothing half-written


def test_inspect_filters_prints_its_results_when_the_pngs_cannot_be_written(trained_run, tmp_path, capsys):
    run = blocked_copy(trained_run, tmp_path)
    code, out, err = cli(["inspect-filters", str(run), "--json"], capsys)
    assert code == 0 and "Traceback" not in err
    data = json.loads(out)
    assert data["pngs"] == {} and len(data["filters"]) == 8
    assert any(w.startswith(f"the PNGs could not be written ({run / 'filters' / 'conv1'}") for w in data["warnings"])
    code, out, err = cli(["inspect-filters", str(run)], capsys)
    assert code == 0 and "filter health" in out and "could not be written" in err


def test_a_full_disk_while_writing_a_png_is_a_warning(trained_run, tmp_path, capsys, monkeypatch):
    from cnncli.pictures import figures

    def full(img, path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(figures, "save", full)
    code, out, err = cli(["eval", str(trained_run), "--out", str(tmp_path / "o"), "--json"], capsys)
    assert code == 0 and json.loads(out)["accuracy"] > 0
    assert f"({tmp_path / 'o' / 'confusion.png'}: No space left on device)" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_run_folder(trained_run, tmp_path, capsys):
    run = shutil.copytree(trained_run, tmp_path / "run")
    shutil.rmtree(run / "eval", ignore_errors=True)
    run.chmod(0o555)
    try:
        code, out, err = cli(["eval", str(run), "--json"], capsys)
    finally:
        run.chmod(0o755)
    assert code == 0 and json.loads(out)["pngs"] == {} and "Permission denied" in err


# --- the last resort: OSError and UnicodeError become one message ---------------------------


@pytest.mark.parametrize("err, message, hint", [
    (OSError(errno.ENOSPC, "No space left on device", "/data/run/x.npz"), "error: /data/run/x.npz: No space left on device",
     "free some disk space"),
    (OSError(errno.EROFS, "Read-only file system", "/ro/run"), "error: /ro/run: Read-only file system", "writable folder"),
    (OSError(errno.ENOTDIR, "Not a directory", "/f/sub"), "error: /f/sub: Not a directory", "is a file, not a folder"),
    (OSError(errno.EXDEV, "Invalid cross-device link", "/a", None, "/b"), "error: /a -> /b: Invalid cross-device link",
     "check the path"),
    (UnicodeDecodeError("utf-8", b"caf\xe9", 3, 4, "invalid byte"),
     "error: a file is not utf-8 text: byte 0xe9 at offset 3 (invalid byte)", "save the file as UTF-8"),
])  # fmt: skip
def test_an_os_or_encoding_error_nothing_caught_is_one_message(monkeypatch, capsys, err, message, hint):
    from cnncli.cli import arith_run

    def fail(options):
        raise err

    monkeypatch.setattr(arith_run, "dispatch", fail)
    code, out, stderr = cli(["conv-arith", "5", "-k", "3"], capsys)
    assert code == 1 and out == "" and "Traceback" not in stderr
    assert stderr.splitlines()[0] == message and hint in stderr


def test_debug_still_shows_the_traceback_of_an_os_error(monkeypatch):
    from cnncli.cli import arith_run
    from cnncli.cli.app import main

    monkeypatch.setattr(arith_run, "dispatch", lambda o: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    with pytest.raises(OSError):
        main(["--debug", "conv-arith", "5", "-k", "3"])


# --- recipes: a folder, a BOM, a byte that is not UTF-8 -------------------------------------------


def test_a_recipe_with_a_bom_reads_like_one_without(tmp_path, capsys):
    recipe = tmp_path / "bom.toml"
    recipe.write_bytes(b"\xef\xbb\xbf" + TINY_RECIPE.encode())
    code, out, err = cli(["train", str(recipe), "--dry-run", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["recipe"]["train"]["epochs"] == 2


@pytest.mark.parametrize("suffix", ["toml", "yaml"])
def test_a_recipe_byte_that_is_not_utf8_is_named_by_line(tmp_path, capsys, suffix):
    recipe = tmp_path / f"latin1.{suffix}"
    text = TINY_RECIPE if suffix == "toml" else "train:\n  epochs: 2\n"
    recipe.write_bytes(text.encode() + "# café\n".encode("latin-1"))
    line = text.count("\n") + 1
    code, out, err = cli(["train", str(recipe), "--dry-run"], capsys)
    assert code == 1 and out == "" and "Traceback" not in err
    assert f"error: {recipe}:{line}: byte 0xe9 (column 6) is not UTF-8" in err and "save the file as UTF-8" in err
    assert files_under(tmp_path) == {recipe.name}


def test_a_recipe_that_is_a_folder(tmp_path, capsys):
    (tmp_path / "r.toml").mkdir()
    code, out, err = cli(["train", str(tmp_path / "r.toml"), "--dry-run"], capsys)
    assert code == 1 and "is a directory, not a recipe file" in err and "Traceback" not in err
    code, out, err = cli(["conv-arith", str(tmp_path / "r.toml")], capsys)
    assert code == 1 and "is a directory, not a recipe file" in err and "Traceback" not in err


# --- an output that cannot encode Unicode -------------------------------------------------------


@pytest.mark.parametrize("args", [
    ["conv-arith", "--draw"],
    ["conv-arith", "224x224x3", "--arch", "resnet18"],
    ["conv-arith", "32", "-k", "5", "-s", "2", "-p", "2", "-d", "3"],
    ["conv-arith", "--help"],
])  # fmt: skip
def test_ascii_output_degrades_instead_of_crashing(args):
    proc = run_cli(*args, env={"PYTHONIOENCODING": "ascii"})
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stdout.isascii() and proc.stdout.strip()


def test_the_ascii_look_alikes():
    import io

    from cnncli.report.console import degrade_to_ascii

    stream = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    saved = sys.stdout
    sys.stdout = stream
    try:
        degrade_to_ascii()
        print("a·b … 3×3 ±1 █▁ ┃━┏ → ✗", end="")
    finally:
        sys.stdout = saved
    stream.flush()
    assert stream.buffer.getvalue() == b"a.b ... 3x3 +/-1 #. |-+ -> ?"


@pytest.mark.slow
@pytest.mark.parametrize("command", ["eval", "predict", "inspect-filters", "dry-run", "preview"])
def test_ascii_output_of_the_jax_commands(trained_run, tmp_path, command):
    recipe = write_recipe(tmp_path)
    png = trained_run / "curves.png"
    args = {"eval": ["eval", str(trained_run), "--out", str(tmp_path)], "predict": ["predict", str(trained_run), str(png)],
            "inspect-filters": ["inspect-filters", str(trained_run), "--out", str(tmp_path)],
            "dry-run": ["train", str(recipe), "--dry-run"], "preview": ["data", "preview", str(recipe), "--out", str(tmp_path / "p.png")]}
    proc = run_cli(*args[command], env={"PYTHONIOENCODING": "ascii"})  # fmt: skip
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stdout.isascii()


# --- a reader that closes the pipe ------------------------------------------------------------------


def test_a_closed_stdout_is_dropped_and_said_once(monkeypatch, capsys):
    from cnncli.report import console

    class Closed(types.SimpleNamespace):
        def write(self, text):
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

        def fileno(self):
            raise ValueError("no descriptor")

    monkeypatch.setattr(console, "_stdout_gone", False)
    monkeypatch.setattr(sys, "stdout", Closed())
    console.print_json({"event": "epoch"})
    console.print_lines(["more"])
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert err.count("stdout was closed by its reader: the command goes on, its output is dropped") == 1


@pytest.mark.slow
def test_train_json_into_head_keeps_training(tmp_path):
    """``cnncli train --json | head -1``: the run finishes and says so on stderr; exit 0, no traceback."""
    recipe = write_recipe(tmp_path, TINY_RECIPE.replace("epochs = 2", "epochs = 3"))
    proc = subprocess.Popen([*PY, "train", str(recipe), "--workdir", str(tmp_path / "w"), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    first = json.loads(proc.stdout.readline())
    proc.stdout.close()  # the reader goes away, as head does
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 0 and "Traceback" not in err, err
    assert first["epoch"] == 1 and "stdout was closed by its reader" in err
    summary = json.loads((tmp_path / "w" / "summary.json").read_text())
    assert summary["epochs"] == 3


@pytest.mark.slow
def test_eval_json_into_head_exits_quietly(trained_run, tmp_path):
    proc = subprocess.run(["bash", "-c", f"{sys.executable} -m cnncli eval {trained_run} --out {tmp_path} --json | head -1"],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0 and proc.stderr.count("\n") <= 1 and "Traceback" not in proc.stderr
    assert json.loads(proc.stdout)["num_examples"] == 359


# --- damaged checkpoints and Ctrl-C: nothing unraisable is printed ------------------------------------


def test_late_event_loop_errors_are_dropped_and_others_kept(monkeypatch, capsys):
    from cnncli.cli import app

    seen = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(u.exc_value))
    app._quiet_unraisable()

    def unraisable(value):
        sys.unraisablehook(types.SimpleNamespace(exc_type=type(value), exc_value=value, exc_traceback=None,
                                                 err_msg=None, object=None))  # fmt: skip

    unraisable(RuntimeError("Event loop is closed"))
    other = ValueError("something else")
    unraisable(other)
    assert seen == [other]


@pytest.mark.slow
def test_a_damaged_checkpoint_without_its_manifest_gives_one_clean_error(trained_run, tmp_path):
    from cnncli.runs import checkpoint_fs as fs

    run = shutil.copytree(trained_run, tmp_path / "run")
    step = max(fs.committed_steps(run / "checkpoints"))
    for manifest in (run / "checkpoints").glob(f"*/{fs.MANIFEST}"):
        manifest.unlink()
    for data in (run / "checkpoints" / str(step) / "state").rglob("d/*"):
        data.write_bytes(data.read_bytes()[:100])  # truncated array files: tensorstore fails mid-read
    for _ in range(3):  # the late callbacks are a race: try a few times
        proc = run_cli("eval", str(run), "--json")
        assert proc.returncode == 1 and proc.stdout == ""
        assert "Traceback" not in proc.stderr and "Event loop is closed" not in proc.stderr, proc.stderr[-3000:]
        assert proc.stderr.startswith(f"error: checkpoint {run / 'checkpoints' / str(step)} is corrupt")


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.3, 1.0, 2.0, 3.0])
def test_two_quick_sigints_never_print_a_traceback(trained_run, tmp_path, delay):
    """As ``timeout -s INT`` through ``uv run`` delivers them: two SIGINTs at once, at any moment of start-up."""
    import time

    proc = subprocess.Popen([*PY, "eval", str(trained_run), "--out", str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert "Traceback" not in err and "Exception ignored" not in err, err
    # 0: it had finished already; -SIGINT: the signals landed while the interpreter was shutting down,
    # after Python restored the default handler, so the signal itself ended it (a shell shows 130 too)
    assert proc.returncode in (0, 130, -signal.SIGINT)


# --- rule 9: the suite's cache is its own ----------------------------------------------------------


def test_the_suite_runs_on_a_temporary_cache():
    cache = Path(os.environ["CNNCLI_CACHE_DIR"])
    home_cache = Path.home() / ".cache" / "cnncli"
    assert cache.is_absolute() and home_cache not in (cache, *cache.parents)


def test_one_override_moves_every_cache(monkeypatch, tmp_path):
    from cnncli.config.cache import cache_path, cache_root
    from cnncli.native import onednn

    monkeypatch.setenv("CNNCLI_CACHE_DIR", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c" and cache_path("xla") == tmp_path / "c" / "xla"
    assert onednn.cache_dir() == tmp_path / "c" / "native"
    monkeypatch.delenv("CNNCLI_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_path("xla") == tmp_path / "xdg" / "cnncli" / "xla"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_path("native") == tmp_path / "home" / ".cache" / "cnncli" / "native"
    monkeypatch.setenv("CNNCLI_CACHE_DIR", "off")
    assert cache_root() is None and cache_path("xla") is None and onednn.choices_path("3.2.0", 2) is None
    assert not str(onednn.cache_dir()).startswith(str(tmp_path / "home"))  # off: a private folder, not the home cache


def test_a_compiling_process_writes_nothing_into_home(tmp_path):
    """A real compile in a subprocess with the suite's environment and an empty HOME: the XLA cache
    fills the suite's folder and HOME stays empty."""
    home = tmp_path / "home"
    home.mkdir()
    code = ("from cnncli.runtime.jaxsetup import configure; configure(); import jax, jax.numpy as jnp; "
            "jax.jit(lambda x: x * 2 + 1).lower(jnp.ones(7)).compile(); print(jax.config.jax_compilation_cache_dir)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=os.environ | {"HOME": str(home)})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == str(Path(os.environ["CNNCLI_CACHE_DIR"]) / "xla")
    assert files_under(home) == set()


@pytest.mark.slow
def test_training_writes_nothing_into_home(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    recipe = write_recipe(tmp_path, STEPS3 + 'conv_backend = "auto"\n')
    proc = run_cli("train", str(recipe), "--workdir", str(tmp_path / "w"), "--json", env={"HOME": str(home)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert files_under(home) == set()


# --- rule 10: gloo's lines go to stderr ---------------------------------------------------------


@pytest.mark.slow
def test_two_processes_keep_stdout_to_json_lines(tmp_path):
    recipe = write_recipe(tmp_path, STEPS3)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    procs = [
        subprocess.Popen([*PY, "train", str(recipe), "--workdir", str(tmp_path / "w"), "--json",
                          "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for i in range(2)
    ]  # fmt: skip
    try:
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    lines = outs[0][0].splitlines()
    assert lines and all(json.loads(line) for line in lines)  # every line of stdout is JSON
    assert json.loads(lines[-1])["processes"] == 2
    assert outs[1][0] == ""  # process 1 prints no results, and gloo's lines are not on stdout
    if any("[Gloo]" in err for _, err in outs):
        assert "Rank" in outs[0][1] + outs[1][1]
