"""``inspect-filters --visualize`` (cnncli.inspect.visualize): answers known in advance, then the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import cli, write_recipe

from cnncli.errors import UsageError
from cnncli.inspect.visualize import (
    Objective,
    default_jitter,
    objective_for,
    optimize_units,
    parse_units,
    spectrum_scale,
    to_input,
    visualize,
)


def fake_run(tokens: str, shape: tuple[int, ...], classes: int = 3, *, seed: int = 0, workdir="."):
    """A `LoadedRun` around a freshly built model (no training, no files): for tests of the inspection code."""
    import jax
    from flax import nnx

    from cnncli.arith.layers import parse_layers
    from cnncli.models import build_model
    from cnncli.runs.load import LoadedRun

    specs = parse_layers(tokens)
    key = jax.random.key(seed, impl="rbg")  # as training's init: threefry's initializers compile slowly on CPU
    model = build_model(specs, shape, classes, rngs=nnx.Rngs(params=key, dropout=key))
    model.eval()
    channels = shape[-1]
    data = {"class_names": [str(i) for i in range(classes)], "input_shape": list(shape),
            "mean": [0.5] * channels, "std": [0.25] * channels, "value_range": [0.0, 1.0]}  # fmt: skip
    return LoadedRun(workdir, None, data, model, tuple(specs), 0, {})


# ------------------------------------------------------------------ pieces
def test_units_text():
    assert parse_units(None, 40) == list(range(16)) and parse_units(None, 5) == [0, 1, 2, 3, 4]
    assert parse_units("0-3,9,2", 10) == [0, 1, 2, 3, 9]
    with pytest.raises(UsageError, match=r"--units '12': channel 12 out of range") as info:
        parse_units("12", 10)
    assert info.value.hint == "the layer has channels 0..9"
    with pytest.raises(UsageError, match=r"--units 'a-b': expected channel numbers like 0,3,5 or 0-7"):
        parse_units("a-b", 10)


def test_fourier_parameterization_stays_in_range_and_favours_low_frequencies():
    import jax.numpy as jnp

    scale = spectrum_scale((8, 10))
    assert scale.shape == (8, 6)  # rfft over the last axis
    assert scale[0, 0] == scale.max() and scale[4, 5] == scale.min()  # 1/|f|: DC largest, Nyquist smallest
    rng = np.random.default_rng(0)
    params = jnp.asarray(3 * rng.standard_normal((2, 2, 3, 8, 6)), jnp.float32)
    x = np.asarray(to_input(params, jnp.asarray(scale, jnp.float32), (8, 10), (-1.0, 4.0)))
    assert x.shape == (2, 8, 10, 3) and x.min() >= -1.0 and x.max() <= 4.0
    scale1 = spectrum_scale((16,))
    params1 = jnp.asarray(rng.standard_normal((2, 2, 1, 9)), jnp.float32)
    signal = np.asarray(to_input(params1, jnp.asarray(scale1), (16,), (0, 1)))
    assert scale1.shape == (9,) and signal.shape == (2, 16, 1) and 0 <= signal.min() <= signal.max() <= 1
    assert default_jitter((8, 8)) == 1 and default_jitter((40,)) == 2 and default_jitter((224, 224)) == 14


def test_objectives_of_convs_in_and_out_of_blocks(tmp_path):
    run = fake_run("conv:c=4,k=3,p=same bn relu resblock:c=4 conv:c=4,k=3 gap dense", (12, 12, 1), workdir=tmp_path)
    assert objective_for(run, "conv1") == Objective("relu1", "bn1", post="relu1")  # the ReLU read from bn1's output
    assert objective_for(run, "resblock1.conv1") == Objective("resblock1.bn1", "resblock1.bn1", relu=True)
    assert objective_for(run, "resblock1.conv2") == Objective("resblock1.conv2", "resblock1.conv2")
    assert objective_for(run, "conv2") == Objective("conv2", "conv2")  # nothing after it but gap
    assert objective_for(run, "resblock1") == Objective("resblock1", "resblock1")
    valid = r"\(valid: bn1, conv1, conv2, dense1, gap1, relu1, resblock1, resblock1.bn1, "
    with pytest.raises(UsageError, match=r"unknown layer 'resblock1.conv3'; did you mean 'resblock1.conv2'\? " + valid):
        objective_for(run, "resblock1.conv3")


# ------------------------------------------------------ known answers
def gabor(theta_deg: float, k: int = 7, wavelength: float = 4.0, sigma: float = 2.0) -> np.ndarray:
    """A zero-mean Gabor kernel whose stripes run across the direction ``theta`` (its wave vector)."""
    r = np.arange(k) - (k - 1) / 2
    yy, xx = np.meshgrid(r, r, indexing="ij")
    t = np.radians(theta_deg)
    g = np.exp(-(xx**2 + yy**2) / (2 * sigma**2)) * np.cos(2 * np.pi * (xx * np.cos(t) + yy * np.sin(t)) / wavelength)
    return g - g.mean()


def dominant_orientation(img: np.ndarray) -> float:
    """The direction (degrees, mod 180) of an image's wave vector: power-weighted doubled angle of its spectrum."""
    z = (img - img.mean()) * np.outer(np.hanning(img.shape[0]), np.hanning(img.shape[1]))
    power = np.abs(np.fft.fft2(z, (128, 128))) ** 2
    f = np.fft.fftfreq(128)
    phi = np.arctan2(f[:, None], f[None, :])
    return float(np.degrees(0.5 * np.arctan2((power * np.sin(2 * phi)).sum(), (power * np.cos(2 * phi)).sum())) % 180)


def angle_gap(a: float, b: float) -> float:
    d = abs(a - b) % 180
    return min(d, 180 - d)


@pytest.mark.slow  # one compile of the batched optimization, 256 steps of six 24x24 inputs
def test_first_layer_unit_wants_its_own_edge_orientation(tmp_path):
    """A hand-set Gabor first layer: each unit's optimized image runs along its kernel (within 15 degrees),
    and excites it more than real images do (the digits scaled to 24x24: strokes are edges too, so the
    margin is 4-7x here; the 10x of units of a trained network is `test_trained_1d_units_beat_real_signals`)."""
    import jax.numpy as jnp

    from cnncli.data.digits import load_digits_split

    angles = [0, 30, 60, 100, 145, 170]
    run = fake_run("conv:c=6,k=7,p=same relu gap dense", (24, 24, 1), workdir=tmp_path)
    kernel = np.stack([gabor(a) for a in angles], -1)[:, :, None, :]
    assert [round(dominant_orientation(kernel[..., 0, i])) % 180 for i in range(6)] == angles  # the measure itself
    run.model.conv1.kernel[...] = jnp.asarray(kernel, jnp.float32)
    run.model.conv1.bias[...] = jnp.zeros(6)
    objective = objective_for(run, "conv1")
    images, score, start = optimize_units(run.model, objective, list(range(6)), mean=[0.5], std=[0.25],
                                          value_range=(0.0, 1.0), steps=256)  # fmt: skip
    assert images.shape == (6, 24, 24, 1) and images.min() >= 0 and images.max() <= 1
    for i, a in enumerate(angles):
        assert angle_gap(dominant_orientation(images[i, ..., 0]), a) <= 15, (a, dominant_orientation(images[i, ..., 0]))
    digits, _, _ = load_digits_split("test")
    real = np.kron(digits.x[:200, ..., 0] / 16.0, np.ones((3, 3)))[..., None].astype(np.float32)  # 8x8 -> 24x24
    from cnncli.inspect.visualize import real_means

    means = real_means(run, objective.point, objective.relu, list(range(6)), real)
    assert np.all(score >= 3 * means), (score, means)
    assert np.all(score > start)


MNIST1D = """\
[data]
source = "mnist1d"
batch_size = 50

[data.mnist1d]
num_samples = 1000

[model]
layers = ["conv:c=16,k=5,s=2,p=1", "relu", "conv:c=16,k=3,s=2,p=1", "relu",
          "conv:c=16,k=3,s=2,p=1", "relu", "flatten", "dense"]

[optimizer]
name = "adam"
learning_rate = 0.01

[train]
steps = 300
seed = 0
"""


@pytest.fixture(scope="module")
def mnist1d_run(tmp_path_factory):
    """The paper's small MNIST-1D CNN, 16 channels wide, trained 300 steps on 800 signals (about 55% accuracy)."""
    from cnncli.config.recipe import load_recipe
    from cnncli.train.loop import fit

    root = tmp_path_factory.mktemp("mnist1d")
    fit(load_recipe(write_recipe(root, MNIST1D)), root / "run")
    return root / "run"


@pytest.mark.slow  # training the fixture, then one optimization
def test_trained_1d_units_beat_real_signals(mnist1d_run):
    """The last conv's units of a trained 1-D CNN: optimized signals excite them 10x (median) over real ones."""
    from cnncli.runs.load import load_run

    vis = visualize(load_run(mnist1d_run), "conv3", examples=200)
    assert vis.point == "relu3" and vis.units == list(range(16)) and vis.images.shape == (16, 40, 1)
    lo, hi = load_run(mnist1d_run).data["value_range"]
    assert vis.images.min() >= lo and vis.images.max() <= hi
    live = [i for i, r in enumerate(vis.real_mean) if r > 0]
    ratios = np.array([vis.ratio[i] for i in live])
    assert len(live) >= 12 and np.median(ratios) >= 10, ratios
    assert np.all(ratios >= 2) and all(vis.activation[i] > vis.start[i] for i in live)


@pytest.mark.slow
def test_cli_visualize_json_png_and_npy(mnist1d_run, tmp_path, capsys):
    out = tmp_path / "vis"
    code, stdout, err = cli(["inspect-filters", str(mnist1d_run), "--layer", "conv2", "--visualize", "--units", "0-3",
                             "--steps", "32", "--examples", "50", "--json", "-o", str(out)], capsys)  # fmt: skip
    assert code == 0, err
    data = json.loads(stdout)
    assert set(data) == {"checkpoint_step", "layer", "point", "relu", "units", "activation", "start", "real_mean",
                         "ratio", "num_examples", "steps", "seconds", "settings", "files", "warnings"}  # fmt: skip
    assert data["layer"] == "conv2" and data["point"] == "relu2" and data["units"] == [0, 1, 2, 3]
    assert data["steps"] == 32 and data["num_examples"] == 50 and data["checkpoint_step"] == 300
    settings = {"learning_rate": 0.05, "jitter": 2, "scale": 0.1, "seed": 0, "parameterization": "fourier"}
    assert data["settings"] == settings
    assert data["files"] == {"visualize_png": str(out / "visualize.png"), "visualize_npy": str(out / "visualize.npy")}
    assert np.load(out / "visualize.npy").shape == (4, 40, 1)
    from PIL import Image

    with Image.open(out / "visualize.png") as img:
        assert img.format == "PNG" and img.width > 200
    code, stdout, err = cli(["inspect-filters", str(mnist1d_run), "--visualize", "--steps", "8", "--units", "1",
                             "--examples", "0", "-o", str(out)], capsys)  # fmt: skip
    assert code == 0 and "conv1: inputs that maximize each unit's mean at relu1, 8 steps" in stdout
    assert "no eval examples: no comparison with real inputs" in stdout and "wrote visualize png:" in err


def test_cli_visualize_refuses_other_modes(trained_run, capsys):
    code, _, err = cli(["inspect-filters", str(trained_run), "--visualize", "--index", "0"], capsys)
    assert code == 2 and "error: --visualize draws optimized inputs only" in err
    code, _, err = cli(["inspect-filters", str(trained_run), "--units", "0-3"], capsys)
    assert code == 2 and "error: --units selects units for --visualize" in err
    code, _, err = cli(["inspect-filters", str(trained_run), "--visualize", "--layer", "gap1"], capsys)
    assert code == 2 and "error: gap1 has no spatial output (shape 16)" in err


def test_help_has_visualize_examples(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = cli(["inspect-filters", "--help"], capsys)
    assert code == 0 and "--visualize" in out and "--units" in out and "--steps" in out
    assert "cnncli inspect-filters runs/quickstart --layer conv2 --visualize --units 0-7" in out
    assert "cnncli inspect-filters runs/resnet20 --layer resblock3.conv1 --index 0" in out
