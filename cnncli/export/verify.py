"""An exported model checked against cnncli's own outputs, at several batch sizes.

The exported model (run by JAX for StableHLO, by onnxruntime for ONNX) and cnncli's
jitted logits function (`cnncli.export.serve.reference_fn`) see the first examples of the
run's evaluation split at batch sizes 1, 7 and 64: the batch dimension is symbolic, so
one size proving nothing about another is exactly what to rule out. The largest absolute
difference and the top-1 agreement are kept; over `tolerance` the export is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

BATCH_SIZES = (1, 7, 64)
TOLERANCE = 1e-4  # float32 outputs: largest allowed absolute difference
TOLERANCE_BF16 = 1e-2  # bfloat16 compute keeps about 3 significant digits


def default_tolerance(compute_dtype: str) -> float:
    """The largest allowed absolute difference for a run computing in ``compute_dtype``."""
    return TOLERANCE_BF16 if compute_dtype == "bfloat16" else TOLERANCE


@dataclass
class BatchCheck:
    """One batch size: the largest absolute difference and the fraction of equal top-1 classes."""

    batch_size: int
    max_abs_diff: float
    top1_agreement: float


@dataclass
class Verification:
    """How an exported model compares with cnncli's own outputs.

    Attributes:
        runtime: what ran the exported model: ``jax`` or ``onnxruntime``.
        examples: rows compared (the sum of the batch sizes).
        batch_sizes: the sizes checked; fewer than `BATCH_SIZES` when the split is smaller.
        max_abs_diff: over every output value of every batch.
        top1_agreement: fraction of rows whose arg-max class is the same.
        tolerance: the largest allowed ``max_abs_diff``; ``passed`` says whether it held.
        note: why fewer batch sizes were checked, if they were.
    """

    runtime: str
    split: str
    source: str
    examples: int
    batch_sizes: list[int]
    max_abs_diff: float
    top1_agreement: float
    tolerance: float
    passed: bool
    per_batch: list[BatchCheck] = field(default_factory=list)
    note: str | None = None


def batch_sizes(n: int) -> tuple[list[int], str | None]:
    """The batch sizes to check on a split of ``n`` examples, and a note when it is too small for 64."""
    if n >= max(BATCH_SIZES):
        return list(BATCH_SIZES), None
    sizes = sorted({b for b in BATCH_SIZES if b < n} | {n})
    return sizes, (
        f"the evaluation split has only {n} example{'s' if n != 1 else ''}: checked batch sizes "
        f"{', '.join(map(str, sizes))} instead of {', '.join(map(str, BATCH_SIZES))}"
    )


def _abs_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``|a - b|`` with NaN where only one side is NaN counted as infinite, NaN on both as equal."""
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    both = np.isnan(a) & np.isnan(b)
    return np.where(both, 0.0, np.where(np.isnan(diff), np.inf, diff))


def verify(exported: Callable[[np.ndarray], np.ndarray], reference: Callable[[np.ndarray], np.ndarray],
           prepare: Callable[[np.ndarray], np.ndarray], x: np.ndarray, *, runtime: str, split: str, source: str,
           tol: float = TOLERANCE) -> Verification:  # fmt: skip
    """Compare ``exported(prepare(x[:b]))`` with cnncli's outputs for ``x[:b]``, for each checked batch size ``b``.

    The exported model runs once per batch size (its batch dimension is what is being
    checked); cnncli's outputs are computed once, for the largest batch, and compared
    row by row.

    Args:
        exported: the exported model as a numpy function (it gets ``prepare``'s output).
        reference: cnncli's outputs for raw inputs.
        prepare: raw inputs -> what the exported model is fed.
        x: raw examples of the evaluation split (at least one).
        runtime, split, source: recorded in the result.
        tol: the largest allowed absolute difference.
    """
    sizes, note = batch_sizes(len(x))
    expected = np.asarray(reference(x[: max(sizes)]))  # cnncli's outputs, row by row (one compile)
    checks, agree, worst = [], 0, 0.0
    for b in sizes:
        got = np.asarray(exported(prepare(x[:b])))
        want = expected[:b]
        if got.shape != want.shape:
            diff, same = float("inf"), 0
        else:
            diff = float(_abs_diff(got, want).max())
            same = int((got.argmax(axis=-1) == want.argmax(axis=-1)).sum())
        checks.append(BatchCheck(b, diff, same / b))
        agree, worst = agree + same, max(worst, diff)
    rows = sum(sizes)
    return Verification(runtime=runtime, split=split, source=source, examples=rows, batch_sizes=sizes,
                        max_abs_diff=worst, top1_agreement=agree / rows, tolerance=tol, passed=worst <= tol,
                        per_batch=checks, note=note)  # fmt: skip
