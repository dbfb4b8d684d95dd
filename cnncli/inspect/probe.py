"""Probing a loaded run's model: which convs it has, and what its layers output.

Shared by `cnncli.inspect.filters` (grids, health, dead fractions) and
`cnncli.inspect.activations` (feature maps, patches); both import it, neither imports
the other back (filters -> activations -> probe).

- `conv_layers` / `find_conv`: every conv with the names the recipe's layer table
  uses (``conv1``, ``resblock1.conv2``) and the point where its response is read: for a
  top-level conv the activation after it (through ``bn``/``dropout``); for a conv inside
  a block the BatchNorm its ReLU is fused into (``resblock1.conv1`` -> ``resblock1.bn1``,
  then ReLU: ``response_relu``), or the conv's own output where no ReLU of its own follows
  (``resblock1.conv2``: the residual add comes first).
- `response_fn` / `batched_responses`: the outputs of chosen points (top-level layers or
  the dotted points of `cnncli.models.capture`) for raw inputs, normalized as in
  training, in fixed-size padded batches (one compile); `point_shape` their shapes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnncli.arith.layers import Activation, Dropout, Norm
from cnncli.data.batching import batches, pad_batch
from cnncli.errors import UsageError, unknown_choice


@dataclass
class ConvInfo:
    """One conv (or tconv) of a model."""

    name: str  # "conv1", "resblock1.conv2"
    kind: str  # "conv" | "tconv"
    kernel_size: tuple[int, ...]
    in_channels: int
    filters: int
    groups: int
    kernel_shape: tuple[int, ...]  # (*kernel_size, in_channels / groups, filters)
    params: int
    top_level: bool  # a layer of the recipe's list (False: inside a residual or dense block)
    response: str  # the point where its response is read: a layer name or a dotted capture point
    response_relu: bool = False  # a ReLU fused into the ``response`` BatchNorm: applied when reading it


# Block convs whose BatchNorm runs with a fused ReLU (`cnncli.models.blocks`): conv -> that BN.
_FUSED_RELU = {"ResBlock": {"conv1": "bn1"}, "Bottleneck": {"conv1": "bn1", "conv2": "bn2"},
               "DenseLayer": {"conv1": "bn2"}}  # fmt: skip


def _block_response(model, name: str) -> tuple[str, bool]:
    """(point, relu) where a conv inside a block responds: its BN + ReLU, or its own output."""
    *parent_path, attr = name.split(".")
    parent = model
    for part in parent_path:
        parent = getattr(parent, part)
    bn = _FUSED_RELU.get(type(parent).__name__, {}).get(attr)
    return (".".join((*parent_path, bn)), True) if bn else (name, False)


def conv_layers(run) -> list[ConvInfo]:
    """Every conv of a loaded run's model, in layer order."""
    from flax import nnx

    specs, names = list(run.specs), list(run.model.layer_names)
    out = []
    for name, module in run.model.conv_layers():
        kernel = module.kernel[...]
        groups = int(getattr(module, "feature_group_count", 1) or 1)
        kind = "tconv" if isinstance(module, nnx.ConvTranspose) else "conv"
        if name in names:
            i = names.index(name)
            j = i + 1
            while j < len(specs) and isinstance(specs[j], (Norm, Dropout)):
                j += 1
            response, relu = (names[j] if j < len(specs) and isinstance(specs[j], Activation) else name), False
        else:
            response, relu = _block_response(run.model, name)
        out.append(ConvInfo(
            name=name, kind=kind, kernel_size=tuple(kernel.shape[:-2]), in_channels=int(kernel.shape[-2]) * groups,
            filters=int(kernel.shape[-1]), groups=groups, kernel_shape=tuple(kernel.shape),
            params=int(kernel.size) + (int(module.bias.shape[0]) if module.bias is not None else 0),
            top_level=name in names, response=response, response_relu=relu,
        ))  # fmt: skip
    return out


def find_conv(run, name: str | None) -> tuple[ConvInfo, np.ndarray]:
    """A conv by name (default: the first) and its kernel ``(*k, cin/g, filters)``.

    Raises:
        UsageError: the model has no conv, or ``name`` is not one (lists the valid names).
    """
    layers = conv_layers(run)
    if not layers:
        raise UsageError(f"the model of {run.workdir} has no conv layers", hint="inspect-filters shows conv kernels")
    if name is None:
        info = layers[0]
    else:
        match = [c for c in layers if c.name == name]
        if not match:
            raise UsageError(unknown_choice("conv layer", name, [c.name for c in layers]), hint="see them with --list")
        info = match[0]
    module = dict(run.model.conv_layers())[info.name]
    return info, np.asarray(module.kernel[...], np.float32)


# ------------------------------------------------------------- responses
def point_shape(run, name: str) -> tuple[int, ...]:
    """Per-example output shape of a top-level layer or a dotted capture point (no compute)."""
    names = list(run.model.layer_names)
    if name in names:
        return tuple(run.model.layer_shapes[names.index(name)])
    from cnncli.models.capture import point_shape as capture_shape

    return capture_shape(run.model, name)


def read_response(info: ConvInfo, activation: np.ndarray) -> np.ndarray:
    """A conv's response from the activation at ``info.response`` (ReLU applied where it is fused)."""
    return np.maximum(activation, 0) if info.response_relu else activation


def response_fn(run, names: list[str]):
    """A jitted ``x_raw (B, *input_shape) -> {name: activation}`` for layers or dotted capture points."""
    import jax
    from flax import nnx

    from cnncli.models.apply import normalize
    from cnncli.models.capture import activation_at
    from cnncli.models.model import forward_with_activations

    graphdef, state = nnx.split(run.model)
    mean, std = run.data["mean"], run.data["std"]
    top = [n for n in names if n in run.model.layer_names]
    inner = [n for n in names if n not in top]

    @jax.jit
    def fn(state, x):
        model = nnx.merge(graphdef, state, copy=True)
        x = normalize(x, mean, std)
        _, acts = forward_with_activations(model, x, top) if top else (None, {})
        return {**acts, **{n: activation_at(model, x, n) for n in inner}}

    return lambda x: {k: np.asarray(v) for k, v in fn(state, x).items()}


def batched_responses(run, x: np.ndarray, names: list[str], batch_size: int = 256):
    """Yield ``(start, stop, {name: activation})`` over ``x`` in fixed-size padded batches."""
    fn = response_fn(run, names)
    bs = min(batch_size, max(len(x), 1))
    dummy = np.zeros(len(x), np.int32)
    for start, stop in batches(len(x), bs):
        xb, _, mask = pad_batch(x[start:stop], dummy[start:stop], bs)
        yield start, stop, {k: v[mask] for k, v in fn(xb).items()}
