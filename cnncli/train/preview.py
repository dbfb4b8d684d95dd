"""What the network sees: training step 1's first examples, augmented, and their (mixed) targets.

Used by ``cnncli data preview``; the grid, the labels and the terminal picture are drawn
by `cnncli.report.data`. It replays training's own streams (`cnncli.train.streams`) and
normalisation (`cnncli.models.apply.normalize`), so the picture is what step 1 trains on.
"""

from __future__ import annotations

import jax
import numpy as np

from cnncli.config.plan import num_classes
from cnncli.data.augment.core import make_augment
from cnncli.data.augment.primitives import Context
from cnncli.models.apply import normalize
from cnncli.train.streams import SeedStreams, epoch_permutation, step_key


def augmented_batch(recipe, data, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``count`` examples of training step 1, as the network sees them.

    Replays the run's streams (epoch 0's permutation, step 0's augmentation key) on a
    whole batch, so batch-level ops (mixup, cutmix) mix exactly as in training.

    Args:
        recipe: the `cnncli.config.recipe.Recipe` (seed, batch size, ``data.augment``).
        data: its loaded `cnncli.data.base.Dataset`.
        count: examples to return (at most one batch).

    Returns:
        (unit-scale images ``(count, *spatial, C)``, target rows ``(count, K)``), numpy.
    """
    streams = SeedStreams(recipe.train.seed)
    n = data.train.x.shape[0]
    batch = min(recipe.data.batch_size, n)
    index = np.asarray(epoch_permutation(streams.shuffle, 0, n)[:batch])
    ctx = Context.from_data(data)
    x = normalize(data.train.x[index], data.mean, data.std)
    targets = jax.nn.one_hot(data.train.y[index], num_classes(recipe, data.num_classes))
    if recipe.data.augment:
        augment = jax.jit(make_augment(recipe.data.augment, data))
        x, targets = augment(step_key(streams.augment, 0), x, targets)
    unit = np.clip(np.asarray(x * ctx.scale + ctx.offset), 0.0, 1.0)
    return unit[:count], np.asarray(targets)[:count]
