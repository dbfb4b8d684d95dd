"""Probing a loaded run's model: which convs it has, and what its layers output.

Shared by `cnncli.inspect.filters` (grids, health, dead fractions) and
`cnncli.inspect.activations` (feature maps, patches); both import it, neither imports
the other back (filters -> activations -> probe).

- `conv_layers` / `find_conv`: every conv with the names the recipe's layer table
  uses (``conv1``, ``resblock1.conv2``) and the top-level layer where its response is
  read (the activation after it, through ``bn``/``dropout``).
- `response_fn` / `batched_responses`: the outputs of chosen top-level layers for raw
  inputs, normalized as in training, in fixed-size padded batches (one compile).
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
    top_level: bool  # a layer of the recipe's list (feature maps and patches need one)
    response: str | None  # the top-level layer where its response is read, or None


def conv_layers(run) -> list[ConvInfo]:
    """Every conv of a loaded run's model, in layer order."""
    from flax import nnx

    specs, names = list(run.specs), list(run.model.layer_names)
    out = []
    for name, module in run.model.conv_layers():
        kernel = module.kernel[...]
        groups = int(getattr(module, "feature_group_count", 1) or 1)
        kind = "tconv" if isinstance(module, nnx.ConvTranspose) else "conv"
        response = None
        if name in names:
            i = names.index(name)
            j = i + 1
            while j < len(specs) and isinstance(specs[j], (Norm, Dropout)):
                j += 1
            response = names[j] if j < len(specs) and isinstance(specs[j], Activation) else name
        out.append(ConvInfo(
            name=name, kind=kind, kernel_size=tuple(kernel.shape[:-2]), in_channels=int(kernel.shape[-2]) * groups,
            filters=int(kernel.shape[-1]), groups=groups, kernel_shape=tuple(kernel.shape),
            params=int(kernel.size) + (int(module.bias.shape[0]) if module.bias is not None else 0),
            top_level=name in names, response=response,
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
def response_fn(run, names: list[str]):
    """A jitted ``x_raw (B, *input_shape) -> {name: activation}`` for top-level layers."""
    import jax
    from flax import nnx

    from cnncli.models.apply import normalize
    from cnncli.models.model import forward_with_activations

    graphdef, state = nnx.split(run.model)
    mean, std = run.data["mean"], run.data["std"]

    @jax.jit
    def fn(state, x):
        model = nnx.merge(graphdef, state, copy=True)
        _, acts = forward_with_activations(model, normalize(x, mean, std), names)
        return acts

    return lambda x: {k: np.asarray(v) for k, v in fn(state, x).items()}


def batched_responses(run, x: np.ndarray, names: list[str], batch_size: int = 256):
    """Yield ``(start, stop, {name: activation})`` over ``x`` in fixed-size padded batches."""
    fn = response_fn(run, names)
    bs = min(batch_size, max(len(x), 1))
    dummy = np.zeros(len(x), np.int32)
    for start, stop in batches(len(x), bs):
        xb, _, mask = pad_batch(x[start:stop], dummy[start:stop], bs)
        yield start, stop, {k: v[mask] for k, v in fn(xb).items()}
