"""``cnncli explain``: where a trained network looks, as plain data (maps and their figures).

`resolve_layer` picks Grad-CAM's layer (``auto``: the output after the last residual add in
residual networks, else the activated output of the last convolution with spatial
extent) and says why; `load_explain_inputs` reads image files (as ``predict`` does), split
examples by index, or the most confidently wrong ones; `explain_inputs` runs each method
batched (`cnncli.inspect.attribution.Explainer`) and returns an `ExplainReport`;
`explain_split` runs a whole split in chunks, writing each map as it goes. The
self-checks (``--check``) are in `cnncli.inspect.attribution_check`. Nothing here prints.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnncli.arith import layers as L
from cnncli.errors import DataError, LayerError, UsageError, unknown_choice
from cnncli.inspect.attribution import BASELINES, METHODS, Explainer, MethodConfig, mass_map, peak, top_share

CHUNK = 256  # images per chunk of --all: maps of one chunk in memory at a time


@dataclass
class Explanation:
    """One map: an image, a target class, a method."""

    method: str
    class_name: str
    index: int
    probability: float  # the target class's softmax probability
    peak: list[int]  # index of the map's largest value, per spatial axis
    top10_share: float | None  # share of the map's mass in its top 10% of pixels
    map: np.ndarray = field(repr=False)  # (*spatial) float32, signed for integrated-gradients and occlusion
    map_file: str | None = None  # the .npy written by --save-maps


@dataclass
class ImageResult:
    """One input and its maps."""

    input: str  # the file (or ``SPLIT[INDEX]``)
    stem: str  # the file stem or ``SPLIT-INDEX``: output names
    x: np.ndarray = field(repr=False)
    label: int | None  # the split's label, when known
    predicted: int
    predicted_probability: float
    explanations: list[Explanation]
    note: str | None = None
    png: str | None = None


@dataclass
class ExplainReport:
    """What ``cnncli explain`` computed."""

    workdir: str
    checkpoint_step: int
    class_names: list[str]
    value_range: tuple[float, float]
    layer: str | None
    layer_reason: str | None
    methods: list[MethodConfig]
    images: list[ImageResult]
    seconds: dict[str, float]  # per method: compute, compilation excluded
    compile_seconds: float
    checks: list = field(default_factory=list)  # `attribution_check.CheckResult` per method with --check


# ------------------------------------------------------------------ layer
_SPATIAL_KINDS = (L.Conv, L.ResBlock, L.Bottleneck, L.DenseBlock, L.Transition)
_ELEMENTWISE = (L.Norm, L.Activation, L.Dropout)


def auto_layer(run) -> tuple[str, str]:
    """Grad-CAM's default layer and the reason, from the run's layer list.

    The last convolution or block whose output keeps spatial extent (more than one
    position), then through the ``bn``/activation/``dropout`` layers right after it (the
    activated maps). For a residual block that is its output: after the residual add
    and its ReLU, not a convolution inside it.

    Raises:
        UsageError: no such layer (a model without convolutions).
    """
    specs, names, shapes = list(run.specs), list(run.model.layer_names), list(run.model.layer_shapes)
    nsp = len(run.input_shape) - 1
    found = None
    for i, (spec, shape) in enumerate(zip(specs, shapes)):
        if isinstance(spec, _SPATIAL_KINDS) and len(shape) == nsp + 1 and int(np.prod(shape[:-1])) > 1:
            found = i
    if found is None:
        raise UsageError(
            f"the model of {run.workdir} has no convolution with spatial extent for Grad-CAM",
            hint="use --method saliency, integrated-gradients or occlusion",
        )
    j = found
    while j + 1 < len(specs) and isinstance(specs[j + 1], _ELEMENTWISE):
        j += 1
    size = "x".join(map(str, shapes[found]))
    spec, name = specs[found], names[found]
    if isinstance(spec, (L.ResBlock, L.Bottleneck)):
        why = f"the output after the last residual add with spatial extent ({name}, {size})"
    elif isinstance(spec, L.DenseBlock):
        why = f"the output of the last dense block with spatial extent ({name}, {size})"
    elif isinstance(spec, L.Transition):
        why = f"the output of the last transition with spatial extent ({name}, {size})"
    else:
        why = f"the last convolution with spatial extent ({name}, {size})"
    if j != found:
        why += f", after {', '.join(names[found + 1 : j + 1])}"
    return names[j], why


def resolve_layer(run, layer: str | None) -> tuple[str, str]:
    """``auto``/None -> `auto_layer`; a name -> itself if it is a capture point (else `LayerError`)."""
    if layer is None or layer == "auto":
        return auto_layer(run)
    from cnncli.models.capture import capture_points

    points = capture_points(run.model)
    if layer not in points:
        raise LayerError(unknown_choice("layer", layer, points), hint="see the names with inspect-filters --list")
    return layer, "given with --layer"


# ------------------------------------------------------------------ inputs
@dataclass
class Inputs:
    """Raw inputs to explain, with their names."""

    x: np.ndarray  # (N, *input_shape) raw values
    names: list[str]
    stems: list[str]
    labels: list[int | None]
    notes: list[str | None]


def load_explain_inputs(run, files=(), *, split: str | None = None, indices=(), worst: int = 0) -> Inputs:
    """Image files (as ``predict`` reads them), split examples by index, or the ``worst`` most confidently wrong.

    Raises:
        UsageError: nothing to explain, or an index outside the split.
    """
    from cnncli.inspect.predict import load_inputs

    xs, names, stems, labels, notes = [], [], [], [], []
    if files:
        x, fnames, fnotes = load_inputs(run, list(files))
        xs.append(x)
        names += fnames
        stems += _stems(fnames)
        labels += [None] * len(fnames)
        notes += fnotes
    if indices or worst:
        from cnncli.runs.splits import load_eval_split

        data, split_name, _, _ = load_eval_split(run, split)
        n = len(data.x)
        picked = list(indices)
        for i in picked:
            if not 0 <= i < n:
                raise UsageError(f"--index {i}: {split_name} has {n} examples (0..{n - 1})")
        if worst:
            wrong = _worst(run, data, worst)
            if not wrong and not picked and not files:
                raise DataError(f"--worst {worst}: the model classifies every example of {split_name} correctly: "
                                 "nothing is wrong to explain", hint="give --index I or image files")  # fmt: skip
            picked += wrong
        xs.append(np.asarray(data.x[picked], np.float32))
        names += [f"{split_name}[{i}]" for i in picked]
        stems += [f"{split_name}-{i}" for i in picked]
        labels += [int(data.y[i]) for i in picked]
        notes += [None] * len(picked)
    if not names:
        raise UsageError("nothing to explain", hint="give image files, --source SPLIT --index I, or --worst K")
    return Inputs(np.concatenate(xs).astype(np.float32), names, stems, labels, notes)


def _stems(names: list[str]) -> list[str]:
    """``digit.png`` -> ``digit``; ``batch.npy[3]`` -> ``batch-3``; repeated stems get ``-2``, ``-3``."""
    out, seen = [], {}
    for name in names:
        base, _, rest = name.partition("[")
        stem = Path(base).stem + (f"-{rest.rstrip(']')}" if rest else "")
        seen[stem] = seen.get(stem, 0) + 1
        out.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return out


def _worst(run, data, k: int) -> list[int]:
    from cnncli.inspect.evaluate import Predictor, eval_batch_size, most_confidently_wrong

    logits, _ = Predictor(run, eval_batch_size(run, len(data.x))).logits(data.x)
    return [m.index for m in most_confidently_wrong(logits, data.y, k)]


# ------------------------------------------------------------------ targets
def class_index(run, text: str) -> int:
    """``--class``: a class name or an index."""
    names = run.class_names
    if text in names:
        return names.index(text)
    if text.lstrip("-").isdigit():
        i = int(text)
        if 0 <= i < len(names):
            return i
        raise UsageError(f"--class {text}: the run has {len(names)} classes (0..{len(names) - 1})")
    raise UsageError(unknown_choice("class", text, names), hint="give a class name or its index")


def targets_for(probs: np.ndarray, klass: int | None, top: int) -> list[tuple[int, int]]:
    """Rows to explain: ``(image, class)``: the given class, else the ``top`` most probable (1: the prediction)."""
    rows = []
    for i, p in enumerate(probs):
        classes = [klass] if klass is not None else list(np.argsort(-p, kind="stable")[:top])
        rows += [(i, int(c)) for c in classes]
    return rows


# ------------------------------------------------------------------ running
def method_configs(methods, *, layer: str | None, steps: int, samples: int, baseline: str,
                   window: tuple[int, ...] = (), stride: tuple[int, ...] = ()) -> list[MethodConfig]:  # fmt: skip
    """One `MethodConfig` per method name, checked (unknown names: `UsageError` with a did-you-mean)."""
    out = []
    for m in dict.fromkeys(methods or ["gradcam"]):
        if m not in METHODS:
            raise UsageError(unknown_choice("method", m, METHODS), hint="--method may be given several times")
        out.append(MethodConfig(m, layer=layer if m.startswith("gradcam") else None, steps=steps, samples=samples,
                                baseline=baseline, window=tuple(window), stride=tuple(stride)))  # fmt: skip
    if baseline not in BASELINES:
        raise UsageError(unknown_choice("baseline", baseline, BASELINES))
    if steps < 2 or samples < 1:
        raise UsageError(f"--steps {steps} / --samples {samples}: need at least 2 steps and 1 sample")
    return out


def explain_inputs(run, inputs: Inputs, cfgs: list[MethodConfig], *, klass: int | None = None, top: int = 1,
                   layer_reason: str | None = None, explainer: Explainer | None = None) -> ExplainReport:  # fmt: skip
    """Every method's maps for every input and target (see `targets_for`)."""
    from cnncli.inspect.evaluate import softmax

    ex = explainer or Explainer(run)
    for cfg in cfgs:
        ex.check_layer(cfg)
    logits = _logits(ex, inputs.x)
    probs = softmax(logits)
    rows = targets_for(probs, klass, top)
    idx = np.array([r[0] for r in rows])
    tgt = np.array([r[1] for r in rows], np.int32)
    images = [
        ImageResult(name, stem, x, label, int(np.argmax(p)), float(np.max(p)), [], note)
        for name, stem, x, label, p, note in zip(inputs.names, inputs.stems, inputs.x, inputs.labels, probs, inputs.notes)
    ]  # fmt: skip
    seconds = {}
    for cfg in cfgs:
        batch = ex.maps(cfg, inputs.x[idx], tgt)
        seconds[cfg.method] = batch.seconds
        for r, (i, c) in enumerate(rows):
            images[i].explanations.append(_explanation(run, cfg.method, c, probs[i, c], batch.maps[r]))
    layer = next((c.layer for c in cfgs if c.layer), None)
    return ExplainReport(
        str(run.workdir), run.step, run.class_names, ex.value_range, layer, layer_reason if layer else None, cfgs,
        images, seconds, ex.compile_seconds,
    )  # fmt: skip


def _logits(ex: Explainer, x: np.ndarray) -> np.ndarray:
    """Plain logits through the explainer's cheapest method-free path (saliency's forward is not needed)."""
    import jax

    key = ("logits", len(x))
    if key not in ex._compiled:
        ex._compiled[key] = jax.jit(lambda s, x: ex._logits(s, ex.normalize(x)))
    return np.asarray(ex._compiled[key](ex.state, np.asarray(x, np.float32)))


def _explanation(run, method: str, c: int, p: float, m: np.ndarray) -> Explanation:
    mass = mass_map(m, method)
    return Explanation(method, run.class_names[c], int(c), float(p), peak(mass), top_share(mass), m.astype(np.float32))


def save_maps(report: ExplainReport, out_dir: Path) -> None:
    """``--save-maps``: each map as float32 ``.npy`` at the input's size: ``STEM.npy``, with ``-METHOD``
    when several methods ran and ``-classK`` when an image has several target classes (``--top``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    several_methods = len(report.methods) > 1
    for img in report.images:
        several_classes = len({e.index for e in img.explanations}) > 1
        for e in img.explanations:
            name = img.stem + (f"-{e.method}" if several_methods else "") + (f"-class{e.index}" if several_classes else "")
            _write_npy(out_dir / f"{name}.npy", e.map)
            e.map_file = str(out_dir / f"{name}.npy")


def _write_npy(path: Path, arr: np.ndarray) -> None:
    """Write atomically: a temporary file beside it, then rename (nothing half-written)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, np.asarray(arr, np.float32), allow_pickle=False)
    tmp.replace(path)


def explain_split(run, split: str | None, cfgs: list[MethodConfig], out_dir: Path, *, klass: int | None = None,
                  chunk: int = CHUNK, progress: Callable[[int, int], None] | None = None) -> dict:  # fmt: skip
    """``--source SPLIT --all``: every example, ``chunk`` at a time; maps and ``manifest.jsonl`` in ``out_dir``.

    One manifest line per image (written after its maps): index, label, predicted class,
    and per method the target, probability, peak, top-10% share and map file. Memory
    holds one chunk's maps. Returns a summary (counts, seconds, images per second).
    """
    from cnncli.inspect.evaluate import softmax
    from cnncli.runs.splits import load_eval_split

    data, split_name, _, _ = load_eval_split(run, split)
    n = len(data.x)
    if n == 0:
        raise DataError(f"{split_name} has no examples")
    chunk = min(chunk, n)
    ex = Explainer(run)
    for cfg in cfgs:
        ex.check_layer(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = out_dir / "manifest.jsonl"
    seconds = dict.fromkeys((c.method for c in cfgs), 0.0)
    t0 = time.perf_counter()
    with open(manifest, "w") as f:
        for start in range(0, n, chunk):
            x = np.asarray(data.x[start : start + chunk], np.float32)
            probs = softmax(_logits(ex, _pad(x, chunk))[: len(x)])
            tgt = np.array([klass if klass is not None else int(np.argmax(p)) for p in probs], np.int32)
            lines = [{"input": f"{split_name}[{start + i}]", "index": start + i, "label": int(data.y[start + i]),
                      "predicted": int(np.argmax(probs[i])), "maps": []} for i in range(len(x))]  # fmt: skip
            for cfg in cfgs:
                batch = ex.maps(cfg, _pad(x, chunk), _pad(tgt, chunk))
                seconds[cfg.method] += batch.seconds
                for i in range(len(x)):
                    name = f"{split_name}-{start + i}" + (f"-{cfg.method}" if len(cfgs) > 1 else "") + ".npy"
                    _write_npy(out_dir / name, batch.maps[i])
                    mass = mass_map(batch.maps[i], cfg.method)
                    lines[i]["maps"].append({"method": cfg.method, "class": run.class_names[tgt[i]],
                                             "index": int(tgt[i]), "probability": float(probs[i, tgt[i]]),
                                             "peak": peak(mass), "top10_share": top_share(mass), "file": name})  # fmt: skip
            f.writelines(json.dumps(line) + "\n" for line in lines)
            f.flush()
            if progress:
                progress(min(start + chunk, n), n)
    return {
        "workdir": str(run.workdir), "checkpoint_step": run.step, "split": split_name, "images": n,
        "maps_dir": str(out_dir), "manifest": str(manifest), "seconds": time.perf_counter() - t0,
        "images_per_second": {m: (n / s if s > 0 else None) for m, s in seconds.items()},
        "compile_seconds": ex.compile_seconds,
    }  # fmt: skip


def _pad(a: np.ndarray, n: int) -> np.ndarray:
    """Pad the last chunk to ``n`` rows (one compiled shape for every chunk)."""
    if len(a) == n:
        return a
    return np.concatenate([a, np.zeros((n - len(a), *a.shape[1:]), a.dtype)])
