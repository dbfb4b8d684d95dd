"""BatchNorm with a hand-written backward pass: fewer memory passes, a cheaper trace.

`BatchNorm` keeps `nnx.BatchNorm`'s state layout and semantics exactly: parameters
``scale`` (ones) and ``bias`` (zeros) as `nnx.Param`, running ``mean`` and ``var``
as `nnx.BatchStat`, ``use_running_average`` toggled by ``model.train()`` /
``model.eval()`` / ``nnx.view``, running statistics updated as
``momentum * running + (1 - momentum) * batch`` with the biased batch variance
``E[x^2] - E[x]^2`` (flax's ``use_fast_variance``). Checkpoints and parameter paths
(``('bn1', 'scale')``) are therefore unchanged.

What differs is how training mode is computed. `batch_norm_train` is one
``jax.custom_vjp`` with the textbook gradient (Ioffe & Szegedy 2015, section 3):

    xhat = (x - mean) * rsqrt(var + eps);  y = scale * xhat + bias
    dbias = sum(dy);  dscale = sum(dy * xhat) = rsqrt(var + eps) * (sum(dy * x) - mean * dbias)
    dx = scale * rsqrt(var + eps) / n * (n * dy - dbias - xhat * dscale)

so the backward pass is two passes over the activations (one reduction, one
elementwise) instead of what autodiff of the forward formula leaves XLA to fuse;
reducing ``dy * x`` (not ``dy * xhat``) spares XLA writing xhat in the forward pass
just for this reduction (ResNet-20 +3-7%, BENCHMARKS.md).
Statistics and normalization are computed in float32 whatever the input dtype
(mixed precision: a bfloat16 input gives a bfloat16 output). Measured effects are
in BENCHMARKS.md (trace time of deep models, ResNet-20 step time).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from cnncli.models.backend import current_conv_backend


def _stats(x: jax.Array, axes: tuple[int, ...], native: bool) -> tuple[jax.Array, jax.Array]:
    """Per-channel mean and biased variance (``E[x^2] - E[x]^2``, clipped at 0), in float32."""
    n = x.size // x.shape[-1]
    if native:  # one pass for both sums (cnncli.native.onednn.channel_sums)
        from cnncli.native import onednn

        total, squares = onednn.channel_sums(x, x)
        mean, mean_sq = total / n, squares / n
    else:
        x32 = x.astype(jnp.float32)
        mean, mean_sq = jnp.mean(x32, axis=axes), jnp.mean(jnp.square(x32), axis=axes)
    return mean, jnp.maximum(mean_sq - jnp.square(mean), 0.0)


def _forward(x, scale, bias, epsilon, native, relu):
    axes = tuple(range(x.ndim - 1))
    mean, var = _stats(x, axes, native)
    inv = jax.lax.rsqrt(var + epsilon)
    return (_apply(x, *_affine(mean, inv, scale, bias), relu), mean, var), (x, mean, inv, scale, bias)


def _affine(mean, inv, scale, bias):
    """BatchNorm as ``x * mult + shift`` per channel."""
    mult = scale.astype(jnp.float32) * inv
    return mult, bias.astype(jnp.float32) - mean * mult


def _apply(x, mult, shift, relu: bool):
    """``x * mult + shift`` (then ReLU) in float32, back in ``x.dtype``: training and
    evaluation normalize with this one expression, the ReLU backward re-derives its mask from it."""
    y = x.astype(jnp.float32) * mult + shift
    return (jnp.maximum(y, 0.0) if relu else y).astype(x.dtype)


def batch_norm_train(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float, native: bool = False,
                     relu: bool = False):
    """Training-mode BatchNorm over every axis but the last.

    Returns ``(y, mean, var)``: ``y`` in ``x.dtype``; the batch ``mean`` and biased
    ``var`` in float32, for the running averages. Only ``y`` is differentiated: the
    cotangents of ``mean`` and ``var`` are ignored, so use them under
    ``stop_gradient`` (as running statistics are). ``native``: the per-channel sums
    of both passes come from `cnncli.native.onednn.channel_sums` (one pass for two
    sums, on every core; needs the oneDNN extension, CPU only) instead of XLA
    reductions. ``relu``: return ``relu(y)``, with the ReLU's gradient mask
    recomputed from ``x`` in the backward pass instead of a masked gradient written
    out and read back.
    """
    return _batch_norm_train(x, scale, bias, float(epsilon), bool(native), bool(relu))


def _bn(x, scale, bias, epsilon, native, relu):
    return _forward(x, scale, bias, epsilon, native, relu)[0]


def _bwd(epsilon, native, relu, res, cotangents):
    x, mean, inv, scale, bias = res
    axes = tuple(range(x.ndim - 1))
    n = x.size // x.shape[-1]
    dy, x32 = cotangents[0].astype(jnp.float32), x.astype(jnp.float32)
    mult, shift = _affine(mean, inv, scale, bias)
    if relu:  # the forward's mask, recomputed: XLA fuses it into the passes below
        dy = jnp.where(x32 * mult + shift > 0.0, dy, 0.0)
    # sum(dy * xhat) = inv * (sum(dy * x) - mean * sum(dy)): the reduction reads x,
    # which exists anyway, instead of an xhat that XLA would materialize in the
    # forward pass just for it (one full-size write and read per BatchNorm).
    if native:
        from cnncli.native import onednn

        masked = (mult, shift) if relu else ()
        dbias, dy_x = onednn.channel_sums(cotangents[0], x, *masked)
    else:
        dbias, dy_x = jnp.sum(dy, axis=axes), jnp.sum(dy * x32, axis=axes)
    dscale = inv * (dy_x - mean * dbias)
    xhat = (x32 - mean) * inv
    dx = (scale.astype(jnp.float32) * inv / n) * (n * dy - dbias - xhat * dscale)
    return dx.astype(x.dtype), dscale.astype(scale.dtype), dbias.astype(bias.dtype)


_batch_norm_train = jax.custom_vjp(_bn, nondiff_argnums=(3, 4, 5))  # epsilon, native, relu: static
_batch_norm_train.defvjp(_forward, _bwd)


def _native_sums(x: jax.Array) -> bool:
    """Whether this trace's BatchNorm sums go to the native kernel: under the oneDNN
    conv backend (`cnncli.models.backend.conv_backend`; its extension holds the kernel),
    on the CPU, for a float32 or bfloat16 input."""
    return (
        current_conv_backend() == "onednn"
        and x.dtype in (jnp.float32, jnp.bfloat16)
        and jax.default_backend() == "cpu"
    )


class BatchNorm(nnx.Module):
    """BatchNorm over the last axis; drop-in for ``nnx.BatchNorm(num_features, ...)``.

    One difference when called: the second argument is ``relu`` (`__call__`), not
    flax's ``use_running_average``; pass flax's flag by keyword or with `nnx.view`.

    Args:
        num_features: channels (the last axis).
        momentum: running = momentum * running + (1 - momentum) * batch.
        epsilon: added to the variance.
        rngs: unused (BatchNorm initializes deterministically); accepted for symmetry.
    """

    def __init__(self, num_features: int, *, momentum: float = 0.99, epsilon: float = 1e-5,
                 use_running_average: bool = False, rngs: nnx.Rngs | None = None):  # fmt: skip
        del rngs
        self.num_features = num_features
        self.momentum = momentum
        self.epsilon = epsilon
        self.use_running_average = use_running_average
        self.scale = nnx.Param(jnp.ones((num_features,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((num_features,), jnp.float32))
        self.mean = nnx.BatchStat(jnp.zeros((num_features,), jnp.float32))
        self.var = nnx.BatchStat(jnp.ones((num_features,), jnp.float32))

    def __call__(self, x: jax.Array, relu: bool = False) -> jax.Array:
        """Normalize ``x``; ``relu=True`` returns ``relu(bn(x))`` as one op (the
        backward recomputes the ReLU mask instead of storing a masked gradient)."""
        scale, bias = self.scale[...], self.bias[...]
        if self.use_running_average:
            inv = jax.lax.rsqrt(self.var[...] + self.epsilon)
            return _apply(x, *_affine(self.mean[...], inv, scale, bias), relu)
        y, mean, var = batch_norm_train(x, scale, bias, self.epsilon, native=_native_sums(x), relu=relu)
        m = self.momentum
        # set_value, not ``self.mean[...] = ``: the indexed form compares the new
        # value's sharding with the old one's, and on a tracer that walks the whole
        # trace so far (jax builds an origin message): quadratic in depth, 4.2 of the
        # 6.8 s trace of a ResNet-110 train step.
        self.mean.set_value(jax.lax.stop_gradient(m * self.mean[...] + (1 - m) * mean))
        self.var.set_value(jax.lax.stop_gradient(m * self.var[...] + (1 - m) * var))
        return y

    def set_view(self, use_running_average: bool | None = None):
        """For ``nnx.view(model, use_running_average=...)``."""
        if use_running_average is not None:
            self.use_running_average = use_running_average
