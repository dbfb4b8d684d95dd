"""``cnncli inspect-filters`` through the real entry point."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run ``cnncli ARGV``; return (exit code, stdout, stderr)."""
    from cnncli.cli.app import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return exc.value.code or 0, out, err


def _png(path) -> Image.Image:
    with Image.open(path) as img:
        assert img.format == "PNG" and img.mode == "RGB"
        img.load()
        return img.copy()


def test_list_json(trained_run, capsys):
    code, out, _ = cli(["inspect-filters", str(trained_run), "--list", "--json"], capsys)
    assert code == 0
    layers = json.loads(out)["layers"]
    assert [(c["name"], c["kernel_size"], c["filters"], c["in_channels"]) for c in layers] == [
        ("conv1", [3, 3], 8, 1),
        ("conv2", [3, 3], 16, 8),
    ]


def test_list_table_is_plain_when_piped(trained_run, capsys):
    code, out, _ = cli(["inspect-filters", str(trained_run), "--list"], capsys)
    assert code == 0 and "\x1b[" not in out
    assert "conv1" in out and "(3, 3, 8, 16)" in out


def test_default_json_and_grid_png(trained_run, tmp_path, capsys):
    code, out, _ = cli(["inspect-filters", str(trained_run), "--json", "--out", str(tmp_path)], capsys)
    assert code == 0
    data = json.loads(out)
    assert data["layer"]["name"] == "conv1" and data["checkpoint_step"] > 0 and data["scale"] == "filter"
    assert len(data["filters"]) == 8
    assert data["filters"][0].keys() >= {"index", "l2", "mean", "std", "dead_fraction", "nearest", "cosine", "flags"}
    assert data["flags"].keys() == {"dead", "near-zero", "near-duplicate"}
    assert data["pngs"] == {"filter_grid": str(tmp_path / "filters.png")}
    img = _png(tmp_path / "filters.png")
    assert img.width >= 3 * 48 and img.height >= 3 * 48


def test_everything_at_once_writes_into_the_run(trained_run, tmp_path, capsys):
    run = shutil.copytree(trained_run, tmp_path / "run")
    argv = ["inspect-filters", str(run), "-l", "conv2", "--index", "0", "--patches", "--top-k", "3",
            "--compare-init", "--shared-scale", "--examples", "120"]  # fmt: skip
    code, out, err = cli(argv, capsys)
    assert code == 0 and "\x1b[" not in out
    assert "conv2: 16 filters 3x3 over 8 input channels" in out and "moved" in out
    assert "feature maps of relu2 for eval[0]" in out
    folder = run / "filters" / "conv2"
    for name in ("filters.png", "feature_maps.png", "patches.png"):
        _png(folder / name)
        assert str(folder / name) in err
    code, out, _ = cli(argv + ["--json"], capsys)
    data = json.loads(out)
    assert data["compared_to_init"] and data["scale"] == "shared" and data["validation_examples"] == 120
    assert data["feature_maps"]["shown"] == "relu2" and data["feature_maps"]["rf_box"]["rf"] == [8, 8]
    assert [len(row) for row in data["patches"]["filters"]] == [3] * 8


def test_image_input(trained_run, tmp_path, capsys):
    Image.new("L", (8, 8), 128).save(tmp_path / "gray.png")
    code, out, _ = cli(["inspect-filters", str(trained_run), "--image", str(tmp_path / "gray.png"), "--json",
                        "-o", str(tmp_path / "o")], capsys)  # fmt: skip
    data = json.loads(out)
    assert code == 0 and data["feature_maps"]["input"] == str(tmp_path / "gray.png")
    _png(tmp_path / "o" / "feature_maps.png")


def test_errors(trained_run, tmp_path, capsys):
    code, _, err = cli(["inspect-filters", str(trained_run), "--layer", "dense1"], capsys)
    assert code == 2 and "error: unknown conv layer 'dense1' (valid: conv1, conv2)" in err
    assert "hint: see them with --list" in err
    code, _, err = cli(["inspect-filters", str(trained_run), "--checkpoint", "3"], capsys)
    assert code == 1 and "error: no checkpoint at step 3" in err
    code, _, err = cli(["inspect-filters", str(tmp_path / "nowhere")], capsys)
    assert code == 1 and f"error: run directory {tmp_path / 'nowhere'} not found" in err
    code, _, err = cli(["inspect-filters", str(trained_run), "--index", "0", "--image", "x.png", "-o", str(tmp_path)], capsys)
    assert code == 2 and "error: give --image or --index, not both" in err
    code, _, err = cli(["inspect-filters", str(trained_run), "--patches", "--examples", "0", "-o", str(tmp_path)], capsys)
    assert code == 2 and "error: --patches needs eval-split examples" in err
