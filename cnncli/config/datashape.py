"""A dataset's input shape and class count without loading it (pure Python).

``conv-arith RECIPE`` needs the input shape a recipe's data will have, in a fraction
of a second and without numpy: digits and mnist1d are known, npz files are read from the ``.npy``
headers inside the zip, image folders from the recipe's ``image_size``/``channels``.
"""

from __future__ import annotations

import ast
import struct
import zipfile
from array import array
from pathlib import Path

DIGITS = ((8, 8, 1), 10)
MNIST1D_LENGTH = 40  # Mnist1dConfig.final_seq_length's default (pydantic is not imported here)


def _npy_header(f) -> tuple[dict, int]:
    """Parse an ``.npy`` header: (its dict, the byte offset of the data)."""
    magic = f.read(6)
    if magic != b"\x93NUMPY":
        raise ValueError("not an .npy file")
    major = f.read(2)[0]
    size_len = 2 if major == 1 else 4
    (length,) = struct.unpack("<H" if size_len == 2 else "<I", f.read(size_len))
    header = ast.literal_eval(f.read(length).decode("latin1"))  # a dict literal, never code
    return header, 6 + 2 + size_len + length


def _channels_last(shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(shape) in (2, 3):  # (N, L) signals or (N, H, W) grayscale: one channel
        return (*shape[1:], 1)
    return tuple(shape[1:])


def _npz(path: Path) -> tuple[tuple[int, ...] | None, int | None]:
    with zipfile.ZipFile(path) as z:
        names = set(z.namelist())
        with z.open("x_train.npy") as f:
            shape = _channels_last(tuple(_npy_header(f)[0]["shape"]))
        if "class_names.npy" in names:
            with z.open("class_names.npy") as f:
                return shape, int(_npy_header(f)[0]["shape"][0])
        return shape, _max_label(z, "y_train.npy")


def _max_label(z: zipfile.ZipFile, name: str) -> int | None:
    codes = {"<i1": "b", "|i1": "b", "|u1": "B", "<i2": "h", "<u2": "H", "<i4": "i", "<u4": "I", "<i8": "q", "<u8": "Q"}
    with z.open(name) as f:
        header, _ = _npy_header(f)
        code = codes.get(header["descr"])
        if code is None:
            return None  # float labels etc.: the full loader checks and reports them
        values = array(code)
        values.frombytes(f.read())
    return int(max(values)) + 1 if len(values) else None


def peek(data) -> tuple[tuple[int, ...] | None, int | None]:
    """(input shape, class count) of a recipe's ``[data]``, or None where unknown.

    Args:
        data: a `cnncli.config.recipe.DataConfig`.
    """
    source = data.source_spec
    if source.kind == "digits":
        return DIGITS
    if source.kind == "mnist1d":  # (final_seq_length, 1) signals, 10 classes
        length = data.mnist1d.final_seq_length if data.mnist1d is not None else MNIST1D_LENGTH
        return (length, 1), 10
    if source.kind == "npz":
        try:
            return _npz(Path(source.arg))
        except (OSError, KeyError, ValueError, zipfile.BadZipFile):
            return None, None
    if source.kind == "folder" and data.image_size is not None and data.channels is not None:
        size = data.image_size if isinstance(data.image_size, list) else [data.image_size] * 2
        return (*size, data.channels), None
    return None, None
