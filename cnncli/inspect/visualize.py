"""Feature visualization: the input that excites a unit most (``inspect-filters --visualize``).

A unit is one channel of a conv's response (`cnncli.inspect.probe.ConvInfo.response`:
the activation after a top-level conv, the BatchNorm + ReLU after a block conv, or
the conv's own output), or of any point `cnncli.models.capture` names; its score is
the channel's mean over all positions. The input is optimized by gradient ascent on
that score, with the three regularizers that make the result readable (Olah et al.,
"Feature Visualization", Distill 2017; the lucid library's defaults):

- **a decorrelated Fourier parameterization**: the parameters are the input's spectrum
  (``rfft`` over the spatial axes), each frequency scaled by ``1 / max(|f|, 1/N)`` so
  that every frequency learns at the same rate and low frequencies dominate (natural
  images' ~1/f spectrum); for three channels the colours pass through lucid's colour
  correlation matrix (the square root of ImageNet's colour covariance), so the channels
  are optimized decorrelated. A sigmoid maps the result into the data's raw value range.
- **jitter**: each step sees the input shifted by up to ``jitter`` pixels per axis;
- **scaling**: and rescaled about its centre by a factor in ``1 +- scale`` (both through
  one `jax.image.scale_and_translate`), so the result must work at every placement
  rather than exploit one pixel grid.

All units of a layer are optimized together: one batch of ``U`` inputs, unit ``u``
scored on its own channel (the model runs in eval mode, so the examples do not
interact), in one compiled step (`jax.jit`; optax Adam) called ``steps`` times. The
steps are a Python loop, not `lax.scan`: convolutions inside a scan take a slow path
on XLA CPU (docs/architecture.md, STACK-NOTES). 1-D models get 1-D signals. The final
input is scored without jitter or scaling, against the unit's mean response over real
examples of the eval split (the ``ratio``). Nothing here prints.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from cnncli.errors import UsageError

# lucid's colour correlation (square root of ImageNet's colour covariance), columns normalized
_COLOR_SQRT = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], np.float32)
COLOR_CORRELATION = _COLOR_SQRT / np.max(np.linalg.norm(_COLOR_SQRT, axis=0))

STEPS = 512  # lucid's default (at 128 px); the small inputs here are cheap (1-D: about 1 s after compiling)
LEARNING_RATE = 0.05  # Adam, on the spectrum (lucid's default)
SCALE = 0.1  # rescale by 1 +- 10% per step
DEFAULT_UNITS = 16  # units drawn when --units is not given


@dataclass
class Visualization:
    """The optimized inputs of some units of one layer.

    Attributes:
        layer: as asked (a conv name, a layer name or a capture point).
        point: the point whose channel mean is maximized.
        relu: a ReLU fused into ``point`` applied before the mean (block convs).
        units: the channels, in the order of ``images``.
        images: ``(U, *input_shape)`` optimized inputs in raw input units (pixel values).
        activation: per unit, its channel mean on its optimized input (no jitter or scaling).
        real_mean: per unit, its mean response over ``num_examples`` real eval examples (None without data).
        ratio: ``activation / real_mean`` where ``real_mean > 0``.
        start: per unit, its channel mean on the initial (near-constant) input.
        steps, seconds: optimization steps, and the wall time of the optimization (compile included).
    """

    layer: str
    point: str
    relu: bool
    units: list[int]
    images: np.ndarray
    activation: list[float]
    start: list[float]
    real_mean: list[float] | None = None
    ratio: list[float | None] | None = None
    num_examples: int = 0
    steps: int = STEPS
    seconds: float = 0.0
    settings: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


# ---------------------------------------------------------- parameterization
def spectrum_scale(spatial: tuple[int, ...]) -> np.ndarray:
    """Per ``rfft`` frequency, ``1 / max(|f|, 1/N)`` times ``sqrt(prod(spatial))`` (lucid's ``fft_image``, decay 1)."""
    axes = [np.fft.fftfreq(n) for n in spatial[:-1]] + [np.fft.rfftfreq(spatial[-1])]
    grids = np.meshgrid(*axes, indexing="ij")
    freqs = np.sqrt(sum(g * g for g in grids))
    return (1.0 / np.maximum(freqs, 1.0 / max(spatial))) * np.sqrt(float(np.prod(spatial)))


def to_input(params, scale, spatial: tuple[int, ...], value_range):
    """Spectrum parameters ``(U, 2, C, *freq)`` -> inputs ``(U, *spatial, C)`` in the raw value range."""
    import jax
    import jax.numpy as jnp

    spectrum = (params[:, 0] + 1j * params[:, 1]) * scale  # (U, C, *freq)
    axes = tuple(range(2, 2 + len(spatial)))
    x = jnp.fft.irfftn(spectrum, s=spatial, axes=axes) / 4.0  # (U, C, *spatial); /4 as lucid
    x = jnp.moveaxis(x, 1, -1)  # channels last
    if x.shape[-1] == 3:  # decorrelated colours -> RGB
        x = x @ jnp.asarray(COLOR_CORRELATION).T
    lo, hi = value_range
    return lo + (hi - lo) * jax.nn.sigmoid(x)


def transform(x, key, jitter: int, scale: float):
    """Each input ``(U, *spatial, C)`` shifted by up to ``jitter`` pixels, scaled by ``1 +- scale`` about its centre."""
    import jax
    import jax.numpy as jnp

    spatial = x.shape[1:-1]
    k1, k2 = jax.random.split(key)
    shift = jax.random.randint(k1, (x.shape[0], len(spatial)), -jitter, jitter + 1).astype(jnp.float32)
    factor = jax.random.uniform(k2, (x.shape[0], 1), minval=1 - scale, maxval=1 + scale)
    center = jnp.asarray(spatial, jnp.float32) / 2

    def one(img, s, t):
        sc = jnp.broadcast_to(s, (len(spatial),))
        return jax.image.scale_and_translate(img, img.shape, tuple(range(len(spatial))), sc,
                                             center * (1 - sc) + t, method="linear")  # fmt: skip

    return jax.vmap(one)(x, factor, shift)


def default_jitter(spatial: tuple[int, ...]) -> int:
    """Pixels of jitter: 1 for inputs up to 31 samples a side, about 1/16 of the side above."""
    return max(1, min(spatial) // 16)


# ---------------------------------------------------------- the optimization
@dataclass(frozen=True)
class Objective:
    """Where a unit's score is read: ``post(activation at pre)``, channel ``u``, mean over positions.

    ``pre`` is the point before the unit's nonlinearity, so the optimization can add a small
    multiple of its mean (``LEAK``): a unit whose ReLU is off everywhere on the starting
    input still gets a gradient (the role of lucid's redirected ReLU).

    Attributes:
        point: the response as shown to the user (``relu1``, ``resblock1.bn1``, ``resblock2``).
        pre: the point read from the model.
        post: a top-level activation layer applied to ``pre`` (``relu1``), or None.
        relu: apply a ReLU to ``pre`` (a ReLU fused into a block's BatchNorm).
    """

    point: str
    pre: str
    post: str | None = None
    relu: bool = False


LEAK = 0.01  # weight of the pre-activation mean in the optimized objective (not in the reported score)


def _score_fn(graphdef, objective: Objective, units, mean, std):
    """``(state, x_raw (U, ...)) -> ((U,) scores, (U,) pre-activation means)``: unit ``u`` on input ``u``."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from cnncli.models.apply import normalize
    from cnncli.models.capture import activation_at

    units = jnp.asarray(units)

    def channel_mean(a):
        a = jnp.take_along_axis(a.reshape(a.shape[0], -1, a.shape[-1]), units[:, None, None], axis=-1)
        return a[..., 0].mean(axis=1)

    def score(state, x):
        model = nnx.merge(graphdef, state, copy=True)
        pre = activation_at(model, normalize(x, mean, std), objective.pre)  # (U, *spatial, C)
        a = getattr(model, objective.post)(pre) if objective.post else pre
        a = jax.nn.relu(a) if objective.relu else a
        return channel_mean(a), channel_mean(pre)

    return score


def _initial_spectrum(seed: int, shape, scale_t, spatial, target_std: float = 0.5):
    """A random spectrum whose input, before the sigmoid, has std ``target_std``: a noisy start
    (about 12% of the value range), so most units respond somewhere from the first step.
    Drawn with NumPy: an eager `jax.random.normal` compiles threefry first (seconds on XLA CPU)."""
    import jax.numpy as jnp

    params = jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)
    spectrum = (params[:, 0] + 1j * params[:, 1]) * scale_t
    raw = jnp.fft.irfftn(spectrum, s=spatial, axes=tuple(range(2, 2 + len(spatial)))) / 4.0
    return params * (target_std / jnp.maximum(raw.std(), 1e-8))


def optimize_units(model, objective: Objective, units: list[int], *, mean, std, value_range,
                   steps: int = STEPS, learning_rate: float = LEARNING_RATE, jitter: int | None = None,
                   scale: float = SCALE, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Optimize one input per unit to maximize its channel mean at ``objective``.

    Args:
        model: a `cnncli.models.Model` in eval mode.
        objective: where the units are read (`Objective`; `objective_for` builds it for a run's layer).
        units: channel indices at the objective's point.
        mean, std: the run's per-channel normalization (raw input -> model input).
        value_range: the raw input range the inputs are squashed into (sigmoid).
        steps, learning_rate: Adam steps on the spectrum.
        jitter: pixels of random shift per step (default `default_jitter`); scale: random rescaling, ``1 +- scale``.
        seed: the random initial spectrum and transforms.

    Returns:
        ``(inputs (U, *input_shape), score on the final inputs (U,), score on the initial inputs (U,))``.
    """
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    shape = tuple(model.input_shape)
    spatial, channels = shape[:-1], shape[-1]
    jitter = default_jitter(spatial) if jitter is None else jitter
    graphdef, state = nnx.split(model)
    score = _score_fn(graphdef, objective, units, mean, std)
    freq = spectrum_scale(spatial)
    scale_t = jnp.asarray(freq, jnp.float32)
    key = jax.random.key(seed, impl="rbg")  # jitter and scaling draws; rbg compiles faster than threefry on CPU
    params = _initial_spectrum(seed, (len(units), 2, channels, *freq.shape), scale_t, spatial)
    tx = optax.adam(learning_rate)
    opt = tx.init(params)

    def loss(params, state, key):
        x = to_input(params, scale_t, spatial, value_range)
        unit, pre = score(state, transform(x, key, jitter, scale))
        return -(unit + LEAK * pre).sum()

    @jax.jit
    def step(params, opt, state, i):
        grads = jax.grad(loss)(params, state, jax.random.fold_in(key, i + 1))
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt

    final = jax.jit(lambda params, state: score(state, to_input(params, scale_t, spatial, value_range))[0])
    start = np.asarray(final(params, state))
    for i in range(steps):
        params, opt = step(params, opt, state, i)
    x = to_input(params, scale_t, spatial, value_range)
    return np.asarray(x), np.asarray(final(params, state)), start


# ---------------------------------------------------------- a run's layer
def parse_units(text: str | None, channels: int, default: int = DEFAULT_UNITS) -> list[int]:
    """``"0,3,5"`` / ``"0-7"`` / ``"0-3,9"`` -> channel indices (None: the first ``default``).

    Raises:
        UsageError: text that does not parse, or a channel outside ``0..channels-1``.
    """
    if text is None:
        return list(range(min(default, channels)))
    units: list[int] = []
    for part in text.split(","):
        lo, dash, hi = part.strip().partition("-")
        try:
            first, last = int(lo), int(hi) if dash else int(lo)
        except ValueError:
            raise UsageError(f"--units {text!r}: expected channel numbers like 0,3,5 or 0-7") from None
        if first > last:
            raise UsageError(f"--units {text!r}: the range {part.strip()} runs backwards",
                             hint=f"write it low to high: {last}-{first}")  # fmt: skip
        if not 0 <= first <= last < channels:
            raise UsageError(f"--units {text!r}: channel {last} out of range",
                             hint=f"the layer has channels 0..{channels - 1}")  # fmt: skip
        units += [u for u in range(first, last + 1) if u not in units]
    return units


def objective_for(run, layer: str) -> Objective:
    """The `Objective` of a layer's units: a conv's response, else the point itself.

    A top-level conv responds at the activation after it (``relu1``), read as that
    activation applied to the layer just before it (``bn1``); a block conv at its
    BatchNorm with the fused ReLU applied (``resblock1.bn1``), or its own output.

    Raises:
        UsageError: a name that is neither a conv nor a capture point (with a did-you-mean).
    """
    from cnncli.arith.layers import Activation
    from cnncli.inspect.probe import conv_layers
    from cnncli.models.capture import capture_points

    names = list(run.model.layer_names)
    convs = {c.name: c for c in conv_layers(run)}
    if layer in convs:
        info = convs[layer]
        if info.response_relu:
            return Objective(info.response, info.response, relu=True)
        i = names.index(info.response) if info.response in names else -1
        if i > 0 and isinstance(run.specs[i], Activation):
            return Objective(info.response, names[i - 1], post=info.response)
        return Objective(info.response, info.response)
    points = capture_points(run.model)
    if layer not in points:
        from cnncli.errors import unknown_choice

        raise UsageError(unknown_choice("layer", layer, list(convs) + [p for p in points if p not in convs]),
                         hint="conv layers as inspect-filters --list names them")  # fmt: skip
    return Objective(layer, layer)


def real_means(run, point: str, relu: bool, units: list[int], x: np.ndarray) -> np.ndarray:
    """Per unit, its channel mean at ``point`` averaged over the raw inputs ``x``."""
    from cnncli.inspect.probe import batched_responses

    total = np.zeros(len(units))
    for _, _, acts in batched_responses(run, x, [point]):
        a = acts[point]
        a = np.maximum(a, 0) if relu else a
        total += a.reshape(len(a), -1, a.shape[-1])[..., units].mean(axis=1).sum(axis=0)
    return total / len(x)


def visualize(run, layer: str | None, *, units: str | None = None, steps: int = STEPS,
              learning_rate: float = LEARNING_RATE, seed: int = 0, examples: int = 256) -> Visualization:  # fmt: skip
    """Feature visualization of some units of a run's layer (default: the first conv).

    Args:
        run: a `cnncli.runs.load.LoadedRun`.
        layer: a conv name (its response), a layer name or a capture point.
        units: ``--units`` text (`parse_units`); None: the first 16 channels.
        steps, learning_rate, seed: the optimization (`optimize_units`).
        examples: eval-split examples for each unit's mean response on real data (0: skip).

    Raises:
        UsageError: an unknown layer, one without spatial output, a 3-D model, bad units.
    """
    from cnncli.inspect.probe import conv_layers, point_shape

    if layer is None:
        convs = conv_layers(run)
        if not convs:
            raise UsageError(f"the model of {run.workdir} has no conv layers", hint="name a layer with --layer")
        layer = convs[0].name
    objective = objective_for(run, layer)
    point, relu = objective.point, objective.relu
    shape = point_shape(run, point)
    if len(shape) < 2:
        raise UsageError(f"{point} has no spatial output (shape {'x'.join(map(str, shape))})",
                         hint="visualize a conv layer or a layer before flatten/gap")  # fmt: skip
    if len(run.input_shape) > 3:
        raise UsageError("feature visualization is for 1-D and 2-D inputs", hint="3-D models: filter grids and health")
    chosen = parse_units(units, shape[-1])
    value_range = tuple(run.data.get("value_range") or (0.0, 255.0))
    t0 = time.perf_counter()
    images, act, start = optimize_units(run.model, objective, chosen, mean=run.data["mean"], std=run.data["std"],
                                        value_range=value_range, steps=steps, learning_rate=learning_rate,
                                        seed=seed)  # fmt: skip
    vis = Visualization(layer, point, relu, chosen, images, [float(a) for a in act], [float(s) for s in start],
                        steps=steps, seconds=time.perf_counter() - t0,
                        settings={"learning_rate": learning_rate, "jitter": default_jitter(run.input_shape[:-1]),
                                  "scale": SCALE, "seed": seed, "parameterization": "fourier"})  # fmt: skip
    if examples > 0:
        _compare_to_real(run, vis, examples)
    return vis


def _compare_to_real(run, vis: Visualization, examples: int) -> None:
    """Fill ``real_mean`` and ``ratio`` from the eval split (a warning when there is none)."""
    from cnncli.errors import CnnCliError
    from cnncli.runs.splits import load_eval_split

    try:
        data, _, _, notes = load_eval_split(run)
    except CnnCliError as err:
        vis.warnings.append(f"no validation data ({err.message}): no comparison with real inputs")
        return
    vis.warnings += notes
    x = data.x[:examples]
    if len(x) == 0:
        return
    real = real_means(run, vis.point, vis.relu, vis.units, x)
    vis.num_examples = len(x)
    vis.real_mean = [float(r) for r in real]
    vis.ratio = [float(a / r) if r > 0 else None for a, r in zip(vis.activation, real)]


# ---------------------------------------------------------- the picture
def visualization_image(vis: Visualization, value_range, *, target: int = 96):
    """The grid PNG: one tile per unit (an image, or a line plot for 1-D), captioned with its score."""
    from cnncli.pictures.images import grid_image, input_tile, square_cols

    tiles = [input_tile(x, value_range, target) for x in vis.images]
    labels = []
    for i, u in enumerate(vis.units):
        ratio = vis.ratio[i] if vis.ratio else None
        labels.append(f"u{u}: {vis.activation[i]:.3g}" + (f"\n{ratio:.0f}x real" if ratio is not None else ""))
    where = vis.point + (" + relu" if vis.relu else "")
    title = f"{vis.layer} ({where}): inputs that maximize each unit's mean, {vis.steps} steps"
    return grid_image(tiles, square_cols(len(tiles), 8), labels=labels, title=title)


def write_visualization(vis: Visualization, value_range, out_dir) -> dict:
    """``visualize.png`` (the grid) and ``visualize.npy`` (the inputs, ``(U, *input_shape)`` float32) in ``out_dir``.

    Each file is written beside its destination and renamed into place: never half-written.
    """
    import os
    from pathlib import Path

    from cnncli.pictures.images import save

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png, npy = out_dir / "visualize.png", out_dir / "visualize.npy"
    tmp_png, tmp_npy = out_dir / ".visualize.png.tmp", out_dir / ".visualize.npy.tmp"
    try:
        save(visualization_image(vis, value_range), tmp_png)
        with open(tmp_npy, "wb") as f:
            np.save(f, vis.images.astype(np.float32))
        os.replace(tmp_png, png)
        os.replace(tmp_npy, npy)
    finally:  # a failed write leaves no temporary file behind
        tmp_png.unlink(missing_ok=True)
        tmp_npy.unlink(missing_ok=True)
    return {"visualize_png": png, "visualize_npy": npy}
