"""``folder:PATH``: a folder of PNGs made here, read, trained and evaluated end to end."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from cnncli.config.recipe import DataConfig
from cnncli.data.base import DataWarning
from cnncli.data.sources import load_dataset, load_split, split_sizes
from cnncli.errors import DataError

CLASSES = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (20, 40, 230)}  # RGB of each class


def make_folder(root: Path, per_class=(6, 2), size=(10, 12), grey=False) -> Path:
    """root/{train,test}/<class>/<i>.png: noisy images of a class colour (learnable)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in zip(("train", "test"), per_class):
        for name, colour in CLASSES.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = np.clip(np.array(colour) + rng.integers(-20, 20, (*size, 3)), 0, 255).astype(np.uint8)
                image = Image.fromarray(pixels).convert("L") if grey else Image.fromarray(pixels)
                image.save(folder / f"{i}.png")
    return root


def cfg(root: Path, **fields) -> DataConfig:
    return DataConfig(source=f"folder:{root}", **fields)


def test_reads_sorted_classes_default_channels_and_size(tmp_path):
    root = make_folder(tmp_path / "colours")
    data = load_dataset(cfg(root))
    assert data.class_names == ["blue", "green", "red"]
    assert data.train.x.shape == (18, 10, 12, 3) and data.eval.x.shape == (6, 10, 12, 3)
    assert data.train.x.dtype == np.uint8 and data.value_range == (0.0, 255.0)
    red = data.train.x[data.train.y == 2].mean(axis=(0, 1, 2))
    assert red[0] > 180 and red[2] < 70, "labels follow the sorted class folders"
    assert split_sizes(f"folder:{root}") == {"test": 6, "train": 18}


def test_grey_folders_default_to_one_channel_and_convert_on_request(tmp_path):
    root = make_folder(tmp_path / "grey", grey=True)
    assert load_split(f"folder:{root}", "train", cfg(root))[0].x.shape[-1] == 1
    rgb = load_split(f"folder:{root}", "train", cfg(root, channels=3))[0].x
    assert rgb.shape[-1] == 3 and np.array_equal(rgb[..., 0], rgb[..., 2])


def test_mixed_sizes_need_an_image_size(tmp_path):
    from PIL import Image

    root = make_folder(tmp_path / "mixed")
    Image.new("RGB", (20, 16)).save(root / "train" / "red" / "big.png")
    with pytest.raises(DataError, match=r"2 different sizes: 10x12 \(24\), 16x20 \(1\)") as info:
        load_split(f"folder:{root}", "train", cfg(root))
    assert "data.image_size = [10, 12]" in str(info.value)
    split, _, _ = load_split(f"folder:{root}", "train", cfg(root, image_size=8))
    assert split.x.shape == (19, 8, 8, 3)


def test_corrupt_files_are_skipped_with_a_warning_or_fatal_when_strict(tmp_path):
    root = make_folder(tmp_path / "corrupt")
    bad = root / "train" / "green" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.warns(DataWarning, match=r"skipped 1 of 19 files that could not be read: .*broken\.png"):
        split, _, _ = load_split(f"folder:{root}", "train", cfg(root))
    assert split.x.shape[0] == 18
    with pytest.raises(DataError, match=r"cannot read .*broken\.png") as info:
        load_split(f"folder:{root}", "train", cfg(root, strict=True))
    assert "data.strict = false" in str(info.value)


def test_slices_are_a_fixed_shuffle_disjoint_and_complete(tmp_path):
    root = make_folder(tmp_path / "slices", per_class=(10, 1))
    head, _, _ = load_split(f"folder:{root}", "train[:80%]", cfg(root))
    tail, _, _ = load_split(f"folder:{root}", "train[80%:]", cfg(root))
    again, _, _ = load_split(f"folder:{root}", "train[80%:]", cfg(root))
    assert (len(head.y), len(tail.y)) == (24, 6) and np.array_equal(tail.x, again.x)
    whole = {arr.tobytes() for arr in load_split(f"folder:{root}", "train", cfg(root))[0].x}
    assert {arr.tobytes() for arr in np.concatenate([head.x, tail.x])} == whole
    assert len(set(head.y.tolist())) == 3, "a slice holds every class, not the first folders"


@pytest.mark.parametrize(
    ("layout", "split", "message"),
    [
        ("good", "tset", r"no split folder .*tset; did you mean 'test'\?"),
        ("flat", "train", r"images directly under a split or class folder"),
        ("missing", "train", r"no such directory"),
        ("good", "train[:ten]", r"cannot read split 'train\[:ten\]'"),
    ],
)
def test_layout_errors_say_what_is_expected(tmp_path, layout, split, message):
    root = tmp_path / "data"
    if layout == "good":
        make_folder(root)
    elif layout == "flat":
        make_folder(root)
        (root / "train" / "stray.png").write_bytes((root / "train" / "red" / "0.png").read_bytes())
    with pytest.raises(DataError, match=message):
        load_split(f"folder:{root}", split, cfg(root))


def test_over_the_memory_budget_fails_before_decoding(tmp_path):
    root = make_folder(tmp_path / "budget", per_class=(1, 1), size=(600, 600))  # 3 * 600*600*3 B = 3.1 MiB
    with pytest.raises(DataError, match=r"need 4 MiB in memory, over data.memory_budget_mb = 1; streaming"):
        load_split(f"folder:{root}", "train", cfg(root, memory_budget_mb=1))


def test_a_folder_of_pngs_trains_and_evaluates_end_to_end(tmp_path, capsys):
    from cnncli.cli.app import main
    from cnncli.config.recipe import load_recipe
    from cnncli.train.loop import fit

    make_folder(tmp_path / "colours", per_class=(8, 3))
    recipe = tmp_path / "colours.toml"
    recipe.write_text(
        '[data]\nsource = "folder:colours"\nbatch_size = 8\neval_batch_size = 9\n'  # relative to the recipe
        '[[data.augment]]\nop = "flip_lr"\n'
        '[model]\nlayers = ["conv:c=4,k=3,p=same", "relu", "gap", "dense"]\n'
        "[optimizer]\nlearning_rate = 0.05\n[train]\nepochs = 3\n"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # nothing is skipped here
        summary = fit(load_recipe(recipe), tmp_path / "run", recipe_text=recipe.read_text())
    assert summary["steps"] == 9 and summary["eval_accuracy"] is not None
    assert json.loads((tmp_path / "run" / "data.json").read_text())["class_names"] == ["blue", "green", "red"]
    with pytest.raises(SystemExit) as info:
        main(["eval", str(tmp_path / "run"), "--json"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info.value.code == 0 and result["num_examples"] == 9
    assert result["accuracy"] == pytest.approx(summary["eval_accuracy"], abs=1e-6)
