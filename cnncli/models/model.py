"""`Model`: a layer list built into one NNX module, one attribute per layer name."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import jax
from flax import nnx

import cnncli.models.ops as ops
from cnncli.arith import layers as L
from cnncli.errors import LayerError, unknown_choice
from cnncli.models.blocks import BLOCKS
from cnncli.models.norm import BatchNorm

ConvModule = (nnx.Conv, nnx.ConvTranspose)


def make_layer(spec: L.LayerSpec, shape: tuple[int, ...], num_classes: int, rngs: nnx.Rngs, where: str):
    """Build one layer for a per-example input ``shape``; return (module, output shape)."""
    if isinstance(spec, L.Conv):
        return ops.make_conv(spec, shape, rngs, where)
    if isinstance(spec, L.Pool):
        return ops.make_pool(spec, shape, where)
    block = BLOCKS.get(type(spec))
    if block is not None:
        module = block(spec, shape, rngs, where)
        return module, module.out_shape
    return ops.make_simple(spec, shape, num_classes, rngs, where)


class Model(nnx.Module):
    """A CNN built from `LayerSpec`s; ``model(x)`` maps ``(N, *input_shape)`` to ``(N, *output_shape)``.

    Static attributes are tuples, so the graphdef stays hashable (a static argument
    to ``jax.jit``).

    Attributes:
        names: ``cnncli.arith.layers.layer_names(specs)`` as a tuple (see `layer_names`).
        input_shape: per-example input shape, channels last.
        layer_shapes: per-example output shape of each layer, in order.
        output_shape: per-example output shape of the last layer.
    """

    def __init__(self, specs: Sequence[L.LayerSpec], input_shape: Sequence[int], num_classes: int,
                 *, rngs: nnx.Rngs | None, abstract: bool = False):  # fmt: skip
        """See `build_model`; ``abstract=True`` builds shapes only (`abstract_model`)."""
        if not specs:
            raise LayerError("no layers given", hint="e.g. conv:c=16,k=3,p=same relu gap dense:c=10")
        self.input_shape = tuple(int(i) for i in input_shape)
        self.names = tuple(L.layer_names(specs))
        shape = self.input_shape
        layer_shapes = []
        for name, spec in zip(self.names, specs):
            where = f"{name} ({L.to_token(spec)})"
            if abstract:
                module, shape = _abstract_layer(spec, shape, num_classes, where)
            else:
                module, shape = make_layer(spec, shape, num_classes, rngs, where)
            setattr(self, name, module)
            layer_shapes.append(tuple(shape))
        self.layer_shapes = tuple(layer_shapes)
        self.output_shape = tuple(shape)

    @property
    def layer_names(self) -> list[str]:
        """``cnncli.arith.layers.layer_names(specs)``: each is an attribute holding that layer's
        module, so its parameters live under ``(name, ...)``."""
        return list(self.names)

    def __call__(self, x: jax.Array) -> jax.Array:
        layers = [getattr(self, name) for name in self.names]
        i = 0
        while i < len(layers):
            if i + 1 < len(layers) and _bn_then_relu(layers[i], layers[i + 1]):
                x = layers[i](x, relu=True)  # one op: BatchNorm's backward recomputes the mask
                i += 2
            else:
                x = layers[i](x)
                i += 1
        return x

    def conv_layers(self) -> list[tuple[str, nnx.Module]]:
        """Every conv/tconv, in layer order, with its dotted path name.

        Returns:
            ``[('conv1', module), ('resblock1.conv1', module), ...,
            ('denseblock1.layer3.conv2', module), ('transition1.conv', module)]``; the
            modules are `nnx.Conv` or `nnx.ConvTranspose` instances.
        """
        found = []
        for name in self.names:
            for path, module in nnx.iter_modules(getattr(self, name)):
                if isinstance(module, ConvModule):
                    found.append(((name, *map(str, path)), module))
        found.sort(key=lambda item: (self.names.index(item[0][0]), _natural(item[0][1:])))
        return [(".".join(path), module) for path, module in found]


def _natural(path: Iterable[str]) -> tuple:
    """Sort key that puts ``layer2`` before ``layer10``."""
    return tuple(tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", part)) for part in path)


def build_model(specs: Sequence[L.LayerSpec], input_shape: Sequence[int], num_classes: int,
                *, rngs: nnx.Rngs) -> Model:  # fmt: skip
    """Build the NNX module for a layer list.

    Args:
        specs: parsed layers (`cnncli.arith.layers.parse_layers`, `cnncli.arith.zoo.build`).
        input_shape: per-example shape, channels last: ``(H, W, C)``, ``(L, C)`` for
            1-D, ``(D, H, W, C)`` for 3-D. Convs and pools take their rank from it.
        num_classes: the width of any ``dense`` without ``c=``.
        rngs: ``nnx.Rngs(params=..., dropout=...)``; ``params`` initializes weights,
            ``dropout`` seeds the dropout masks (``nnx.Rngs(seed)`` serves both).

    Returns:
        A `Model` in training mode (BatchNorm uses batch statistics, dropout is on).

    Raises:
        ShapeError: a layer does not fit its input (window larger than the input,
            groups that do not divide the channels, a conv after flatten, ...).
    """
    return Model(specs, input_shape, num_classes, rngs=rngs)


def forward_with_activations(model: Model, x: jax.Array, names: Iterable[str]) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Run the model and keep the outputs of some top-level layers.

    Args:
        model: a built `Model` (use ``model.eval()`` first for inference statistics).
        x: a batch ``(N, *input_shape)``.
        names: layer names from ``model.layer_names`` (``conv1``, ``relu1``, ``resblock2``).

    Returns:
        ``(output, {name: activation})``; each activation is ``(N, *layer_shape)``.

    Raises:
        LayerError: a name that is not a layer of the model (with a did-you-mean).
    """
    wanted = set(names)
    for name in wanted:
        if name not in model.names:
            raise LayerError(unknown_choice("layer", name, model.names))
    captured = {}
    for name in model.names:
        x = getattr(model, name)(x)
        if name in wanted:
            captured[name] = x
    return x, captured


def param_count(model: nnx.Module) -> int:
    """Number of trainable parameters (`nnx.Param` leaves; BatchNorm running stats excluded)."""
    state = nnx.state(model, nnx.Param)
    return sum(int(leaf.size) for leaf in jax.tree.leaves(state))


def _abstract_layer(spec: L.LayerSpec, shape, num_classes: int, where: str):
    """`make_layer` under `nnx.eval_shape`: arrays become `jax.ShapeDtypeStruct`s.

    One trace per layer, not one for the whole model: under a trace every RNG
    draw costs time proportional to the trace so far (flax checks the tracer's
    sharding, and jax builds an error message walking every equation), which made
    one whole-model trace quadratic: 4 s for ResNet-152.
    """
    out = []

    def build():
        module, out_shape = make_layer(spec, shape, num_classes, nnx.Rngs(0), where)
        out.append(out_shape)
        return module

    module = nnx.eval_shape(build)
    return module, out[0]


def abstract_model(specs: Sequence[L.LayerSpec], input_shape: Sequence[int], num_classes: int) -> Model:
    """A `Model` whose arrays are shapes only: no memory, no initialization compute.

    For parameter counts, shape checks (``nnx.eval_shape`` of a forward pass) and
    restoring checkpoints into. ImageNet-size zoo models build in well under a second.
    """
    return Model(specs, input_shape, num_classes, rngs=None, abstract=True)


def _bn_then_relu(layer: nnx.Module, after: nnx.Module) -> bool:
    return isinstance(layer, BatchNorm) and isinstance(after, ops.Activation) and after.kind == "relu"
