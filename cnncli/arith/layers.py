"""The layer language: tokens like ``conv:c=6,k=5,p=same`` parsed into `LayerSpec`s.

One grammar serves ``conv-arith`` at the shell and ``[model] layers`` in recipes, so
what a user calculates is exactly what gets built::

    conv:c=6,k=5,p=same  relu  maxpool:k=2  conv:c=16,k=5  relu  maxpool:k=2
    flatten  dense:c=120  relu  dense:c=84  relu  dense:c=10

A token is ``kind`` or ``kind:key=value,key=value``: no spaces or parentheses, so it
survives a shell unquoted. Dimensionality (1-D, 2-D, 3-D) comes from the input shape,
never from the token: a per-axis value given once (``k=3``) applies to every spatial
axis, ``k=3x5`` gives one value per axis.

Specs are frozen dataclasses of plain data. `cnncli.arith.formulas` reads them to compute
shapes; `cnncli.models` reads them to build Flax modules. This module imports no
jax or numpy.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Union

from cnncli.errors import LayerError, UsageError, unknown_choice

# A padding is a named convention or explicit (lo, hi) pairs, one pair per axis
# (a single pair broadcasts to every axis).
PadPairs = tuple[tuple[int, int], ...]
Padding = Union[str, PadPairs]

PAD_NAMES = ("same", "valid", "full")
PAD_MODES = ("zeros", "circular", "reflect", "edge")
ACTIVATIONS = (
    "relu", "relu6", "leaky_relu", "elu", "gelu", "silu", "sigmoid", "tanh",
    "softplus", "hard_tanh", "identity",
)  # fmt: skip


@dataclass(frozen=True)
class Conv:
    """A convolution (``conv``) or transposed convolution (``tconv``).

    For ``tconv``, integer padding ``p`` is the padding of the direct convolution
    being transposed (Dumoulin & Visin; PyTorch's ``ConvTranspose``), and ``op`` is
    the output padding. ``same``/``valid`` follow Flax/TF: output = input * stride
    for ``same``.
    """

    kind: str  # "conv" | "tconv"
    features: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...] = (1,)
    padding: Padding = ((0, 0),)
    dilation: tuple[int, ...] = (1,)
    groups: int = 1
    bias: bool = True
    pad_mode: str = "zeros"
    output_padding: tuple[int, ...] = (0,)

    keys: ClassVar[dict[str, str]] = {
        "c": "features", "k": "kernel", "s": "stride", "p": "padding", "d": "dilation",
        "g": "groups", "bias": "bias", "pm": "pad_mode", "op": "output_padding",
    }  # fmt: skip
    required: ClassVar[tuple[str, ...]] = ("c", "k")


@dataclass(frozen=True)
class Pool:
    """Max, average or L2 pooling over a window (``maxpool``, ``avgpool``, ``l2pool``).

    Stride defaults to the window size. ``ceil=true`` rounds the output size up, as
    PyTorch's ``ceil_mode`` (the last window may hang over the padded input).
    """

    kind: str  # "maxpool" | "avgpool" | "l2pool"
    kernel: tuple[int, ...]
    stride: tuple[int, ...] | None = None  # None: same as kernel
    padding: Padding = ((0, 0),)
    dilation: tuple[int, ...] = (1,)
    ceil: bool = False

    keys: ClassVar[dict[str, str]] = {
        "k": "kernel", "s": "stride", "p": "padding", "d": "dilation", "ceil": "ceil",
    }  # fmt: skip
    required: ClassVar[tuple[str, ...]] = ("k",)


@dataclass(frozen=True)
class GlobalPool:
    """Global average (``gap``) or max (``gmp``) pooling: spatial axes collapse, channels stay."""

    kind: str  # "gap" | "gmp"
    keys: ClassVar[dict[str, str]] = {}
    required: ClassVar[tuple[str, ...]] = ()


@dataclass(frozen=True)
class Flatten:
    """Flatten spatial axes and channels into one feature vector."""

    kind: str = "flatten"
    keys: ClassVar[dict[str, str]] = {}
    required: ClassVar[tuple[str, ...]] = ()


@dataclass(frozen=True)
class Dense:
    """A fully connected layer. ``c`` left out means "the dataset's class count"."""

    kind: str = "dense"
    features: int | None = None
    bias: bool = True
    keys: ClassVar[dict[str, str]] = {"c": "features", "bias": "bias"}
    required: ClassVar[tuple[str, ...]] = ()


@dataclass(frozen=True)
class Norm:
    """Batch norm (``bn``, over batch and spatial axes) or layer norm (``ln``)."""

    kind: str  # "bn" | "ln"
    keys: ClassVar[dict[str, str]] = {}
    required: ClassVar[tuple[str, ...]] = ()


@dataclass(frozen=True)
class Dropout:
    """Dropout with drop probability ``r`` (training only)."""

    kind: str = "dropout"
    rate: float = 0.5
    keys: ClassVar[dict[str, str]] = {"r": "rate"}
    required: ClassVar[tuple[str, ...]] = ()


@dataclass(frozen=True)
class Activation:
    """An elementwise nonlinearity (``relu``, ``tanh``, ``gelu``, ...)."""

    kind: str
    keys: ClassVar[dict[str, str]] = {}
    required: ClassVar[tuple[str, ...]] = ()


@dataclass(frozen=True)
class ResBlock:
    """ResNet basic block (He et al. 2016): conv-bn-relu-conv-bn, plus shortcut, relu.

    The first conv has stride ``s``. When the shape changes, the shortcut is a 1x1
    strided conv + bn (``sc=conv``, option B) or a strided identity zero-padded in
    channels (``sc=pad``, option A, the CIFAR ResNets of the paper).
    """

    kind: str = "resblock"
    features: int = 64
    stride: tuple[int, ...] = (1,)
    kernel: tuple[int, ...] = (3,)
    shortcut: str = "conv"  # "conv" | "pad"
    keys: ClassVar[dict[str, str]] = {"c": "features", "s": "stride", "k": "kernel", "sc": "shortcut"}
    required: ClassVar[tuple[str, ...]] = ("c",)


@dataclass(frozen=True)
class Bottleneck:
    """ResNet bottleneck block: 1x1 (c) - 3x3 (c, stride s) - 1x1 (c*e), each with bn.

    Output channels are ``c * e`` (``e`` = expansion, default 4), as in ResNet-50.
    The stride sits on the 3x3 conv (torchvision's "ResNet v1.5").
    """

    kind: str = "bottleneck"
    features: int = 64
    stride: tuple[int, ...] = (1,)
    expansion: int = 4
    keys: ClassVar[dict[str, str]] = {"c": "features", "s": "stride", "e": "expansion"}
    required: ClassVar[tuple[str, ...]] = ("c",)


@dataclass(frozen=True)
class DenseBlock:
    """DenseNet-BC block (Huang et al. 2017): ``n`` layers of bn-relu-conv1x1-bn-relu-conv3x3.

    Each layer adds ``gr`` channels (the growth rate) concatenated to its input; the
    1x1 bottleneck has ``bs * gr`` channels.
    """

    kind: str = "denseblock"
    layers: int = 6
    growth: int = 32
    bn_size: int = 4
    keys: ClassVar[dict[str, str]] = {"n": "layers", "gr": "growth", "bs": "bn_size"}
    required: ClassVar[tuple[str, ...]] = ("n",)


@dataclass(frozen=True)
class Transition:
    """DenseNet transition: bn-relu-conv1x1 (``c`` channels) then 2x2 average pool, stride 2."""

    kind: str = "transition"
    features: int = 128
    keys: ClassVar[dict[str, str]] = {"c": "features"}
    required: ClassVar[tuple[str, ...]] = ("c",)


LayerSpec = Union[
    Conv, Pool, GlobalPool, Flatten, Dense, Norm, Dropout, Activation,
    ResBlock, Bottleneck, DenseBlock, Transition,
]  # fmt: skip

# kind -> spec class; the one place a layer kind is registered.
KINDS: dict[str, type] = {
    "conv": Conv, "tconv": Conv,
    "maxpool": Pool, "avgpool": Pool, "l2pool": Pool,
    "gap": GlobalPool, "gmp": GlobalPool,
    "flatten": Flatten, "dense": Dense,
    "bn": Norm, "ln": Norm, "dropout": Dropout,
    "resblock": ResBlock, "bottleneck": Bottleneck,
    "denseblock": DenseBlock, "transition": Transition,
    **{name: Activation for name in ACTIVATIONS},
}  # fmt: skip

# Keys that are positive integers (per-axis tuples where the field is a tuple).
_POSITIVE = {"c", "k", "s", "d", "g", "n", "gr", "bs", "e"}


def _fail(token: str, message: str, hint: str | None = None) -> LayerError:
    return LayerError(f"layer {token!r}: {message}", hint=hint)


def _parse_int(token: str, key: str, text: str, *, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise _fail(token, f"{key}={text!r} is not an integer") from None
    if value < minimum:
        raise _fail(token, f"{key}={value} must be >= {minimum}")
    return value


def _parse_axes(token: str, key: str, text: str, *, minimum: int) -> tuple[int, ...]:
    """``3`` -> (3,), ``3x5`` -> (3, 5)."""
    return tuple(_parse_int(token, key, part, minimum=minimum) for part in text.split("x"))


def parse_padding(text: str, *, where: str = "padding") -> Padding:
    """Parse a padding: ``same``/``valid``/``full``, ``2``, ``1x2``, or ``LO-HI`` per axis.

    Args:
        text: e.g. ``"same"``, ``"1"``, ``"1x2"`` (per axis), ``"0-1"`` (lo 0, hi 1),
            ``"0-1x1-0"``.
        where: names the value in error messages.

    Returns:
        A name from `PAD_NAMES` or a tuple of ``(lo, hi)`` pairs.
    """
    text = text.strip().lower()
    if text in PAD_NAMES:
        return text
    pairs = []
    for axis in text.split("x"):
        parts = axis.split("-")
        if len(parts) not in (1, 2) or not all(p.strip().isdigit() for p in parts):
            raise LayerError(
                f"{where}: {text!r} is not a padding",
                hint="use same, valid, full, an integer (2), one per axis (1x2), "
                "or LO-HI (0-1)",
            )
        lo = int(parts[0])
        hi = int(parts[-1])
        pairs.append((lo, hi))
    return tuple(pairs)


def parse_shape(text: str) -> tuple[int, ...]:
    """Parse an input shape as typed at the shell: channels last, sizes joined by ``x``.

    Args:
        text: ``"224x224x3"`` (channels last), ``"40x1"`` (1-D), or a bare size ``"224"``.

    Returns:
        The sizes, e.g. ``(224, 224, 3)``; a bare size gives ``(224,)``.

    Raises:
        UsageError: not integers joined by ``x``, or a size below 1.
    """
    try:
        shape = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UsageError(
            f"INPUT {text!r} is not a size, a shape or a recipe file",
            hint="e.g. 224 (quick form), 224x224x3 (channels last), or recipes/x.toml",
        ) from None
    if min(shape) < 1:
        raise UsageError(f"INPUT {text!r}: sizes must be positive")
    return shape


def _parse_bool(token: str, key: str, text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise _fail(token, f"{key}={text!r} is not a boolean", hint="use true or false")


def _parse_value(token: str, kind: str, key: str, text: str, field: dataclasses.Field):
    if key == "p":
        return parse_padding(text, where=f"layer {token!r}")
    if key in ("bias", "ceil"):
        return _parse_bool(token, key, text)
    if key == "pm":
        if text not in PAD_MODES:
            raise _fail(token, unknown_choice("pad mode", text, PAD_MODES))
        return text
    if key == "sc":
        if text not in ("conv", "pad"):
            raise _fail(token, unknown_choice("shortcut", text, ("conv", "pad")))
        return text
    if key == "r":
        try:
            rate = float(text)
        except ValueError:
            raise _fail(token, f"r={text!r} is not a number") from None
        if not 0.0 <= rate < 1.0:
            raise _fail(token, f"r={rate} must be in [0, 1)")
        return rate
    if key == "op":
        return _parse_axes(token, key, text, minimum=0)
    if key in ("k", "s", "d"):
        return _parse_axes(token, key, text, minimum=1)
    return _parse_int(token, key, text, minimum=1)


def parse_token(token: str) -> LayerSpec:
    """Parse one layer token into its spec.

    Args:
        token: e.g. ``"conv:c=64,k=7,s=2,p=3"``, ``"relu"``, ``"maxpool:k=3,s=2,p=1"``.

    Returns:
        The frozen spec dataclass.

    Raises:
        LayerError: unknown kind or key, bad value, missing required key; the message
            names the token and lists the valid choices.
    """
    token = token.strip()
    kind, _, rest = token.partition(":")
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise LayerError(unknown_choice("layer kind", kind, KINDS))
    cls = KINDS[kind]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, object] = {}
    seen: set[str] = set()
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, text = item.partition("=")
        key = key.strip().lower()
        if not eq or not text.strip():
            raise _fail(token, f"{item!r} is not key=value", hint=_keys_hint(kind, cls))
        if key not in cls.keys:
            if not cls.keys:
                raise _fail(token, f"{kind} takes no keys")
            raise _fail(token, unknown_choice(f"key for {kind}", key, cls.keys))
        if key in seen:
            raise _fail(token, f"key {key!r} given twice")
        seen.add(key)
        field = cls.keys[key]
        values[field] = _parse_value(token, kind, key, text.strip(), fields[field])
    missing = [k for k in cls.required if k not in seen]
    if missing:
        raise _fail(token, f"{kind} needs {', '.join(k + '=' for k in missing)}", hint=_keys_hint(kind, cls))
    if kind == "tconv" and "pad_mode" in values and values["pad_mode"] != "zeros":
        raise _fail(token, "tconv supports only pm=zeros")
    if kind != "tconv" and "output_padding" in values:
        raise _fail(token, "op (output padding) applies to tconv only")
    if "kind" in fields:
        values["kind"] = kind
    return cls(**values)


def _keys_hint(kind: str, cls: type) -> str:
    if not cls.keys:
        return f"{kind} takes no keys"
    return f"{kind} keys: " + ", ".join(f"{k} ({v})" for k, v in cls.keys.items())


def parse_layers(tokens: str | list[str] | tuple[str, ...]) -> tuple[LayerSpec, ...]:
    """Parse a layer list: a sequence of tokens, or one string of space-separated tokens."""
    if isinstance(tokens, str):
        tokens = tokens.split()
    items: list[str] = []
    for t in tokens:
        items.extend(t.split())
    if not items:
        raise LayerError("no layers given", hint="e.g. conv:c=16,k=3,p=same relu gap dense:c=10")
    return tuple(parse_token(t) for t in items)


def _fmt_axes(values: tuple[int, ...]) -> str:
    return "x".join(str(v) for v in values)


def format_padding(padding: Padding) -> str:
    """The token spelling of a padding (inverse of `parse_padding`)."""
    if isinstance(padding, str):
        return padding
    parts = [str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in padding]
    return "x".join(parts)


def to_token(spec: LayerSpec) -> str:
    """The canonical token for a spec; ``parse_token(to_token(s)) == s``.

    Keys at their default value are left out.
    """
    cls = type(spec)
    parts = []
    for key, field in cls.keys.items():
        value = getattr(spec, field)
        default = next(f for f in dataclasses.fields(cls) if f.name == field).default
        if value is None or (value == default and key not in cls.required):
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif key == "p":
            text = format_padding(value)
        elif isinstance(value, tuple):
            text = _fmt_axes(value)
        else:
            text = str(value)
        parts.append(f"{key}={text}")
    return spec.kind + (":" + ",".join(parts) if parts else "")


def layer_names(specs: tuple[LayerSpec, ...] | list[LayerSpec]) -> list[str]:
    """Stable names for a layer list: the kind and a 1-based count per kind.

    ``conv relu conv relu dense`` -> ``conv1 relu1 conv2 relu2 dense1``. These are
    the names in conv-arith's table, recipe ``freeze`` globs and inspect-filters.
    """
    counts: dict[str, int] = {}
    names = []
    for spec in specs:
        counts[spec.kind] = counts.get(spec.kind, 0) + 1
        names.append(f"{spec.kind}{counts[spec.kind]}")
    return names


def broadcast(values: tuple[int, ...], ndim: int, *, what: str, token: str = "") -> tuple[int, ...]:
    """Expand a per-axis tuple of length 1 to ``ndim`` axes; check explicit lengths."""
    if len(values) == ndim:
        return tuple(values)
    if len(values) == 1:
        return tuple(values) * ndim
    where = f"layer {token!r}: " if token else ""
    raise LayerError(
        f"{where}{what} has {len(values)} values but the input has {ndim} spatial axes",
        hint=f"give one value for all axes or {ndim} values joined by x",
    )


def broadcast_pairs(padding: PadPairs, ndim: int, *, token: str = "") -> PadPairs:
    """Expand explicit ``(lo, hi)`` padding pairs to ``ndim`` axes."""
    if len(padding) == ndim:
        return tuple(padding)
    if len(padding) == 1:
        return tuple(padding) * ndim
    where = f"layer {token!r}: " if token else ""
    raise LayerError(
        f"{where}padding has {len(padding)} values but the input has {ndim} spatial axes",
        hint=f"give one value for all axes or {ndim} values joined by x",
    )


def block_padding(kernel: tuple[int, ...]) -> Padding:
    """The padding of every conv inside a block (resblock, bottleneck, denseblock, transition).

    ``k // 2`` on both sides when every kernel size is odd (torchvision), so a stride-1
    conv keeps its size; ``same`` when any is even, so the residual and shortcut sizes
    still agree (XLA's split: the odd pixel at the end). The one rule shared by
    conv-arith (`cnncli.arith.blocks`) and the model builder (`cnncli.models.blocks`,
    through `cnncli.models.shapes.block_pads`).

    Args:
        kernel: the kernel size per spatial axis.

    Returns:
        One ``(lo, hi)`` pair per axis, or ``"same"``.
    """
    if all(k % 2 for k in kernel):
        return tuple((k // 2, k // 2) for k in kernel)
    return "same"
