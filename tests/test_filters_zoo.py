"""``inspect-filters`` on every zoo architecture and on 1-D models: every conv, blocks included.

The models are built from the zoo's tokens at small inputs with random weights (no
training: what is checked is where each conv's response is read and that its maps,
boxes and dead fractions agree with the layer geometry ``conv-arith`` computes).
"""

from __future__ import annotations

import numpy as np
import pytest

from cnncli.arith import zoo
from cnncli.arith.geometry import analyze

SMALL_INPUT = {"alexnet": (64, 64, 3), "lenet5": (28, 28, 1)}  # the rest: 32x32x3 (1x1 after the last stage)


def random_run(specs, shape, classes: int = 10, seed: int = 0):
    """A `LoadedRun` around a model with random weights, filled without running an initializer
    (ResNet-152's 58M parameters in seconds): N(0, 0.05) parameters, BatchNorm statistics 0 and 1."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from cnncli.models import abstract_model
    from cnncli.runs.load import LoadedRun

    model = abstract_model(specs, shape, classes)
    graphdef, state = nnx.split(model)
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        keys = [str(getattr(p, "key", getattr(p, "name", p))) for p in path]
        name = next((k for k in reversed(keys) if k in ("var", "scale", "mean", "bias", "kernel")), keys[-1])
        if name in ("var", "scale"):
            return jnp.ones(leaf.shape, leaf.dtype)
        if name in ("mean", "bias"):
            return jnp.zeros(leaf.shape, leaf.dtype)
        return jnp.asarray(rng.normal(0, 0.05, leaf.shape).astype(np.float32))

    model = nnx.merge(graphdef, jax.tree_util.tree_map_with_path(fill, state))
    model.eval()
    c = shape[-1]
    data = {"class_names": [str(i) for i in range(classes)], "input_shape": list(shape),
            "mean": [0.5] * c, "std": [0.25] * c, "value_range": [0.0, 1.0]}  # fmt: skip
    return LoadedRun(".", None, data, model, tuple(specs), 0, {})


def geometry_rows(specs, shape, classes: int = 10) -> dict:
    """Every row of conv-arith's table, blocks' parts included, by name."""
    rows = {}
    for row in analyze(specs, shape, num_classes=classes).layers:
        rows[row.name] = row
        rows.update({c.name: c for c in row.children or []})
    return rows


def deepest_block_conv(names: list[str]) -> str:
    """The last conv inside a block, else the last conv."""
    inner = [n for n in names if "." in n]
    return (inner or names)[-1]


@pytest.mark.slow  # one compile of each architecture's forward pass (ResNet-152: about 35 s on 2 loaded cores)
@pytest.mark.parametrize("arch", zoo.names())
def test_every_conv_of_every_zoo_architecture(arch):
    from cnncli.inspect.activations import feature_maps
    from cnncli.inspect.filters import dead_fractions
    from cnncli.inspect.probe import conv_layers
    from cnncli.models.capture import point_shapes

    shape = SMALL_INPUT.get(arch, (32, 32, 3))
    specs = zoo.build(arch, 10)
    run = random_run(specs, shape)
    rows = geometry_rows(specs, shape)
    convs = conv_layers(run)
    assert [c.name for c in convs] == [n for n, r in rows.items() if r.kind == "conv"]  # --list shows them all
    shapes = point_shapes(run.model)  # one abstract pass with every point tapped
    for c in convs:  # each response is read where the conv's output (or its BN's) has the conv's shape
        assert shapes[c.response] == tuple(rows[c.name].output)
    name = deepest_block_conv([c.name for c in convs])
    info = next(c for c in convs if c.name == name)
    x = np.random.default_rng(1).uniform(size=(2, *shape)).astype(np.float32)
    fm = feature_maps(run, name, x[0], input_name="noise")
    out = rows[name].output
    assert fm.shown == info.response and fm.maps.shape == (out[-1], *out[:-1])
    assert fm.peak_value == pytest.approx(float(fm.maps.max())) and np.isfinite(fm.maps).all()
    assert fm.box.rf == tuple(rows[info.response].rf)  # the field conv-arith gives that point
    dead = dead_fractions(run, info, x)
    names = run.model.layer_names
    relu_after = info.response in names and getattr(specs[names.index(info.response)], "kind", "") == "relu"
    if info.response_relu or relu_after:
        assert fm.maps.min() >= 0 and dead.shape == (info.filters,) and np.all((dead >= 0) & (dead <= 1))
    else:
        assert dead is None


@pytest.mark.slow  # a Jacobian per point
def test_block_part_boxes_are_where_gradients_reach():
    """Inside a residual block (stride 2, projection shortcut): each part's box, cut to the input, is exactly
    the input region its output position depends on (all-positive weights: nothing cancels)."""
    import jax
    import jax.numpy as jnp

    from cnncli.arith.layers import parse_layers
    from cnncli.inspect.activations import rf_box
    from cnncli.models.capture import activation_at

    specs = parse_layers("conv:c=2,k=3,p=same resblock:c=3,s=2 gap dense")
    shape = (11, 11, 1)
    run = random_run(specs, shape, classes=2)
    for _, conv in run.model.conv_layers():
        conv.kernel[...] = jnp.abs(conv.kernel[...]) + 0.01
    analysis = analyze(specs, shape, num_classes=2)
    for point in ("resblock1.conv1", "resblock1.bn2", "resblock1.proj", "resblock1"):
        jac = jax.jacrev(lambda x: activation_at(run.model, x, point)[0, ..., 0])(jnp.ones((1, *shape)))
        for pos in np.ndindex(*jac.shape[:2]):
            rows, cols = np.nonzero(np.asarray(jac[pos][0, ..., 0]))
            box = rf_box(analysis, point, pos)
            assert (rows.min(), cols.min()) == box.clip_lo and (rows.max(), cols.max()) == box.clip_hi, (point, pos)


@pytest.mark.slow
def test_1d_models_with_residual_and_dense_blocks():
    """1-D: a ResNet-style and a DenseNet-style stack over 40-sample signals; maps, patches and dead fractions."""
    from cnncli.arith.layers import parse_layers
    from cnncli.inspect.activations import feature_maps, top_patches
    from cnncli.inspect.filters import dead_fractions
    from cnncli.inspect.probe import conv_layers

    shape = (40, 1)
    x = np.random.default_rng(2).normal(size=(6, *shape)).astype(np.float32)
    y = np.arange(6) % 3
    cases = [("conv:c=8,k=5,p=same bn relu bottleneck:c=4,s=2 gap dense", "bottleneck1.conv2"),
             ("conv:c=8,k=5,p=same denseblock:n=2,gr=4 transition:c=6 gap dense", "denseblock1.layer2.conv1")]
    for tokens, name in cases:
        specs = parse_layers(tokens)
        run = random_run(specs, shape, classes=3)
        rows = geometry_rows(specs, shape, classes=3)
        info = next(c for c in conv_layers(run) if c.name == name)
        assert info.response_relu and info.response == name.rsplit(".", 1)[0] + ".bn2"  # bottleneck conv2, dense conv1
        fm = feature_maps(run, name, x[0], input_name="noise")
        assert fm.maps.shape == (rows[name].output[-1], rows[name].output[0]) and fm.maps.min() >= 0
        ap = top_patches(run, name, x, y, filters=2, top_k=2)
        assert ap.patches[0][0].pixels.shape == (int(rows[info.response].rf[0]), 1)
        dead = dead_fractions(run, info, x)
        assert dead.shape == (info.filters,)
