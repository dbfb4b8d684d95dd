"""What the network sees: training step 1's first examples, augmented, and their (mixed) labels.

Used by ``cnncli data preview``; the grid and the terminal picture are drawn by
`cnncli.report.data`.
"""

from __future__ import annotations

import jax
import numpy as np

from cnncli.config.plan import num_classes
from cnncli.data.augment.core import make_augment
from cnncli.data.augment.primitives import Context


def augmented_batch(recipe, data, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``count`` examples of training step 1, as the network sees them.

    Replays the session's streams (shuffle key ``fold_in(key(seed), 1)``, epoch 0;
    augment key ``fold_in(fold_in(key(seed), 2), step 0)``) on a whole batch, so
    batch-level ops (mixup, cutmix) mix exactly as in training.

    Args:
        recipe: the `cnncli.config.recipe.Recipe` (seed, batch size, ``data.augment``).
        data: its loaded `cnncli.data.base.Dataset`.
        count: examples to return (at most one batch).

    Returns:
        (unit-scale images ``(count, *spatial, C)``, target rows ``(count, K)``), numpy.
    """
    root = jax.random.key(recipe.train.seed)
    n = data.train.x.shape[0]
    batch = min(recipe.data.batch_size, n)
    perm = jax.random.permutation(jax.random.fold_in(jax.random.fold_in(root, 1), 0), n)[:batch]
    ctx, index = Context.from_data(data), np.asarray(perm)
    x = (data.train.x[index].astype(np.float32) - np.asarray(data.mean, np.float32)) / np.asarray(data.std, np.float32)
    targets = jax.nn.one_hot(data.train.y[index], num_classes(recipe, data.num_classes))
    if recipe.data.augment:
        augment = jax.jit(make_augment(recipe.data.augment, data))
        x, targets = augment(jax.random.fold_in(jax.random.fold_in(root, 2), 0), x, targets)
    unit = np.clip(np.asarray(x * ctx.scale + ctx.offset), 0.0, 1.0)
    return unit[:count], np.asarray(targets)[:count]


def target_label(weights: np.ndarray, names: list[str]) -> str:
    """``cat``, or ``cat 62% + dog 38%`` for a mixed target row.

    Args:
        weights: one target row ``(K,)``: one-hot, or mixed by mixup/cutmix.
        names: the class names (a class past the end is shown by its index).
    """
    order = weights.argsort()[::-1]
    if weights[order[0]] >= 0.995:
        return names[order[0]] if order[0] < len(names) else str(order[0])
    parts = [f"{names[i] if i < len(names) else i} {weights[i]:.0%}" for i in order[:2] if weights[i] > 0.005]
    return " + ".join(parts)
