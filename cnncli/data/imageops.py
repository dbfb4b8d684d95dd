"""Image operations shared by the ``tfds`` and ``folder`` loaders: no loading, no dispatch.

The memory budget, channel conversion, resizing and the ``name[start:stop]``
split-slicing grammar (``train[:90%]``, ``train[100:]``).

In-memory datasets are loaded once, whole, as uint8 ``(N, H, W, C)`` arrays and batched
on the device by the train step. A split larger than ``data.memory_budget_mb`` fails
before anything is read when ``data.pipeline = "memory"``; otherwise it streams
(`cnncli.data.stream`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from cnncli.errors import DataError

MIB = 2**20  # bytes per MiB: memory_budget_mb counts MiB
_SLICE = re.compile(r"^(?P<name>[\w.-]+)(?:\[(?P<start>[^:\]]*):(?P<stop>[^:\]]*)\])?$")


# ------------------------------------------------------------------ budget


def check_budget(where: str, count: int, shape: tuple[int, ...], budget_mb: int) -> None:
    """Fail before reading when ``count`` uint8 images of ``shape`` exceed the budget."""
    need = count * math.prod(shape)  # bytes: one uint8 per value
    if need <= budget_mb * MIB:
        return
    need_mb = math.ceil(need / MIB)
    raise DataError(
        f"{where}: {count} images of {'x'.join(map(str, shape))} need {need_mb} MiB in memory, over "
        f"data.memory_budget_mb = {budget_mb}; streaming it from disk instead needs data.pipeline = \"auto\" "
        "(the default) or \"stream\"",
        hint=f"raise the budget if the machine has the memory (--set data.memory_budget_mb={need_mb + 1}), "
        "or train on a slice of the split, e.g. train[:50%]",
    )


# ---------------------------------------------------------- image helpers


def target_size(image_size) -> tuple[int, int] | None:
    """``data.image_size`` as ``(height, width)``: an int is a square; None stays None."""
    if image_size is None:
        return None
    if isinstance(image_size, int):
        size = (image_size, image_size)
    elif len(image_size) == 2:
        size = (int(image_size[0]), int(image_size[1]))
    else:
        raise DataError(f"data.image_size = {image_size}: give one side (32) or [height, width]")
    if min(size) < 1:
        raise DataError(f"data.image_size = {image_size}: sides must be at least 1 pixel")
    return size


def convert_channels(x: np.ndarray, channels: int | None, where: str) -> np.ndarray:
    """uint8 ``(N, H, W, C)`` -> ``channels`` channels: grey<->RGB, RGBA->RGB, any->grey.

    Grey from colour uses ITU-R 601-2 luma (``L = 0.299 R + 0.587 G + 0.114 B``),
    as Pillow's ``convert("L")`` does, so folders and TFDS agree.
    """
    have = x.shape[-1]
    if channels is None or channels == have:
        return x
    if channels == 1 and have >= 3:
        luma = x[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        return np.clip(np.rint(luma), 0, 255).astype(np.uint8)[..., None]
    if channels == 3 and have == 1:
        return np.repeat(x, 3, axis=-1)
    if channels == 3 and have == 4:
        return np.ascontiguousarray(x[..., :3])  # drop alpha
    raise DataError(f"{where}: cannot convert {have}-channel images to data.channels = {channels}",
                    hint="use data.channels = 1 (grey) or 3 (colour)")  # fmt: skip


def resize_images(x: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Resize uint8 ``(N, H, W, C)`` images to ``size = (height, width)`` with Pillow (bilinear)."""
    if size is None or tuple(x.shape[1:3]) == tuple(size):
        return x
    from PIL import Image

    out = np.empty((x.shape[0], *size, x.shape[-1]), np.uint8)
    for i, image in enumerate(x):
        grey = image.shape[-1] == 1
        pil = Image.fromarray(image[..., 0] if grey else image)
        resized = np.asarray(pil.resize((size[1], size[0]), Image.BILINEAR))
        out[i] = resized[..., None] if grey else resized
    return out


# --------------------------------------------------------------- slicing


@dataclass(frozen=True)
class SplitSpec:
    """A split name and an optional ``[start:stop]`` slice (ints or percentages)."""

    name: str
    start: str = ""
    stop: str = ""

    @property
    def sliced(self) -> bool:
        return bool(self.start or self.stop)


def parse_split(split: str, where: str) -> SplitSpec:
    """Parse ``train``, ``train[:90%]``, ``train[90%:]``, ``test[10:200]``."""
    match = _SLICE.match(split.replace(" ", ""))
    bound = re.compile(r"^-?\d+%?$")
    if not match or any(v and not bound.match(v) for v in (match["start"], match["stop"])):
        raise DataError(f"{where}: cannot read split {split!r}",
                        hint="use a name, optionally sliced: train, train[:90%], train[90%:], test[:1000]")  # fmt: skip
    return SplitSpec(match["name"], match["start"] or "", match["stop"] or "")


def slice_range(spec: SplitSpec, n: int) -> tuple[int, int]:
    """The ``[start, stop)`` positions a spec selects from ``n`` examples (TFDS rounding)."""

    def position(text: str, default: int) -> int:
        if not text:
            return default
        value = int(text.rstrip("%"))
        if text.endswith("%"):
            value = int(round(n * value / 100))
        return min(max(value + n if value < 0 else value, 0), n)

    return position(spec.start, 0), position(spec.stop, n)
