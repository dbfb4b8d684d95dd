"""``cnncli predict``: classify image files or arrays with a trained run.

PNG/JPEG images are converted to the run's channels and size and mapped onto its raw
value range; ``.npy`` arrays hold raw values already. Inference is the jitted, batched
`cnncli.inspect.evaluate.Predictor`. Nothing here prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnncli.errors import DataError, UsageError
from cnncli.inspect.evaluate import Predictor, eval_batch_size, softmax


def _shape(shape) -> str:
    return "x".join(str(v) for v in shape)


@dataclass
class Prediction:
    """The top classes for one input."""

    input: str
    top: list[dict]  # [{"class": name, "index": i, "probability": p}, ...]
    note: str | None = None  # e.g. "resized from 28x28"


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def load_inputs(run, paths: list[str | Path]) -> tuple[np.ndarray, list[str], list[str | None]]:
    """Read PNG/JPEG images or ``.npy`` arrays as raw inputs of the run's shape.

    Images are converted to the run's channels (L or RGB), resized to its spatial size
    if needed, and their 0..255 pixels mapped linearly onto the run's raw value range
    (e.g. 0..16 for the digits). A ``.npy`` holds raw values already: one example
    ``input_shape`` (the channel axis may be left out when there is one channel) or a
    batch ``(N, *input_shape)``.

    Returns:
        ``(x (N, *input_shape) float32, names, notes)``.
    """
    xs, names, notes = [], [], []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise DataError(f"input file not found: {path}")
        if path.is_dir():
            raise UsageError(f"{path} is a directory, not an input file",
                             hint=f"give the files in it, e.g. {path}/*.png (.png, .jpg or .npy files)")  # fmt: skip
        suffix = path.suffix.lower()
        if suffix == ".npy":
            batch = _load_npy(run, path)
            xs.extend(batch)
            names.extend([str(path)] if len(batch) == 1 else [f"{path}[{i}]" for i in range(len(batch))])
            notes.extend([None] * len(batch))
        elif suffix in IMAGE_SUFFIXES:
            x, note = _load_image(run, path)
            xs.append(x)
            names.append(str(path))
            notes.append(note)
        else:
            kind = suffix or "(no suffix)"
            raise UsageError(f"{path}: unsupported input type {kind!r}", hint="give .png, .jpg or .npy files")
    return np.stack(xs).astype(np.float32), names, notes


NPY_MAGIC = b"\x93NUMPY"
HINT_NPY = "save one array with numpy.save(path, x) (numbers, not Python objects)"


def _load_npy(run, path: Path) -> list[np.ndarray]:
    try:
        with open(path, "rb") as f:
            head = f.read(len(NPY_MAGIC))
    except OSError as err:
        raise DataError(f"{path}: cannot read: {err.strerror or err}") from None
    if not head.startswith(NPY_MAGIC):  # numpy would try to unpickle it, and say so
        kind = " (an .npz archive: give one array)" if head.startswith(b"PK") else ""
        raise DataError(f"{path} is not a .npy file{kind}", hint=HINT_NPY)
    try:
        arr = np.load(path, allow_pickle=False)  # never unpickle: an input cannot run code
    except ValueError as err:
        if "allow_pickle" not in str(err):
            raise DataError(f"{path}: cannot read as .npy: {err}") from None
        raise DataError(f"{path}: cannot read as .npy: it holds Python objects (never unpickled)", hint=HINT_NPY) from None
    except Exception as err:
        raise DataError(f"{path}: cannot read as .npy: {err}") from None
    shape = run.input_shape
    if np.issubdtype(arr.dtype, np.complexfloating) or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating) or arr.dtype == np.bool_
    ):
        raise DataError(f"{path}: dtype {arr.dtype} is not integer, boolean or float pixels",
                        hint="save real numbers (e.g. np.abs(x) or x.real for complex values)")  # fmt: skip
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        flat = np.flatnonzero(~np.isfinite(arr))
        raise DataError(f"{path}: {flat.size} values are NaN or infinite (the first at flat index {int(flat[0])})",
                        hint="a non-finite input gives a meaningless prediction: fix or drop it")  # fmt: skip
    if arr.shape == shape[:-1] and shape[-1] == 1:
        arr = arr[..., None]
    if arr.shape == shape:
        return [arr.astype(np.float32)]
    if arr.shape[1:] == shape[:-1] and shape[-1] == 1:
        arr = arr[..., None]
    if arr.shape[1:] == shape:
        return list(arr.astype(np.float32))
    raise DataError(
        f"{path}: array shape {_shape(arr.shape)} does not fit the run's input {_shape(shape)}",
        hint=f"save one example of shape {shape} or a batch of shape (N, {', '.join(map(str, shape))})",
    )


def _load_image(run, path: Path) -> tuple[np.ndarray, str | None]:
    from PIL import Image

    shape = run.input_shape
    if len(shape) != 3 or shape[-1] not in (1, 3):
        raise DataError(f"{path}: this run's inputs are {_shape(shape)}, not images", hint="pass a .npy array instead")
    try:
        img = Image.open(path)
        img = img.convert("L" if shape[-1] == 1 else "RGB")
    except Exception as err:
        raise DataError(f"{path}: cannot read as an image: {err}") from None
    note = None
    h, w = shape[0], shape[1]
    if img.size != (w, h):
        note = f"resized from {img.size[1]}x{img.size[0]} to {h}x{w}"
        img = img.resize((w, h), Image.Resampling.BILINEAR)
    pixels = np.asarray(img, np.float32).reshape(h, w, shape[-1])
    lo, hi = (run.data.get("value_range") or (0.0, 255.0))[:2]
    return lo + pixels / 255.0 * (hi - lo), note


def predict_files(run, paths: list[str | Path], top_k: int = 5) -> list[Prediction]:
    """Top-k classes with probabilities for each input file (see `load_inputs`)."""
    if top_k < 1:
        raise UsageError(f"--top-k {top_k}: must be at least 1")
    x, names, notes = load_inputs(run, paths)
    predictor = Predictor(run, eval_batch_size(run, len(x)))
    logits, _ = predictor.logits(x)
    probs = softmax(logits)
    out = []
    for name, note, p in zip(names, notes, probs):
        order = np.argsort(-p, kind="stable")[: min(top_k, len(p))]
        top = [{"class": run.class_names[i], "index": int(i), "probability": float(p[i])} for i in order]
        out.append(Prediction(name, top, note))
    return out
