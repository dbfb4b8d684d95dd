"""Random access to one example at a time, for the streaming pipeline: npz, folder, tfds, arrays.

A record source holds only what names the data (paths, offsets, a TFDS name), so it
pickles in microseconds into grain's worker processes, and opens files there on first
use. ``source[i]`` is ``(image, label)``: one example decoded, converted and resized
exactly as the in-memory loaders do (`cnncli.data.folder`, ``tfds``, ``npz``), so a
streamed run and an in-memory run see the same pixels. A source raises on an example
it cannot read; `cnncli.data.stream` decides whether that skips or stops the run.

npz: only uncompressed members stream (``np.savez``, not ``np.savez_compressed``): each
example is a positional read (``os.pread``) at its offset inside the zip, so neither the
array nor the page cache mapped into the process grows with the dataset (a memory map
would count every page it touched in the resident size).
"""

from __future__ import annotations

import math
import os
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnncli.errors import DataError

_LOCAL_HEADER = 30  # bytes of a zip local file header before its name and extra field


@dataclass
class ArrayRecords:
    """Examples of arrays already in memory (digits, mnist1d, or a split small enough)."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return self.x[i], int(self.y[i])

    def label(self, i: int) -> int:
        return int(self.y[i])

    def describe(self, i: int) -> str:
        return f"example {i}"


# ------------------------------------------------------------------ npz


@dataclass(frozen=True)
class NpyMember:
    """Where an uncompressed ``.npy`` member's data lies inside an npz file."""

    offset: int  # bytes from the start of the file to the first element
    shape: tuple[int, ...]
    dtype: np.dtype


def npz_member(file: Path, key: str) -> NpyMember:
    """Locate array ``key`` of an npz file without reading it (only its headers).

    Raises:
        DataError: the member is compressed (it cannot be read one example at a time),
            Fortran-ordered, or missing.
    """
    with zipfile.ZipFile(file) as archive:
        try:
            info = archive.getinfo(f"{key}.npy")
        except KeyError:
            raise DataError(f"{file}: no array {key!r} (has {sorted(n.removesuffix('.npy') for n in archive.namelist())})",
                            hint="an npz dataset holds x_train, y_train, x_test, y_test") from None  # fmt: skip
    if info.compress_type != zipfile.ZIP_STORED:
        raise DataError(
            f"{file}: array {key!r} is compressed (np.savez_compressed), so it cannot be streamed one example at a time",
            hint="write an uncompressed copy that streams: python -c \"import numpy as np; d = np.load('IN.npz'); "
            "np.savez('OUT.npz', **d)\" (np.savez stores without compression), or raise data.memory_budget_mb",
        )
    with open(file, "rb") as f:
        f.seek(info.header_offset)
        header = f.read(_LOCAL_HEADER)
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        f.seek(info.header_offset + _LOCAL_HEADER + name_len + extra_len)
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
        offset = f.tell()
    if fortran and len(shape) > 1:
        raise DataError(f"{file}: array {key!r} is Fortran-ordered", hint="save it C-ordered (np.ascontiguousarray)")
    if dtype.hasobject:
        raise DataError(f"{file}: array {key!r} holds Python objects", hint="save numeric arrays")
    return NpyMember(offset, tuple(int(s) for s in shape), dtype)


@dataclass
class NpzRecords:
    """Examples of ``x_<split>`` / ``y_<split>`` read one at a time from an uncompressed npz."""

    path: str
    images: NpyMember
    labels: np.ndarray  # int32, read whole: 4 bytes per example
    _fd: int | None = field(default=None, init=False, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fd": None}  # a file descriptor does not cross into a worker

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def example_shape(self) -> tuple[int, ...]:
        """Per-example shape, channels last (a channel axis added to (H, W) and (L,) examples)."""
        shape = self.images.shape[1:]
        return (*shape, 1) if len(shape) in (1, 2) else shape

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8) if self.images.dtype == np.uint8 else np.dtype(np.float32)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        size = math.prod(self.images.shape[1:]) * self.images.dtype.itemsize
        raw = os.pread(self._fd, size, self.images.offset + int(i) * size)
        if len(raw) != size:
            raise OSError(f"{self.path}: short read at example {i} (file truncated?)")
        x = np.frombuffer(raw, self.images.dtype).reshape(self.example_shape)
        return (x if x.dtype == self.dtype else x.astype(np.float32)), int(self.labels[i])

    def label(self, i: int) -> int:
        return int(self.labels[i])

    def describe(self, i: int) -> str:
        return f"{self.path} example {i}"


# ------------------------------------------------------------------ folder


@dataclass
class FolderRecords:
    """Image files decoded with Pillow, converted to ``mode`` and resized to ``size`` (as `cnncli.data.folder`)."""

    paths: list[str]
    labels: np.ndarray  # int32
    size: tuple[int, int]
    mode: str  # Pillow mode: L, RGB or RGBA

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        from cnncli.data.folder import decode_image

        return decode_image(Path(self.paths[i]), self.size, self.mode), int(self.labels[i])

    def label(self, i: int) -> int:
        return int(self.labels[i])

    def describe(self, i: int) -> str:
        return self.paths[i]


# ------------------------------------------------------------------ tfds


@dataclass
class TfdsRecords:
    """Examples of a prepared TFDS split through ``tfds.data_source`` (opened in each process on first use)."""

    name: str
    split: str
    data_dir: str | None
    keys: tuple[str, str]  # (image feature, label feature)
    shape: tuple[int, int, int]  # (height, width, channels) to produce
    length: int
    _source: Any = field(default=None, init=False, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_source": None}

    def __len__(self) -> int:
        return self.length

    def _example(self, i: int) -> dict:
        if self._source is None:
            from cnncli.data.tfds import open_source

            self._source = open_source(self.name, self.split, self.data_dir)
        return self._source[int(i)]

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        from cnncli.data.imageops import convert_channels, resize_images

        example = self._example(i)
        image = np.asarray(example[self.keys[0]])
        image = image[..., None] if image.ndim == 2 else image
        image = resize_images(image[None], self.shape[:2])
        return convert_channels(image, self.shape[2], f"tfds:{self.name} [{self.split}]")[0], int(example[self.keys[1]])

    def label(self, i: int) -> int:
        return int(self._example(i)[self.keys[1]])

    def describe(self, i: int) -> str:
        return f"tfds:{self.name} [{self.split}] record {i}"
