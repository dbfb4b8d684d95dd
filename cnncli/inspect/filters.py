"""What a trained network learned: its conv filters, their health, and what excites them.

Everything here reads a `cnncli.runs.load.LoadedRun` and returns plain dataclasses;
`cnncli.pictures.images` draws them and `cnncli.report.eval` prints them.

- `conv_layers` / `find_conv` (from `cnncli.inspect.probe`): every conv with the names
  the recipe's layer table uses (``conv1``, ``resblock1.conv2``).
- `filter_grid`: a layer's kernels scaled to [0, 1] for display, mid-gray = 0, per
  filter or on one shared scale.
- `filter_health`: per filter L2 norm, mean, std, the fraction of a validation batch
  on which its ReLU is dead, and its most similar other filter (cosine); flags dead,
  near-zero and near-duplicate filters; with the step-0 kernel, how far it moved.
- `cnncli.inspect.activations` (`feature_maps`, `top_patches`, `rf_box`): activations
  for one input, the input patches that most excite each filter, and the
  receptive-field box of a position (sizes from `cnncli.arith.geometry`, so they agree
  with ``conv-arith``); `inspect_layer` gathers them into one `FilterReport`.

A filter's *response* is its channel after the activation that follows the conv
(skipping ``bn``/``dropout`` in between): ``conv1 -> bn1 -> relu1`` responds at
``relu1``. Feature maps, dead fractions and patches are read there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cnncli.arith.layers import Activation
from cnncli.errors import CheckpointError, CnnCliError, UsageError
from cnncli.inspect.activations import ActivatingPatches, FeatureMaps, feature_maps, top_patches
from cnncli.inspect.probe import ConvInfo, batched_responses, conv_layers, find_conv, read_response
from cnncli.pictures.kernels import FilterGrid, filter_grid

NEAR_ZERO_RATIO = 0.01  # L2 norm below 1% of the layer's median filter norm
DUPLICATE_COSINE = 0.95  # cosine similarity above which two filters are near-duplicates
DEAD_FRACTION = 0.99  # dead: the ReLU output is 0 everywhere on >= 99% of the batch's examples
DEAD_ACTIVATIONS = ("relu", "relu6")  # activations whose zero output means "dead"


# ------------------------------------------------------------------ the grid
# `FilterGrid` and `filter_grid` live one layer down, in `cnncli.pictures.kernels`, so
# training's TensorBoard images reach them; they are part of this module's interface too.


# ---------------------------------------------------------------- the health
@dataclass
class FilterStat:
    """One filter's statistics (see `filter_health`)."""

    index: int
    l2: float
    mean: float
    std: float
    dead_fraction: float | None  # of the validation batch; None without a ReLU response
    nearest: int | None  # most similar other filter by cosine
    cosine: float | None
    flags: list[str] = field(default_factory=list)  # "dead", "near-zero", "near-duplicate"
    init_distance: float | None = None  # ||w - w0||
    init_relative: float | None = None  # ||w - w0|| / ||w0||
    init_cosine: float | None = None  # cos(w, w0)


def _cosines(flat: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(flat, axis=1)
    unit = flat / np.where(norms > 0, norms, 1.0)[:, None]
    cos = unit @ unit.T
    cos[norms == 0, :] = np.nan
    cos[:, norms == 0] = np.nan
    np.fill_diagonal(cos, np.nan)
    return cos


def filter_health(kernel: np.ndarray, dead_fraction: np.ndarray | None = None,
                  init_kernel: np.ndarray | None = None) -> list[FilterStat]:  # fmt: skip
    """Per-filter statistics of a kernel ``(*k, cin, F)``; flags from the module constants.

    Args:
        kernel: the trained kernel.
        dead_fraction: per filter, the fraction of a batch on which its ReLU is dead.
        init_kernel: the step-0 kernel, for the distance moved.
    """
    kernel = np.asarray(kernel, np.float64)
    flat = np.moveaxis(kernel, -1, 0).reshape(kernel.shape[-1], -1)
    l2 = np.linalg.norm(flat, axis=1)
    median = float(np.median(l2)) if len(l2) else 0.0
    cos = _cosines(flat) if len(flat) > 1 else np.full((len(flat), len(flat)), np.nan)
    init = None if init_kernel is None else np.moveaxis(np.asarray(init_kernel, np.float64), -1, 0).reshape(flat.shape)
    stats = []
    for f in range(len(flat)):
        row = cos[f]
        nearest = None if np.all(np.isnan(row)) else int(np.nanargmax(row))
        c = None if nearest is None else float(row[nearest])
        dead = None if dead_fraction is None else float(dead_fraction[f])
        flags = []
        if dead is not None and dead >= DEAD_FRACTION:
            flags.append("dead")
        if l2[f] == 0 or l2[f] < NEAR_ZERO_RATIO * median:
            flags.append("near-zero")
        if c is not None and c >= DUPLICATE_COSINE:
            flags.append("near-duplicate")
        stat = FilterStat(f, float(l2[f]), float(flat[f].mean()), float(flat[f].std()), dead, nearest, c, flags)
        if init is not None:
            n0 = np.linalg.norm(init[f])
            stat.init_distance = float(np.linalg.norm(flat[f] - init[f]))
            stat.init_relative = float(stat.init_distance / n0) if n0 > 0 else None
            stat.init_cosine = float(flat[f] @ init[f] / (l2[f] * n0)) if l2[f] > 0 and n0 > 0 else None
        stats.append(stat)
    return stats


def init_kernel(run, name: str) -> np.ndarray:
    """The step-0 kernel of a conv from the run's ``init.npz`` (``--compare-init``)."""
    from cnncli.runs.load import load_init_params

    params = load_init_params(run.workdir)
    key = name.replace(".", "/") + "/kernel"
    if key not in params:
        raise CheckpointError(f"{run.workdir}/init.npz has no {key!r}", hint="was the run's model changed?")
    return params[key]


# ------------------------------------------------------ dead activations
def dead_fractions(run, info: ConvInfo, x: np.ndarray) -> np.ndarray | None:
    """Per filter, the fraction of examples of ``x`` on which its ReLU output is 0 everywhere.

    None when the filter has no ReLU response (no relu after it; inside a block, no ReLU
    fused into the BatchNorm after it).
    """
    if len(x) == 0:
        return None
    if not info.response_relu:
        if info.response == info.name:
            return None
        spec = run.specs[list(run.model.layer_names).index(info.response)]
        if not isinstance(spec, Activation) or spec.kind not in DEAD_ACTIVATIONS:
            return None
    dead = np.zeros(info.filters)
    for _, _, acts in batched_responses(run, x, [info.response]):
        a = read_response(info, acts[info.response])
        alive = (a > 0).reshape(len(a), -1, a.shape[-1]).any(axis=1)  # (B, F)
        dead += (~alive).sum(axis=0)
    return dead / len(x)


# ------------------------------------------------------------- the report
@dataclass
class FilterReport:
    """Everything ``inspect-filters`` shows for one conv layer."""

    info: ConvInfo
    step: int
    grid: FilterGrid
    health: list[FilterStat]
    num_examples: int  # validation examples behind the dead fractions (0: none)
    compared_to_init: bool = False
    maps: FeatureMaps | None = None
    patches: ActivatingPatches | None = None
    pngs: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def flags(self) -> dict[str, list[int]]:
        """Filter indices per flag."""
        flags = ("dead", "near-zero", "near-duplicate")
        return {flag: [s.index for s in self.health if flag in s.flags] for flag in flags}


def _validation(run, examples: int, warnings: list[str]):
    """The first ``examples`` of the run's evaluation split, or (None, None) with a warning."""
    from cnncli.runs.splits import load_eval_split

    try:
        data, _, _, notes = load_eval_split(run)
    except CnnCliError as err:
        warnings.append(f"no validation data ({err.message}): dead fractions and patches are skipped")
        return None, None
    warnings += notes
    return data.x[:examples], data.y[:examples]


def inspect_layer(run, layer: str | None = None, *, shared: bool = False, compare_init: bool = False,
                  image: str | None = None, index: int | None = None, patches: bool = False, top_k: int = 8,
                  max_filters: int | None = None, examples: int = 1024) -> FilterReport:  # fmt: skip
    """Compute the grid, health, and optionally feature maps and patches of one conv layer.

    Args:
        run: a `cnncli.runs.load.LoadedRun`.
        layer: a conv name from `conv_layers` (default: the first conv).
        shared: one colour scale for the whole grid.
        compare_init: also measure how far each filter moved from its step-0 weights.
        image: a PNG/JPEG/.npy input for feature maps; or ``index``: an example of the eval split.
        patches: find the maximally activating patches of the first filters.
        top_k: patches per filter.
        max_filters: filters in the grid (default 64) and with patches (default 8).
        examples: eval-split examples for dead fractions and patches.
    """
    if image is not None and index is not None:
        raise UsageError("give --image or --index, not both")
    info, kernel = find_conv(run, layer)
    first = conv_layers(run)[0].name == info.name and info.top_level
    rgb = first and info.in_channels == 3 and run.input_shape[-1] == 3  # the input image's own colours
    grid = filter_grid(kernel, layer=info.name, shared=shared, rgb=rgb, max_filters=max_filters or 64)
    warnings: list[str] = []
    x, y = _validation(run, examples, warnings) if (examples > 0 or index is not None or patches) else (None, None)
    dead = dead_fractions(run, info, x) if x is not None else None
    init = init_kernel(run, info.name) if compare_init else None
    rep = FilterReport(info, run.step, grid, filter_health(kernel, dead, init), 0 if x is None else len(x),
                       compare_init, warnings=warnings)  # fmt: skip
    if image is not None:
        from cnncli.inspect.predict import load_inputs

        xs, names, notes = load_inputs(run, [image])
        rep.warnings += [f"{image}: {n}" for n in notes if n]
        rep.maps = feature_maps(run, info.name, xs[0], input_name=names[0])
    elif index is not None:
        if x is None or not 0 <= index < len(x):
            raise UsageError(f"--index {index}: the eval split has {0 if x is None else len(x)} examples here",
                             hint="use 0..N-1 (raise --examples to reach further)")  # fmt: skip
        rep.maps = feature_maps(run, info.name, x[index], input_name=f"eval[{index}]", label=int(y[index]))
    if patches and x is not None:
        if len(x) == 0:
            raise UsageError("--patches needs eval-split examples", hint="use --examples N with N > 0")
        rep.patches = top_patches(run, info.name, x, y, filters=max_filters or 8, top_k=top_k)
    return rep
