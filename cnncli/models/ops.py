"""One NNX module per single layer kind, and the ``make_*`` functions that build them from specs.

Parameters sit directly on the module a layer name points at (``conv1.kernel``,
``bn1.scale``), so paths read ``('conv1', 'kernel')``. Parameterless layers are
small modules too, so every name in ``Model.layer_names`` is an attribute.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

import cnncli.models.pooling as pooling
import cnncli.models.shapes as shapes
from cnncli.arith import layers as L
from cnncli.arith.layers import PadPairs
from cnncli.errors import LayerError, ShapeError
from cnncli.models.backend import current_conv_backend
from cnncli.models.norm import BatchNorm

# He et al. 2015 variance (2 / fan) for ReLU networks; fan_out as torchvision's
# ResNets and DenseNets (kaiming_normal_, mode="fan_out"), truncated at 2 sigma
# as JAX's he_normal. Keeps activations from vanishing in deep plain stacks.
HE_INIT = nnx.initializers.variance_scaling(2.0, "fan_out", "truncated_normal")

# Our pad mode names -> jnp.pad modes. "reflect" excludes the edge element
# (PyTorch's reflect); "edge" repeats it (PyTorch's replicate).
PAD_MODES = {"circular": "wrap", "reflect": "reflect", "edge": "edge"}

BN_MOMENTUM = 0.9  # running = 0.9 * running + 0.1 * batch (PyTorch momentum 0.1)
NORM_EPSILON = 1e-5  # PyTorch's default for BatchNorm and LayerNorm


class PaddedConv(nnx.Conv):
    """`nnx.Conv` with explicit ``(lo, hi)`` padding, zero or non-zero (``pad_mode``).

    Zero padding goes to the convolution itself; other modes pad first with
    `jnp.pad` and convolve VALID.
    """

    def __init__(self, in_features: int, out_features: int, kernel: tuple[int, ...], *,
                 strides: tuple[int, ...], pads: PadPairs, dilation: tuple[int, ...] | None = None,
                 groups: int = 1, bias: bool = True, pad_mode: str = "zeros", rngs: nnx.Rngs):  # fmt: skip
        zero = pad_mode == "zeros"
        super().__init__(
            in_features, out_features, kernel, strides,
            padding=tuple(pads) if zero else "VALID",
            kernel_dilation=dilation or 1, feature_group_count=groups,
            use_bias=bias, kernel_init=HE_INIT, rngs=rngs,
        )  # fmt: skip
        self.pad_mode = pad_mode
        self.pre_pads = None if zero else tuple(pads)

    def __call__(self, inputs: jax.Array, out_sharding=None) -> jax.Array:
        """Convolve; a bfloat16 input gives mixed precision (see `mixed_conv`).

        Calls ``lax.conv_general_dilated`` directly rather than `nnx.Conv.__call__`:
        the same convolution, with less Python per call under a trace.
        """
        if self.pre_pads is not None:
            widths = ((0, 0), *self.pre_pads, (0, 0))
            inputs = jnp.pad(inputs, widths, mode=PAD_MODES[self.pad_mode])
        nd = len(self.kernel_size)
        dilation = self.kernel_dilation if isinstance(self.kernel_dilation, tuple) else (self.kernel_dilation,) * nd
        y = mixed_conv(
            inputs, self.kernel[...], tuple(self.strides), self.padding, rhs_dilation=dilation,
            dimension_numbers=conv_dimension_numbers(inputs.ndim), feature_group_count=self.feature_group_count,
        )  # fmt: skip
        if self.bias is not None:
            y = y + self.bias[...].astype(y.dtype)
        return y


def mixed_conv(x: jax.Array, kernel: jax.Array, strides, padding, **kwargs) -> jax.Array:
    """``lax.conv_general_dilated`` in the input's precision.

    float32 input: a plain float32 convolution. bfloat16 input (``[train] precision
    = "bf16"``): the kernel is cast to bfloat16, the products accumulate in float32
    (``preferred_element_type``), and the result is rounded back to bfloat16.

    Under ``backend.conv_backend("onednn")`` the convolutions oneDNN covers (zero padding,
    no input dilation, 1 or 2 spatial axes) go to `cnncli.native.onednn.conv`, same
    meaning; the rest stay with lax.
    """
    if current_conv_backend() == "onednn":
        from cnncli.native import onednn

        pads = tuple((0, 0) for _ in strides) if padding == "VALID" else tuple(tuple(p) for p in padding)
        if onednn.supports(x.ndim, pads, kwargs.get("lhs_dilation"), x.dtype):
            dilation = tuple(kwargs.get("rhs_dilation") or (1,) * len(strides))
            groups = kwargs.get("feature_group_count", 1)
            return onednn.conv(x, kernel.astype(x.dtype), tuple(strides), pads, dilation, groups)
    if x.dtype == jnp.float32 or not jnp.issubdtype(x.dtype, jnp.floating):
        return lax.conv_general_dilated(x, kernel.astype(x.dtype), strides, padding, **kwargs)
    y = lax.conv_general_dilated(x, kernel.astype(x.dtype), strides, padding, preferred_element_type=jnp.float32, **kwargs)
    return y.astype(x.dtype)


class Dense(nnx.Linear):
    """`nnx.Linear` whose bfloat16 inputs accumulate in float32 (mixed precision).

    Parameters and paths are `nnx.Linear`'s (``('dense1', 'kernel')``, ``'bias'``).
    """

    def __call__(self, inputs: jax.Array, out_sharding=None) -> jax.Array:
        kernel = self.kernel[...]
        if inputs.dtype == jnp.float32:
            y = jnp.dot(inputs, kernel.astype(inputs.dtype))
        else:
            y = jnp.dot(inputs, kernel.astype(inputs.dtype), preferred_element_type=jnp.float32).astype(inputs.dtype)
        if self.bias is not None:
            y = y + self.bias[...].astype(y.dtype)
        return y


def conv_dimension_numbers(ndim: int) -> lax.ConvDimensionNumbers:
    """Channels-last input/output, kernel ``(*spatial, in, out)``; ``ndim`` = array rank."""
    spatial = tuple(range(1, ndim - 1))
    return lax.ConvDimensionNumbers(
        (0, ndim - 1, *spatial), (ndim - 1, ndim - 2, *range(ndim - 2)), (0, ndim - 1, *spatial)
    )


class TransposedConv(nnx.ConvTranspose):
    """Transposed convolution with PyTorch ``ConvTranspose`` semantics, groups included.

    Each input element scatters ``x[i] * kernel[t]`` to output position
    ``i * s - lo + t * d`` (``lo`` = the direct conv's low padding). The kernel is
    ``(*k, in / groups, out)`` (so the inherited ``in_features`` is ``in / groups``).
    Computed as a stride-1 conv over the input dilated by ``s``, with the kernel
    flipped and `shapes.tconv_geometry`'s pads; equal to
    ``lax.conv_transpose(x, swapaxes(kernel, -1, -2), transpose_kernel=True)``.
    """

    def __init__(self, in_features: int, out_features: int, kernel: tuple[int, ...], *,
                 strides: tuple[int, ...], pads: PadPairs, dilation: tuple[int, ...],
                 groups: int = 1, bias: bool = True, rngs: nnx.Rngs):  # fmt: skip
        super().__init__(
            in_features // groups, out_features, kernel, strides, padding=tuple(pads),
            kernel_dilation=dilation, use_bias=bias, kernel_init=HE_INIT, rngs=rngs,
        )  # fmt: skip
        self.feature_group_count = groups

    def __call__(self, inputs: jax.Array) -> jax.Array:
        nd = len(self.kernel_size)
        kernel = jnp.flip(self.kernel[...], axis=tuple(range(nd)))
        y = mixed_conv(
            inputs, kernel, (1,) * nd, self.padding,
            lhs_dilation=self.strides, rhs_dilation=self.kernel_dilation,
            dimension_numbers=conv_dimension_numbers(inputs.ndim),
            feature_group_count=self.feature_group_count,
        )  # fmt: skip
        if self.bias is not None:
            y = y + self.bias[...].astype(y.dtype)
        return y


class WindowPool(nnx.Module):
    """``maxpool``/``avgpool``/``l2pool`` with resolved padding and ceil-mode extra."""

    def __init__(self, kind: str, window, strides, dilation, pads: PadPairs, extra, impl: str = "auto"):
        self.kind = kind
        self.window, self.strides, self.dilation = tuple(window), tuple(strides), tuple(dilation)
        self.pads, self.extra = tuple(pads), tuple(extra)
        self.impl = impl  # max pooling only: see pooling.max_pool

    def __call__(self, x: jax.Array) -> jax.Array:
        total = tuple((lo, hi + e) for (lo, hi), e in zip(self.pads, self.extra))
        if self.kind == "maxpool":
            return pooling.max_pool(x, self.window, self.strides, self.dilation, total, impl=self.impl)
        if self.kind == "avgpool":
            return pooling.avg_pool(x, self.window, self.strides, self.dilation, self.pads, self.extra)
        return pooling.l2_pool(x, self.window, self.strides, self.dilation, total)


class GlobalPool(nnx.Module):
    """``gap``/``gmp``: mean or max over every spatial axis, ``(N, *S, C) -> (N, C)``."""

    def __init__(self, kind: str):
        self.kind = kind

    def __call__(self, x: jax.Array) -> jax.Array:
        axes = tuple(range(1, x.ndim - 1))
        return jnp.mean(x, axis=axes) if self.kind == "gap" else jnp.max(x, axis=axes)


class Flatten(nnx.Module):
    """``(N, ...) -> (N, -1)``, channels-last order."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return x.reshape(x.shape[0], -1)


ACTIVATIONS = {
    "relu": jax.nn.relu,
    "relu6": jax.nn.relu6,
    "leaky_relu": jax.nn.leaky_relu,  # negative slope 0.01
    "elu": jax.nn.elu,  # alpha 1
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # erf form, as PyTorch's default
    "silu": jax.nn.silu,
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "softplus": jax.nn.softplus,
    "hard_tanh": jax.nn.hard_tanh,  # clip to [-1, 1]
    "identity": lambda x: x,
}


class Activation(nnx.Module):
    """An elementwise nonlinearity, by name (see `ACTIVATIONS`)."""

    def __init__(self, kind: str):
        self.kind = kind

    def __call__(self, x: jax.Array) -> jax.Array:
        return ACTIVATIONS[self.kind](x)


def batch_norm(features: int, rngs: nnx.Rngs) -> BatchNorm:
    """BatchNorm over the last axis, PyTorch's momentum and epsilon (`cnncli.models.norm`)."""
    return BatchNorm(features, momentum=BN_MOMENTUM, epsilon=NORM_EPSILON, rngs=rngs)


def conv(in_features: int, out_features: int, kernel, stride, pads, rngs: nnx.Rngs, *, bias: bool = False):
    """A zero-padded block conv (no bias by default: a BatchNorm follows)."""
    return PaddedConv(in_features, out_features, kernel, strides=stride, pads=pads, bias=bias, rngs=rngs)


def spatial(shape: tuple[int, ...], where: str) -> tuple[tuple[int, ...], int]:
    """Split a per-example shape into (spatial sizes, channels); demand >= 1 spatial axis."""
    if len(shape) < 2:
        raise ShapeError(
            f"{where}: needs a spatial input (H, W, C or L, C) but gets shape {shape}",
            hint="put convolutions and pools before flatten/gap/dense",
        )
    return shape[:-1], shape[-1]


def _check_groups(spec: L.Conv, in_c: int, where: str) -> None:
    if in_c % spec.groups or spec.features % spec.groups:
        raise ShapeError(
            f"{where}: groups g={spec.groups} must divide both the input channels "
            f"({in_c}) and the output channels ({spec.features})"
        )


def _window_args(spec, nd: int, where: str):
    """Kernel, stride (default: the kernel) and dilation, broadcast to ``nd`` axes."""
    k = L.broadcast(spec.kernel, nd, what="kernel", token=where)
    s = L.broadcast(spec.stride or spec.kernel, nd, what="stride", token=where)
    d = L.broadcast(spec.dilation, nd, what="dilation", token=where)
    return k, s, d


def make_conv(spec: L.Conv, shape, rngs: nnx.Rngs, where: str):
    """A ``conv`` or ``tconv`` layer and its output shape."""
    sizes, in_c = spatial(shape, where)
    nd = len(sizes)
    k, s, d = _window_args(spec, nd, where)
    _check_groups(spec, in_c, where)
    common = dict(strides=s, dilation=d, groups=spec.groups, bias=spec.bias, rngs=rngs)
    if spec.kind == "tconv":
        op = L.broadcast(spec.output_padding, nd, what="output padding", token=where)
        pads, out = shapes.tconv_geometry(spec.padding, sizes, k, s, d, op, where=where)
        module = TransposedConv(in_c, spec.features, k, pads=pads, **common)
    else:
        pads, out = shapes.conv_geometry(spec.padding, sizes, k, s, d, where=where)
        module = PaddedConv(in_c, spec.features, k, pads=pads, pad_mode=spec.pad_mode, **common)
    return module, (*out, spec.features)


def make_pool(spec: L.Pool, shape, where: str):
    """A ``maxpool``/``avgpool``/``l2pool`` layer and its output shape."""
    sizes, channels = spatial(shape, where)
    k, s, d = _window_args(spec, len(sizes), where)
    pads, extra, out = shapes.pool_geometry(spec.padding, sizes, k, s, d, spec.ceil, where=where)
    return WindowPool(spec.kind, k, s, d, pads, extra), (*out, channels)


def make_simple(spec, shape, num_classes: int, rngs: nnx.Rngs, where: str):
    """Layers without spatial arithmetic: activations, norms, dropout, dense, flatten, gap."""
    if isinstance(spec, L.Activation):
        return Activation(spec.kind), shape
    if isinstance(spec, L.Dropout):
        return nnx.Dropout(spec.rate, rngs=rngs), shape
    if isinstance(spec, L.Flatten):
        return Flatten(), (math.prod(shape),)
    if isinstance(spec, L.GlobalPool):
        return GlobalPool(spec.kind), (spatial(shape, where)[1],)
    if isinstance(spec, L.Norm):
        if spec.kind == "bn":
            return batch_norm(shape[-1], rngs), shape
        return nnx.LayerNorm(shape[-1], epsilon=NORM_EPSILON, rngs=rngs), shape
    if isinstance(spec, L.Dense):
        features = spec.features if spec.features is not None else num_classes
        if features is None:
            raise LayerError(f"{where} has no width: no c= and no class count", hint="give c=N on the layer")
        return Dense(shape[-1], features, use_bias=spec.bias, rngs=rngs), (*shape[:-1], features)
    raise TypeError(f"not a single-layer spec: {spec!r}")
