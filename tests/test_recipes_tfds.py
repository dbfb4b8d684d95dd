"""The TFDS recipes in recipes/ run end to end under ``tfds.testing.mock_data`` (random images).

Each is shortened to one epoch of two steps of 4 images (classes missing from the random
labels allowed); everything else (model,
optimizer, schedule, augmentation) is the recipe as shipped.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import tensorflow_datasets as tfds

from cnncli.config.recipe import load_recipe

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
# 8 random mock labels cannot cover 10 classes: the run is allowed to train without some (a warning)
SHORT = ["train.epochs=1", "data.batch_size=4", "data.eval_batch_size=8", "data.allow_missing_classes=true"]


@pytest.mark.parametrize(
    "name",
    ["lenet5_mnist", "fashion_mnist", pytest.param("resnet20_cifar10", marks=pytest.mark.slow)],  # resnet20: ~17 s
)
def test_recipe_runs_end_to_end_under_mock_data(name, tmp_path):
    from cnncli.train.loop import fit

    path = RECIPES / f"{name}.toml"
    header = path.read_text().split("\n\n", 1)[0]
    assert "# Run:" in header and "# Result:" in header and "not measured on this machine" in header
    assert f"cnncli train recipes/{name}.toml" in header
    with tfds.testing.mock_data(num_examples=8):
        summary = fit(load_recipe(path, SHORT), tmp_path / "run")
    assert summary["steps"] == 2 and summary["epochs"] == 1
    assert math.isfinite(summary["train_loss"]) and 0.0 <= summary["eval_accuracy"] <= 1.0
