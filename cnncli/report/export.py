"""Printing ``cnncli export`` results: a few plain lines, or one JSON object with ``--json``.

The result (what was written, what it takes and gives, how it compared with cnncli's
own outputs) goes to stdout; warnings and the written files go to stderr.
"""

from __future__ import annotations

from typing import Any

from cnncli._json import to_jsonable
from cnncli.report.console import print_json, print_lines, stderr_console, warn

# The pinned keys of ``export --json``, in order (tests/test_export.py).
EXPORT_KEYS = ["path", "format", "metadata", "checkpoint_step", "weights", "raw", "softmax", "input", "output",
               "bytes", "verification", "seconds"]  # fmt: skip


def export_json(result) -> dict[str, Any]:
    """The ``export --json`` object: `EXPORT_KEYS` first, then the rest of the result."""
    data = to_jsonable(result)
    out = {k: data.pop(k) for k in EXPORT_KEYS}
    out.update(data)
    return out


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _shape(shape: list) -> str:
    return "(" + ", ".join("B" if v is None else str(v) for v in shape) + ")"


def export_lines(result) -> list[str]:
    """The human summary: artifact, input, output, and the check against cnncli."""
    check = result.verification
    weights = ", EMA weights" if result.weights == "ema" else ""
    inp, out = result.input, result.output
    feed = "normalized float32 in, (x - mean) / std (--raw)" if result.raw else "raw values, normalized inside"
    in_name = f"  [ONNX name: {inp['name']}]" if result.format == "onnx" else ""
    out_name = f"  [ONNX name: {out['name']}]" if result.format == "onnx" else ""
    sizes = ", ".join(map(str, check.batch_sizes))
    return [
        (f"exported {result.path}  ({result.format}, {_size(result.bytes)}; checkpoint step "
         f"{result.checkpoint_step}{weights})"),
        f"  input   {inp['dtype']} {_shape(inp['shape'])} {inp['layout']}: {feed}{in_name}",
        f"  output  {out['dtype']} {_shape(out['shape'])}: {out['kind']}{out_name}",
        (f"  check   {check.examples} examples of {check.source} [{check.split}] at batch sizes {sizes} "
         f"under {check.runtime}, against cnncli's own {out['kind']}:"),
        (f"          max |difference| {check.max_abs_diff:.2e} (tolerance {check.tolerance:g}), "
         f"top-1 agreement {100 * check.top1_agreement:.2f}%"),
    ]


def print_export(result, *, json_out: bool) -> None:
    """Print an `cnncli.export.exporter.ExportResult`."""
    for text in result.warnings:
        warn(text)
    if result.verification.note:
        warn(result.verification.note)
    if json_out:
        print_json(export_json(result))
    else:
        print_lines(export_lines(result))
    stderr_console().print(f"wrote {result.path} and {result.metadata}", markup=False, highlight=False,
                           soft_wrap=True)  # fmt: skip
