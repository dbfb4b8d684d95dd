"""On-device augmentation: every op deterministic, shape-preserving, and true to its invariants."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnncli.config.recipe import AugmentOp
from cnncli.data.augment.core import (
    OPS,
    make_augment,
    op_arguments,
    validate_ops,
)
from cnncli.data.augment.geometric import POLICY, warp
from cnncli.data.augment.primitives import Context
from cnncli.data.base import Dataset, Split, channel_stats
from cnncli.errors import RecipeError

B, K = 8, 10  # batch size, classes: labels 0..7 are distinct, so targets identify each source example


def dataset(shape=(12, 12, 3), seed=0) -> Dataset:
    """A uint8 dataset with real normalization statistics."""
    x = np.random.default_rng(seed).integers(0, 256, (B, *shape), dtype=np.uint8)
    y = np.arange(B, dtype=np.int32)
    mean, std = channel_stats(x)
    return Dataset("test", Split(x, y), Split(x, y), [str(i) for i in range(K)], mean, std)


def batch(data: Dataset):
    """The normalized float32 batch and one-hot targets the train step hands to augment."""
    x = (data.train.x.astype(np.float32) - np.float32(data.mean)) / np.float32(data.std)
    return jnp.asarray(x), jax.nn.one_hot(data.train.y, K)


@functools.cache
def compiled(ops: tuple, shape=(12, 12, 3)):
    """A jitted augment for ops given as hashable ((name, ((arg, value), ...)), ...)."""
    data = dataset(shape)
    recipe_ops = [{"op": name, **dict(args)} for name, args in ops]
    return jax.jit(make_augment(recipe_ops, data)), data


def run(ops, seed=0, shape=(12, 12, 3)):
    ops = tuple((name, tuple(sorted(args.items()))) for name, args in ops)
    fn, data = compiled(ops, shape)
    x, t = batch(data)
    out, targets = fn(jax.random.key(seed), x, t)
    return np.asarray(x), np.asarray(t), np.asarray(out), np.asarray(targets)


def unit(data: Dataset, x):
    """Normalized -> unit scale (0..1 of the raw range)."""
    ctx = Context.from_data(data)
    return np.asarray(x * ctx.scale + ctx.offset)


@pytest.mark.parametrize("name", OPS)
def test_each_op_is_deterministic_shape_preserving_and_keeps_targets_distributions(name):
    x, t, out, targets = run([(name, {})], seed=1)
    _, _, again, again_t = run([(name, {})], seed=1)
    _, _, other, _ = run([(name, {})], seed=2)
    assert out.shape == x.shape and out.dtype == np.float32 and targets.shape == t.shape
    np.testing.assert_array_equal(out, again)  # same key: same batch, bit for bit
    np.testing.assert_array_equal(targets, again_t)
    assert not np.array_equal(out, other), "a different key must give different augmentation"
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-6)
    u = unit(dataset(), out)
    assert u.min() >= -1e-5 and u.max() <= 1 + 1e-5, "augmented pixels stay in the raw value range"


@pytest.mark.parametrize("name", ["flip_lr", "flip_ud"])
def test_a_flip_applied_twice_is_the_identity(name):
    x, _, out, _ = run([(name, {"p": 1.0}), (name, {"p": 1.0})])
    np.testing.assert_allclose(out, x, atol=1e-5)
    _, _, once, _ = run([(name, {"p": 1.0})])
    axis = 2 if name == "flip_lr" else 1
    np.testing.assert_allclose(once, np.flip(x, axis), atol=1e-5)


@pytest.mark.parametrize(
    "ops",
    [
        [("random_crop", {"padding": 0})],
        [("random_crop", {"padding": 0, "mode": "reflect"})],
        [("brightness", {"max_delta": 0.0})],
        [("contrast", {"max_delta": 0.0})],
        [("gaussian_noise", {"std": 0.0})],
        [("rotate", {"degrees": 0.0})],
        [("translate", {"fraction": 0.0})],
        [("scale", {"min": 1.0, "max": 1.0})],
        [("randaugment", {"n": 0})],
        [("cutout", {"p": 0.0}), ("flip_lr", {"p": 0.0}), ("rotate", {"p": 0.0})],
    ],
    ids=lambda ops: "+".join(f"{n}{''.join(f'-{k}={v}' for k, v in a.items())}" for n, a in ops),
)
def test_zero_magnitude_or_probability_is_the_identity(ops):
    x, t, out, targets = run(ops)
    np.testing.assert_allclose(out, x, atol=1e-4)
    np.testing.assert_array_equal(targets, t)


def test_random_crop_is_a_shift_of_the_padded_image():
    x, _, out, _ = run([("random_crop", {"padding": 2, "mode": "edge"})], seed=3)
    h, w = x.shape[1:3]
    for image, crop in zip(x, out):
        padded = np.pad(image, ((2, 2), (2, 2), (0, 0)), mode="edge")
        shifts = [(i, j) for i in range(5) for j in range(5) if np.allclose(padded[i : i + h, j : j + w], crop, atol=1e-4)]
        assert shifts, "every crop is a window of the padded image"


def test_translate_moves_by_whole_pixels():
    x, _, out, _ = run([("translate", {"fraction": 0.25, "fill": "mean"})], seed=4)
    for image, moved in zip(x, out):  # "mean" fill is 0 in normalized units
        hits = []
        for di in range(-3, 4):
            for dj in range(-3, 4):
                shifted = np.zeros_like(image)
                src = image[max(0, -di) : 12 - max(0, di), max(0, -dj) : 12 - max(0, dj)]
                shifted[max(0, di) : max(0, di) + src.shape[0], max(0, dj) : max(0, dj) + src.shape[1]] = src
                hits.append(np.allclose(shifted, moved, atol=1e-4))
        assert any(hits)


def test_warp_by_a_quarter_turn_is_rot90():
    image = jnp.arange(5 * 5 * 2, dtype=jnp.float32).reshape(5, 5, 2)
    quarter = jnp.array([[0.0, -1.0], [1.0, 0.0]])
    out = np.asarray(jax.jit(warp)(image, quarter, jnp.zeros(2), jnp.zeros(2)))
    assert any(np.allclose(out, np.rot90(image, k, axes=(0, 1)), atol=1e-4) for k in (1, 3))


def test_mixup_mixes_images_and_targets_with_the_same_weight():
    x, _, out, targets = run([("mixup", {})], seed=5)  # the compiled op of the test above
    for i in range(B):
        weights = targets[i]
        expected = sum(weights[j] * x[j] for j in np.flatnonzero(weights))
        np.testing.assert_allclose(out[i], expected, atol=1e-4)
    assert (targets > 0).sum() > B, "lambda ~ Beta(0.2, 0.2) is in (0, 1): rows mix (almost surely)"


def test_cutmix_targets_are_the_pasted_area():
    x, _, out, targets = run([("cutmix", {})], seed=6)
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-6)
    for i in range(B):
        others = [j for j in np.flatnonzero(targets[i]) if j != i]
        if not others:  # paired with itself, or an empty box
            np.testing.assert_allclose(out[i], x[i], atol=1e-5)
            continue
        (j,) = others
        pasted = np.all(np.isclose(out[i], x[j], atol=1e-5), axis=-1) & ~np.all(np.isclose(out[i], x[i], atol=1e-5), axis=-1)
        assert pasted.mean() == pytest.approx(targets[i, j], abs=1e-6)


def test_cutout_fills_at_most_holes_times_size_squared_with_the_mean():
    x, _, out, _ = run([("cutout", {"size": 4, "holes": 2})], seed=7)
    changed = ~np.all(np.isclose(out, x, atol=1e-5), axis=-1)
    assert 0 < changed.sum(axis=(1, 2)).max() <= 2 * 4 * 4
    np.testing.assert_allclose(out[changed], 0.0, atol=1e-5)  # mean colour = 0 after normalization


def test_ops_work_on_one_dimensional_signals():
    ops = [("random_crop", {"padding": 3}), ("flip_lr", {}), ("cutmix", {})]  # cutout shares cutmix's box_mask
    x, _, out, targets = run(ops, shape=(16, 2))
    assert out.shape == x.shape == (B, 16, 2)
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-6)


def test_recipe_augment_tables_build_through_pydantic():
    ops = [AugmentOp(op="random_crop", padding=2, mode="reflect"), AugmentOp(op="flip_lr", p=0.5)]
    assert validate_ops(ops, (12, 12, 3)) == [
        ("random_crop", {"padding": 2, "mode": "reflect", "fill": 0.0, "p": 1.0}),
        ("flip_lr", {"p": 0.5}),
    ]
    assert tuple(op_arguments()) == OPS and op_arguments()["rotate"] == {"degrees": 15.0, "fill": 0.0, "p": 1.0}
    assert len(POLICY) == 13


@pytest.mark.parametrize(
    ("ops", "shape", "message"),
    [
        ([{"op": "rotat"}], (8, 8, 1), r"data\.augment\[0\]\.op: unknown augmentation op 'rotat'; did you mean 'rotate'\? \(valid: brightness, "),
        ([{"op": "flip_lr"}, {"op": "rotate", "degree": 5}], (8, 8, 1), r"data\.augment\[1\]: rotate has no argument 'degree'; did you mean 'degrees'\? \(valid: degrees, fill, p\)"),
        ([{"op": "mixup", "p": 1.5}], (8, 8, 1), r"data\.augment\[0\]\.p: mixup needs a number in \[0, 1\], got 1\.5"),
        ([{"op": "cutout", "size": True}], (8, 8, 1), r"data\.augment\[0\]\.size: cutout needs an integer >= 1, got True"),
        ([{"op": "random_crop", "mode": "mirror"}], (8, 8, 1), r"needs one of 'constant', 'edge', 'reflect', 'symmetric', 'wrap'"),
        ([{"op": "random_crop", "padding": 8, "mode": "reflect"}], (8, 8, 1), r"reflect padding must be smaller"),
        ([{"op": "scale", "min": 1.2, "max": 1.1}], (8, 8, 1), r"scale needs min <= max"),
        ([{"op": "rotate"}], (16, 1), r"data\.augment\[0\]\.op: rotate needs 2-D examples, but the data's are 1-D 16x1"),
        ([{"op": "translate", "fill": "black"}], (8, 8, 1), r'a number in \[0, 1\] \(unit scale\) or "mean"'),
    ],
)
def test_bad_ops_name_the_recipe_key_and_the_valid_choices(ops, shape, message):
    with pytest.raises(RecipeError, match=message):
        validate_ops(ops, shape)
