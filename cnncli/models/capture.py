"""The activation at any named point of a `Model`, in a form gradients can flow through.

API (for `cnncli.inspect`: explain, inspect-filters):

    from cnncli.models.capture import capture_points, point_shapes, point_shape, forward_at, activation_at

    capture_points(model)        # every name accepted below, in the order the forward pass calls them:
                                 # ['conv1', 'bn1', 'relu1', 'resblock1.conv1', 'resblock1.bn1',
                                 #  'resblock1.conv2', 'resblock1.bn2', 'resblock1.proj', 'resblock1.proj_bn',
                                 #  'resblock1', ..., 'denseblock1.layer3.bn1', 'denseblock1.layer3.conv1', ...,
                                 #  'denseblock1.layer3', 'denseblock1', 'transition1.bn', 'transition1.conv', ...]
    point_shapes(model)          # {name: per-example activation shape} for all of them, same order
    point_shape(model, "resblock1.conv2")   # one of them, e.g. (8, 8, 16)

    # The logits and the activation; ``delta`` (same shape as the activation, batch
    # included) is added to the activation before the rest of the network sees it, so
    # d logits / d delta at delta = 0 is d logits / d activation:
    logits, act = forward_at(model, x, "resblock3", delta)

    def score(delta):
        logits, act = forward_at(model, x, name, delta)
        return logits[:, target].sum(), act
    grads, act = jax.grad(score, has_aux=True)(jnp.zeros((len(x), *point_shape(model, name))))

    # Only the activation: the forward pass stops there (the layers after it never run),
    # differentiable w.r.t. x, e.g. feature visualization: d act[..., unit].mean() / d x
    act = activation_at(model, x, "resblock1.conv2")

All of them take a `Model` (eval mode for inference: ``model.eval()``); ``x`` is a
normalized batch ``(N, *input_shape)`` (`cnncli.models.apply.normalize`). They are
plain functions of arrays: call them inside ``jax.jit`` / ``jax.grad`` on a model
rebuilt there with ``nnx.merge(graphdef, state, copy=True)`` (as `cnncli.models.apply`
does), and each compiles once per point and input shape.

Names: a top-level layer (``model.layer_names``) gives that layer's output; a dotted
name gives the output of a sub-module of a block, with the names `Model.conv_layers`
uses (``resblock1.conv2``, ``bottleneck2.proj``, ``denseblock1.layer3.conv2``). A
block's own name (``resblock3``) is its output: after the residual add and its ReLU.
A BatchNorm's point is its output before any ReLU fused into it (``bn relu`` pairs and
the blocks' ``bn1`` run as one op; capturing splits them, same values).

How: the point's module is replaced, on the model instance only and for the duration of
the call, by a wrapper that records its output and adds ``delta`` (the model is a
throwaway copy inside a trace, and is put back in any case). The parameter tree, the
modules' code and the training step are untouched, and nothing is computed twice.
Nothing here prints.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager

import jax
import jax.numpy as jnp
from flax import nnx

from cnncli.errors import LayerError, unknown_choice
from cnncli.models.norm import BatchNorm


def capture_points(model) -> list[str]:
    """Every point name `forward_at` and `activation_at` accept, in the order the forward pass reaches them.

    Top-level layers and, inside blocks, every sub-module, in call order (``resblock1.conv1``,
    ``resblock1.bn1``, ..., ``resblock1.proj_bn``, ``resblock1``; a block's own name comes
    after its parts, as its output does).
    """
    return list(point_shapes(model))


def _all_points(model) -> list[str]:
    """Top-level layers and the dotted names of every sub-module of each, in no particular order."""
    out = []
    for name in model.names:
        out.append(name)
        for path, sub in nnx.iter_modules(getattr(model, name)):
            if path and isinstance(sub, nnx.Module):
                out.append(".".join((name, *map(str, path))))
    return out


def point_shapes(model) -> dict[str, tuple[int, ...]]:
    """``{point: per-example activation shape}`` for every point, in call order.

    One abstract forward pass (`jax.eval_shape`: no compute) with every point tapped.
    A point the forward pass never calls (none today) is left out.
    """
    names = _all_points(model)
    graphdef, state = nnx.split(model)
    order: list[str] = []

    def run(state, x):
        m = nnx.merge(graphdef, state, copy=True)
        with _tapped(m, {n: None for n in names}, stop=None, order=order) as taps:
            m(x)
        return {n: t.value for n, t in taps.items() if t.value is not None}

    shapes = jax.eval_shape(run, state, jax.ShapeDtypeStruct((1, *model.input_shape), jnp.float32))
    return {n: tuple(shapes[n].shape[1:]) for n in order}


def _resolve(model, name: str) -> tuple[object, str]:
    """(parent module, attribute) of a point; raises `LayerError` with a did-you-mean."""
    parts = name.split(".")
    parent = model
    try:
        for part in parts[:-1]:
            parent = getattr(parent, part)
        module = getattr(parent, parts[-1])
    except AttributeError:
        module = None
    if parts[0] not in model.names or not isinstance(module, nnx.Module) or parts[-1].startswith("_"):
        raise LayerError(unknown_choice("layer", name, _all_points(model)), hint="names as inspect-filters --list")
    return parent, parts[-1]


class _Stop(Exception):
    """Raised by the tap to end the forward pass at the point (`activation_at`)."""


class _Tap:
    """Stands in for a module: runs it, records the output, adds ``delta``."""

    def __init__(self, name: str, module, delta, stop: bool, order: list | None):
        self.name, self.module, self.delta, self.stop, self.order = name, module, delta, stop, order
        self.value = None

    def __call__(self, x, *args, **kwargs):
        relu = bool(kwargs.pop("relu", False)) if isinstance(self.module, BatchNorm) else False
        y = self.module(x, *args, **kwargs)
        self.value = y
        if self.order is not None:
            self.order.append(self.name)
        if self.stop:
            raise _Stop
        if self.delta is not None:
            y = y + self.delta.astype(y.dtype)
        return jax.nn.relu(y) if relu else y


@contextmanager
def _tapped(model, deltas: dict, stop: str | None, order: list | None = None):
    """Tap the points ``deltas`` names (each with its delta or None) for the duration of the block."""
    resolved = {name: _resolve(model, name) for name in deltas}
    taps, undo = {}, []
    try:
        for name, (parent, attr) in resolved.items():
            original = getattr(parent, attr)
            taps[name] = _Tap(name, original, deltas[name], name == stop, order)
            # object.__setattr__: NNX's __setattr__ would register a new static attribute; the
            # instance attribute shadows the module for the call and is put back afterwards.
            object.__setattr__(parent, attr, taps[name])
            undo.append((parent, attr, original))
        yield taps
    finally:
        for parent, attr, original in reversed(undo):
            object.__setattr__(parent, attr, original)


def forward_at(model, x: jax.Array, name: str, delta: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Run the model on ``x`` with the activation at ``name`` exposed.

    Args:
        model: a `Model` (eval mode for inference).
        x: a normalized batch ``(N, *input_shape)``.
        name: a point from `capture_points`.
        delta: added to the activation before the layers after it (shape ``(N,
            *point_shape)``); None adds nothing. Differentiate w.r.t. it at zero for
            the gradient w.r.t. the activation.

    Returns:
        ``(logits, activation)``: the model's output and the activation at ``name``
        (before ``delta`` is added).

    Raises:
        LayerError: ``name`` is not a point of the model (with a did-you-mean).
    """
    with _tapped(model, {name: delta}, stop=None) as taps:
        out = model(x)
    return out, taps[name].value


def activation_at(model, x: jax.Array, name: str) -> jax.Array:
    """The activation at ``name`` only: the layers after it do not run.

    Differentiable w.r.t. ``x`` (and the parameters before the point).
    """
    with _tapped(model, {name: None}, stop=name) as taps:
        try:
            model(x)
        except _Stop:
            pass
    return taps[name].value


def point_shape(model, name: str) -> tuple[int, ...]:
    """Per-example shape of the activation at ``name`` (no compute: `jax.eval_shape`)."""
    _resolve(model, name)
    graphdef, state = nnx.split(model)

    def run(state, x):
        return activation_at(nnx.merge(graphdef, state, copy=True), x, name)

    spec = jax.ShapeDtypeStruct((1, *model.input_shape), jnp.float32)
    return tuple(jax.eval_shape(run, state, spec).shape[1:])


def make_forward_at(graphdef, name: str) -> Callable:
    """``(state, x, delta) -> (logits, activation)`` over split state, for use inside ``jax.jit``."""

    def fn(state, x, delta=None):
        return forward_at(nnx.merge(graphdef, state, copy=True), x, name, delta)

    return fn
