"""Issue 18, rules 7 and 8: hints that work when followed, and text that tells the truth.

conv-arith's explanations agree with themselves and with exact arithmetic (no ``%g``
rounding, dilation gaps, the "odd pixel" only when there is one, a 2-number INPUT not
silently read as 1-D); tables on narrow terminals fold or switch layout but never cut
a cell (``COLUMNS=40``, ``COLUMNS=20``).
"""

from __future__ import annotations

import io
import re

import pytest
from helpers import cli

from cnncli.arith import explain


def arith(args: str, capsys) -> tuple[int, str, str]:
    return cli(["conv-arith", *args.split()], capsys)


# --- conv-arith's explanations -----------------------------------------------------------


def test_dilation_gaps_are_not_also_called_no_loss(capsys):
    code, out, err = arith("32 -k 5 -s 2 -p 2 -d 3", capsys)
    assert code == 0 and "Traceback" not in err
    assert "no input pixel is lost" not in out
    assert ("dilation 3 reads one pixel in 3 of the 13-wide window, and stride 2 does not fill the holes: "
            "1 of 32 input pixels fall between windows and are never read") in out  # fmt: skip
    assert "all of them padding, so the floor itself drops no input pixel" in out  # the floor's part, said as such
    assert "narrower than the stride" not in out  # a 13-wide window is not narrower than stride 2
    assert "1 of 32 input pixels fall between windows" in err  # the warning agrees


def test_a_window_narrower_than_the_stride_still_says_so():
    notes = explain.quick_result(32, 1, 2, (0, 0), 1)["notes"]
    assert "the window (1 wide) is narrower than the stride (2): 15 of 32 input pixels fall between windows" in "\n".join(notes)


@pytest.mark.parametrize("i, k, s", [(1234567, 2, 2), (99999999, 4, 3), (1000001, 3, 7)])
def test_formulas_print_exact_numbers(i, k, s):
    (note,) = [n for n in explain.quick_result(i, k, s, (0, 0), 1)["notes"] if "is not an integer" in n]
    span = i - k
    assert f"({i} + 0 + 0 - {k}) / {s} = {span}/{s} is not an integer ({span} = {span // s}*{s} + {span % s})" in note
    for a, b, q, r in re.findall(r"\((\d+) = (\d+)\*(\d+) \+ (\d+)\)", note):
        assert int(a) == int(b) * int(q) + int(r)  # every printed identity holds exactly


def test_1234567_is_not_rounded(capsys):
    code, out, _ = arith("1234567 -k 2 -s 2", capsys)
    assert code == 0
    assert "617282 is not an integer" not in out and "1234565/2 is not an integer (1234565 = 617282*2 + 1)" in out


@pytest.mark.parametrize("k, odd", [(3, True), (4, False), (7, True), (2, False)])
def test_the_odd_pixel_note_only_when_there_is_one(k, odd):
    (note,) = [n for n in explain.quick_result(224, k, 2, "same", 1)["notes"] if n.startswith("same:")]
    total = max((-(-224 // 2) - 1) * 2 + k - 224, 0)
    assert total % 2 == odd
    assert ("the odd pixel goes at the end" in note) == odd


def test_a_square_two_number_input_is_asked_about_not_read_as_1d(capsys):
    code, out, err = arith("224x224 conv:c=64,k=7,s=2,p=3", capsys)
    assert code == 2 and out == "" and "Traceback" not in err
    assert "error: INPUT 224x224 is ambiguous: two numbers are a 1-D signal (length 224, 224 channels)" in err
    assert "224x224x1 (grey) or 224x224x3 (RGB)" in err
    code, out, err = arith("28x28 --arch lenet5", capsys)
    assert code == 2 and out == "" and "28x28x1" in err


def test_a_two_number_input_read_as_1d_says_so(capsys):
    code, out, err = arith("100x12 conv:c=8,k=3", capsys)
    assert code == 0 and "input 100x12" in out
    assert "warning: INPUT 100x12 is read as a 1-D signal: length 100, 12 channels (for a 100x12 image write" in err
    code, out, err = arith("40x1 conv:c=8,k=3 --json", capsys)  # the documented 1-D form: no warning
    assert code == 0 and err == "" and '"input": [40, 1]' in out


# --- narrow terminals: tables fold or switch layout, never cut a cell ---------------------


CONFUSION = [[28 + i if i == j else (i * 7 + j * 3) % 5 for j in range(10)] for i in range(10)]
NAMES = [str(i) for i in range(10)]


def render(renderables, width: int) -> str:
    from rich.console import Console

    console = Console(file=io.StringIO(), width=width, color_system=None, highlight=False)
    for r in renderables(console) if callable(renderables) else renderables:
        console.print(r)
    return console.file.getvalue()


def parse_tables(text: str) -> dict[str, dict[str, int]]:
    """{true class: {predicted header: count}} read back from rendered confusion tables."""
    cells: dict[str, dict[str, int]] = {}
    headers: list[str] = []
    for line in text.splitlines():
        parts = [p.strip() for p in re.split(r"[│┃]", line)[1:-1]]
        if line.startswith("┃") and parts and parts[-1]:
            headers = parts[1:]  # the last header line holds the class names (earlier ones: wrapped titles)
        elif line.startswith("│"):
            row = cells.setdefault(parts[0], {})
            row.update({h: 0 if v == "·" else int(v) for h, v in zip(headers, parts[1:])})
    return cells


@pytest.mark.parametrize("width", [200, 40, 30])
def test_the_confusion_matrix_folds_and_keeps_every_cell(width):
    from cnncli.report.eval import confusion_tables

    text = render(lambda console: confusion_tables(CONFUSION, NAMES, console), width)
    assert "…" not in text and all(len(line) <= width for line in text.splitlines())
    assert parse_tables(text) == {NAMES[i]: {NAMES[j]: CONFUSION[i][j] for j in range(10)} for i in range(10)}
    assert (text.count("┏") == 1) == (width == 200)  # folded into several tables only when it must


def test_below_one_column_the_confusion_matrix_is_one_line_per_class():
    from cnncli.report.eval import confusion_tables

    text = render(lambda console: confusion_tables(CONFUSION, NAMES, console), 12)
    assert "┃" not in text and "…" not in text
    joined = " ".join(text.split())  # undo the wrapping
    for i in range(10):
        listed = ", ".join(f"{j} {v}" for j, v in enumerate(CONFUSION[i]) if v)
        assert f"{i}: {listed}" in joined


def test_long_class_names_that_clash_when_cut_get_indices():
    from cnncli.report.eval import confusion_table

    names = ["airplane-left", "airplane-right", "cat"]
    text = render([confusion_table([[1, 0, 0], [0, 2, 0], [0, 0, 3]], names)], 200)
    header = [line for line in text.splitlines() if line.startswith("┃")][-1]
    assert [p.strip() for p in header.split("┃")[2:-1]] == ["0", "1", "2"]
    assert "0 airplane-left" in text and "1 airplane-right" in text and "2 cat" in text


def test_a_table_too_wide_becomes_lines_of_header_value_pairs():
    from rich.table import Table

    from cnncli.report.console import fitted

    table = Table(title="per class")
    for name in ("class", "precision", "recall", "support"):
        table.add_column(name)
    table.add_row("airplane", "0.987", "[bold]0.912[/]", "1000")
    wide = render(lambda console: [fitted(console, table)], 80)
    assert "┃ class" in wide
    narrow = render(lambda console: [fitted(console, table)], 24)
    assert "…" not in narrow and "┃" not in narrow
    assert " ".join(narrow.split()) == "per class airplane: precision 0.987, recall 0.912, support 1000"


def test_eval_at_40_columns_prints_every_cell(trained_run, tmp_path, capsys, monkeypatch):
    import json

    monkeypatch.setenv("COLUMNS", "40")  # piped: cnncli takes $COLUMNS as the width
    code, out, err = cli(["eval", str(trained_run), "--out", str(tmp_path)], capsys)
    assert code == 0 and "Traceback" not in err and "…" not in out
    assert all(len(line) <= 40 for line in out.splitlines() if line[:1] in "┏┃┡│└"), out  # text lines soft-wrap
    code, js, _ = cli(["eval", str(trained_run), "--out", str(tmp_path), "--json"], capsys)
    confusion = json.loads(js)["confusion"]
    names = [str(i) for i in range(len(confusion))]
    assert parse_tables(out) == {names[i]: {names[j]: v for j, v in enumerate(row)} for i, row in enumerate(confusion)}
    for c in json.loads(js)["per_class"]:
        assert f"{c['name']}: precision {c['precision']:.3f}, recall {c['recall']:.3f}" in out


# --- rule 7: hints work when followed literally -------------------------------------------


@pytest.mark.slow
def test_the_ctrl_c_resume_hint_resumes_when_followed_literally(tmp_path, capsys, monkeypatch):
    import json
    import os
    import shlex
    import signal

    from helpers import RESUME_RECIPE, write_recipe

    from cnncli.report import train as report_train
    from cnncli.train.events import EpochEnd

    recipe = write_recipe(tmp_path, RESUME_RECIPE, name="my recipe.toml")  # a space: the hint must quote it
    original = report_train.JsonReporter.__call__

    def ctrl_c_after_epoch_1(self, event):
        original(self, event)
        if isinstance(event, EpochEnd) and event.record["epoch"] == 1:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(report_train.JsonReporter, "__call__", ctrl_c_after_epoch_1)
    sets = ["--set", "train.epochs=3", "--set", "optimizer.learning_rate=0.02"]
    code, _, err = cli(["train", str(recipe), *sets, "--workdir", str(tmp_path / "w"), "--json"], capsys)
    assert code == 130 and "Traceback" not in err
    (line,) = [x for x in err.splitlines() if "resume with:" in x]
    command = line.split("resume with: ", 1)[1]
    assert "RECIPE" not in command
    assert shlex.split(command) == ["cnncli", "train", str(recipe), *sets, "--workdir", str(tmp_path / "w")]
    monkeypatch.setattr(report_train.JsonReporter, "__call__", original)
    code, out, err = cli(shlex.split(command)[1:] + ["--json"], capsys)  # exactly as the hint says
    assert code == 0, err
    summary = json.loads(out.splitlines()[-1])
    assert summary["resumed_from"]["step"] == 22 and summary["steps"] == 66


def test_the_resume_command_quotes_and_keeps_allow_recipe_change():
    from cnncli.train.signals import resume_command

    assert resume_command("a b.toml", ["x.y=1 2"], "runs/w", allow_recipe_change=True) == (
        "cnncli train 'a b.toml' --set 'x.y=1 2' --workdir runs/w --allow-recipe-change"
    )


def help_examples() -> list[str]:
    from cnncli.cli.train import train

    return [line.strip() for line in train.__doc__.splitlines() if line.strip().startswith("cnncli train ")]


def test_train_help_examples_are_the_tested_ones(capsys):
    code, out, _ = cli(["train", "--help"], capsys)
    assert code == 0 and "Examples" in out and "tail -1 | jq .eval_accuracy" in out  # the help shows the docstring
    assert help_examples() == [
        "cnncli train recipes/quickstart.toml",
        "cnncli train recipes/quickstart.toml --set train.epochs=3 --set optimizer.learning_rate=0.01",
        "cnncli train recipes/quickstart.toml --dry-run",
        "cnncli train recipes/quickstart.toml --json | tail -1 | jq .eval_accuracy",
        "cnncli train recipes/quickstart.toml --workdir runs/quickstart --resume-from 308",
        "cnncli train recipes/quickstart.toml --sweep optimizer.learning_rate=1e-3,3e-3 --sweep train.seed=0,1",
    ]


@pytest.mark.slow
def test_train_help_examples_run_as_written(tmp_path, capsys):
    """Every example of ``train --help``, in order, in a folder holding recipes/quickstart.toml (about 5 minutes on 2 cores)."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    if shutil.which("jq") is None:
        pytest.skip("jq is not installed")
    examples = help_examples()
    (tmp_path / "recipes").mkdir()
    shutil.copy(Path(__file__).parent.parent / "recipes" / "quickstart.toml", tmp_path / "recipes")
    bin_dir = tmp_path / "bin"  # `cnncli` on the PATH: this interpreter's cnncli
    bin_dir.mkdir()
    (bin_dir / "cnncli").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m cnncli "$@"\n')
    (bin_dir / "cnncli").chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    for example in examples:
        proc = subprocess.run(["bash", "-o", "pipefail", "-c", example], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=600)  # fmt: skip
        assert proc.returncode == 0, f"{example}\n{proc.stderr[-3000:]}"
        assert "Traceback" not in proc.stderr
        if "jq" in example:
            assert 0.5 < float(proc.stdout.strip()) <= 1
    assert (tmp_path / "runs" / "quickstart" / "summary.json").exists()


@pytest.mark.parametrize("columns", ["40", "20"])
def test_conv_arith_tables_on_a_narrow_terminal_keep_every_cell(capsys, monkeypatch, columns):
    monkeypatch.setenv("COLUMNS", columns)
    code, out, err = arith("28x28x1 conv:c=6,k=5,p=2 relu avgpool:k=2 flatten dense:c=10", capsys)
    assert code == 0 and err == "" and "…" not in out
    assert "conv1: output 28x28x6, k 5, s 1, p 2, params 156, MACs 118K, FLOPs 235K, RF 5, jump 1, act mem 18.4 KiB" in out
    assert "total: output 10, params 11.9K, MACs 129K, FLOPs 259K, act mem 46.0 KiB" in out
    code, out, _ = arith("32 --solve 16", capsys)
    assert code == 0 and "…" not in out and "k=3,s=2,p=1" in out


def test_the_train_summary_on_a_narrow_terminal_keeps_the_run_directory():
    from cnncli.report.console import fitted
    from cnncli.report.train import summary_table

    workdir = "/some/where/runs/a-run-directory-with-a-long-name"
    summary = {"eval_accuracy": 0.9861, "eval_loss": 0.05, "best_eval_accuracy": 0.99, "best_epoch": 14,
               "train_loss": 0.01, "epochs": 15, "steps": 330, "train_seconds": 2.2, "compile_seconds": 1.5,
               "images_per_second": 9500.0, "workdir": workdir}  # fmt: skip
    text = render(lambda console: [fitted(console, summary_table(summary))], 20)
    assert "…" not in text
    joined = "".join(text.split())
    assert f"rundirectory:{workdir}" in joined and "evalaccuracy:0.9861" in joined
