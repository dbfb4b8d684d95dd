"""Window pooling (max, average, L2) over channels-last arrays, with fast paths for XLA CPU.

On XLA CPU the backward pass of ``lax.reduce_window`` max (select-and-scatter) is
slow. Measured with ``benchmarks/pool_variants.py`` (2 cores, jax 0.10.2, grad
of a jitted pool): a 2x2/2 pool on 128x32x32x32 took 190 ms through reduce_window,
17 ms through reshape+max and 8 ms through slices; the 3x3/2 ResNet stem pool on
32x112x112x64 1890 ms vs 430 ms (slices); a small CNN's whole gradient 572 vs
355 ms. So max pooling is computed one of three ways, all with the same values:

- ``tiles``: when kernel == stride, no padding and no dilation (the common 2x2/2
  pool), crop the input to a multiple of the window, reshape so every window is its
  own axes, and reduce; the backward is one hand-written elementwise pass (the
  gradient goes to each window's maxima, shared between ties, counted per window
  with one slice per offset so that XLA fuses the whole backward into one pass).
  Inside a whole train step it beat the slices path: the 2-conv CNN 1.33x with
  XLA's convolutions and 1.30x with oneDNN's (``benchmarks/levers.py --model cnn2
  --variants default,pool-slices,onednn,onednn/pool-slices``), where the slices'
  backward had become one branchy fusion of four strided pads (6.7 of 30 ms per
  step).
- ``slices``: the elementwise maximum of the ``prod(k)`` strided slices of the
  padded input, one per window offset. Fastest for small overlapping windows (up to
  `SLICE_MAX_TAPS` elements, e.g. the 3x3/2 ResNet stem): its backward is a few
  pads and adds.
- ``reshape``: the tiles forward with autodiff's backward (kept for comparison).
- ``reduce_window``: the general fallback (large overlapping undilated windows;
  jax cannot differentiate it with window dilation).

Ties (equal maxima in one window, e.g. all-zero windows after a ReLU) share the
gradient: equally in the ``tiles`` and ``reshape`` paths, in halves down the chain of
maxima in ``slices``; ``reduce_window`` gives it to one of them. The sum stays the
same.

Average pooling uses ``reduce_window`` (an add): its backward is already fast, and
reshape+mean measured no faster (7.2 vs 6.9 ms, within noise).

Arrays are ``(N, *spatial, C)``; sizes and pads are per spatial axis, in elements.
"""

from __future__ import annotations

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from cnncli.arith.layers import PadPairs

# Above this many window elements the slices path's backward (one full-size pad
# per element) costs more than reduce_window's select-and-scatter.
SLICE_MAX_TAPS = 9
IMPLS = ("auto", "tiles", "slices", "reshape", "reduce_window")


def _is_tiling(window, strides, dilation, pads) -> bool:
    """Non-overlapping, unpadded, undilated windows: the reshape path applies."""
    return tuple(window) == tuple(strides) and set(dilation) == {1} and all(p == (0, 0) for p in pads)


def choose_max_impl(window, strides, dilation, pads) -> str:
    """The fastest exact, differentiable max-pool implementation for this window (see module doc).

    Dilated windows always take the slices path: jax has no VJP for
    ``reduce_window`` max with window dilation (``select_and_gather``).
    """
    if _is_tiling(window, strides, dilation, pads):
        return "tiles"
    if math.prod(window) <= SLICE_MAX_TAPS or set(dilation) != {1}:
        return "slices"
    return "reduce_window"


def _full(pairs: PadPairs) -> tuple[tuple[int, int], ...]:
    return ((0, 0), *pairs, (0, 0))


def _windows(x: jax.Array, window: tuple[int, ...]):
    """Non-overlapping windows as axes of their own (floor mode: the rest is cropped).

    Returns ``(xr, axes, crop)``: ``xr`` is ``(N, o1, k1, o2, k2, ..., C)``, ``axes``
    the window axes ``(2, 4, ...)``, ``crop`` the shape of the cropped input.
    """
    out = tuple(i // k for i, k in zip(x.shape[1:-1], window))
    x = x[(slice(None), *(slice(0, o * k) for o, k in zip(out, window)))]
    split = tuple(itertools.chain.from_iterable(zip(out, window)))
    return x.reshape((x.shape[0], *split, x.shape[-1])), tuple(2 + 2 * a for a in range(len(window))), x.shape


def _reshape_reduce(x: jax.Array, window: tuple[int, ...], reduce) -> jax.Array:
    """Reduce non-overlapping windows by cropping and reshaping (floor mode)."""
    xr, axes, _ = _windows(x, window)
    return reduce(xr, axis=axes)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _tiles_max(x: jax.Array, window: tuple[int, ...]) -> jax.Array:
    """Max over non-overlapping windows (floor mode), with a one-pass backward.

    Forward: `_reshape_reduce`. Backward: each window's gradient goes to its
    maximal elements, shared equally between ties, in one elementwise pass over the
    input (``where(x == max, dy / ties, 0)``), instead of what autodiff of the
    reshape or the slices leaves XLA to fuse.
    """
    return _reshape_reduce(x, window, jnp.max)


def _tiles_fwd(x, window):
    y = _reshape_reduce(x, window, jnp.max)
    return y, (x, y)


def _tiles_bwd(window, res, dy):
    x, y = res
    xr, axes, crop = _windows(x, window)
    hit = xr == jnp.expand_dims(y, axes)
    # Ties per window as a sum of one slice per window offset, not a reduction: XLA
    # fuses it into the single elementwise pass that writes dx (a reduce would
    # materialize the hit mask at full size first: 3 full passes instead of 1).
    ties = None
    for offset in itertools.product(*(range(k) for k in window)):
        index = (slice(None),) + tuple(itertools.chain.from_iterable((slice(None), o) for o in offset))
        tap = (xr[index] == y).astype(x.dtype)
        ties = tap if ties is None else ties + tap
    dxr = jnp.where(hit, jnp.expand_dims(dy / ties, axes), jnp.zeros((), x.dtype))
    dx = dxr.reshape(crop)
    rest = tuple((0, i - c) for i, c in zip(x.shape[1:-1], crop[1:-1]))
    return (jnp.pad(dx, ((0, 0), *rest, (0, 0))) if any(r for _, r in rest) else dx,)


_tiles_max.defvjp(_tiles_fwd, _tiles_bwd)


def _slices_max(x, window, strides, dilation, pads) -> jax.Array:
    """Elementwise max over the window's strided slices of the ``-inf``-padded input."""
    x = jnp.pad(x, _full(pads), constant_values=-jnp.inf)
    sizes = x.shape[1:-1]
    out = tuple(
        (i - (k - 1) * d - 1) // s + 1 for i, k, s, d in zip(sizes, window, strides, dilation)
    )
    result = None
    for offset in itertools.product(*(range(k) for k in window)):
        start = tuple(o * d for o, d in zip(offset, dilation))
        limit = tuple(b + (n - 1) * s + 1 for b, n, s in zip(start, out, strides))
        piece = lax.slice(x, (0, *start, 0), (x.shape[0], *limit, x.shape[-1]), (1, *strides, 1))
        result = piece if result is None else jnp.maximum(result, piece)
    return result


def max_pool(x, window, strides, dilation=None, pads=None, *, impl: str = "auto") -> jax.Array:
    """Max pooling; padding elements are ``-inf`` (never selected).

    Args:
        x: ``(N, *spatial, C)``.
        window: kernel size per spatial axis.
        strides: stride per spatial axis.
        dilation: window dilation per axis (default 1).
        pads: ``(lo, hi)`` per axis, including any ceil-mode extra (default none).
        impl: ``auto`` (fastest exact, see `choose_max_impl`), ``slices``,
            ``reshape`` (tiling windows only) or ``reduce_window``.
    """
    nd = len(window)
    dilation = tuple(dilation or (1,) * nd)
    pads = tuple(pads or ((0, 0),) * nd)
    if impl not in IMPLS:
        raise ValueError(f"unknown max-pool implementation {impl!r}; choose from {IMPLS}")
    if impl == "auto":
        impl = choose_max_impl(window, strides, dilation, pads)
    if impl == "slices":
        return _slices_max(x, window, strides, dilation, pads)
    if impl in ("reshape", "tiles"):
        if not _is_tiling(window, strides, dilation, pads):
            raise ValueError(f"the {impl} path needs kernel == stride, no padding, no dilation")
        return _tiles_max(x, tuple(window)) if impl == "tiles" else _reshape_reduce(x, window, jnp.max)
    init = np.array(-np.inf, x.dtype)  # numpy constant: see window_sum
    return lax.reduce_window(
        x, init, lax.max, (1, *window, 1), (1, *strides, 1), _full(pads),
        window_dilation=(1, *dilation, 1),
    )  # fmt: skip


def window_sum(x, window, strides, dilation=None, pads=None) -> jax.Array:
    """Sum over each window; padding elements are zero."""
    nd = len(window)
    dilation = tuple(dilation or (1,) * nd)
    pads = tuple(pads or ((0, 0),) * nd)
    zero = np.array(0, x.dtype)  # a numpy constant: a jnp one inside jit breaks reverse-mode autodiff
    return lax.reduce_window(
        x, zero, lax.add, (1, *window, 1), (1, *strides, 1), _full(pads),
        window_dilation=(1, *dilation, 1),
    )  # fmt: skip


def _window_counts(size, window, stride, dilation, lo, hi, extra) -> np.ndarray:
    """Per output position along one axis: window elements inside ``[0, size+lo+hi)``.

    Explicit padding counts (PyTorch ``count_include_pad=True``); the ceil-mode
    ``extra`` beyond it does not.
    """
    span = size + lo + hi
    out = (span + extra - (window - 1) * dilation - 1) // stride + 1
    starts = np.arange(out) * stride
    taps = starts[:, None] + np.arange(window)[None, :] * dilation
    return (taps < span).sum(axis=1).astype(np.float32)


def avg_pool(x, window, strides, dilation=None, pads=None, extra=None) -> jax.Array:
    """Average pooling that counts explicit padding (PyTorch ``count_include_pad=True``).

    Args:
        x: ``(N, *spatial, C)``.
        window, strides, dilation: per spatial axis.
        pads: explicit ``(lo, hi)`` per axis, counted in the divisor.
        extra: ceil-mode high-side extra per axis, never counted (default none).
    """
    nd = len(window)
    dilation = tuple(dilation or (1,) * nd)
    pads = tuple(pads or ((0, 0),) * nd)
    extra = tuple(extra or (0,) * nd)
    total = tuple((lo, hi + e) for (lo, hi), e in zip(pads, extra))
    summed = window_sum(x, window, strides, dilation, total)
    if not any(extra):
        return summed / math.prod(window)
    counts = np.ones((1,) * (nd + 2), np.float32)
    for axis, (i, k, s, d, (lo, hi), e) in enumerate(
        zip(x.shape[1:-1], window, strides, dilation, pads, extra)
    ):
        shape = [1] * (nd + 2)
        shape[axis + 1] = -1
        counts = counts * _window_counts(i, k, s, d, lo, hi, e).reshape(shape)
    return summed / jnp.asarray(counts, x.dtype)


def safe_sqrt(x: jax.Array) -> jax.Array:
    """``sqrt(x)`` for ``x >= 0`` whose gradient at 0 is 0 instead of NaN.

    An all-zero window (common after ReLU) would otherwise give ``0 * inf = NaN``.
    """
    positive = x > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)


def l2_pool(x, window, strides, dilation=None, pads=None) -> jax.Array:
    """L2 pooling: ``sqrt`` of the sum of squares over each window (zero padding)."""
    return safe_sqrt(window_sum(x * x, window, strides, dilation, pads))
