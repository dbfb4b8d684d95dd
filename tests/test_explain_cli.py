"""``cnncli explain`` from the command line: inputs, outputs, JSON keys, --all, 1-D models, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import cli, json_lines

TOP_KEYS = ["workdir", "checkpoint_step", "layer", "layer_reason", "methods", "images", "seconds", "compile_seconds"]
IMAGE_KEYS = ["input", "label", "predicted", "predicted_class", "probability", "png", "note", "explanations"]
MAP_KEYS = ["method", "class", "index", "probability", "peak", "top10_share", "map_file"]
CHECK_KEYS = ["result", "rank_correlation", "sanity", "randomized_layers", "deletion_auc", "insertion_auc",
              "random_deletion_auc", "random_insertion_auc", "curves", "completeness_error", "completeness"]  # fmt: skip
SPLIT_KEYS = ["workdir", "checkpoint_step", "split", "images", "maps_dir", "manifest", "seconds",
              "images_per_second", "compile_seconds", "layer", "layer_reason"]  # fmt: skip
MANIFEST_KEYS = ["input", "index", "label", "predicted", "maps"]
MANIFEST_MAP_KEYS = ["method", "class", "index", "probability", "peak", "top10_share", "file"]


def test_help_has_examples(capsys):
    code, out, _ = cli(["explain", "--help"], capsys)
    assert code == 0
    assert "Examples" in out and "cnncli explain runs/quickstart my_digit.png" in out
    assert "--check" in out and "integrated-gradients" in out and "--save-maps" in out


def test_split_examples_json_maps_and_pngs(trained_run, tmp_path, capsys):
    argv = ["explain", str(trained_run), "--source", "test", "--index", "0", "--index", "3", "-m", "gradcam",
            "-m", "occlusion", "--save-maps", str(tmp_path / "maps"), "-o", str(tmp_path / "png"), "--json"]  # fmt: skip
    code, out, _ = cli(argv, capsys)
    assert code == 0
    (data,) = json_lines(out)
    assert list(data) == TOP_KEYS
    assert data["layer"] == "relu2" and "last convolution with spatial extent" in data["layer_reason"]
    assert data["methods"] == ["gradcam", "occlusion"] and len(data["images"]) == 2
    img = data["images"][0]
    assert list(img) == IMAGE_KEYS and img["input"] == "test[0]" and isinstance(img["label"], int)
    assert [e["method"] for e in img["explanations"]] == ["gradcam", "occlusion"]
    e = img["explanations"][0]
    assert list(e) == MAP_KEYS and e["index"] == img["predicted"] and e["class"] == img["predicted_class"]
    assert len(e["peak"]) == 2 and 0.1 <= e["top10_share"] <= 1
    assert e["map_file"] == str(tmp_path / "maps" / "test-0-gradcam.npy")
    m = np.load(e["map_file"])
    assert m.shape == (8, 8) and m.dtype == np.float32
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == [
        "test-0-gradcam.npy", "test-0-occlusion.npy", "test-3-gradcam.npy", "test-3-occlusion.npy"]  # fmt: skip
    assert img["png"] == str(tmp_path / "png" / "test-0.png") and Path(img["png"]).exists()
    from PIL import Image

    assert Image.open(img["png"]).size[0] > 300  # input, map and overlay side by side


def test_image_file_top_k_and_class(trained_run, tmp_path, capsys):
    from PIL import Image

    from cnncli.runs.load import load_run
    from cnncli.runs.splits import load_eval_split

    data, *_ = load_eval_split(load_run(trained_run))
    Image.fromarray((data.x[0, ..., 0] / 16 * 255).astype(np.uint8)).save(tmp_path / "digit.png")
    argv = ["explain", str(trained_run), str(tmp_path / "digit.png"), "--top", "2", "-m", "saliency", "--json",
            "--save-maps", str(tmp_path / "m"), "-o", str(tmp_path)]  # fmt: skip
    code, out, _ = cli(argv, capsys)
    assert code == 0
    (img,) = json_lines(out)[0]["images"]
    assert img["label"] is None and len(img["explanations"]) == 2
    first, second = img["explanations"]
    assert first["index"] == img["predicted"] and first["probability"] >= second["probability"]
    assert Path(first["map_file"]).name == f"digit-class{first['index']}.npy"
    code, out, _ = cli(["explain", str(trained_run), str(tmp_path / "digit.png"), "--class", "3", "--json",
                        "-m", "saliency", "-o", str(tmp_path)], capsys)  # fmt: skip
    assert code == 0 and json_lines(out)[0]["images"][0]["explanations"][0]["index"] == 3


def test_check_json_and_table(trained_run, tmp_path, capsys):
    argv = ["explain", str(trained_run), "--source", "test", "--index", "1", "--index", "2", "-m", "occlusion",
            "-m", "integrated-gradients", "--check", "-o", str(tmp_path)]  # fmt: skip
    code, out, _ = cli([*argv, "--json"], capsys)
    assert code == 0
    check = json_lines(out)[0]["check"]
    assert list(check) == ["occlusion", "integrated-gradients"]
    assert all(list(c) == CHECK_KEYS for c in check.values())
    ig = check["integrated-gradients"]
    assert ig["completeness_error"] < 0.01 and ig["completeness"] is True
    assert check["occlusion"]["completeness_error"] is None
    assert ig["result"] == ("PASS" if ig["sanity"] and ig["curves"] else "FAIL")
    code, out, _ = cli(argv, capsys)
    assert code == 0 and "self-check" in out and ("PASS" in out or "FAIL" in out)


def test_worst_explains_the_confident_mistakes(trained_run, tmp_path, capsys):
    code, out, _ = cli(["explain", str(trained_run), "--worst", "2", "-m", "saliency", "--json", "-o", str(tmp_path)],
                       capsys)  # fmt: skip
    assert code == 0
    images = json_lines(out)[0]["images"]
    assert len(images) == 2 and all(i["predicted"] != i["label"] for i in images)


def test_whole_split_in_chunks_with_a_manifest(trained_run, tmp_path, capsys, monkeypatch):
    from cnncli.inspect import explain

    monkeypatch.setattr(explain, "CHUNK", 100)  # 359 test digits: 4 chunks, the last padded
    argv = ["explain", str(trained_run), "--source", "test", "--all", "-m", "saliency", "--save-maps",
            str(tmp_path / "all"), "--json"]  # fmt: skip
    code, out, _ = cli(argv, capsys)
    assert code == 0
    (summary,) = json_lines(out)
    assert list(summary) == SPLIT_KEYS and summary["images"] == 359
    lines = [json.loads(line) for line in (tmp_path / "all" / "manifest.jsonl").read_text().splitlines()]
    assert len(lines) == 359 and [line["index"] for line in lines] == list(range(359))
    assert list(lines[0]) == MANIFEST_KEYS and list(lines[0]["maps"][0]) == MANIFEST_MAP_KEYS
    assert lines[358]["maps"][0]["file"] == "test-358.npy"
    assert np.load(tmp_path / "all" / "test-358.npy").shape == (8, 8)
    assert len(list((tmp_path / "all").glob("*.npy"))) == 359


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--index", "0"], "--index and --all need --source SPLIT"),
        (["--source", "test", "--all"], "--all writes maps, not pictures: give --save-maps DIR"),
        (["--source", "test", "--index", "0", "-m", "gradcamm"], "unknown method 'gradcamm'; did you mean 'gradcam'?"),
        (["--source", "test", "--index", "0", "--class", "eleven"], "unknown class 'eleven'"),
        (["--source", "test", "--index", "0", "--class", "12"], "--class 12: the run has 10 classes (0..9)"),
        (["--source", "test", "--index", "999"], "--index 999: test has 359 examples (0..358)"),
        (["--source", "test", "--index", "0", "--layer", "conv7"], "unknown layer 'conv7'"),
        (["--source", "test", "--index", "0", "--layer", "gap1"], "--layer gap1: its output 16 has no spatial axes"),
        ([], "nothing to explain"),
        (["--source", "test", "--index", "0", "--baseline", "white"], "unknown baseline 'white'"),
        (["--source", "test", "--index", "0", "-m", "occlusion", "--window", "2x2x2"],
         "--window 2x2x2: the input is 8x8, so give 1 or 2 sizes"),
    ],
)
def test_usage_errors(trained_run, tmp_path, capsys, args, message):
    code, _, err = cli(["explain", str(trained_run), "-o", str(tmp_path), *args], capsys)
    assert code == 2 and message in " ".join(err.split()) and "Traceback" not in err
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.slow  # trains a 1-D run: 27 s of wall time on the loaded 2-core machine
def test_a_1d_model_gives_a_map_over_time(tmp_path, capsys):
    """A tiny 1-D run (signals of length 32 from an npz the test writes) with a residual block."""
    from cnncli.config.recipe import load_recipe
    from cnncli.train.loop import fit

    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 32)).astype(np.float32)
    y = (x[:, 10:14].mean(axis=1) > 0).astype(np.int32)
    np.savez(tmp_path / "sig.npz", x_train=x, y_train=y, x_test=x[:16], y_test=y[:16])
    text = ('[data]\nsource = "npz:sig.npz"\nbatch_size = 32\n[model]\nlayers = ["conv:c=8,k=5,p=same", "bn", "relu", '
            '"resblock:c=8", "gap", "dense"]\n[train]\nsteps = 2\n')  # fmt: skip
    (tmp_path / "r.toml").write_text(text)
    fit(load_recipe(tmp_path / "r.toml"), tmp_path / "run", recipe_text=text)
    argv = ["explain", str(tmp_path / "run"), "--source", "test", "--index", "0", "-m", "gradcam", "-m", "occlusion",
            "-m", "integrated-gradients", "--save-maps", str(tmp_path / "maps"), "--json"]  # fmt: skip
    code, out, _ = cli(argv, capsys)
    assert code == 0
    data = json_lines(out)[0]
    assert data["layer"] == "resblock1" and data["layer_reason"].startswith("the output after the last residual add")
    for e in data["images"][0]["explanations"]:
        assert len(e["peak"]) == 1 and np.load(e["map_file"]).shape == (32,)
    assert Path(data["images"][0]["png"]).exists()
    # Grad-CAM at a convolution inside the residual block
    code, out, _ = cli(["explain", str(tmp_path / "run"), "--source", "test", "--index", "1", "--layer",
                        "resblock1.conv2", "--json", "-o", str(tmp_path / "png")], capsys)  # fmt: skip
    assert code == 0
    data = json_lines(out)[0]
    assert (data["layer"], data["layer_reason"]) == ("resblock1.conv2", "given with --layer")
    assert data["images"][0]["explanations"][0]["top10_share"] is not None


def test_terminal_previews_and_pngs_of_each_row(trained_run, tmp_path):
    from cnncli.cli.explain import _previews, _write_pngs
    from cnncli.inspect.explain import explain_inputs, load_explain_inputs, method_configs
    from cnncli.runs.load import load_run

    run = load_run(trained_run)
    inputs = load_explain_inputs(run, split="test", indices=[0, 1])
    cfgs = method_configs(["saliency", "occlusion"], layer=None, steps=64, samples=4, baseline="black")
    rep = explain_inputs(run, inputs, cfgs)
    previews = _previews(rep)
    assert len(previews) == 2
    assert len(previews[0].plain.splitlines()) == 12  # a 24-pixel overlay, two pixels per character cell
    assert previews[0].plain.count("▀") == 12 * (24 + 2 + 24)  # two overlays and a gap, per line
    _write_pngs(rep, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test-0.png", "test-1.png"]
