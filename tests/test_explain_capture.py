"""`cnncli.models.capture`: the activation at any named point, and gradients w.r.t. it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cnncli.arith import layers as L
from cnncli.errors import LayerError
from cnncli.models import build_model, forward_with_activations
from cnncli.models.capture import activation_at, capture_points, forward_at, point_shape, point_shapes

TOKENS = "conv:c=4,k=3,p=same bn relu resblock:c=8,s=2 denseblock:n=2,gr=4 transition:c=6 dropout gap dense"


@pytest.fixture(scope="module")
def model():
    # an rbg key: threefry's initializer programs compile slowly on XLA CPU (cnncli.models.build.init_rngs)
    m = build_model(L.parse_layers(TOKENS), (8, 8, 1), 3, rngs=nnx.Rngs(params=jax.random.key(0, impl="rbg"), dropout=1))
    m.eval()
    return m


@pytest.fixture(scope="module")
def x():
    return jax.random.normal(jax.random.key(1), (2, 8, 8, 1))


def test_points_in_call_order_include_every_conv(model):
    points = capture_points(model)
    assert points[:10] == ["conv1", "bn1", "relu1", "resblock1.conv1", "resblock1.bn1", "resblock1.conv2",
                           "resblock1.bn2", "resblock1.proj", "resblock1.proj_bn", "resblock1"]  # fmt: skip
    assert points[10:15] == ["denseblock1.layer1.bn1", "denseblock1.layer1.conv1", "denseblock1.layer1.bn2",
                             "denseblock1.layer1.conv2", "denseblock1.layer1"]  # fmt: skip
    assert {name for name, _ in model.conv_layers()} <= set(points)
    assert set(model.layer_names) <= set(points)
    shapes = point_shapes(model)
    assert list(shapes) == points
    assert shapes["resblock1.conv2"] == (4, 4, 8) and shapes["denseblock1"] == (4, 4, 16)
    assert shapes["denseblock1.layer2.bn1"] == (4, 4, 12) and shapes["gap1"] == (6,)
    assert point_shape(model, "transition1.conv") == (4, 4, 6)


def test_forward_unchanged_and_activations_agree(model, x):
    ref, acts = forward_with_activations(model, x, ["relu1", "resblock1", "transition1"])
    for name in capture_points(model):
        out, act = forward_at(model, x, name)
        np.testing.assert_allclose(out, ref, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(activation_at(model, x, name), act, atol=1e-6, err_msg=name)
        assert act.shape == (2, *point_shape(model, name))
    for name, value in acts.items():
        np.testing.assert_allclose(forward_at(model, x, name)[1], value, atol=1e-6)


def test_inner_point_is_the_submodule_output(model, x):
    block = model.resblock1
    h = model.relu1(model.bn1(model.conv1(x)))
    expected = block.conv2(block.bn1(block.conv1(h), relu=True))
    np.testing.assert_allclose(activation_at(model, x, "resblock1.conv2"), expected, atol=1e-5)
    # a BatchNorm point is before the ReLU fused into it
    pre = activation_at(model, x, "resblock1.bn1")
    assert float(pre.min()) < 0
    np.testing.assert_allclose(jax.nn.relu(pre), block.bn1(block.conv1(h), relu=True), atol=1e-5)


def test_gradient_wrt_delta_is_gradient_wrt_activation(model, x):
    """d logit / d delta against a finite difference along a random direction, on a block-internal point."""
    name = "resblock1.conv2"
    shape = (2, *point_shape(model, name))

    def score(delta):
        logits, act = forward_at(model, x, name, delta)
        return logits[:, 1].sum(), act

    grads, act = jax.jit(jax.grad(score, has_aux=True))(jnp.zeros(shape))
    assert act.shape == shape and float(jnp.abs(grads).sum()) > 0
    v = jax.random.normal(jax.random.key(2), shape)
    eps = 1e-2
    value = jax.jit(lambda d: score(d)[0])
    fd = (value(eps * v) - value(-eps * v)) / (2 * eps)
    np.testing.assert_allclose(float(jnp.vdot(grads, v)), float(fd), rtol=2e-2)


def test_activation_at_is_differentiable_and_leaves_model_intact(model, x):
    before = jax.tree.map(np.asarray, nnx.state(model, nnx.Param))
    g = jax.jit(jax.grad(lambda x: activation_at(model, x, "denseblock1.layer2.conv2")[..., 1].mean()))(x)
    assert g.shape == x.shape and float(jnp.abs(g).sum()) > 0
    after = jax.tree.map(np.asarray, nnx.state(model, nnx.Param))
    assert jax.tree.structure(before) == jax.tree.structure(after)
    assert isinstance(model.resblock1.conv2, nnx.Module) and isinstance(model.denseblock1, nnx.Module)


def test_unknown_point_suggests(model, x):
    with pytest.raises(LayerError, match=r"unknown layer 'resblock1.conv3'; did you mean 'resblock1.conv\d'"):
        forward_at(model, x, "resblock1.conv3")
    with pytest.raises(LayerError, match="unknown layer 'nope'"):
        point_shape(model, "nope")
