"""`cnncli.arith.explain`: the quick form's answer, conventions, solve notes and ``--draw``,
as plain data (the CLI's printing is in tests/test_cli_arith.py)."""

from __future__ import annotations

import pytest

from cnncli.arith import explain
from cnncli.errors import ShapeError, UsageError


def test_quick_conv_result():
    r = explain.quick_result(224, 7, 2, (3, 3), 1)
    assert (r["kind"], r["output"], r["padding"], r["transpose_output_padding"]) == ("conv", 112, [3, 3], 1)
    assert r["formula"] == "floor((224 + 3 + 3 - 1*(7-1) - 1) / 2) + 1 = 112"
    assert r["warnings"] == [] and "convention_notes" not in r


def test_quick_pool_and_tconv_results():
    pool = explain.quick_result(56, 3, 2, (0, 0), 1, pool=True, ceil=True)
    assert (pool["kind"], pool["output"], pool["applied_padding"]) == ("pool", 28, [0, 1])
    tconv = explain.quick_result(112, 7, 2, (3, 3), 1, transpose=True, output_padding=1)
    assert (tconv["kind"], tconv["output"], tconv["output_padding"]) == ("tconv", 224, 1)


def test_quick_warns_about_unread_pixels():
    r = explain.quick_result(7, 2, 2, (0, 0), 1)
    assert r["output"] == 3 and r["warnings"][0].startswith("the last 1 input pixel(s) are never read")


@pytest.mark.parametrize("convention", ["torch", "flax"])
def test_convention_notes_name_both_frameworks(convention):
    notes = explain.quick_result(224, 7, 2, (2, 3), 1, convention=convention)["convention_notes"]
    assert notes[0].startswith(f"{convention}: ")
    assert "F.pad(x, (2, 3)) then nn.Conv1d" in " ".join(notes)
    assert notes[2].startswith("difference: PyTorch pads both ends by one number")


def test_solve_notes():
    assert explain.same_stride_note(32, 16, False) == "also: p=same with s=2 gives ceil(32/2) = 16 for any k"
    assert explain.same_stride_note(32, 16, True) is None
    assert explain.same_stride_note(32, 33, False) is None
    assert explain.no_solution_note(7, 100, False) == "no (k <= 11, d <= 3) maps 7 to 100 (upsampling: add --transpose)"


def test_draw_example_defaults_to_the_seed_example():
    values, kernel, drawing = explain.draw_example(explain.DrawRequest())
    assert len(values) == 5 and len(kernel) == 3
    assert drawing.output == [[4, 3, 4], [2, 4, 3], [2, 3, 4]]


def test_draw_example_1d_transpose():
    request = explain.DrawRequest(input="3", kernel=(3,), stride=(2,), padding=((1, 1),), transpose=True, output_padding=1)
    values, _, drawing = explain.draw_example(request)
    assert values == [1, 2, 3] and len(drawing.output) == 6


def test_draw_example_checks_its_inputs():
    with pytest.raises(UsageError, match=r"INPUT 5x5 does not match --values \(3\)"):
        explain.draw_example(explain.DrawRequest(input="5x5", values="1,2,3"))
    with pytest.raises(UsageError, match="draws 1-D inputs only"):
        explain.draw_example(explain.DrawRequest(transpose=True))
    with pytest.raises(ShapeError):
        explain.draw_example(explain.DrawRequest(input="3", kernel=(5,)))
