"""Tests for cnncli.models: built shapes against geometry, numerics against references.

Shapes and parameter counts use abstract models (`nnx.eval_shape`), so ImageNet-size
zoo models cost no memory and no initialization compute. Numerics run on tiny
arrays against naive NumPy references written from the layer docstrings.
"""

from __future__ import annotations

import fnmatch

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from cnncli.arith import geometry, layers, zoo
from cnncli.errors import LayerError, ShapeError
from cnncli.models import (
    abstract_model,
    build_model,
    forward_with_activations,
    param_count,
    pooling,
)

# (tokens, per-example input shape): every layer kind, padding name and pad mode,
# in 1-D, 2-D and 3-D.
SHAPE_CASES = [
    ("conv:c=4,k=3,p=same", (9, 9, 2)),
    ("conv:c=4,k=3,s=2,p=same", (9, 8, 2)),
    ("conv:c=4,k=4,s=3,p=same,d=2", (11, 10, 2)),
    ("conv:c=4,k=3,p=valid", (5, 6, 2)),
    ("conv:c=4,k=3,p=full", (5, 5, 2)),
    ("conv:c=4,k=3x5,p=1-2x0", (9, 9, 2)),
    ("conv:c=4,k=3,p=same,pm=reflect", (6, 7, 2)),
    ("conv:c=4,k=4,s=2,p=same,pm=circular", (7, 7, 2)),
    ("conv:c=4,k=3,p=2,pm=edge,d=2", (6, 6, 2)),
    ("conv:c=4,k=3,p=0-1,pm=circular", (6, 6, 2)),
    ("conv:c=4,k=3,p=full,pm=reflect", (6, 6, 2)),
    ("conv:c=4,k=3,g=2,bias=false", (6, 6, 2)),
    ("tconv:c=3,k=3,s=2,p=1,op=1", (4, 4, 2)),
    ("tconv:c=3,k=3,s=2,p=same", (4, 5, 2)),
    ("tconv:c=3,k=3,s=2,p=same,op=1", (4, 4, 2)),
    ("tconv:c=3,k=3,s=2,p=valid", (4, 5, 2)),
    ("tconv:c=3,k=2,s=3,p=valid", (4, 5, 2)),
    ("tconv:c=3,k=3,p=full", (6, 6, 2)),
    ("tconv:c=3,k=4,s=2,p=0-2,d=2", (4, 4, 2)),
    ("tconv:c=3,k=3,s=2,p=3", (6, 6, 2)),  # p > k-1: the direct conv's pads crop
    ("maxpool:k=2", (7, 7, 2)),
    ("maxpool:k=3,s=2,p=1", (9, 9, 2)),
    ("maxpool:k=4", (9, 9, 1)),
    ("maxpool:k=5,s=2,p=2", (9, 9, 1)),
    ("maxpool:k=2,ceil=true", (7, 7, 2)),
    ("maxpool:k=3,s=3,p=1,ceil=true", (5, 5, 2)),
    ("maxpool:k=2,s=1,d=2,p=same", (6, 6, 1)),
    ("avgpool:k=2", (7, 6, 2)),
    ("avgpool:k=3,s=2,p=1,ceil=true", (6, 6, 2)),
    ("avgpool:k=2,d=2,p=same", (7, 7, 2)),
    ("l2pool:k=3,s=2,p=full", (6, 6, 2)),
    ("l2pool:k=2,ceil=true", (5, 5, 2)),
    ("conv:c=2,k=3 gap dense", (6, 6, 1)),
    ("conv:c=2,k=3 gmp dense:c=5,bias=false", (6, 6, 1)),
    ("flatten dense:c=7 bn ln dropout:r=0.3 relu", (3, 3, 2)),
    ("dense:c=5 ln bn", (4, 4, 3)),
    ("resblock:c=4", (8, 8, 4)),
    ("resblock:c=8,s=2", (7, 7, 4)),
    ("resblock:c=8,s=2,sc=pad", (7, 7, 4)),
    ("resblock:c=4,k=5", (8, 8, 4)),
    ("resblock:c=6,k=2,s=2", (7, 7, 4)),
    ("resblock:c=6,k=4", (7, 7, 4)),
    ("bottleneck:c=2,s=2", (7, 7, 4)),
    ("bottleneck:c=2", (7, 7, 8)),
    ("bottleneck:c=2,e=2", (7, 7, 4)),
    ("denseblock:n=2,gr=3,bs=2 transition:c=4", (7, 7, 4)),
    ("conv:c=3,k=5,s=2 maxpool:k=2 resblock:c=4,sc=pad l2pool:k=2 gap dense", (40, 1)),
    ("conv:c=3,k=3,p=same,pm=reflect maxpool:k=2 resblock:c=4,s=2 gap dense", (6, 8, 8, 1)),
    ("tconv:c=2,k=2,s=2 avgpool:k=3,s=2,p=1,ceil=true bottleneck:c=1 flatten dense", (3, 4, 4, 1)),
    *((act, (5, 5, 2)) for act in layers.ACTIVATIONS),
]

# torchvision's published parameter counts (ImageNet, 1000 classes).
TORCHVISION_PARAMS = {
    "alexnet": 61_100_840,
    "vgg16": 138_357_544,
    "resnet18": 11_689_512,
    "resnet50": 25_557_032,
    "densenet121": 7_978_856,
}


def rngs(params: int = 0, dropout: int = 1) -> nnx.Rngs:
    """RBG keys: XLA CPU compiles their random ops ~10x faster than threefry's (seconds per
    kernel shape on 2 cores), and these tests build many small models eagerly."""
    return nnx.Rngs(params=jax.random.key(params, impl="rbg"), dropout=jax.random.key(dropout, impl="rbg"))


def traced_shapes(model, input_shape):
    """Per-layer output shapes of a real (traced, not computed) eval-mode forward pass."""
    model.eval()
    x = jax.ShapeDtypeStruct((2, *input_shape), jnp.float32)
    out, acts = nnx.eval_shape(lambda m, x: forward_with_activations(m, x, m.layer_names), model, x)
    return out.shape, {name: a.shape for name, a in acts.items()}


@pytest.mark.parametrize(("tokens", "input_shape"), SHAPE_CASES, ids=[f"{t}@{s}" for t, s in SHAPE_CASES])
def test_built_shapes_and_params_match_geometry(tokens, input_shape):
    specs = layers.parse_layers(tokens)
    analysis = geometry.analyze(specs, input_shape, num_classes=10)
    model = abstract_model(specs, input_shape, 10)
    out, acts = traced_shapes(model, input_shape)
    assert model.layer_names == [row.name for row in analysis.layers]
    for row, layer_shape in zip(analysis.layers, model.layer_shapes):
        assert acts[row.name] == (2, *row.output), row.name
        assert layer_shape == row.output, row.name
        assert param_count(getattr(model, row.name)) == row.params, row.name
    assert out == (2, *analysis.output)
    assert model.output_shape == analysis.output


# Deeper variants of architectures already covered: 2-10 s each on 2 busy cores.
SLOW_ZOO = {"resnet101", "resnet152", "resnet110", "densenet169"}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_ZOO else n for n in zoo.names()]
)
def test_zoo_builds_with_geometry_shapes_and_params(name):
    specs = zoo.build(name)
    input_shape = zoo.default_input(name)
    analysis = geometry.analyze(specs, input_shape)
    model = abstract_model(specs, input_shape, 1000)
    out, _ = traced_shapes(model, input_shape)
    assert out == (2, *analysis.output)
    assert param_count(model) == analysis.total.params
    if name in TORCHVISION_PARAMS:
        assert param_count(model) == TORCHVISION_PARAMS[name]


def test_build_model_is_concrete_and_in_training_mode():
    specs = layers.parse_layers("conv:c=4,k=3,p=same bn relu dropout:r=0.5 gap dense")
    model = build_model(specs, (6, 6, 1), 3, rngs=rngs())
    assert model.bn1.use_running_average is False and model.dropout1.deterministic is False
    assert model(jnp.ones((2, 6, 6, 1))).shape == (2, 3)


# ------------------------------------------------------------------ API


def test_layer_names_paths_and_globs():
    specs = layers.parse_layers(
        "conv:c=4,k=3 bn relu resblock:c=8,s=2 bottleneck:c=4 denseblock:n=3,gr=2 transition:c=4 gap dense"
    )
    model = abstract_model(specs, (12, 12, 3), 5)
    assert model.layer_names == layers.layer_names(specs)
    paths = {".".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    for expected in (
        "conv1.kernel", "conv1.bias", "bn1.scale", "resblock1.conv1.kernel", "resblock1.conv2.kernel",
        "resblock1.bn2.bias", "resblock1.proj.kernel", "resblock1.proj_bn.scale", "bottleneck1.conv3.kernel",
        "bottleneck1.proj.kernel", "denseblock1.layer3.conv1.kernel", "transition1.conv.kernel", "dense1.kernel",
    ):  # fmt: skip
        assert expected in paths, expected
    assert {p.split(".")[0] for p in paths} <= set(model.layer_names)
    assert set(fnmatch.filter(paths, "conv*")) == {"conv1.bias", "conv1.kernel"}
    assert len(fnmatch.filter(paths, "resblock1.*")) == 9  # 3 kernels (no biases) + 3 bn x (scale, bias)
    stats = {".".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(model, nnx.BatchStat))}
    assert "bn1.mean" in stats and "bn1.mean" not in paths


def test_graphdef_is_hashable():
    """A graphdef can be a static argument to jax.jit: every static attribute is hashable."""
    specs = layers.parse_layers(
        "conv:c=4,k=3,p=same,pm=reflect tconv:c=4,k=3,p=1 maxpool:k=3,s=2,p=1,ceil=true avgpool:k=2 "
        "resblock:c=8,sc=pad,s=2 resblock:c=8,s=2 bottleneck:c=2 denseblock:n=2,gr=2 transition:c=4 "
        "dropout ln gelu gap dense"
    )
    model = abstract_model(specs, (32, 32, 3), 3)
    assert hash(nnx.graphdef(model)) == hash(nnx.graphdef(abstract_model(specs, (32, 32, 3), 3)))


def test_conv_layers_in_layer_order():
    specs = layers.parse_layers("conv:c=4,k=3 resblock:c=8,s=2,sc=pad denseblock:n=11,gr=2 transition:c=4 tconv:c=2,k=2")
    model = abstract_model(specs, (12, 12, 3), 5)
    names = [name for name, _ in model.conv_layers()]
    dense = [f"denseblock1.layer{i}.conv{j}" for i in range(1, 12) for j in (1, 2)]
    assert names == ["conv1", "resblock1.conv1", "resblock1.conv2", *dense, "transition1.conv", "tconv1"]
    assert all(isinstance(m, (nnx.Conv, nnx.ConvTranspose)) for _, m in model.conv_layers())


def test_forward_with_activations_and_unknown_name():
    specs = layers.parse_layers("conv:c=4,k=3,p=same relu maxpool:k=2 flatten dense")
    model = build_model(specs, (8, 8, 1), 3, rngs=rngs())
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 1))
    out, acts = forward_with_activations(model, x, ["relu1", "maxpool1"])
    assert set(acts) == {"relu1", "maxpool1"}
    assert acts["relu1"].shape == (2, 8, 8, 4) and float(acts["relu1"].min()) >= 0
    np.testing.assert_allclose(out, model(x), rtol=1e-6)
    with pytest.raises(LayerError, match="did you mean 'relu1'"):
        forward_with_activations(model, x, ["relu"])


@pytest.mark.parametrize(
    ("tokens", "input_shape", "match"),
    [
        ("conv:c=4,k=7", (5, 5, 1), "larger|padded input"),
        ("flatten conv:c=4,k=3", (5, 5, 1), "spatial"),
        ("conv:c=4,k=3,g=3", (5, 5, 2), "groups"),
        ("resblock:c=2,sc=pad,s=2", (6, 6, 4), "sc=pad"),
    ],
)
def test_shape_errors(tokens, input_shape, match):
    with pytest.raises(ShapeError, match=match):
        abstract_model(layers.parse_layers(tokens), input_shape, 10)


# -------------------------------------------------------------- numerics


def naive_conv(x, w, b, stride, dilation, pads, mode, groups=1):
    """Direct-loop N-D conv of one example: x (*S, C), w (*K, C/g, O), explicit pads."""
    np_mode = {"zeros": "constant", "circular": "wrap", "reflect": "reflect", "edge": "edge"}[mode]
    x = np.pad(x, (*pads, (0, 0)), mode=np_mode)
    kernel = w.shape[:-2]
    keff = [(k - 1) * d + 1 for k, d in zip(kernel, dilation)]
    out_sizes = [(i - ke) // s + 1 for i, ke, s in zip(x.shape[:-1], keff, stride)]
    cin_g, cout = w.shape[-2], w.shape[-1]
    cout_g = cout // groups
    y = np.zeros((*out_sizes, cout))
    for pos in np.ndindex(*out_sizes):
        for taps in np.ndindex(*kernel):
            src = tuple(p * s + t * d for p, s, t, d in zip(pos, stride, taps, dilation))
            for o in range(cout):
                g = o // cout_g
                y[pos + (o,)] += x[src][g * cin_g : (g + 1) * cin_g] @ w[taps][:, o]
    return y + (0 if b is None else b)


@pytest.mark.parametrize(
    ("token", "input_shape"),
    [
        ("conv:c=3,k=3,p=same,pm=zeros", (7, 2)),
        ("conv:c=3,k=3,p=same,pm=circular", (7, 2)),
        ("conv:c=3,k=3,p=same,pm=reflect", (7, 2)),
        ("conv:c=3,k=3,p=same,pm=edge", (7, 2)),
        ("conv:c=3,k=3,s=2,d=2,p=1-3,pm=reflect", (9, 2)),
        ("conv:c=4,k=2x3,s=2x1,p=0-1x2,pm=circular,g=2", (5, 6, 2)),
        ("conv:c=2,k=3,p=full,pm=edge,bias=false", (4, 5, 1)),
    ],
)
def test_conv_pad_modes_match_naive_reference(token, input_shape):
    spec = layers.parse_token(token)
    model = build_model([spec], input_shape, 1, rngs=rngs())
    conv = model.conv1
    if conv.bias is not None:  # a non-zero bias, so the reference checks it too
        conv.bias.set_value(jax.random.normal(jax.random.key(3), conv.bias.shape))
    x = np.asarray(jax.random.normal(jax.random.key(2), (2, *input_shape)))
    nd = len(input_shape) - 1
    pads = geometry.analyze([spec], input_shape).layers[0].padding
    stride = layers.broadcast(spec.stride, nd, what="s")
    dilation = layers.broadcast(spec.dilation, nd, what="d")
    w = np.asarray(conv.kernel[...])
    b = None if conv.bias is None else np.asarray(conv.bias[...])
    y = model(jnp.asarray(x))
    for n in range(2):
        ref = naive_conv(x[n], w, b, stride, dilation, pads, spec.pad_mode, spec.groups)
        np.testing.assert_allclose(y[n], ref, rtol=1e-4, atol=1e-5)


def test_conv_same_padding_is_xla_same():
    spec = layers.parse_token("conv:c=3,k=4,s=3,d=2,p=same")
    model = build_model([spec], (11, 10, 2), 1, rngs=rngs())
    x = jax.random.normal(jax.random.key(0), (2, 11, 10, 2))
    ref = jax.lax.conv_general_dilated(
        x, model.conv1.kernel[...], (3, 3), "SAME", rhs_dilation=(2, 2), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    np.testing.assert_allclose(model(x), ref + model.conv1.bias[...], rtol=1e-5, atol=1e-6)


def test_tconv_matches_hand_computation_1d():
    """x = [1, 2], kernel [1, 10, 100], s=2, p=1, op=1: each x[i] scatters x[i]*w[t] to i*s - p + t."""
    model = build_model([layers.parse_token("tconv:c=1,k=3,s=2,p=1,op=1,bias=false")], (2, 1), 1, rngs=rngs())
    model.tconv1.kernel.set_value(jnp.array([1.0, 10.0, 100.0]).reshape(3, 1, 1))
    y = model(jnp.array([1.0, 2.0]).reshape(1, 2, 1))
    # out = (2 - 1)*2 - 2*1 + (3 - 1) + 1 + 1 = 4; y[0] = 1*10, y[1] = 1*100 + 2*1, y[2] = 2*10, y[3] = 2*100
    np.testing.assert_allclose(y.reshape(-1), [10.0, 102.0, 20.0, 200.0])


def naive_tconv(x, w, stride, dilation, lo, out_sizes, groups):
    """PyTorch ConvTranspose as a scatter: y[i*s - lo + t*d] += x[i] @ w[t] (per group)."""
    cin, cout = x.shape[-1], w.shape[-1]
    cin_g, cout_g = cin // groups, cout // groups
    y = np.zeros((*out_sizes, cout))
    for pos in np.ndindex(*x.shape[:-1]):
        for taps in np.ndindex(*w.shape[:-2]):
            dst = tuple(p * s - lo_ + t * d for p, s, lo_, t, d in zip(pos, stride, lo, taps, dilation))
            if all(0 <= v < o for v, o in zip(dst, out_sizes)):
                for g in range(groups):
                    part = x[pos][g * cin_g : (g + 1) * cin_g] @ w[taps][:, g * cout_g : (g + 1) * cout_g]
                    y[dst + (slice(g * cout_g, (g + 1) * cout_g),)] += part
    return y


@pytest.mark.parametrize(
    "token",
    ["tconv:c=4,k=3,s=2,p=1,op=1,g=2", "tconv:c=2,k=2x3,s=3x2,p=0-1x2,d=1x2", "tconv:c=2,k=3,s=2,p=3", "tconv:c=2,k=3,s=2,p=full"],
)
def test_tconv_matches_scatter_reference_and_lax(token):
    spec = layers.parse_token(token)
    input_shape = (3, 4, 2)
    model = build_model([spec], input_shape, 1, rngs=rngs())
    x = jax.random.normal(jax.random.key(2), (1, *input_shape))
    y = model(x)
    t = model.tconv1
    w, b = np.asarray(t.kernel[...]), np.asarray(t.bias[...])
    stride = layers.broadcast(spec.stride, 2, what="s")
    dilation = layers.broadcast(spec.dilation, 2, what="d")
    if spec.groups == 1:
        row = geometry.analyze([spec], input_shape).layers[0]
        assert y.shape[1:] == row.output
        lo = [p[0] for p in row.padding]  # the direct conv's low padding, PyTorch's convention
    else:  # geometry takes g=1 only; this token has p=1
        lo = [1, 1]
    ref = naive_tconv(np.asarray(x[0]), w, stride, dilation, lo, y.shape[1:-1], spec.groups) + b
    np.testing.assert_allclose(y[0], ref, rtol=1e-4, atol=1e-5)
    if spec.groups == 1:  # lax.conv_transpose(transpose_kernel=True) is the gradient of a conv
        lax_y = jax.lax.conv_transpose(
            x, jnp.swapaxes(t.kernel[...], -1, -2), t.strides, t.padding, rhs_dilation=t.kernel_dilation,
            dimension_numbers=("NHWC", "HWIO", "NHWC"), transpose_kernel=True,
        )  # fmt: skip
        np.testing.assert_allclose(y, lax_y + b, rtol=1e-4, atol=1e-5)


def _pool_grad(fn, x):
    """Gradient of a weighted sum (distinct weights, so every output's routing shows)."""

    def loss(x):
        y = fn(x)
        return jnp.sum(y * jnp.arange(1.0, 1.0 + y.size).reshape(y.shape))

    return jax.jit(jax.grad(loss))(x)  # one compile, not one per eager op


@pytest.mark.parametrize(
    ("window", "strides", "dilation", "pads", "impls"),
    [
        ((2, 2), (2, 2), (1, 1), ((0, 0), (0, 0)), ("tiles", "slices", "reshape")),
        ((3, 3), (3, 3), (1, 1), ((0, 0), (0, 0)), ("tiles", "slices", "reshape")),
        ((4, 4), (4, 4), (1, 1), ((0, 0), (0, 0)), ("tiles", "slices", "reshape")),
        ((3, 3), (2, 2), (1, 1), ((1, 1), (1, 2)), ("slices",)),
    ],
)
def test_max_pool_fast_paths_equal_reduce_window(window, strides, dilation, pads, impls):
    x = jax.random.permutation(jax.random.key(0), jnp.arange(2 * 9 * 11 * 3, dtype=jnp.float32))
    x = x.reshape(2, 9, 11, 3) / 10.0  # distinct values: no ties, so gradients are unique
    ref = lambda x: pooling.max_pool(x, window, strides, dilation, pads, impl="reduce_window")  # noqa: E731
    for impl in impls:
        fast = lambda x: pooling.max_pool(x, window, strides, dilation, pads, impl=impl)  # noqa: E731
        np.testing.assert_array_equal(fast(x), ref(x))
        np.testing.assert_array_equal(_pool_grad(fast, x), _pool_grad(ref, x))


@pytest.mark.parametrize("shape", [(2, 9, 11, 3), (2, 8, 3), (1, 5, 4, 7, 2)])
def test_tiles_max_pool_shares_ties_equally_and_crops_like_floor_mode(shape):
    """Ties (all-zero windows after ReLU): each maximum gets dy / ties; cropped rows get 0."""
    nd = len(shape) - 2
    window = (2,) * nd
    rng = np.random.default_rng(0)
    x = np.maximum(rng.normal(size=shape), 0).astype(np.float32)  # relu'd: many tied zeros
    x[(0,) * (nd + 2)] = x[(0,) + (1,) * nd + (0,)] = 5.0  # a two-way tie of non-zeros too
    y = pooling.max_pool(jnp.asarray(x), window, window, impl="tiles")
    dy = rng.normal(size=y.shape).astype(np.float32)
    dx = jax.grad(lambda x: jnp.sum(pooling.max_pool(x, window, window, impl="tiles") * dy))(jnp.asarray(x))
    expected = np.zeros_like(x)
    for idx in np.ndindex(*y.shape):  # by hand: the window of output idx, its maxima, dy shared
        n, *o, c = idx
        sl = (n, *(slice(2 * i, 2 * i + 2) for i in o), c)
        win = x[sl]
        hit = win == win.max()
        assert win.max() == y[idx]
        expected[sl] += np.where(hit, dy[idx] / hit.sum(), 0.0)
    np.testing.assert_allclose(np.asarray(dx), expected, rtol=1e-6, atol=1e-7)


def test_dilated_max_pool_values_and_gradient():
    """reduce_window has no VJP with window dilation; the slices path is checked by hand here."""
    x = jax.random.permutation(jax.random.key(0), jnp.arange(1 * 7 * 3, dtype=jnp.float32)).reshape(1, 7, 3)
    fast = lambda x: pooling.max_pool(x, (2,), (2,), (3,), ((1, 0),))  # noqa: E731
    ref = pooling.max_pool(x, (2,), (2,), (3,), ((1, 0),), impl="reduce_window")
    np.testing.assert_array_equal(fast(x), ref)
    grad = jax.grad(lambda x: fast(x).sum())(x)
    xp = np.concatenate([np.full((1, 1, 3), -np.inf), np.asarray(x)], axis=1)  # pad lo 1
    expected = np.zeros_like(xp)
    for j in range(ref.shape[1]):  # each window reads padded positions 2j and 2j + 3
        for c in range(3):
            a, b = 2 * j, 2 * j + 3
            expected[0, a if xp[0, a, c] > xp[0, b, c] else b, c] += 1
    np.testing.assert_array_equal(grad, expected[:, 1:])


def test_max_pool_auto_choice():
    tiling = ((0, 0), (0, 0))
    assert pooling.choose_max_impl((2, 2), (2, 2), (1, 1), tiling) == "tiles"
    assert pooling.choose_max_impl((3, 3), (2, 2), (1, 1), ((1, 1), (1, 1))) == "slices"
    assert pooling.choose_max_impl((4, 4), (4, 4), (1, 1), tiling) == "tiles"
    assert pooling.choose_max_impl((2, 2), (2, 2), (1, 1), ((0, 1), (0, 0))) == "slices"  # padded: not tiles
    assert pooling.choose_max_impl((5, 5), (2, 2), (1, 1), ((2, 2), (2, 2))) == "reduce_window"
    assert pooling.choose_max_impl((5, 5), (2, 2), (2, 2), ((2, 2), (2, 2))) == "slices"  # dilated


def torch_pool_1d(x, k, s, p, ceil, kind):
    """PyTorch's 1-D max/avg pool (count_include_pad=True, ceil_mode) by its own index rules."""
    n = len(x)
    span = n + 2 * p - k
    out = (-(-span // s) if ceil else span // s) + 1
    if ceil and (out - 1) * s >= n + p:
        out -= 1
    y = []
    for j in range(out):
        start, end = j * s - p, min(j * s - p + k, n + p)  # PyTorch: the window stops at the padded end
        window = [x[i] for i in range(max(start, 0), min(end, n))]
        if kind == "max":
            y.append(max(window))
        else:
            y.append(sum(window) / (end - start))
    return y


@pytest.mark.parametrize(
    ("k", "s", "p", "ceil", "n"),
    [(2, 2, 0, True, 5), (3, 3, 1, True, 5), (3, 2, 1, True, 6), (3, 2, 1, False, 6), (2, 2, 1, True, 4), (3, 2, 0, True, 8)],
)
def test_pools_follow_pytorch_ceil_and_count_include_pad(k, s, p, ceil, n):
    x = np.arange(1.0, n + 1.0) ** 1.5  # increasing, distinct
    ceil_flag = "true" if ceil else "false"
    for kind in ("max", "avg"):
        spec = layers.parse_token(f"{kind}pool:k={k},s={s},p={p},ceil={ceil_flag}")
        model = build_model([spec], (n, 1), 1, rngs=rngs())
        y = model(jnp.asarray(x, jnp.float32).reshape(1, n, 1)).reshape(-1)
        np.testing.assert_allclose(y, torch_pool_1d(list(x), k, s, p, ceil, kind), rtol=1e-6)


def test_l2_pool_is_root_sum_of_squares_with_finite_gradient():
    spec = layers.parse_token("l2pool:k=2,s=2")
    model = build_model([spec], (4, 4, 1), 1, rngs=rngs())
    x = jax.random.normal(jax.random.key(0), (1, 4, 4, 1)).at[0, :2, :2, 0].set(0.0)  # one all-zero window
    ref = np.sqrt((np.asarray(x).reshape(1, 2, 2, 2, 2, 1) ** 2).sum(axis=(2, 4)))
    np.testing.assert_allclose(model(x), ref, rtol=1e-6)
    grad = jax.grad(lambda x: model(x).sum())(x)
    assert np.isfinite(np.asarray(grad)).all()


def test_avg_pool_counts_padding_but_not_ceil_overhang():
    spec = layers.parse_token("avgpool:k=3,s=2,p=1,ceil=true")
    model = build_model([spec], (4, 4, 1), 1, rngs=rngs())
    y = model(jnp.ones((1, 4, 4, 1)))
    # each row of windows: [pad,1,1] -> 2/3, [1,1,1] -> 1, [1,pad] + overhang -> 1/2... output 2x2 here
    expected_1d = np.array(torch_pool_1d([1.0] * 4, 3, 2, 1, True, "avg"))
    np.testing.assert_allclose(y[0, :, :, 0], np.outer(expected_1d, expected_1d), rtol=1e-6)


def test_global_pools_and_flatten_order():
    x = jnp.arange(2 * 2 * 3 * 4, dtype=jnp.float32).reshape(2, 2, 3, 4)
    for token, ref in (("gap", x.mean(axis=(1, 2))), ("gmp", x.max(axis=(1, 2))), ("flatten", x.reshape(2, -1))):
        model = build_model(layers.parse_layers(token), (2, 3, 4), 1, rngs=rngs())
        np.testing.assert_array_equal(model(x), ref)


def test_activations_known_values():
    x = jnp.array([-2.0, -0.5, 0.0, 0.5, 7.0]).reshape(1, 5, 1)
    expected = {
        "relu": [0, 0, 0, 0.5, 7], "relu6": [0, 0, 0, 0.5, 6], "hard_tanh": [-1, -0.5, 0, 0.5, 1],
        "leaky_relu": [-0.02, -0.005, 0, 0.5, 7], "identity": [-2, -0.5, 0, 0.5, 7],
    }  # fmt: skip
    for name in layers.ACTIVATIONS:
        model = build_model([layers.parse_token(name)], (5, 1), 1, rngs=rngs())
        y = np.asarray(model(x)).reshape(-1)
        assert np.isfinite(y).all()
        if name in expected:
            np.testing.assert_allclose(y, expected[name], rtol=1e-6, atol=1e-7)
    gelu = build_model([layers.parse_token("gelu")], (5, 1), 1, rngs=rngs())
    np.testing.assert_allclose(gelu(jnp.ones((1, 1, 1))).reshape(()), 0.8413447, rtol=1e-6)  # exact erf form


# -------------------------------------------------------- train / eval mode


def test_dropout_train_vs_eval():
    model = build_model(layers.parse_layers("dropout:r=0.5"), (64, 1), 1, rngs=rngs())
    x = jnp.ones((4, 64, 1))
    a, b = model(x), model(x)
    assert not np.array_equal(a, b)  # the stream advances between calls
    assert set(np.unique(np.asarray(a))) <= {0.0, 2.0}  # kept values scaled by 1 / (1 - r)
    model.eval()
    np.testing.assert_array_equal(model(x), x)
    np.testing.assert_array_equal(model(x), model(x))
    model.train()
    assert not np.array_equal(model(x), x)


def test_batch_norm_train_updates_stats_eval_uses_them():
    model = build_model(layers.parse_layers("bn"), (3, 2), 1, rngs=rngs())
    x = jax.random.normal(jax.random.key(0), (8, 3, 2)) * 3.0 + 5.0
    y = model(x)  # training: batch statistics, momentum 0.9
    np.testing.assert_allclose(y.mean(axis=(0, 1)), 0.0, atol=1e-5)
    np.testing.assert_allclose(model.bn1.mean[...], 0.1 * x.mean(axis=(0, 1)), rtol=1e-5)
    view = nnx.view(model, use_running_average=True, deterministic=True, raise_if_not_found=False)
    mean, var = model.bn1.mean[...], model.bn1.var[...]
    np.testing.assert_allclose(view(x), (x - mean) / jnp.sqrt(var + 1e-5), rtol=1e-5, atol=1e-5)
    assert model.bn1.use_running_average is False  # the view did not change the model
    model.eval()
    np.testing.assert_array_equal(model(x), view(x))
    np.testing.assert_array_equal(model.bn1.mean[...], mean)  # eval does not update


def _bn_relu_case():
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.normal(0.5, 2.0, (8, 4, 4, 6)), jnp.float32)
    scale = jnp.asarray(rng.normal(1.0, 0.3, 6), jnp.float32)
    bias = jnp.asarray(rng.normal(size=6), jnp.float32)
    up = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
    return x, scale, bias, up


def test_fused_batch_norm_relu_matches_batch_norm_then_relu():
    """relu=True: the same values, statistics and gradients as autodiff through jax.nn.relu."""
    from cnncli.models.norm import batch_norm_train

    x, scale, bias, up = _bn_relu_case()

    def loss(fused):
        def f(x, scale, bias):
            if fused:
                y, mean, var = batch_norm_train(x, scale, bias, 1e-5, relu=True)
            else:
                y, mean, var = batch_norm_train(x, scale, bias, 1e-5)
                y = jax.nn.relu(y)
            return jnp.sum(y * up), (y, mean, var)

        return jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True)(x, scale, bias)

    (_, fused_aux), fused_grads = loss(True)
    (_, ref_aux), ref_grads = loss(False)
    assert float(jnp.mean(fused_aux[0] == 0)) > 0.2  # the mask matters in this case
    for got, want in zip((*fused_aux, *fused_grads), (*ref_aux, *ref_grads)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def test_models_fuse_batch_norm_and_the_relu_after_it(monkeypatch):
    """`bn relu` tokens and the blocks' bn-relu pairs call BatchNorm once with relu=True;
    a bn followed by anything else (or by the residual add) keeps relu=False."""
    from cnncli.models import norm

    calls = []
    original = norm.batch_norm_train

    def spy(x, scale, bias, epsilon, native=False, relu=False):
        calls.append(relu)
        return original(x, scale, bias, epsilon, native=native, relu=relu)

    monkeypatch.setattr(norm, "batch_norm_train", spy)
    tokens = "conv:c=4,k=3,p=1 bn relu conv:c=4,k=3,p=1 bn tanh resblock:c=4 bn gap dense"
    model = build_model(layers.parse_layers(tokens), (6, 6, 3), 2, rngs=rngs())
    x = jax.random.normal(jax.random.key(1), (4, 6, 6, 3))
    y = model(x)
    assert calls == [True, False, True, False, False]  # bn1+relu, bn2 (tanh), block bn1+relu, block bn2, last bn
    model.eval()  # running statistics: the same fused form, no statistics update
    e = model(x)
    assert y.shape == e.shape == (4, 2) and bool(jnp.all(jnp.isfinite(e)))
    stem = nnx.view(model, use_running_average=True, raise_if_not_found=False)
    h = stem.conv1(x)
    np.testing.assert_allclose(stem.bn1(h, relu=True), jax.nn.relu(stem.bn1(h)), rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------- gradients


@pytest.mark.parametrize(
    ("tokens", "input_shape"),
    [
        # Every block kind in one model: one compile instead of four (compiles dominate here).
        (
            "conv:c=4,k=3,p=1,bias=false bn relu resblock:c=8,s=2 resblock:c=8 resblock:c=12,s=2,sc=pad "
            "bottleneck:c=4 denseblock:n=2,gr=4,bs=2 transition:c=6 bn relu gap dense",
            (16, 16, 3),
        ),
        ("conv:c=4,k=5,s=2,pm=reflect,p=same relu maxpool:k=3,s=2,p=1 l2pool:k=2 flatten dropout:r=0.2 dense", (40, 2)),
        ("tconv:c=3,k=3,s=2,p=1,op=1 relu avgpool:k=2,ceil=true conv:c=4,k=3,d=2,pm=circular,p=same gmp dense", (5, 5, 1)),
    ],
    ids=["blocks-2d", "conv1d", "tconv"],
)
def test_one_gradient_step_is_finite(tokens, input_shape):
    model = build_model(layers.parse_layers(tokens), input_shape, 3, rngs=rngs())
    optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
    x = jax.random.normal(jax.random.key(0), (4, *input_shape))
    labels = jnp.array([0, 1, 2, 0])

    def loss_fn(model):
        return optax.softmax_cross_entropy_with_integer_labels(model(x), labels).mean()

    @nnx.jit
    def step(model, optimizer):
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss, grads

    before = jax.tree.map(np.asarray, nnx.state(model, nnx.Param))
    loss, grads = step(model, optimizer)
    assert np.isfinite(float(loss))
    leaves = jax.tree.leaves(grads)
    assert leaves and all(np.isfinite(np.asarray(g)).all() for g in leaves)
    after = nnx.state(model, nnx.Param)
    changed = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after))]
    assert any(changed)
