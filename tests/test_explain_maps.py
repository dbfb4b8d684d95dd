"""`cnncli.inspect.attribution` and `attribution_check`: maps with known answers.

- A dataset generated here (bars, crosses, square outlines at random places on noise, the
  class given by the pattern): after a short training, gradcam, saliency and occlusion put
  most of the map's mass inside the pattern's box, far above its area share; a model with
  shuffled weights does not (slow: it trains a model).
- Integrated gradients' completeness, occlusion against masking by hand, the layer
  choice, the statistics and the self-checks, on the shared tiny digits run.
"""

from __future__ import annotations

import numpy as np
import pytest

from cnncli.errors import LayerError, UsageError
from cnncli.inspect.attribution import (
    Explainer,
    MethodConfig,
    default_window,
    mass_map,
    occlusion_map,
    occlusion_masks,
    peak,
    top_share,
)

SIZE, BOX = 16, 5  # image side, pattern side
AREA_SHARE = BOX * BOX / SIZE**2  # 0.098: what a map spread evenly puts in the box


def _pattern(k: int) -> np.ndarray:
    p = np.zeros((BOX, BOX), np.float32)
    if k == 0:  # a thick horizontal bar
        p[1:3, :] = 1
    elif k == 1:  # a cross
        p[2, :] = p[:, 2] = 1
    else:  # a square outline
        p[0, :] = p[-1, :] = p[:, 0] = p[:, -1] = 1
    return p


def patterns(n: int, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` images ``(SIZE, SIZE)``: uniform noise in [0, 0.6] with one pattern (value 1) at a random place."""
    x = rng.uniform(0, 0.6, (n, SIZE, SIZE)).astype(np.float32)
    y = rng.integers(0, 3, n)
    corners = rng.integers(0, SIZE - BOX + 1, (n, 2))
    for i, (r, c) in enumerate(corners):
        x[i, r : r + BOX, c : c + BOX] = np.maximum(x[i, r : r + BOX, c : c + BOX], _pattern(int(y[i])))
    return x, y, corners


def box_share(maps: np.ndarray, corners: np.ndarray) -> float:
    """Mean share of each map's mass inside its pattern's box."""
    shares = [m[r : r + BOX, c : c + BOX].sum() / max(float(m.sum()), 1e-12) for m, (r, c) in zip(maps, corners)]
    return float(np.mean(shares))


@pytest.fixture(scope="module")
def pattern_run(tmp_path_factory):
    """A small CNN trained 120 steps on the patterns (100% test accuracy here), and 48 test images."""
    from cnncli.config.recipe import load_recipe
    from cnncli.runs.load import load_run
    from cnncli.train.loop import fit

    root = tmp_path_factory.mktemp("patterns")
    rng = np.random.default_rng(0)
    xtr, ytr, _ = patterns(1500, rng)
    xte, yte, corners = patterns(48, rng)
    np.savez(root / "p.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    text = (
        '[data]\nsource = "npz:p.npz"\nbatch_size = 64\n[model]\nlayers = ["conv:c=8,k=3,p=same", "relu", '
        '"conv:c=16,k=3,p=same", "relu", "maxpool:k=2", "conv:c=16,k=3,p=same", "relu", "gap", "dense"]\n'
        '[optimizer]\nname = "adam"\nlearning_rate = 0.01\n[train]\nsteps = 120\nseed = 0\n'
    )
    (root / "r.toml").write_text(text)
    fit(load_recipe(root / "r.toml"), root / "run", recipe_text=text)
    return load_run(root / "run"), xte[..., None], yte.astype(np.int32), corners


def _shuffled(state, seed: int = 1):
    """Every floating array's entries permuted: the same weight distribution, no learned structure."""
    import jax

    rng = np.random.default_rng(seed)

    def shuffle(a):
        a = np.asarray(a)
        return rng.permutation(a.ravel()).reshape(a.shape) if np.issubdtype(a.dtype, np.floating) else a

    return jax.tree.map(shuffle, state)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["gradcam", "saliency", "occlusion"])
def test_maps_find_the_pattern_and_shuffled_weights_do_not(pattern_run, method):
    from cnncli.inspect.explain import auto_layer

    run, x, y, corners = pattern_run
    ex = Explainer(run)
    cfg = MethodConfig(method, layer=auto_layer(run)[0] if method == "gradcam" else None)
    trained = ex.maps(cfg, x, y)
    assert (trained.logits.argmax(axis=1) == y).mean() >= 0.9  # the model learned the patterns
    share = box_share(np.stack([mass_map(m, method) for m in trained.maps]), corners)
    shuffled = ex.maps(cfg, x, y, state=_shuffled(ex.state))
    share_shuffled = box_share(np.stack([mass_map(m, method) for m in shuffled.maps]), corners)
    # measured here: gradcam 0.46 / 0.15, saliency 0.33 / 0.10, occlusion 0.88 / 0.17
    assert share > 2.5 * AREA_SHARE, (method, share)
    assert share_shuffled < 0.6 * share and share_shuffled < 2.5 * AREA_SHARE, (method, share, share_shuffled)


# ------------------------------------------------------------------ on the shared digits run
@pytest.fixture(scope="module")
def digits(trained_run):
    from cnncli.runs.load import load_run
    from cnncli.runs.splits import load_eval_split

    run = load_run(trained_run)
    data, *_ = load_eval_split(run)
    return run, Explainer(run), data.x[:16].astype(np.float32), data.y[:16].astype(np.int32)


def test_integrated_gradients_complete_within_one_percent(digits):
    from cnncli.inspect.attribution_check import completeness_error

    _, ex, x, y = digits
    batch = ex.maps(MethodConfig("integrated-gradients"), x, y)  # default steps
    assert batch.maps.shape == (16, 8, 8)
    assert completeness_error(batch.attribution_sum, batch.score_delta) < 0.01
    np.testing.assert_allclose(batch.maps.reshape(16, -1).sum(axis=1), batch.attribution_sum, rtol=1e-4, atol=1e-4)
    # the mean baseline too, and a coarse quadrature misses by more
    mean = ex.maps(MethodConfig("integrated-gradients", baseline="mean"), x, y)
    assert completeness_error(mean.attribution_sum, mean.score_delta) < 0.01
    coarse = ex.maps(MethodConfig("integrated-gradients", steps=2), x, y)
    assert completeness_error(coarse.attribution_sum, coarse.score_delta) > 0.01


def test_occlusion_equals_masking_by_hand(digits):
    from cnncli.inspect.evaluate import softmax
    from cnncli.inspect.explain import _logits

    run, ex, x, y = digits
    x, y = x[:3], y[:3]
    cfg = MethodConfig("occlusion", window=(3, 3), stride=(3, 3), baseline="black")
    batch = ex.maps(cfg, x, y)
    masks = occlusion_masks((8, 8), (3, 3), (3, 3))
    assert len(masks) == 9  # corners 0, 3, 5 per axis: the last window ends at the far edge
    p = softmax(_logits(ex, x))[np.arange(3), y]
    lo = run.data["value_range"][0]
    drops = np.zeros((3, len(masks)))
    for k, m in enumerate(masks):
        hand = x.copy()
        hand[:, m.astype(bool)] = lo  # fill the window with black by hand
        drops[:, k] = p - softmax(_logits(ex, hand))[np.arange(3), y]
    np.testing.assert_allclose(batch.maps, occlusion_map(drops, masks), atol=1e-5)
    # one size stands for every axis
    np.testing.assert_allclose(ex.maps(MethodConfig("occlusion", window=(3,), stride=(3,)), x, y).maps, batch.maps)
    # where windows do not overlap, a pixel's value is its window's drop
    np.testing.assert_allclose(batch.maps[:, 0, 0], drops[:, 0], atol=1e-5)


def test_occlusion_windows_cover_the_input():
    window, stride = default_window((8, 8))
    assert (window, stride) == ((2, 2), (1, 1))
    assert default_window((28, 28)) == ((4, 4), (2, 2)) and default_window((224, 224)) == ((28, 28), (14, 14))
    masks = occlusion_masks((7, 9), (4, 4), (4, 4))
    assert masks.sum(axis=0).min() >= 1 and masks.shape == (6, 7, 9)  # starts 0, 3 and 0, 4, 5


def test_every_method_gives_an_input_sized_map(digits):
    from cnncli.inspect.explain import auto_layer

    run, ex, x, y = digits
    layer, why = auto_layer(run)
    assert layer == "relu2" and why == "the last convolution with spatial extent (conv2, 4x4x16), after relu2"
    for method in ("gradcam", "gradcam++", "saliency", "smoothgrad"):
        batch = ex.maps(MethodConfig(method, layer=layer, samples=4), x[:5], y[:5])
        assert batch.maps.shape == (5, 8, 8) and batch.maps.dtype == np.float32
        assert (batch.maps >= 0).all() and (batch.maps.reshape(5, -1).max(axis=1) > 0).all(), method
        assert batch.logits.shape == (5, 10)
    # a layer without spatial axes is refused for Grad-CAM
    with pytest.raises(UsageError, match="--layer gap1: its output 16 has no spatial axes for gradcam"):
        ex.maps(MethodConfig("gradcam", layer="gap1"), x[:1], y[:1])


def test_explicit_layer_resolves_block_points(digits):
    from cnncli.inspect.explain import resolve_layer

    run = digits[0]
    assert resolve_layer(run, "conv1") == ("conv1", "given with --layer")
    with pytest.raises(LayerError, match="unknown layer 'conv9'; did you mean"):
        resolve_layer(run, "conv9")


def test_peak_and_top_share():
    m = np.zeros((10, 10), np.float32)
    m[3, 7] = 5.0
    assert peak(m) == [3, 7] and top_share(m) == 1.0
    assert top_share(np.ones((10, 10))) == pytest.approx(0.1) and top_share(np.zeros((4, 4))) is None
    assert (mass_map(np.array([-1.0, 2.0]), "occlusion") == [0.0, 2.0]).all()
    assert (mass_map(np.array([-1.0, 2.0]), "saliency") == [1.0, 2.0]).all()


def test_self_check_figures(digits):
    from cnncli.inspect.attribution_check import check_method, spearman, top_layers

    run, ex, x, y = digits
    assert top_layers(run) == ["conv2", "dense1"]  # the upper half of conv1, bn1, conv2, dense1
    assert spearman(np.arange(10.0), np.arange(10.0) ** 3) == pytest.approx(1.0)
    assert spearman(np.arange(10.0), -np.arange(10.0)) == pytest.approx(-1.0)
    cfg = MethodConfig("occlusion")
    maps = ex.maps(cfg, x[:6], y[:6]).maps
    res = check_method(run, ex, cfg, x[:6], y[:6], maps)
    assert res.randomized_layers == ["conv2", "dense1"]
    assert -1 <= res.rank_correlation <= 1 and res.sanity == (res.rank_correlation < 0.5)
    # occlusion's order removes the class faster than a random order, and restores it faster
    assert res.deletion_auc < res.random_deletion_auc and res.insertion_auc > res.random_insertion_auc
    assert res.curves and res.completeness_error is None and res.passed == res.sanity
