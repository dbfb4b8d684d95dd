"""cnncli.inspect.filters, .probe and .activations: grids, health, receptive-field boxes, feature maps, patches."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from cnncli.errors import UsageError
from cnncli.inspect.filters import (
    DEAD_FRACTION,
    DUPLICATE_COSINE,
    dead_fractions,
    filter_grid,
    filter_health,
    init_kernel,
    inspect_layer,
)
from cnncli.inspect.probe import conv_layers, find_conv


# ------------------------------------------------------------------ grids
def test_grid_shape_and_per_filter_normalization():
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(3, 3, 2, 5)).astype(np.float32)
    kernel[..., 4] *= 100  # one strong filter
    grid = filter_grid(kernel, layer="conv2")
    assert grid.values.shape == (5, 2, 3, 3, 1)  # (filters, channels, kh, kw, gray)
    assert not grid.rgb and grid.scale == "filter"
    assert grid.values.min() >= 0 and grid.values.max() <= 1
    for f in range(5):  # each filter spans its own full scale: max |w| -> 0 or 1
        assert np.abs(grid.values[f] - 0.5).max() == pytest.approx(0.5)
        assert grid.max_abs[f] == pytest.approx(np.abs(kernel[..., f]).max())
    # 0 maps to mid-gray, the sign is kept
    w = kernel[1, 2, 1, 3]
    assert grid.values[3, 1, 1, 2, 0] == pytest.approx(0.5 + 0.5 * w / np.abs(kernel[..., 3]).max())


def test_grid_shared_scale():
    kernel = np.zeros((3, 3, 1, 3), np.float32)
    kernel[1, 1, 0] = [1.0, -2.0, 4.0]
    grid = filter_grid(kernel, shared=True)
    assert grid.scale == "shared" and grid.max_abs == [4.0, 4.0, 4.0]
    assert grid.values[:, 0, 1, 1, 0] == pytest.approx([0.625, 0.25, 1.0])
    assert grid.values[:, 0, 0, 0, 0] == pytest.approx([0.5, 0.5, 0.5])  # zero weights


def test_grid_rgb_first_layer_and_limits():
    kernel = np.random.default_rng(1).normal(size=(5, 5, 3, 70)).astype(np.float32)
    grid = filter_grid(kernel)
    assert grid.rgb and grid.values.shape == (64, 1, 5, 5, 3)  # at most 64 filters by default
    assert grid.total_filters == 70 and grid.total_channels == 3
    gray = filter_grid(kernel, rgb=False, max_filters=4, max_channels=2)
    assert gray.values.shape == (4, 2, 5, 5, 1)


def test_grid_of_a_zero_filter_is_mid_gray():
    kernel = np.zeros((2, 2, 1, 2), np.float32)
    kernel[..., 1] = 1.0
    grid = filter_grid(kernel)
    assert np.all(grid.values[0] == 0.5) and np.all(grid.values[1] == 1.0)


# ----------------------------------------------------------------- health
def test_near_duplicate_and_near_zero_filters_are_flagged():
    rng = np.random.default_rng(2)
    kernel = rng.normal(size=(3, 3, 4, 6))
    kernel[..., 1] = 2.5 * kernel[..., 0]  # same direction, other length
    kernel[..., 2] = -kernel[..., 3]  # opposite: not a duplicate
    kernel[..., 5] = 0.0
    stats = filter_health(kernel)
    assert stats[0].nearest == 1 and stats[1].nearest == 0 and stats[0].cosine == pytest.approx(1.0)
    assert "near-duplicate" in stats[0].flags and "near-duplicate" in stats[1].flags
    assert "near-duplicate" not in stats[2].flags and stats[2].cosine < DUPLICATE_COSINE
    assert stats[5].flags == ["near-zero"] and stats[5].l2 == 0 and stats[5].nearest is None
    assert stats[4].flags == []
    assert stats[3].l2 == pytest.approx(np.linalg.norm(kernel[..., 3]))
    assert stats[3].mean == pytest.approx(kernel[..., 3].mean()) and stats[3].std == pytest.approx(kernel[..., 3].std())


def test_dead_threshold_and_init_distance():
    kernel = np.eye(4).reshape(1, 4, 4)
    stats = filter_health(kernel, dead_fraction=np.array([1.0, DEAD_FRACTION, 0.5, 0.0]), init_kernel=2 * kernel)
    assert [s.flags for s in stats] == [["dead"], ["dead"], [], []]
    assert stats[0].init_distance == pytest.approx(1.0) and stats[0].init_relative == pytest.approx(0.5)
    assert stats[0].init_cosine == pytest.approx(1.0)


# --------------------------------------------------------------- real run
@pytest.fixture(scope="module")
def loaded(trained_run):
    from cnncli.runs.load import load_run

    return load_run(trained_run)


def test_conv_layers_use_the_recipe_names(loaded):
    layers = conv_layers(loaded)
    assert [(c.name, c.kernel_shape, c.filters, c.in_channels, c.response) for c in layers] == [
        ("conv1", (3, 3, 1, 8), 8, 1, "relu1"),  # conv1 -> bn1 -> relu1
        ("conv2", (3, 3, 8, 16), 16, 8, "relu2"),
    ]
    assert layers[0].params == 3 * 3 * 8 + 8


def test_unknown_layer_lists_the_valid_names(loaded):
    with pytest.raises(UsageError, match=r"unknown conv layer 'conv3'; did you mean 'conv2'\? \(valid: conv1, conv2\)"):
        find_conv(loaded, "conv3")


def test_zeroed_filter_is_flagged_dead_and_near_zero(trained_run, tmp_path):
    import jax.numpy as jnp

    from cnncli.runs.load import load_run

    run = load_run(shutil.copytree(trained_run, tmp_path / "run"))
    conv = run.model.conv2  # conv2 -> relu2: a zero kernel with bias -1 never fires
    kernel = np.asarray(conv.kernel[...]).copy()
    kernel[..., 5] = 0.0
    bias = np.asarray(conv.bias[...]).copy()
    bias[5] = -1.0
    conv.kernel[...] = jnp.asarray(kernel)
    conv.bias[...] = jnp.asarray(bias)
    rep = inspect_layer(run, "conv2", examples=64)
    five = rep.health[5]
    assert five.dead_fraction == 1.0 and "dead" in five.flags and "near-zero" in five.flags
    assert 5 in rep.flags()["dead"] and rep.flags()["near-zero"] == [5]
    assert rep.num_examples == 64


def test_dead_fractions_need_a_relu_response(loaded):
    from cnncli.runs.splits import load_eval_split

    data, *_ = load_eval_split(loaded)
    info, _ = find_conv(loaded, "conv1")
    dead = dead_fractions(loaded, info, data.x[:32])
    assert dead.shape == (8,) and np.all((dead >= 0) & (dead <= 1))


def test_compare_init_reads_the_step0_kernel(loaded):
    k0 = init_kernel(loaded, "conv1")
    _, kernel = find_conv(loaded, "conv1")
    assert k0.shape == kernel.shape and not np.allclose(k0, kernel)
    rep = inspect_layer(loaded, "conv1", compare_init=True, examples=0)
    assert rep.compared_to_init and all(s.init_distance > 0 for s in rep.health)
    assert rep.num_examples == 0 and all(s.dead_fraction is None for s in rep.health)


# ------------------------------------------------------- receptive fields
def _support_boxes(tokens: str, shape: tuple[int, ...], layer: str):
    """For every output position of ``layer``: (box, rows, cols of the input pixels its gradient reaches)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from cnncli.arith.geometry import analyze
    from cnncli.arith.layers import parse_layers
    from cnncli.inspect.activations import rf_box
    from cnncli.models import build_model

    specs = parse_layers(tokens)
    analysis = analyze(specs, shape, num_classes=2)
    model = build_model(specs, shape, 2, rngs=nnx.Rngs(0))
    for name, conv in model.conv_layers():  # an all-positive linear path: support = the field
        conv.kernel[...] = jnp.ones_like(conv.kernel[...])
        conv.bias[...] = jnp.zeros_like(conv.bias[...])
    row = {r.name: r for r in analysis.layers}[layer]
    jac = jax.jacrev(lambda x: model(x)[0, ..., 0])(jnp.ones((1, *shape)))  # (oh, ow, 1, H, W, 1)
    for pos in np.ndindex(*row.output[:2]):
        rows, cols = np.nonzero(np.asarray(jac[pos][0, ..., 0]))
        yield row, rf_box(analysis, layer, pos), rows, cols


def test_rf_box_equals_geometry_and_the_true_support():
    """The box's size is conv-arith's figure; its part inside the image is where gradients reach."""
    for row, box, rows, cols in _support_boxes("conv:c=1,k=3,p=same avgpool:k=2 conv:c=1,k=5,s=2,p=1", (13, 12, 1), "conv2"):
        assert tuple(h - l + 1 for l, h in zip(box.lo, box.hi)) == tuple(row.rf) == (12, 12)
        assert (rows.min(), cols.min()) == box.clip_lo and (rows.max(), cols.max()) == box.clip_hi


def test_rf_box_with_dilation_bounds_the_support():
    """Dilated taps leave holes: the support stays inside the box and fills it when the box is inside the image."""
    inside = 0
    for row, box, rows, cols in _support_boxes("conv:c=1,k=3,p=same avgpool:k=2 conv:c=1,k=3,p=1,d=2", (16, 16, 1), "conv2"):
        assert tuple(h - l + 1 for l, h in zip(box.lo, box.hi)) == tuple(row.rf)
        assert rows.min() >= box.clip_lo[0] and cols.min() >= box.clip_lo[1]
        assert rows.max() <= box.clip_hi[0] and cols.max() <= box.clip_hi[1]
        if box.lo == box.clip_lo and box.hi == box.clip_hi:
            inside += 1
            assert (rows.min(), cols.min(), rows.max(), cols.max()) == (*box.lo, *box.hi)
    assert inside > 0


def test_rf_box_by_hand(loaded):
    from cnncli.inspect.activations import rf_box, run_analysis

    analysis = run_analysis(loaded)
    # conv1 k3 same: position (0, 0) sees rows/cols -1..1 (one of padding)
    box = rf_box(analysis, "relu1", (0, 0))
    assert (box.lo, box.hi, box.clip_lo, box.clip_hi, box.rf) == ((-1, -1), (1, 1), (0, 0), (1, 1), (3, 3))
    # conv1 (k3 p1) -> maxpool k2 -> conv2 (k3 p1): rf 8, jump 2, lo = 2*o - 3
    box = rf_box(analysis, "relu2", (1, 2))
    assert (box.lo, box.hi, box.rf, box.jump) == ((-1, 1), (6, 8), (8, 8), (2, 2))
    assert box.clip_hi == (6, 7)


def test_feature_maps_for_an_eval_example(loaded):
    rep = inspect_layer(loaded, "conv1", index=3, examples=16)
    fm = rep.maps
    assert fm.layer == "conv1" and fm.shown == "relu1" and fm.input == "eval[3]"
    assert fm.maps.shape == (8, 8, 8) and sorted(fm.channels) == list(range(8))
    assert fm.means == sorted(fm.means, reverse=True)
    assert fm.maps.max() == pytest.approx(fm.peak_value) and fm.box.rf == (3, 3)
    assert fm.predicted is not None and 0 < fm.probability <= 1 and fm.label is not None


def test_feature_maps_from_an_image_file(loaded, tmp_path):
    from PIL import Image

    Image.fromarray(np.eye(8, dtype=np.uint8) * 255).save(tmp_path / "diag.png")
    rep = inspect_layer(loaded, "conv2", image=str(tmp_path / "diag.png"), examples=0)
    assert rep.maps.shown == "relu2" and rep.maps.maps.shape == (16, 4, 4) and rep.maps.box.rf == (8, 8)
    with pytest.raises(UsageError, match="give --image or --index, not both"):
        inspect_layer(loaded, "conv2", image=str(tmp_path / "diag.png"), index=0)


def test_top_patches(loaded):
    rep = inspect_layer(loaded, "conv2", patches=True, top_k=3, max_filters=4, examples=100)
    ap = rep.patches
    assert ap.num_examples == 100 and ap.filters == [0, 1, 2, 3]
    assert [len(row) for row in ap.patches] == [3, 3, 3, 3]
    for row in ap.patches:
        values = [p.value for p in row]
        assert values == sorted(values, reverse=True) and len({p.index for p in row}) == 3
        for p in row:
            assert p.pixels.shape == (8, 8, 1)  # the receptive field, NaN beyond the image
            inside = ~np.isnan(p.pixels[..., 0])
            assert inside.sum() == np.prod([h - l + 1 for l, h in zip(p.box.clip_lo, p.box.clip_hi)])


# ---------------------------------------------------- a 1-D run with a block
ONE_D = """
[data]
source = "npz:{path}"
batch_size = 16

[model]
layers = ["conv:c=4,k=5,p=same", "relu", "maxpool:k=2", "resblock:c=4", "gap", "dense"]

[train]
steps = 2
"""


@pytest.fixture(scope="module")
def run_1d(tmp_path_factory):
    from cnncli.config.recipe import load_recipe
    from cnncli.runs.load import load_run
    from cnncli.train.loop import fit

    root = tmp_path_factory.mktemp("oned")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 48)
    x = np.sin(np.linspace(0, 6, 24)[None] * (y[:, None] + 1)) + 0.1 * rng.normal(size=(48, 24))
    np.savez(root / "sig.npz", x_train=x[:32].astype(np.float32), y_train=y[:32], x_test=x[32:].astype(np.float32), y_test=y[32:])
    recipe = root / "sig.toml"
    recipe.write_text(ONE_D.format(path=root / "sig.npz"))
    fit(load_recipe(recipe), root / "run")
    return load_run(root / "run")


def test_1d_block_convs_are_listed_and_inspected(run_1d):
    layers = conv_layers(run_1d)
    assert [(c.name, c.response, c.response_relu) for c in layers] == [
        ("conv1", "relu1", False),
        ("resblock1.conv1", "resblock1.bn1", True),  # bn1 runs with a fused ReLU
        ("resblock1.conv2", "resblock1.conv2", False),  # the residual add comes before the ReLU
    ]
    inner = inspect_layer(run_1d, "resblock1.conv2", compare_init=True, examples=8)
    assert inner.grid.values.shape == (4, 4, 3, 1)  # (filters, channels, k, 1)
    assert all(s.dead_fraction is None for s in inner.health)  # no ReLU of its own
    assert all(s.init_distance is not None for s in inner.health)
    first = inspect_layer(run_1d, "resblock1.conv1", examples=8)
    assert all(s.dead_fraction is not None for s in first.health)


def test_block_conv_feature_maps_are_its_bn_relu_output(run_1d):
    """The maps of resblock1.conv1 equal relu(bn1(conv1(...))) computed module by module."""
    import jax.numpy as jnp

    from cnncli.models.apply import normalize
    from cnncli.runs.splits import load_eval_split

    data, *_ = load_eval_split(run_1d)
    rep = inspect_layer(run_1d, "resblock1.conv1", index=1, patches=True, top_k=2, examples=16)
    m = run_1d.model
    h = normalize(jnp.asarray(data.x[1:2]), run_1d.data["mean"], run_1d.data["std"])
    h = m.maxpool1(m.relu1(m.conv1(h)))
    want = np.maximum(np.asarray(m.resblock1.bn1(m.resblock1.conv1(h)))[0], 0)  # (12, 4)
    fm = rep.maps
    assert fm.shown == "resblock1.bn1" and fm.maps.shape == (4, 12)
    np.testing.assert_allclose(fm.maps, want.T[fm.channels], rtol=1e-5, atol=1e-5)
    # conv1 k5 (rf 5) -> maxpool 2 (rf 6, jump 2) -> block conv k3: rf 10
    assert fm.box.rf == (10,) and fm.box.hi[0] - fm.box.lo[0] + 1 == 10
    assert rep.patches.patches[0][0].pixels.shape == (10, 1)


def test_1d_feature_maps_and_patches(run_1d):
    rep = inspect_layer(run_1d, "conv1", index=2, patches=True, top_k=2, examples=16)
    assert rep.maps.maps.shape == (4, 24) and rep.maps.box.rf == (5,)
    assert rep.patches.patches[0][0].pixels.shape == (5, 1)
    assert rep.health[0].dead_fraction is not None


def test_cli_lists_and_inspects_block_convs(run_1d, tmp_path, capsys):
    from helpers import cli

    run = str(run_1d.workdir)
    code, out, _ = cli(["inspect-filters", run, "--list"], capsys)
    assert code == 0 and "resblock1.bn1 + relu" in out and "inside a block, its BatchNorm and ReLU" in out
    code, out, _ = cli(["inspect-filters", run, "--list", "--json"], capsys)
    layers = json.loads(out)["layers"]
    assert [(c["name"], c["response"], c["response_relu"]) for c in layers] == [
        ("conv1", "relu1", False), ("resblock1.conv1", "resblock1.bn1", True),
        ("resblock1.conv2", "resblock1.conv2", False),
    ]  # fmt: skip
    code, out, err = cli(["inspect-filters", run, "-l", "resblock1.conv1", "--index", "0", "--patches", "--top-k", "2",
                          "--examples", "16", "--json", "-o", str(tmp_path)], capsys)  # fmt: skip
    assert code == 0, err
    data = json.loads(out)
    assert data["layer"]["name"] == "resblock1.conv1" and data["feature_maps"]["shown"] == "resblock1.bn1"
    assert data["feature_maps"]["rf_box"]["rf"] == [10] and len(data["patches"]["filters"]) == 4
    assert all(f["dead_fraction"] is not None for f in data["filters"])
    assert sorted(data["pngs"]) == ["feature_maps", "filter_grid", "patches"]
