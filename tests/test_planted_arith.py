"""Conv arithmetic that a one-line slip would get wrong while every shape stays right.

Issue 18, rule 11: grouped and depthwise convolutions' MACs (a conv counted with ``cin``
instead of ``cin // g`` is g-fold overstated, with the same output shape and parameters
a property test would see), and the number formatting at unit boundaries (``999_600``
printed ``1000K``, ``999_996_000`` printed without a unit). Every expected number is
worked out by hand in the comment beside it.
"""

from __future__ import annotations

import json

import pytest
from helpers import cli

from cnncli.arith.geometry import analyze
from cnncli.arith.layers import parse_layers
from cnncli.report.arith import human, human_bytes


def _row(token: str, shape: tuple[int, ...]):
    return analyze(parse_layers([token]), shape).layers[0]


@pytest.mark.parametrize(
    ("token", "shape", "out", "macs", "params"),
    [
        # 8x8 outputs x 8 channels, each a 3x3 window over cin/g = 4/2 = 2 channels: 64 * 8 * 18.
        ("conv:c=8,k=3,p=same,g=2", (8, 8, 4), (8, 8, 8), 64 * 8 * 9 * 2, 9 * 2 * 8 + 8),
        # depthwise: a valid 3x3 over 6x6 leaves 4x4; each of the 4 outputs reads 1 channel: 16 * 4 * 9.
        ("conv:c=4,k=3,g=4", (6, 6, 4), (4, 4, 4), 16 * 4 * 9, 9 * 4 + 4),
        # depthwise with multiplier 2: 3 groups of 1 input -> 2 outputs; 5x5 x 6 outputs x 9 taps.
        ("conv:c=6,k=3,p=1,g=3", (5, 5, 3), (5, 5, 6), 25 * 6 * 9, 9 * 6 + 6),
        # 1-D, 3 groups: length 10 - 3 + 1 = 8, 6 outputs, each 3 taps x 2 channels.
        ("conv:c=6,k=3,g=3", (10, 6), (8, 6), 8 * 6 * 3 * 2, 3 * 2 * 6 + 6),
        # strided, no bias, 4 groups of 2: 7x7 -> 3x3 (k=3, s=2), 8 outputs x 9 taps x 2 channels.
        ("conv:c=8,k=3,s=2,g=4,bias=false", (7, 7, 8), (3, 3, 8), 9 * 8 * 9 * 2, 9 * 2 * 8),
    ],
)
def test_grouped_and_depthwise_conv_macs_by_hand(token, shape, out, macs, params):
    row = _row(token, shape)
    assert row.output == out
    assert row.macs == macs
    assert row.params == params
    assert row.flops == 2 * macs


@pytest.mark.parametrize("g", [2, 4, 8])
def test_g_groups_do_one_gth_of_the_dense_convs_work(g):
    dense = _row("conv:c=16,k=3,p=same", (6, 6, 8))
    grouped = _row(f"conv:c=16,k=3,p=same,g={g}", (6, 6, 8))
    assert grouped.output == dense.output
    assert grouped.macs * g == dense.macs == 36 * 16 * 9 * 8


def test_conv_arith_table_and_json_show_grouped_macs(capsys):
    code, out, err = cli(["conv-arith", "8x8x4", "conv:c=8,k=3,p=same,g=2", "--json"], capsys)
    assert code == 0 and err == ""
    data = json.loads(out)
    assert data["layers"][0]["macs"] == 9216 and data["total"]["macs"] == 9216  # 64 * 8 * 9 * 2


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0"),
        (999, "999"),
        (1000, "1.00K"),
        (1234, "1.23K"),
        (9_994, "9.99K"),
        (9_996, "10.0K"),  # rounds up a decade: three digits, not 10.00K
        (99_940, "99.9K"),
        (99_960, "100K"),  # not 100.0K
        (999_400, "999K"),
        (999_600, "1.00M"),  # not 1000K
        (11_689_512, "11.7M"),
        (999_996_000, "1.00G"),  # not 999996000
        (1_814_073_344, "1.81G"),
        (999_996_000_000, "1.00T"),
        (-999_600, "-1.00M"),
        (2_000_000_000_000_000, "2000T"),  # no unit above T: more digits, never wrong ones
    ],
)
def test_counts_round_to_three_digits_across_unit_boundaries(n, text):
    assert human(n) == text


@pytest.mark.parametrize("n", [999_500, 999_600, 999_999, 999_499_999, 999_500_000, 999_999_999])
def test_no_count_prints_as_a_thousand_of_a_unit(n):
    text = human(n)
    assert not text.startswith("1000") and text[-1] in "KMG"
    value = float(text[:-1]) * {"K": 1e3, "M": 1e6, "G": 1e9}[text[-1]]
    assert abs(value - n) <= 0.005 * n  # three significant digits


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (1023, "1023 B"),
        (1024, "1.00 KiB"),
        (10_235, "10.0 KiB"),  # 9.995 KiB rounds to 10.0, not 10.00
        (1_048_575, "1.00 MiB"),  # 1023.999 KiB: not 1024 KiB
        (3_211_264, "3.06 MiB"),
        (2**30 - 1, "1.00 GiB"),
    ],
)
def test_bytes_round_across_binary_unit_boundaries(n, text):
    assert human_bytes(n) == text


def test_conv_arith_table_prints_a_boundary_total_in_the_next_unit(capsys):
    # dense 4998 -> 200 on one 1x1 position: 4998 * 200 = 999_600 MACs, params 999_600 + 200 = 999_800.
    code, out, err = cli(["conv-arith", "1x1x4998", "dense:c=200"], capsys)
    assert code == 0 and err == ""
    total = next(line for line in out.splitlines() if "total" in line)
    assert total.count("1.00M") == 2 and "2.00M" in total  # params, MACs; FLOPs = 1_999_200
    assert "1000K" not in out
