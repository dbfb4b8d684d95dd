"""`cnncli.arith.geometry` against what JAX computes, plus its counting and RF conventions.

Shapes: `jax.eval_shape` over `jax.lax.conv_general_dilated` (explicit (lo, hi) pads,
SAME, VALID, strides, dilation, groups; 1-D, 2-D, 3-D), `jax.lax.conv_transpose` (and
`flax.nnx.ConvTranspose`) for tconv, and `jax.lax.reduce_window` for pools including
ceil mode, property-tested with hypothesis. jax is imported here, in the tests only:
the conv-arith modules never import it (tests/test_layering.py).
"""

from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from jax import lax  # noqa: E402

from cnncli.arith import formulas as arith  # noqa: E402
from cnncli.arith.geometry import analyze  # noqa: E402
from cnncli.arith.layers import parse_layers  # noqa: E402
from cnncli.errors import LayerError, ShapeError  # noqa: E402

DN = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC"), 3: ("NDHWC", "DHWIO", "NDHWC")}
SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _sds(shape):
    return jax.ShapeDtypeStruct(shape, jnp.float32)


def jax_conv(in_shape, k, cout, s, padding, d, g=1):
    """Per-example output shape of lax.conv_general_dilated (channels last)."""
    nd = len(in_shape) - 1
    lhs, rhs = _sds((1, *in_shape)), _sds((*k, in_shape[-1] // g, cout))
    fn = lambda x, w: lax.conv_general_dilated(  # noqa: E731
        x, w, s, padding, rhs_dilation=d, dimension_numbers=DN[nd], feature_group_count=g
    )
    return jax.eval_shape(fn, lhs, rhs).shape[1:]


def jax_pool(in_shape, k, s, padding, d):
    pads = padding if isinstance(padding, str) else ((0, 0), *padding, (0, 0))
    fn = lambda x: lax.reduce_window(x, -jnp.inf, lax.max, (1, *k, 1), (1, *s, 1), pads, window_dilation=(1, *d, 1))  # noqa: E731
    return jax.eval_shape(fn, _sds((1, *in_shape))).shape[1:]


def jax_tconv(in_shape, k, cout, s, padding, d):
    nd = len(in_shape) - 1
    fn = lambda x, w: lax.conv_transpose(x, w, s, padding, rhs_dilation=d, dimension_numbers=DN[nd])  # noqa: E731
    return jax.eval_shape(fn, _sds((1, *in_shape)), _sds((*k, in_shape[-1], cout))).shape[1:]


def _axes(values):
    return "x".join(str(v) for v in values)


@st.composite
def window_cases(draw, max_side=24):
    nd = draw(st.integers(1, 3))
    side = max_side if nd < 3 else 9
    sizes = tuple(draw(st.integers(1, side)) for _ in range(nd))
    k = tuple(draw(st.integers(1, 5)) for _ in range(nd))
    s = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    d = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    mode = draw(st.sampled_from(["pairs", "same", "valid", "full"]))
    pads = tuple((draw(st.integers(0, 3)), draw(st.integers(0, 3))) for _ in range(nd))
    return sizes, k, s, d, mode, pads


def _pad_token(mode, pads):
    return mode if mode != "pairs" else "x".join(f"{lo}-{hi}" for lo, hi in pads)


def _fits(sizes, k, d, pads):
    return all(i + lo + hi >= dd * (kk - 1) + 1 for i, kk, dd, (lo, hi) in zip(sizes, k, d, pads))


@SETTINGS
@given(case=window_cases(), cin_mult=st.integers(1, 3), g=st.sampled_from([1, 2]), pm=st.sampled_from(["zeros", "circular", "reflect", "edge"]))
def test_conv_shapes_match_lax(case, cin_mult, g, pm):
    sizes, k, s, d, mode, pads = case
    cin, cout = 2 * cin_mult, 4
    token = f"conv:c={cout},k={_axes(k)},s={_axes(s)},p={_pad_token(mode, pads)},d={_axes(d)},g={g},pm={pm}"
    in_shape = (*sizes, cin)
    applied = pads if mode == "pairs" else tuple(arith.resolve_pads(mode, *a) for a in zip(sizes, k, s, d))
    if not _fits(sizes, k, d, applied):
        with pytest.raises(ShapeError, match="larger than the padded input"):
            analyze(parse_layers([token]), in_shape)
        return
    row = analyze(parse_layers([token]), in_shape).layers[0]
    assert row.output == jax_conv(in_shape, k, cout, s, applied, d, g)  # pad modes never change shapes
    if mode in ("same", "valid"):
        assert row.output == jax_conv(in_shape, k, cout, s, mode.upper(), d, g)
        assert row.padding == tuple(lax.padtype_to_pads(sizes, [dd * (kk - 1) + 1 for kk, dd in zip(k, d)], s, mode.upper()))


@SETTINGS
@given(case=window_cases(), ceil=st.booleans(), kind=st.sampled_from(["maxpool", "avgpool", "l2pool"]))
def test_pool_shapes_match_reduce_window(case, ceil, kind):
    sizes, k, s, d, mode, pads = case
    token = f"{kind}:k={_axes(k)},s={_axes(s)},p={_pad_token(mode, pads)},d={_axes(d)},ceil={str(ceil).lower()}"
    in_shape = (*sizes, 3)
    resolved = pads if mode == "pairs" else tuple(arith.resolve_pads(mode, *a) for a in zip(sizes, k, s, d))
    if not _fits(sizes, k, d, resolved):
        with pytest.raises(ShapeError):
            analyze(parse_layers([token]), in_shape)
        return
    row = analyze(parse_layers([token]), in_shape).layers[0]
    # The applied padding includes ceil mode's extra high padding: reduce_window agrees.
    assert row.output == jax_pool(in_shape, k, s, row.padding, d)
    if not ceil:
        assert row.padding == resolved
        if mode in ("same", "valid"):
            assert row.output == jax_pool(in_shape, k, s, mode.upper(), d)
    else:
        assert row.output[:-1] == tuple(torch_ceil_pool(*a) for a in zip(sizes, k, s, resolved, d))


def torch_ceil_pool(i, k, s, pads, d):
    """PyTorch's pooling_output_shape_pad_lr (aten/src/ATen/native/Pool.h), ceil_mode=True."""
    lo, hi = pads
    out = (i + lo + hi - d * (k - 1) - 1 + (s - 1)) // s + 1
    if (out - 1) * s >= i + lo:
        out -= 1
    return out


@SETTINGS
@given(case=window_cases(max_side=12), op_seed=st.integers(0, 2))
def test_tconv_shapes_match_conv_transpose(case, op_seed):
    sizes, k, s, d, mode, pads = case
    if mode == "full":
        mode = "pairs"
    ops = tuple(min(op_seed, max(ss, dd) - 1) for ss, dd in zip(s, d)) if mode == "pairs" else (0,) * len(k)
    token = f"tconv:c=3,k={_axes(k)},s={_axes(s)},p={_pad_token(mode, pads)},d={_axes(d)},op={_axes(ops)}"
    in_shape = (*sizes, 2)
    expected_sizes = [
        (i - 1) * ss - lo - hi + dd * (kk - 1) + 1 + op
        for i, kk, ss, dd, (lo, hi), op in zip(sizes, k, s, d, pads, ops)
    ]
    if mode == "pairs" and min(expected_sizes) < 1:
        with pytest.raises(ShapeError, match="crops the whole output"):
            analyze(parse_layers([token]), in_shape)
        return
    row = analyze(parse_layers([token]), in_shape).layers[0]
    lax_pads = [arith.tconv_lax_padding(kk, ss, p, dd, op) for kk, ss, p, dd, op in zip(k, s, row.padding, d, row.output_padding)]
    assert row.output == jax_tconv(in_shape, k, 3, s, lax_pads, d)
    if mode == "pairs":  # PyTorch's ConvTranspose formula, with p the direct conv's padding
        assert row.output[:-1] == tuple(expected_sizes)
    else:  # same/valid follow Flax/TF, i.e. lax.conv_transpose with the string
        assert row.output == jax_tconv(in_shape, k, 3, s, mode.upper(), d)


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
def test_tconv_same_valid_match_flax_convtranspose(padding):
    from flax import nnx

    layer = nnx.ConvTranspose(2, 3, (3, 4), strides=(2, 3), padding=padding, rngs=nnx.Rngs(0))
    out = jax.eval_shape(lambda x: layer(x), _sds((1, 7, 5, 2))).shape[1:]
    token = f"tconv:c=3,k=3x4,s=2x3,p={padding.lower()}"
    assert analyze(parse_layers([token]), (7, 5, 2)).output == out


# --- Rows without windows -------------------------------------------------------------


def test_gap_flatten_dense_norm_shapes_and_params():
    a = analyze(parse_layers("conv:c=8,k=3,p=same bn ln relu dropout gap dense:c=10"), (6, 6, 3))
    assert [r.output for r in a.layers] == [(6, 6, 8), (6, 6, 8), (6, 6, 8), (6, 6, 8), (6, 6, 8), (8,), (10,)]
    assert [r.params for r in a.layers] == [3 * 3 * 3 * 8 + 8, 16, 16, 0, 0, 0, 8 * 10 + 10]
    flat = analyze(parse_layers("flatten dense:c=5"), (4, 4, 2))
    assert flat.layers[0].output == (32,) and flat.layers[1].macs == 32 * 5


def test_dense_acts_on_the_last_axis_like_nnx_linear():
    row = analyze(parse_layers("dense:c=10"), (4, 4, 8)).layers[0]
    assert row.output == (4, 4, 10)
    assert row.params == 8 * 10 + 10
    assert row.macs == 4 * 4 * 8 * 10


def test_dense_without_width_uses_num_classes_or_fails():
    assert analyze(parse_layers("flatten dense"), (2, 2, 1), num_classes=7).output == (7,)
    with pytest.raises(LayerError) as err:
        analyze(parse_layers("flatten dense"), (2, 2, 1))
    assert err.value.message == "dense1 (dense) has no width: no c= and no class count known"
    assert err.value.hint == "give c=N on the layer, or the class count with --classes N"


def test_conv_after_flatten_is_a_shape_error():
    with pytest.raises(ShapeError, match=r"conv2 \(conv:c=3,k=1\) needs spatial axes, but its input is 392"):
        analyze(parse_layers("conv:c=8,k=1 flatten conv:c=3,k=1"), (7, 7, 1))


def test_groups_must_divide_channels():
    with pytest.raises(ShapeError, match=r"groups g=3 must divide the input channels \(4\) and the output channels \(6\)"):
        analyze(parse_layers("conv:c=6,k=1,g=3"), (5, 5, 4))


def test_tconv_groups_are_rejected():
    with pytest.raises(LayerError, match="tconv supports only g=1"):
        analyze(parse_layers("tconv:c=4,k=3,g=2"), (5, 5, 4))


def test_per_axis_values_must_match_the_rank():
    with pytest.raises(LayerError, match="kernel has 2 values but the input has 3 spatial axes"):
        analyze(parse_layers("conv:c=4,k=3x3"), (8, 8, 8, 1))


# --- Counting conventions -------------------------------------------------------------


def test_macs_flops_and_optional_counts():
    specs = parse_layers("conv:c=4,k=3 bn maxpool:k=2 gap dense:c=2")
    plain = analyze(specs, (6, 6, 1))
    conv_macs = 4 * 4 * 9 * 1 * 4
    assert plain.layers[0].macs == conv_macs and plain.layers[0].flops == 2 * conv_macs
    assert plain.total.macs == conv_macs + 4 * 2
    assert plain.total.flops == 2 * plain.total.macs
    counted = analyze(specs, (6, 6, 1), count_bias=True, count_norm=True, count_pool=True)
    extra_bias = 4 * 4 * 4 + 2
    extra_norm = 2 * 4 * 4 * 4
    extra_pool = (4 - 1) * 2 * 2 * 4 + 2 * 2 * 4  # max: k-1 compares; gap: k adds per output
    assert counted.total.macs == plain.total.macs
    assert counted.total.flops == plain.total.flops + extra_bias + extra_norm + extra_pool
    assert "FLOPs = 2 x MACs + bias adds + norm ops + pool ops" in counted.counting.describe()


def test_activation_memory_is_float32_output():
    row = analyze(parse_layers("conv:c=64,k=7,s=2,p=3"), (224, 224, 3)).layers[0]
    assert row.act_bytes == 112 * 112 * 64 * 4


def test_unused_pixels_warning_names_layer_and_axis():
    a = analyze(parse_layers("maxpool:k=2"), (7, 8, 1))
    assert a.warnings == [
        "maxpool1: the last 1 input pixel(s) along axis 0 are never read: (7 + 0 + 0 - 2) mod 2 = 1; "
        "adjust the padding, kernel or stride, or the input size"
    ]


# --- Receptive fields -----------------------------------------------------------------


def test_receptive_field_with_dilation_yu_koltun():
    # Yu & Koltun 2016 (dilated convolutions), sec. 2: 3x3 convs dilated 1, 2, 4 give
    # receptive fields 3x3, 7x7, 15x15.
    a = analyze(parse_layers("conv:c=1,k=3,d=1,p=same conv:c=1,k=3,d=2,p=same conv:c=1,k=3,d=4,p=same"), (32, 32, 1))
    assert [r.rf for r in a.layers] == [(3, 3), (7, 7), (15, 15)]
    assert [r.jump for r in a.layers] == [(1, 1)] * 3


def test_receptive_field_wavenet_stack():
    # van den Oord et al. 2016 (WaveNet), fig. 3: kernel 2, dilations 1, 2, 4, 8 -> RF 16.
    a = analyze(parse_layers("conv:c=4,k=2,d=1 conv:c=4,k=2,d=2 conv:c=4,k=2,d=4 conv:c=4,k=2,d=8"), (40, 1))
    assert a.layers[-1].rf == (16,) and a.output == (25, 4)


def test_residual_rf_is_max_over_paths():
    # Shortcut paths are shallower; the block's RF is its main path's (two 3x3 convs: +4).
    a = analyze(parse_layers("conv:c=8,k=3,p=1 resblock:c=8 resblock:c=16,s=2 bottleneck:c=4,s=2"), (32, 32, 3))
    # stride 2 on the first 3x3 doubles the jump before the second: 7 + 2 + 2*2 = 13
    assert [r.rf for r in a.layers] == [(3, 3), (7, 7), (13, 13), (17, 17)]
    assert [r.jump for r in a.layers] == [(1, 1), (1, 1), (2, 2), (4, 4)]
    block = a.layers[2]
    assert [c.name for c in block.children] == [
        "resblock2.conv1", "resblock2.bn1", "resblock2.conv2", "resblock2.bn2", "resblock2.proj", "resblock2.proj_bn",
    ]  # fmt: skip
    assert block.children[4].rf == (7, 7) < block.rf  # the 1x1 shortcut sees less
    assert block.params == sum(c.params for c in block.children)


def test_densenet_blocks_params_and_names():
    a = analyze(parse_layers("denseblock:n=2,gr=4,bs=2 transition:c=6"), (8, 8, 4))
    dense, trans = a.layers
    assert dense.output == (8, 8, 12) and trans.output == (4, 4, 6)
    assert [c.name for c in dense.children][:4] == [
        "denseblock1.layer1.bn1", "denseblock1.layer1.conv1", "denseblock1.layer1.bn2", "denseblock1.layer1.conv2",
    ]  # fmt: skip
    # layer 1: bn(4) 8, conv1x1 4->8 32, bn(8) 16, conv3x3 8->4 288; layer 2 sees 8 channels
    assert dense.params == (8 + 32 + 16 + 288) + (16 + 64 + 16 + 288)
    assert [c.name for c in trans.children] == ["transition1.bn", "transition1.conv", "transition1.pool"]
    assert trans.params == 2 * 12 + 12 * 6
    assert dense.rf == (5, 5) and trans.rf == (6, 6)


def test_block_children_tokens_parse_and_match_lax():
    a = analyze(parse_layers("resblock:c=8,s=2 bottleneck:c=4,s=2 denseblock:n=1,gr=4 transition:c=4"), (15, 13, 3))
    for block in a.layers:
        for child in block.children:
            spec = parse_layers([child.token])[0]
            if child.kind == "conv":
                assert child.output == jax_conv(child.input, child.kernel, spec.features, child.stride, child.padding, child.dilation)
            elif child.kind == "avgpool":
                assert child.output == jax_pool(child.input, child.kernel, child.stride, child.padding, child.dilation)


@pytest.mark.parametrize(("kernel", "padding"), [("3", "p=1"), ("5", "p=2"), ("4", "p=same"), ("3x2", "p=same")])
def test_block_convs_follow_the_one_padding_rule(kernel, padding):
    """Every conv of a block is padded by `cnncli.arith.layers.block_padding` (the model builder's rule)."""
    block = analyze(parse_layers(f"resblock:c=4,k={kernel},s=2"), (9, 8, 4)).layers[0]
    convs = [c for c in block.children if c.name.endswith((".conv1", ".conv2"))]
    assert all(padding in c.token.split(",") for c in convs)


def test_option_a_shortcut_cannot_shrink_channels():
    with pytest.raises(ShapeError, match="sc=pad cannot shrink channels from 16 to 8"):
        analyze(parse_layers("resblock:c=8,sc=pad"), (8, 8, 16))
