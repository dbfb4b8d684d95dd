"""``cnncli explain`` and ``inspect-filters --visualize`` used the wrong way: odd option values,
flat maps, narrow terminals. Each test pins a fix: a clear message and exit code, nothing
written that should not be, and no figure that claims more than the maps show."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from helpers import cli, json_lines


# ------------------------------------------------------------------ occlusion window and stride
def test_occlusion_window_larger_than_the_input_is_refused():
    from cnncli.errors import UsageError
    from cnncli.inspect.attribution import occlusion_geometry

    assert occlusion_geometry((8, 8)) == ((2, 2), (1, 1))  # the defaults still hold
    assert occlusion_geometry((8, 8), (8,), (8,)) == ((8, 8), (8, 8))  # the whole input: allowed
    with pytest.raises(UsageError, match=r"--window 20x20: larger than the input \(8x8\)") as info:
        occlusion_geometry((8, 8), (20,))
    assert info.value.exit_code == 2


def test_occlusion_stride_larger_than_the_window_is_refused():
    from cnncli.errors import UsageError
    from cnncli.inspect.attribution import occlusion_geometry

    with pytest.raises(UsageError, match=r"--stride 3x3: larger than the window \(2x2\).*covered by no window"):
        occlusion_geometry((8, 8), (2,), (3,))


def test_occlusion_window_message_on_a_1d_input_says_one_size():
    from cnncli.errors import UsageError
    from cnncli.inspect.attribution import occlusion_geometry

    with pytest.raises(UsageError, match=r"--window 2x2: the input is 40, so give one size$"):
        occlusion_geometry((40,), (2, 2))
    with pytest.raises(UsageError, match=r"so give 1 or 2 sizes"):
        occlusion_geometry((8, 8), (2, 2, 2))


def test_cli_oversized_window_fails_before_writing_anything(trained_run, tmp_path, capsys):
    png, maps = tmp_path / "png", tmp_path / "maps"
    code, out, err = cli(["explain", str(trained_run), "--source", "test", "--index", "0", "-m", "occlusion",
                          "--window", "9", "--save-maps", str(maps), "-o", str(png)], capsys)  # fmt: skip
    assert code == 2 and out == ""
    assert "--window 9x9: larger than the input (8x8)" in err and "Traceback" not in err
    assert not png.exists() and not maps.exists()
    # --all too: no maps folder and no empty manifest left behind
    code, _, err = cli(["explain", str(trained_run), "--source", "test", "--all", "-m", "occlusion",
                        "--stride", "5", "--save-maps", str(maps)], capsys)  # fmt: skip
    assert code == 2 and "--stride 5x5: larger than the window (2x2)" in err and "Traceback" not in err
    assert not maps.exists()


# ------------------------------------------------------------------ flat maps
def test_a_flat_map_has_no_peak():
    from cnncli.inspect.attribution import peak, top_share

    assert peak(np.zeros((4, 4), np.float32)) is None and top_share(np.zeros((4, 4))) is None
    m = np.zeros((4, 4), np.float32)
    m[2, 3] = 1.0
    assert peak(m) == [2, 3]


def _report(explanations, note=None):
    from cnncli.inspect.attribution import MethodConfig
    from cnncli.inspect.explain import ExplainReport, ImageResult

    img = ImageResult("img.png", "img", np.zeros((8, 8, 1), np.float32), None, 3, 0.4, explanations, note=note)
    return ExplainReport("runs/x", 7, [str(i) for i in range(10)], (0.0, 16.0), None, None,
                         [MethodConfig("saliency")], [img], {"saliency": 0.1}, 0.2)  # fmt: skip


def test_table_shows_a_flat_map_as_no_peak_and_the_resize_note(capsys):
    from cnncli.inspect.explain import Explanation
    from cnncli.report.explain import print_explain

    flat = Explanation("saliency", "3", 3, 0.4, None, None, np.zeros((8, 8), np.float32))
    print_explain(_report([flat], note="resized from 32x20 to 8x8"), json_out=False)
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "saliency" in line)
    assert "0,0" not in row and " - " in row
    assert "img.png: resized from 32x20 to 8x8" in out
    assert "peak -: the map is zero everywhere" in out
    print_explain(_report([flat]), json_out=True)
    (data,) = json_lines(capsys.readouterr().out)
    assert data["images"][0]["explanations"][0]["peak"] is None


def test_narrow_terminal_gets_lines_not_cut_cells(capsys, monkeypatch):
    from cnncli.inspect.attribution_check import CheckResult
    from cnncli.inspect.explain import Explanation
    from cnncli.report.explain import print_explain

    monkeypatch.setenv("COLUMNS", "30")
    e = Explanation("integrated-gradients", "3", 3, 0.4, [1, 2], 0.25, np.ones((8, 8), np.float32))
    rep = _report([e])
    rep.checks = [CheckResult("integrated-gradients", ["dense1"], 0.2, True, 0.1, 0.8, 0.3, 0.4, True, 0.004, True,
                              True)]  # fmt: skip
    print_explain(rep, json_out=False)
    out = capsys.readouterr().out
    assert "…" not in out
    assert "img.png: method integrated-gradients, class 3, prob 0.400, peak 1,2, top 10% 0.25" in out
    assert "integrated-gradients: result PASS, rank corr. 0.20" in out


def test_flat_maps_do_not_pass_the_sanity_test(trained_run):
    """All-zero maps have no order to keep: they must not pass as 'changed completely' (rank correlation 0)."""
    from cnncli.inspect.attribution import Explainer, MethodConfig
    from cnncli.inspect.attribution_check import check_method
    from cnncli.report.explain import check_sentences, print_checks
    from cnncli.runs.load import load_run
    from cnncli.runs.splits import load_eval_split

    run = load_run(trained_run)
    data, *_ = load_eval_split(run)
    x, targets = np.asarray(data.x[:2], np.float32), np.asarray(data.y[:2], np.int32)
    ex = Explainer(run)
    res = check_method(run, ex, MethodConfig("saliency"), x, targets, np.zeros((2, 8, 8), np.float32))
    assert res.rank_correlation is None and res.sanity is False and res.passed is False
    (line, *_) = check_sentences([res])
    assert "cannot take the model-randomization sanity test" in line and "zero everywhere" in line
    print_checks([res])  # prints "-" for the missing figure, no error


# ------------------------------------------------------------------ --worst with nothing wrong
def test_worst_when_nothing_is_wrong_says_so(trained_run, tmp_path, capsys, monkeypatch):
    import cnncli.inspect.explain as explain

    monkeypatch.setattr(explain, "_worst", lambda run, data, k: [])
    code, out, err = cli(["explain", str(trained_run), "--worst", "4", "-o", str(tmp_path / "png")], capsys)
    assert code == 1 and out == "" and "Traceback" not in err
    assert "--worst 4: the model classifies every example of test correctly" in err
    assert not (tmp_path / "png").exists()


# ------------------------------------------------------------------ --visualize
def test_units_range_written_backwards_says_so():
    from cnncli.errors import UsageError
    from cnncli.inspect.visualize import parse_units

    with pytest.raises(UsageError, match="the range 3-1 runs backwards") as info:
        parse_units("3-1", 32)
    assert "1-3" in info.value.hint
    with pytest.raises(UsageError, match="channel 40 out of range"):
        parse_units("0,38-40", 32)
    assert parse_units("1,1,0-2", 32) == [1, 0, 2]


def test_visualize_table_on_a_narrow_terminal(capsys, monkeypatch):
    from cnncli.report.filters import print_visualization

    monkeypatch.setenv("COLUMNS", "30")
    vis = SimpleNamespace(layer="conv1", point="relu1", relu=False, units=[1, 2], activation=[0.5, 0.25],
                          start=[0.1, 0.2], real_mean=[0.2, 0.1], ratio=[2.5, 2.5], num_examples=359, steps=4,
                          seconds=1.0, settings={}, warnings=[])  # fmt: skip
    print_visualization(vis, checkpoint_step=3, pngs={}, json_out=False)
    out = capsys.readouterr().out
    assert "…" not in out
    assert "1: optimized 0.5, start 0.1, real mean 0.2, ratio 2.5x" in out
    assert "real mean: over 359 eval examples" in out


def test_gradcam_on_a_single_position_layer_is_refused():
    """A layer of output 1x1 (a conv as big as its input) gives Grad-CAM a flat map: say so, do not draw it."""
    from cnncli.errors import UsageError
    from cnncli.inspect.attribution import Explainer, MethodConfig

    ex = object.__new__(Explainer)  # no model needed: the layer's shape is all the check reads
    ex.input_shape, ex.spatial = (8, 8, 1), (8, 8)
    ex._compiled = {("shape", "relu2"): (1, 1, 8), ("shape", "relu1"): (8, 8, 8)}
    with pytest.raises(UsageError, match=r"--layer relu2: its output 1x1x8 has a single position") as info:
        ex.check_layer(MethodConfig("gradcam", layer="relu2"))
    assert info.value.exit_code == 2 and "--layer auto" in info.value.hint
    ex.check_layer(MethodConfig("gradcam++", layer="relu1"))  # spatial extent: fine
