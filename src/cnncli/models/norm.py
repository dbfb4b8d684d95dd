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


def _stats(x32: jax.Array, axes: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
    """Per-channel mean and biased variance (``E[x^2] - E[x]^2``, clipped at 0)."""
    mean = jnp.mean(x32, axis=axes)
    var = jnp.maximum(jnp.mean(jnp.square(x32), axis=axes) - jnp.square(mean), 0.0)
    return mean, var


def _forward(x, scale, bias, epsilon):
    axes = tuple(range(x.ndim - 1))
    x32 = x.astype(jnp.float32)
    mean, var = _stats(x32, axes)
    inv = jax.lax.rsqrt(var + epsilon)
    mult = scale.astype(jnp.float32) * inv
    y = x32 * mult + (bias.astype(jnp.float32) - mean * mult)
    return (y.astype(x.dtype), mean, var), (x, mean, inv, scale, bias)


def batch_norm_train(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float):
    """Training-mode BatchNorm over every axis but the last.

    Returns ``(y, mean, var)``: ``y`` in ``x.dtype``; the batch ``mean`` and biased
    ``var`` in float32, for the running averages. Only ``y`` is differentiated: the
    cotangents of ``mean`` and ``var`` are ignored, so use them under
    ``stop_gradient`` (as running statistics are).
    """
    return _batch_norm_train(x, scale, bias, float(epsilon))


def _bn(x, scale, bias, epsilon):
    return _forward(x, scale, bias, epsilon)[0]


def _bwd(epsilon, res, cotangents):
    x, mean, inv, scale, bias = res
    dy = cotangents[0].astype(jnp.float32)
    axes = tuple(range(x.ndim - 1))
    n = x.size // x.shape[-1]
    x32 = x.astype(jnp.float32)
    dbias = jnp.sum(dy, axis=axes)
    # sum(dy * xhat) = inv * (sum(dy * x) - mean * sum(dy)): the reduction reads x,
    # which exists anyway, instead of an xhat that XLA would materialize in the
    # forward pass just for it (one full-size write and read per BatchNorm).
    dscale = inv * (jnp.sum(dy * x32, axis=axes) - mean * dbias)
    xhat = (x32 - mean) * inv
    dx = (scale.astype(jnp.float32) * inv / n) * (n * dy - dbias - xhat * dscale)
    return dx.astype(x.dtype), dscale.astype(scale.dtype), dbias.astype(bias.dtype)


_batch_norm_train = jax.custom_vjp(_bn, nondiff_argnums=(3,))  # epsilon: a static float
_batch_norm_train.defvjp(_forward, _bwd)


class BatchNorm(nnx.Module):
    """BatchNorm over the last axis; drop-in for ``nnx.BatchNorm(num_features, ...)``.

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

    def __call__(self, x: jax.Array) -> jax.Array:
        scale, bias = self.scale[...], self.bias[...]
        if self.use_running_average:
            inv = jax.lax.rsqrt(self.var[...] + self.epsilon)
            mult = scale.astype(jnp.float32) * inv
            y = x.astype(jnp.float32) * mult + (bias.astype(jnp.float32) - self.mean[...] * mult)
            return y.astype(x.dtype)
        y, mean, var = batch_norm_train(x, scale, bias, self.epsilon)
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
