"""What a trained model gets right: metrics of a checkpoint on a split, and predictions.

`evaluate_run` reads a split (the recipe's evaluation split by default, or another
split or data source with the same input shape and classes), runs jitted batched
inference with one fixed batch size (the last batch padded, so it compiles once)
and returns an `EvalResult` of plain data. It computes logits exactly as training's
evaluation does (`cnncli.models.apply.make_logits_fn`, the same batch size), so evaluating
the final checkpoint reproduces the ``eval_accuracy`` the run logged.

`classification_metrics` is the pure-numpy core (logits and labels in, metrics out)
that tests check on hand-built cases; `Predictor` is the jitted batched inference that
``cnncli predict`` (`cnncli.inspect.predict`) shares. Nothing here prints.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnncli.errors import DataError, UsageError
from cnncli.runs.splits import load_eval_split

ECE_BINS = 15  # equal-width confidence bins (Guo et al. 2017, "On Calibration of Modern Neural Networks")
TOP_K = 5


@dataclass
class ClassMetrics:
    """One class, one-vs-rest.

    ``accuracy`` is the fraction of the class's examples classified correctly (the
    per-class accuracy of torchmetrics and most papers; equal to ``recall``).
    Precision is None when the model never predicts the class; recall, F1 and
    accuracy are None when the split has no example of it.
    """

    name: str
    precision: float | None
    recall: float | None
    f1: float | None
    accuracy: float | None
    support: int  # examples of this class in the split
    predicted: int  # examples predicted as this class


@dataclass
class CalibrationBin:
    """One confidence bin of the reliability diagram: ``(lo, hi]``."""

    lo: float
    hi: float
    count: int
    confidence: float | None  # mean max-probability in the bin
    accuracy: float | None


@dataclass
class Mistake:
    """A wrongly classified example: its index in the split, labels and probabilities."""

    index: int
    true: int
    predicted: int
    confidence: float  # probability of the predicted class
    true_probability: float


@dataclass
class Metrics:
    """Classification metrics of logits against labels (see `classification_metrics`)."""

    accuracy: float
    loss: float  # mean softmax cross-entropy, nats
    num_examples: int
    top5_accuracy: float | None  # None when there are 5 classes or fewer
    per_class: list[ClassMetrics]
    confusion: list[list[int]]  # [true][predicted] counts
    ece: float  # expected calibration error over ECE_BINS bins
    calibration: list[CalibrationBin]


@dataclass
class EvalResult(Metrics):
    """`Metrics` of one checkpoint on one split, with where they came from and how fast."""

    checkpoint_step: int = 0
    weights: str = "raw"  # "raw" or "ema"
    split: str = ""
    source: str = ""
    class_names: list[str] = field(default_factory=list)
    throughput: float = 0.0  # images per second of inference, compilation excluded
    seconds: float = 0.0  # inference wall time, compilation excluded
    compile_seconds: float = 0.0
    batch_size: int = 0
    workdir: str = ""
    worst: list[Mistake] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-example softmax cross-entropy in float64: ``logsumexp(z) - z[y]``."""
    z = np.asarray(logits, np.float64)
    m = z.max(axis=-1, keepdims=True)
    lse = (m + np.log(np.exp(z - m).sum(axis=-1, keepdims=True)))[:, 0]
    return lse - z[np.arange(len(labels)), labels]


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS):
    """ECE: ``sum_b (n_b / N) * |accuracy_b - confidence_b|`` over equal-width bins.

    Confidence is the max probability; bin ``b`` holds confidences in
    ``(b / bins, (b + 1) / bins]`` (a confidence of exactly 0 goes to the first bin).

    Returns:
        ``(ece, [CalibrationBin, ...])``.
    """
    conf = probs.max(axis=-1)
    correct = probs.argmax(axis=-1) == labels
    idx = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    n = max(len(labels), 1)
    ece, table = 0.0, []
    for b in range(bins):
        sel = idx == b
        count = int(sel.sum())
        acc = float(correct[sel].mean()) if count else None
        mean_conf = float(conf[sel].mean()) if count else None
        if count:
            ece += count / n * abs(acc - mean_conf)
        table.append(CalibrationBin(b / bins, (b + 1) / bins, count, mean_conf, acc))
    return float(ece), table


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den else None


def per_class_metrics(confusion: np.ndarray, class_names: list[str]) -> list[ClassMetrics]:
    """Precision, recall, F1 and accuracy of each class from a ``[true][pred]`` confusion matrix."""
    rows = []
    for c, name in enumerate(class_names):
        tp = int(confusion[c, c])
        support, predicted = int(confusion[c].sum()), int(confusion[:, c].sum())
        precision, recall = _ratio(tp, predicted), _ratio(tp, support)
        if precision is None or recall is None:
            f1 = None if recall is None else 0.0
        else:
            f1 = _ratio(2 * precision * recall, precision + recall) or 0.0
        rows.append(ClassMetrics(name, precision, recall, f1, recall, support, predicted))
    return rows


def classification_metrics(logits: np.ndarray, labels: np.ndarray, class_names: list[str]) -> Metrics:
    """All metrics of ``logits (N, K)`` against ``labels (N,)``.

    Args:
        logits: unnormalized scores, one row per example.
        labels: int class ids in ``[0, K)``.
        class_names: K names, in class-id order.
    """
    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels, np.int64)
    k = logits.shape[-1]
    n = len(labels)
    pred = logits.argmax(axis=-1)
    confusion = np.zeros((k, k), np.int64)
    np.add.at(confusion, (labels, pred), 1)
    top5 = None
    if k > TOP_K:
        top = np.argsort(-logits, axis=-1, kind="stable")[:, :TOP_K]
        top5 = float((top == labels[:, None]).any(axis=-1).mean()) if n else 0.0
    ece, bins = expected_calibration_error(softmax(logits), labels)
    return Metrics(
        accuracy=float((pred == labels).mean()) if n else 0.0,
        loss=float(cross_entropy(logits, labels).mean()) if n else 0.0,
        num_examples=n, top5_accuracy=top5,
        per_class=per_class_metrics(confusion, class_names),
        confusion=confusion.tolist(), ece=ece, calibration=bins,
    )  # fmt: skip


def most_confidently_wrong(logits: np.ndarray, labels: np.ndarray, n: int) -> list[Mistake]:
    """The ``n`` mistakes with the highest predicted-class probability, most confident first."""
    probs = softmax(logits)
    pred = probs.argmax(axis=-1)
    wrong = np.flatnonzero(pred != labels)
    conf = probs[wrong, pred[wrong]]
    order = wrong[np.argsort(-conf, kind="stable")][:n]
    return [Mistake(int(i), int(labels[i]), int(pred[i]), float(probs[i, pred[i]]), float(probs[i, labels[i]]))
            for i in order]  # fmt: skip


# ------------------------------------------------------------------ inference
class Predictor:
    """Jitted batched inference of a loaded run: raw inputs in, float32 logits out.

    One fixed batch size, the last batch padded, so the function compiles once
    (ahead of time, timed separately from inference).
    """

    def __init__(self, run, batch_size: int):
        import jax
        from flax import nnx

        from cnncli.models.apply import make_logits_fn, make_step_config

        self.batch_size = int(batch_size)
        graphdef, self.params, self.rest = nnx.split(run.model, nnx.Param, ...)
        cfg = make_step_config(run.data, num_classes=run.num_classes, batch_size=self.batch_size,
                               precision=run.recipe.train.precision)  # fmt: skip
        self._fn = make_logits_fn(graphdef, cfg)
        self._compiled: dict[Any, Any] = {}
        self.compile_seconds = 0.0
        self._jax = jax

    def _compiled_for(self, x: np.ndarray):
        key = (x.dtype.str, x.shape[1:])
        if key not in self._compiled:
            t0 = time.perf_counter()
            spec = self._jax.ShapeDtypeStruct((self.batch_size, *x.shape[1:]), x.dtype)
            self._compiled[key] = self._fn.lower(self.params, self.rest, spec).compile()
            self.compile_seconds += time.perf_counter() - t0
        return self._compiled[key]

    def batch_logits(self, x: np.ndarray) -> tuple[np.ndarray, float]:
        """Logits of one batch of exactly ``batch_size`` examples, and the inference seconds."""
        fn = self._compiled_for(x)
        t0 = time.perf_counter()
        logits = np.asarray(self._jax.device_get(fn(self.params, self.rest, x)))
        return logits, time.perf_counter() - t0

    def logits(self, x: np.ndarray) -> tuple[np.ndarray, float]:
        """Logits of ``x (N, *input_shape)`` and the inference seconds (compilation excluded)."""
        from cnncli.data.batching import batches, pad_batch

        fn = self._compiled_for(x)
        out, seconds = [], 0.0
        dummy_y = np.zeros(len(x), np.int32)
        for start, stop in batches(len(x), self.batch_size):
            xb, _, mask = pad_batch(x[start:stop], dummy_y[start:stop], self.batch_size)
            t0 = time.perf_counter()
            logits = np.asarray(self._jax.device_get(fn(self.params, self.rest, xb)))
            seconds += time.perf_counter() - t0
            out.append(logits[mask])
        return np.concatenate(out), seconds


def eval_batch_size(run, n: int) -> int:
    """The batch size training's evaluation used (on one device): same shapes, same numbers."""
    from cnncli.config.plan import eval_batch_size as planned

    return planned(run.recipe, n)


def evaluate_run(run, *, split: str | None = None, source: str | None = None, worst: int = 0) -> EvalResult:
    """Evaluate a loaded run on a split.

    Args:
        run: a `cnncli.runs.load.LoadedRun` (``load_run(path, checkpoint)``).
        split: split name; default the recipe's evaluation split.
        source: another data source with the same input shape and classes.
        worst: also return this many most confidently wrong examples.
    """
    data, split, source, warnings = load_eval_split(run, split, source)
    return evaluate_split(run, data, split=split, source=source, worst=worst, warnings=warnings)


def _streamed_logits(predictor: Predictor, data, run, warnings: list[str]):
    """Logits of a split streamed from disk (`cnncli.data.stream.StreamSplit`) in batches read by grain threads.

    Returns:
        (logits, labels, split index of each row, inference seconds); unreadable examples are
        left out, and counted in ``warnings``.
    """
    from cnncli.data.stream import BatchReader, default_workers, read_batches

    size, n = predictor.batch_size, len(data.records)
    reader = BatchReader(data.records, None, size, (0, size), data.example_shape, data.dtype, pad=True,
                         strict=run.recipe.data.strict, where=data.where)  # fmt: skip
    logits, labels, kept, bad, seconds = [], [], [], [], 0.0
    with read_batches(reader, 0, -(-n // size), workers=0, prefetch=2, threads=default_workers()) as batches:
        for k, batch in enumerate(batches):
            out, spent = predictor.batch_logits(batch["x"])
            mask, seconds = batch["mask"], seconds + spent
            logits.append(out[mask])
            labels.append(batch["y"][mask])
            kept.append(k * size + np.flatnonzero(mask))
            bad += [f"{name} ({why})" for name, why in batch["bad"]]
    labels = np.concatenate(labels)
    if labels.size and int(labels.max()) >= run.num_classes:
        raise DataError(f"{data.where}: labels go up to {int(labels.max())} but the run has {run.num_classes} classes")
    if bad:
        warnings.append(f"{data.where}: skipped {len(bad)} unreadable examples: {'; '.join(bad[:3])}"
                        + (f"; and {len(bad) - 3} more" if len(bad) > 3 else ""))  # fmt: skip
    return np.concatenate(logits), labels, np.concatenate(kept), seconds


def evaluate_split(run, data, *, split: str, source: str, worst: int = 0, warnings: list[str] | None = None) -> EvalResult:
    """Evaluate a loaded run on loaded data (a `cnncli.data.base.Split` checked by `load_eval_split`, or a streamed split)."""
    from cnncli.data.stream import StreamSplit

    n = int(data.x.shape[0])
    if n == 0:
        raise DataError(f"{source} [{split}] has no examples")
    if worst < 0:
        raise UsageError(f"--worst {worst}: must be 0 or more")
    warnings = list(warnings or [])
    predictor = Predictor(run, eval_batch_size(run, n))
    if isinstance(data, StreamSplit):
        logits, labels, kept, seconds = _streamed_logits(predictor, data, run, warnings)
    else:
        (logits, seconds), labels, kept = predictor.logits(data.x), data.y, None
    n = len(labels)
    metrics = classification_metrics(logits, labels, run.class_names)
    mistakes = most_confidently_wrong(logits, labels, worst) if worst else []
    for mistake in mistakes if kept is not None else ():
        mistake.index = int(kept[mistake.index])  # the index in the split, unreadable examples counted
    return EvalResult(
        **vars(metrics), checkpoint_step=run.step, weights=run.weights, split=split, source=source,
        class_names=run.class_names, throughput=n / seconds if seconds > 0 else 0.0, seconds=seconds,
        compile_seconds=predictor.compile_seconds, batch_size=predictor.batch_size, workdir=str(run.workdir),
        worst=mistakes, warnings=warnings,
    )  # fmt: skip
