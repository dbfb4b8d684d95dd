"""Every relationship of Dumoulin & Visin, "A guide to convolution arithmetic for deep
learning" (arXiv:1603.07285, v2), with the worked example of its figure, plus the
conventions cnncli adds (uneven XLA ``same`` pads, PyTorch ceil mode, output padding).

Notation as in the guide: i input size, k kernel, s stride, p zero padding (both
ends), d dilation; primes for the transposed convolution.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnncli.arith import formulas as arith
from cnncli.errors import LayerError, ShapeError


def conv(i, k, s=1, p=0, d=1):
    return arith.conv_output(i, k, s, (p, p), d)


def tconv(i, k, s=1, p=0, d=1, a=0):
    return arith.tconv_output(i, k, s, (p, p), d, a)


# --- Chapter 2: convolution arithmetic -------------------------------------------------


def test_relationship_1_no_padding_unit_strides():
    # Relationship 1: o = (i - k) + 1. Figure 2.1: i=4, k=3, s=1, p=0 -> 2.
    assert conv(4, 3) == 2 == (4 - 3) + 1


def test_relationship_2_zero_padding_unit_strides():
    # Relationship 2: o = (i - k) + 2p + 1. Figure 2.2: i=5, k=4, p=2 -> 6.
    assert conv(5, 4, p=2) == 6 == (5 - 4) + 2 * 2 + 1


def test_relationship_3_half_padding():
    # Relationship 3: k = 2n + 1, p = floor(k/2) -> o = i. Figure 2.3: i=5, k=3, p=1 -> 5.
    assert conv(5, 3, p=1) == 5
    assert arith.resolve_pads("same", 5, 3) == (1, 1)
    for i in range(1, 30):
        for n in range(0, 4):
            k = 2 * n + 1
            if i + 2 * n >= k:
                assert conv(i, k, p=k // 2) == i


def test_relationship_4_full_padding():
    # Relationship 4: p = k - 1 -> o = i + (k - 1). Figure 2.4: i=5, k=3, p=2 -> 7.
    assert conv(5, 3, p=2) == 7 == 5 + (3 - 1)
    assert arith.resolve_pads("full", 5, 3) == (2, 2)


def test_relationship_5_no_padding_strides():
    # Relationship 5: o = floor((i - k) / s) + 1. Figure 2.6: i=5, k=3, s=2 -> 2.
    assert conv(5, 3, s=2) == 2 == (5 - 3) // 2 + 1


def test_relationship_6_padding_strides():
    # Relationship 6: o = floor((i + 2p - k) / s) + 1.
    # Figure 2.7: i=5, k=3, s=2, p=1 -> 3. Figure 2.8: i=6, k=3, s=2, p=1 -> 3 as well:
    # "the bottom row and right column of the zero padded input are not covered".
    assert conv(5, 3, s=2, p=1) == 3
    assert conv(6, 3, s=2, p=1) == 3
    unused = arith.unused(6, 3, 2, (1, 1))
    assert (unused.tail, unused.tail_pixels) == (1, 0)  # one padded row, no input pixel
    assert arith.unused(5, 3, 2, (1, 1)).tail == 0


def test_relationship_6_any_input_in_a_stride_class_gives_same_output():
    # "if i + 2p - k is a multiple of s, then any input size j = i + a, a in {0..s-1}
    # will produce the same output size".
    i, k, s, p = 5, 3, 2, 1
    assert {conv(i + a, k, s, p) for a in range(s)} == {conv(i, k, s, p)}


def test_relationship_7_pooling():
    # Relationship 7: o = floor((i - k) / s) + 1 for any pooling. Figures 1.5, 1.6:
    # 3x3 pooling over a 5x5 input with 1x1 strides -> 3x3.
    assert arith.pool_output(5, 3, 1) == (3, 0)
    for i in range(3, 20):
        for k in range(1, 4):
            for s in range(1, 4):
                assert arith.pool_output(i, k, s)[0] == (i - k) // s + 1


# --- Chapter 4: transposed convolution arithmetic --------------------------------------


def test_relationship_8_no_padding_unit_strides_transposed():
    # Relationship 8: k' = k, s' = 1, p' = k - 1 and o' = i' + (k - 1).
    # Figure 4.1: the transpose of i=4, k=3 applied to i'=2 -> 4.
    assert tconv(2, 3) == 4 == 2 + (3 - 1)
    assert arith.tconv_lax_padding(3, 1, (0, 0)) == (2, 2)  # p' = k - 1


def test_relationship_9_zero_padding_unit_strides_transposed():
    # Relationship 9: p' = k - p - 1, o' = i' + (k - 1) - 2p.
    # Figure 4.2: i=5, k=4, p=2: equivalent to i'=6, k'=4, p'=1 -> 5.
    assert tconv(6, 4, p=2) == 5 == 6 + (4 - 1) - 2 * 2
    assert arith.tconv_lax_padding(4, 1, (2, 2)) == (1, 1)


def test_relationship_10_half_padding_transposed():
    # Relationship 10: k = 2n + 1, p = n -> p' = p, o' = i'. Figure 4.3: i'=5, k=3, p=1 -> 5.
    assert tconv(5, 3, p=1) == 5
    assert arith.tconv_lax_padding(3, 1, (1, 1)) == (1, 1)


def test_relationship_11_full_padding_transposed():
    # Relationship 11: p = k - 1 -> p' = 0, o' = i' - (k - 1). Figure 4.4: i'=7, k=3, p=2 -> 5.
    assert tconv(7, 3, p=2) == 5 == 7 - (3 - 1)
    assert arith.tconv_lax_padding(3, 1, (2, 2)) == (0, 0)


def test_relationship_12_no_padding_strides_transposed():
    # Relationship 12: (i - k) multiple of s; o' = s(i' - 1) + k.
    # Figure 4.5: transpose of i=5, k=3, s=2 on i'=2 (stretched to 3) -> 5.
    assert tconv(2, 3, s=2) == 5 == 2 * (2 - 1) + 3
    assert arith.tconv_lax_padding(3, 2, (0, 0)) == (2, 2)  # p' = k - 1 around the stretched input


def test_relationship_13_padding_strides_transposed():
    # Relationship 13: (i + 2p - k) multiple of s; p' = k - p - 1, o' = s(i' - 1) + k - 2p.
    # Figure 4.6: transpose of i=5, k=3, s=2, p=1 on i'=3 (stretched to 5) -> 5.
    assert tconv(3, 3, s=2, p=1) == 5 == 2 * (3 - 1) + 3 - 2 * 1
    assert arith.tconv_lax_padding(3, 2, (1, 1)) == (1, 1)


def test_relationship_14_padding_strides_transposed_odd():
    # Relationship 14: a = (i + 2p - k) mod s, o' = s(i' - 1) + a + k - 2p.
    # Figure 4.7: transpose of i=6, k=3, s=2, p=1 on i'=3, a=1 -> 6.
    a = arith.transpose_output_padding(6, 3, 2, (1, 1))
    assert a == 1
    assert tconv(3, 3, s=2, p=1, a=a) == 6 == 2 * (3 - 1) + 1 + 3 - 2 * 1


# --- Chapter 5: dilated convolutions ---------------------------------------------------


def test_relationship_15_dilation():
    # Relationship 15: o = floor((i + 2p - k - (k - 1)(d - 1)) / s) + 1, effective
    # kernel k + (k - 1)(d - 1). Figure 5.1: i=7, k=3, d=2, s=1, p=0 -> 3.
    assert arith.effective_kernel(3, 2) == 3 + (3 - 1) * (2 - 1) == 5
    assert conv(7, 3, d=2) == 3


@settings(max_examples=150, deadline=None)
@given(i=st.integers(1, 64), k=st.integers(1, 9), s=st.integers(1, 5), p=st.integers(0, 6), d=st.integers(1, 4))
def test_relationship_15_general_and_transpose_round_trip(i, k, s, p, d):
    ke = k + (k - 1) * (d - 1)
    if i + 2 * p < ke:
        with pytest.raises(ShapeError, match="larger than the padded input"):
            conv(i, k, s, p, d)
        return
    o = conv(i, k, s, p, d)
    assert o == (i + 2 * p - k - (k - 1) * (d - 1)) // s + 1
    # Relationship 14 generalized: the transpose with a = (i + 2p - ke) mod s gives i back.
    a = arith.transpose_output_padding(i, k, s, (p, p), d)
    if a < max(s, d) and o > 0:
        assert tconv(o, k, s, p, d, a) == i


# --- Padding conventions ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("i", "k", "s", "d", "pads"),
    [
        (224, 7, 2, 1, (2, 3)),  # odd total: the extra pixel goes at the end (XLA, TF)
        (224, 3, 2, 1, (0, 1)),
        (225, 3, 2, 1, (1, 1)),
        (5, 3, 1, 1, (1, 1)),
        (6, 1, 2, 1, (0, 0)),  # total clipped at 0
        (10, 3, 1, 3, (3, 3)),  # dilated kernel spans 7
        (7, 4, 1, 1, (1, 2)),  # even kernel: uneven pads even at stride 1
    ],
)
def test_same_pads_as_xla(i, k, s, d, pads):
    assert arith.same_pads(i, k, s, d) == pads
    assert arith.conv_output(i, k, s, pads, d) == -(-i // s)


def test_resolve_pads_rejects_unknown_name():
    with pytest.raises(LayerError, match="unknown padding 'half'"):
        arith.resolve_pads("half", 5, 3)


def test_kernel_larger_than_padded_input_is_an_error_not_zero():
    with pytest.raises(ShapeError) as err:
        arith.conv_output(3, 5, where="conv1: ")
    assert str(err.value).startswith("conv1: kernel 5 is larger than the padded input 3 (input 3 + padding 0+0)")


# --- Pooling ceil mode (PyTorch) -------------------------------------------------------


@pytest.mark.parametrize(
    ("i", "k", "s", "p", "floor", "ceil", "extra"),
    [
        (56, 3, 2, 0, 27, 28, 1),
        (112, 3, 2, 1, 56, 57, 1),
        (5, 2, 2, 0, 2, 3, 1),
        (5, 2, 2, 1, 3, 3, 0),  # ceil would start a window in the padding: dropped
        (13, 3, 2, 0, 6, 6, 0),
    ],
)
def test_pool_ceil_mode(i, k, s, p, floor, ceil, extra):
    assert arith.pool_output(i, k, s, (p, p), 1, ceil=False) == (floor, 0)
    assert arith.pool_output(i, k, s, (p, p), 1, ceil=True) == (ceil, extra)
    # Flax/lax have no ceil mode: the floor formula with the extra high padding agrees.
    assert arith.conv_output(i, k, s, (p, p + extra)) == ceil


def test_pool_ceil_formula_mentions_dropped_window():
    text = arith.pool_formula(5, 2, 2, (1, 1), 1, ceil=True)
    assert text == "ceil((5 + 1 + 1 - 1*(2-1) - 1) / 2) + 1 - 1 = 3  (the last window would start in the padding)"


# --- Transposed conventions ------------------------------------------------------------


@pytest.mark.parametrize(
    ("i", "k", "s", "padding", "out"),
    [(7, 3, 2, "same", 14), (7, 3, 2, "valid", 15), (7, 1, 3, "valid", 21), (7, 5, 1, "same", 7), (4, 4, 2, "valid", 10)],
)
def test_tconv_same_valid_follow_flax(i, k, s, padding, out):
    # Flax/TF: same -> i*s, valid -> i*s + max(k - s, 0).
    pads, op = arith.tconv_pads(padding, i, k, s)
    assert arith.tconv_output(i, k, s, pads, 1, op) == out


def test_tconv_output_padding_limit():
    with pytest.raises(ShapeError, match="output padding 2 must be smaller than the stride"):
        arith.tconv_output(3, 3, 2, (0, 0), 1, 2)


def test_tconv_crop_everything_is_an_error():
    with pytest.raises(ShapeError, match="crops the whole output"):
        arith.tconv_output(1, 1, 1, (1, 1))


def test_formulas_substitute_numbers():
    assert arith.conv_formula(224, 7, 2, (3, 3)) == "floor((224 + 3 + 3 - 1*(7-1) - 1) / 2) + 1 = 112"
    assert arith.tconv_formula(112, 7, 2, (3, 3), 1, 1) == "(112 - 1)*2 - 3 - 3 + 1*(7-1) + 1 + 1 = 224"


# --- Unused pixels ---------------------------------------------------------------------


def test_unused_pixels_at_the_end_are_counted_and_explained():
    u = arith.unused(7, 2, 2)  # windows [0,1], [2,3], [4,5]: pixel 6 never read
    assert (u.tail, u.tail_pixels, u.gap_pixels) == (1, 1, 0)
    text = arith.unused_warning(7, 2, 2, axis="axis 0")
    assert text.startswith("the last 1 input pixel(s) along axis 0 are never read: (7 + 0 + 0 - 2) mod 2 = 1")


def test_window_narrower_than_stride_skips_pixels_between_windows():
    u = arith.unused(8, 1, 2)  # a 1x1 conv with stride 2 reads pixels 0, 2, 4, 6
    assert (u.gap_pixels, u.tail_pixels, u.pixels) == (3, 1, 4)
    assert arith.unused(8, 3, 2, (1, 1), 2).gap_pixels == 4  # dilation 2 with stride 2 sees even pixels
    assert arith.unused_warning(8, 3, 2, (1, 1)) is None


# --- Receptive field recurrence --------------------------------------------------------


def test_receptive_step():
    assert arith.receptive_step(1, 1, 7, 2) == (7, 2)
    assert arith.receptive_step(7, 2, 3, 2) == (11, 4)
    assert arith.receptive_step(1, 1, 3, 1, 2) == (5, 1)  # dilation widens the window
    rf, jump = arith.receptive_step(1, 1, 4, 2, transpose=True)
    assert (rf, jump) == (2, 0.5)


# --- Solve -----------------------------------------------------------------------------


def test_solve_32_to_16():
    found = arith.solve(32, 16)
    keys = [(x.k, x.s, x.p, x.d) for x in found]
    assert keys[:3] == [(2, 2, 0, 1), (3, 2, 1, 1), (4, 2, 1, 1)]
    assert all(conv(32, x.k, x.s, x.p, x.d) == 16 for x in found)
    dropping = [x for x in found if x.drops]
    assert (1, 2, 0, 1) in [(x.k, x.s, x.p, x.d) for x in dropping]  # 1x1 stride 2 skips half
    assert found.index(dropping[0]) > found.index(next(x for x in found if not x.drops))


def test_solve_transpose_upsamples():
    found = arith.solve(16, 32, transpose=True)
    assert (found[0].k, found[0].s, found[0].p, found[0].op) == (1, 2, 0, 1)
    assert all(tconv(16, x.k, x.s, x.p, x.d, x.op) == 32 for x in found)
    assert found[2].token(transpose=True) == "k=3,s=2,p=1,op=1"


def test_solve_rejects_nonpositive():
    with pytest.raises(LayerError):
        arith.solve(0, 3)
