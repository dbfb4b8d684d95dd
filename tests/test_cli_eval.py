"""``cnncli eval`` and ``cnncli predict`` through the real entry point."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

EVAL_KEYS = ["accuracy", "loss", "num_examples", "top5_accuracy", "per_class", "confusion", "checkpoint_step",
             "ece", "throughput"]  # fmt: skip


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run ``cnncli ARGV``; return (exit code, stdout, stderr)."""
    from cnncli.cli.app import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return exc.value.code or 0, out, err


def test_eval_json_carries_the_pinned_keys(trained_run, tmp_path, capsys):
    code, out, _ = cli(["eval", str(trained_run), "--json", "--out", str(tmp_path), "--worst", "4"], capsys)
    assert code == 0
    data = json.loads(out)
    assert list(data)[: len(EVAL_KEYS)] == EVAL_KEYS
    summary = json.loads((trained_run / "summary.json").read_text())
    assert data["accuracy"] == summary["eval_accuracy"]
    assert data["loss"] == pytest.approx(summary["eval_loss"], abs=1e-5)
    assert data["checkpoint_step"] == summary["steps"] and data["num_examples"] == 359
    assert 0 < data["top5_accuracy"] <= 1 and data["throughput"] > 0 and 0 <= data["ece"] <= 1
    assert sum(map(sum, data["confusion"])) == 359
    assert data["per_class"][0].keys() >= {"name", "precision", "recall", "f1", "accuracy", "support"}
    assert len(data["worst"]) == 4 and data["split"] == "test"
    assert data["pngs"].keys() == {"confusion", "worst"}
    for key, size in (("confusion", (300, 300)), ("worst", (2 * 80, 2 * 80))):
        with Image.open(data["pngs"][key]) as img:
            assert img.format == "PNG" and img.mode == "RGB"
            assert img.width >= size[0] and img.height >= size[1]
    assert data["pngs"]["confusion"] == str(tmp_path / "confusion.png")


def test_eval_writes_into_the_run_and_prints_plain_tables(trained_run, tmp_path, capsys):
    run = shutil.copytree(trained_run, tmp_path / "run")
    code, out, err = cli(["eval", str(run), "--checkpoint", "best"], capsys)
    assert code == 0
    assert "\x1b[" not in out  # not a terminal: no ANSI escapes
    assert "accuracy" in out and "per class" in out and "confusion (rows: true, columns: predicted)" in out
    assert (run / "eval" / "test" / "confusion.png").exists()
    assert f"wrote confusion: {run / 'eval' / 'test' / 'confusion.png'}" in err


def test_eval_a_checkpoint_step_and_an_npz_source(trained_run, tmp_path, capsys):
    from cnncli.data.digits import load_digits_split

    test, _, _ = load_digits_split("test")
    npz = tmp_path / "mine.npz"
    np.savez(npz, x_train=test.x[:8, ..., 0], y_train=test.y[:8], x_test=test.x[:50, ..., 0], y_test=test.y[:50])
    step = json.loads((trained_run / "summary.json").read_text())["steps"]
    argv = ["eval", str(trained_run), "-c", str(step), "--source", f"npz:{npz}", "--json", "-o", str(tmp_path / "o")]
    code, out, _ = cli(argv, capsys)
    data = json.loads(out)
    assert code == 0 and data["num_examples"] == 50 and data["checkpoint_step"] == step
    assert data["source"] == f"npz:{npz}"


def test_eval_errors(trained_run, tmp_path, capsys):
    code, _, err = cli(["eval", str(tmp_path)], capsys)
    assert code == 1 and f"error: {tmp_path} is not a cnncli run directory (no recipe.json)" in err
    code, _, err = cli(["eval", str(trained_run), "--checkpoint", "7", "-o", str(tmp_path)], capsys)
    assert code == 1 and f"error: no checkpoint at step 7 in {trained_run / 'checkpoints'}" in err
    assert "hint: committed steps: [" in err
    code, _, err = cli(["eval", str(trained_run), "--checkpoint", "newest"], capsys)
    assert code == 2 and "error: --checkpoint 'newest': expected latest, best or a step number" in err
    np.savez(tmp_path / "wide.npz", x_train=np.zeros((2, 9, 9), np.uint8), y_train=np.zeros(2, int),
             x_test=np.zeros((2, 9, 9), np.uint8), y_test=np.zeros(2, int))  # fmt: skip
    code, _, err = cli(["eval", str(trained_run), "--source", f"npz:{tmp_path / 'wide.npz'}", "-o", str(tmp_path)], capsys)
    assert code == 1 and "examples have shape 9x9x1 but the run" in err and "was trained on 8x8x1" in err


def test_predict_json_and_table(trained_run, tmp_path, capsys):
    from cnncli.data.digits import load_digits_split

    test, _, _ = load_digits_split("test")
    np.save(tmp_path / "x.npy", test.x[0])
    code, out, _ = cli(["predict", str(trained_run), str(tmp_path / "x.npy"), "--json", "-k", "2"], capsys)
    data = json.loads(out)
    assert code == 0 and data["checkpoint_step"] > 0
    (pred,) = data["predictions"]
    assert pred["input"] == str(tmp_path / "x.npy") and len(pred["top"]) == 2
    assert pred["top"][0].keys() == {"class", "index", "probability"}
    code, out, _ = cli(["predict", str(trained_run), str(tmp_path / "x.npy")], capsys)
    assert code == 0 and "probability" in out and "\x1b[" not in out


def test_eval_a_run_without_batch_norm(tmp_path, capsys):
    """A model with no bn/dropout saves no 'rest' state (orbax drops empty subtrees)."""
    from cnncli.config.recipe import load_recipe
    from cnncli.train.loop import fit

    recipe = tmp_path / "plain.toml"
    recipe.write_text('[data]\nsource = "digits"\n[model]\nlayers = ["conv:c=4,k=3", "relu", "gap", "dense"]\n'
                      "[train]\nsteps = 2\n")  # fmt: skip
    summary = fit(load_recipe(recipe), tmp_path / "run")
    code, out, _ = cli(["eval", str(tmp_path / "run"), "--json"], capsys)
    assert code == 0 and json.loads(out)["accuracy"] == summary["eval_accuracy"]
