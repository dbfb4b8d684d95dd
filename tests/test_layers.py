"""The layer language: every kind round-trips, and error messages are pinned word for word."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnncli.arith.layers import (
    ACTIVATIONS,
    KINDS,
    PAD_MODES,
    Activation,
    Bottleneck,
    Conv,
    Dense,
    DenseBlock,
    Dropout,
    Flatten,
    GlobalPool,
    Norm,
    Pool,
    ResBlock,
    Transition,
    block_padding,
    broadcast,
    broadcast_pairs,
    format_padding,
    layer_names,
    parse_layers,
    parse_padding,
    parse_shape,
    parse_token,
    to_token,
)
from cnncli.errors import LayerError, UsageError

axes = st.lists(st.integers(1, 9), min_size=1, max_size=3).map(tuple)
paddings = st.one_of(
    st.sampled_from(["same", "valid", "full"]),
    st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=1, max_size=3).map(tuple),
)


@st.composite
def convs(draw):
    kind = draw(st.sampled_from(["conv", "tconv"]))
    return Conv(
        kind=kind, features=draw(st.integers(1, 512)), kernel=draw(axes), stride=draw(axes),
        padding=draw(paddings), dilation=draw(axes), groups=draw(st.integers(1, 8)), bias=draw(st.booleans()),
        pad_mode="zeros" if kind == "tconv" else draw(st.sampled_from(PAD_MODES)),
        output_padding=draw(st.lists(st.integers(0, 3), min_size=1, max_size=3).map(tuple)) if kind == "tconv" else (0,),
    )  # fmt: skip


specs = st.one_of(
    convs(),
    st.builds(Pool, kind=st.sampled_from(["maxpool", "avgpool", "l2pool"]), kernel=axes,
              stride=st.one_of(st.none(), axes), padding=paddings, dilation=axes, ceil=st.booleans()),
    st.builds(GlobalPool, kind=st.sampled_from(["gap", "gmp"])),
    st.just(Flatten()),
    st.builds(Dense, features=st.one_of(st.none(), st.integers(1, 4096)), bias=st.booleans()),
    st.builds(Norm, kind=st.sampled_from(["bn", "ln"])),
    st.builds(Dropout, rate=st.floats(0, 0.99, allow_nan=False).map(lambda r: round(r, 3))),
    st.builds(Activation, kind=st.sampled_from(ACTIVATIONS)),
    st.builds(ResBlock, features=st.integers(1, 512), stride=axes, kernel=axes, shortcut=st.sampled_from(["conv", "pad"])),
    st.builds(Bottleneck, features=st.integers(1, 512), stride=axes, expansion=st.integers(1, 6)),
    st.builds(DenseBlock, layers=st.integers(1, 48), growth=st.integers(1, 64), bn_size=st.integers(1, 8)),
    st.builds(Transition, features=st.integers(1, 1024)),
)  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(spec=specs)
def test_round_trip(spec):
    token = to_token(spec)
    assert parse_token(token) == spec
    assert " " not in token and "(" not in token  # survives a shell unquoted


def test_every_kind_parses_from_its_simplest_token():
    minimal = {
        "conv": "conv:c=4,k=3", "tconv": "tconv:c=4,k=3", "maxpool": "maxpool:k=2", "avgpool": "avgpool:k=2",
        "l2pool": "l2pool:k=2", "resblock": "resblock:c=8", "bottleneck": "bottleneck:c=8",
        "denseblock": "denseblock:n=2", "transition": "transition:c=8",
    }  # fmt: skip
    for kind in KINDS:
        spec = parse_token(minimal.get(kind, kind))
        assert spec.kind == kind
        assert parse_token(to_token(spec)) == spec


def test_values_and_defaults():
    conv = parse_token("conv:c=64,k=7x5,s=2,p=3,d=1,g=2,bias=false,pm=reflect")
    assert conv == Conv("conv", 64, (7, 5), (2,), ((3, 3),), (1,), 2, False, "reflect")
    assert parse_token("tconv:c=3,k=4,s=2,p=1,op=1").output_padding == (1,)
    assert parse_token("maxpool:k=3,s=2,p=0-1,ceil=true") == Pool("maxpool", (3,), (2,), ((0, 1),), ceil=True)
    assert parse_token("Conv:C=8,K=3").features == 8  # kinds and keys are case-insensitive
    assert parse_token("dense") == Dense(features=None)
    assert parse_token("dropout:r=0.25").rate == 0.25


def test_padding_grammar():
    assert parse_padding("same") == "same"
    assert parse_padding("2") == ((2, 2),)
    assert parse_padding("1x2") == ((1, 1), (2, 2))
    assert parse_padding("0-1x1-0") == ((0, 1), (1, 0))
    for text in ("same", "2", "1x2", "0-1x1-0"):
        assert format_padding(parse_padding(text)) == text


def test_parse_layers_and_names():
    specs = parse_layers("conv:c=6,k=5 relu conv:c=16,k=5 relu dense:c=10")
    assert layer_names(specs) == ["conv1", "relu1", "conv2", "relu2", "dense1"]
    assert parse_layers(["conv:c=6,k=5 relu", "gap"]) == parse_layers("conv:c=6,k=5 relu gap")


def test_broadcast():
    assert broadcast((3,), 2, what="kernel") == (3, 3)
    assert broadcast((3, 5), 2, what="kernel") == (3, 5)
    assert broadcast_pairs(((0, 1),), 3) == ((0, 1),) * 3
    with pytest.raises(LayerError) as err:
        broadcast((3, 5), 3, what="kernel", token="conv:c=4,k=3x5")
    assert err.value.message == "layer 'conv:c=4,k=3x5': kernel has 2 values but the input has 3 spatial axes"
    assert err.value.hint == "give one value for all axes or 3 values joined by x"


def test_parse_shape():
    assert parse_shape("224x224x3") == (224, 224, 3)
    assert parse_shape("224") == (224,)
    assert parse_shape("16X112x112x3") == (16, 112, 112, 3)
    with pytest.raises(UsageError) as err:
        parse_shape("abc")
    assert err.value.message == "INPUT 'abc' is not a size, a shape or a recipe file"
    assert err.value.hint == "e.g. 224 (quick form), 224x224x3 (channels last), or recipes/x.toml"
    with pytest.raises(UsageError, match="sizes must be positive"):
        parse_shape("28x0x1")


def test_block_padding_keeps_odd_kernels_symmetric_and_even_ones_same():
    assert block_padding((3, 3)) == ((1, 1), (1, 1))
    assert block_padding((1,)) == ((0, 0),)
    assert block_padding((7, 5, 3)) == ((3, 3), (2, 2), (1, 1))
    assert block_padding((4,)) == "same"
    assert block_padding((3, 2)) == "same"  # one even axis: same on every axis


CONV_KEYS = (
    "conv keys: c (features), k (kernel), s (stride), p (padding), d (dilation), g (groups), "
    "bias (bias), pm (pad_mode), op (output_padding)"
)

ERRORS = [
    ("conv2", "unknown layer kind 'conv2'; did you mean 'conv'? (valid: avgpool, bn, bottleneck, conv, dense, "
     "denseblock, dropout, elu, flatten, gap, gelu, gmp, hard_tanh, identity, l2pool, leaky_relu, ln, maxpool, "
     "relu, relu6, resblock, sigmoid, silu, softplus, tanh, tconv, transition)", None),
    ("conv:c=8", "layer 'conv:c=8': conv needs k=", CONV_KEYS),
    ("conv:c=8,k", "layer 'conv:c=8,k': 'k' is not key=value", CONV_KEYS),
    ("conv:c=8,k=3,c=4", "layer 'conv:c=8,k=3,c=4': key 'c' given twice", None),
    ("conv:c=0,k=3", "layer 'conv:c=0,k=3': c=0 must be >= 1", None),
    ("conv:c=x,k=3", "layer 'conv:c=x,k=3': c='x' is not an integer", None),
    ("conv:c=8,k=3,d=2x0", "layer 'conv:c=8,k=3,d=2x0': d=0 must be >= 1", None),
    ("relu:x=1", "layer 'relu:x=1': relu takes no keys", None),
    ("conv:c=8,k=3,q=1", "layer 'conv:c=8,k=3,q=1': unknown key for conv 'q' (valid: bias, c, d, g, k, op, p, pm, s)", None),
    ("dense:c=10,dropout=1", "layer 'dense:c=10,dropout=1': unknown key for dense 'dropout' (valid: bias, c)", None),
    ("dropout:r=1", "layer 'dropout:r=1': r=1.0 must be in [0, 1)", None),
    ("conv:c=8,k=3,pm=wrap", "layer 'conv:c=8,k=3,pm=wrap': unknown pad mode 'wrap' (valid: circular, edge, reflect, zeros)", None),
    ("conv:c=8,k=3,op=1", "layer 'conv:c=8,k=3,op=1': op (output padding) applies to tconv only", None),
    ("tconv:c=8,k=3,pm=reflect", "layer 'tconv:c=8,k=3,pm=reflect': tconv supports only pm=zeros", None),
    ("conv:c=8,k=3,p=1-2-3", "layer 'conv:c=8,k=3,p=1-2-3': '1-2-3' is not a padding",
     "use same, valid, full, an integer (2), one per axis (1x2), or LO-HI (0-1)"),
    ("conv:c=8,k=3,bias=maybe", "layer 'conv:c=8,k=3,bias=maybe': bias='maybe' is not a boolean", "use true or false"),
    ("resblock:c=8,sc=none", "layer 'resblock:c=8,sc=none': unknown shortcut 'none' (valid: conv, pad)", None),
    ("bottleneck", "layer 'bottleneck': bottleneck needs c=", "bottleneck keys: c (features), s (stride), e (expansion)"),
]  # fmt: skip


@pytest.mark.parametrize(("token", "message", "hint"), ERRORS)
def test_error_messages(token, message, hint):
    with pytest.raises(LayerError) as err:
        parse_token(token)
    assert err.value.message == message
    assert err.value.hint == hint
    assert err.value.exit_code == 2  # a usage error: typed at the shell


def test_no_layers():
    with pytest.raises(LayerError) as err:
        parse_layers([])
    assert (err.value.message, err.value.hint) == ("no layers given", "e.g. conv:c=16,k=3,p=same relu gap dense:c=10")
