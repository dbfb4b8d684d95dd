"""Build Flax NNX modules from `LayerSpec` lists (layer 4: imports the layers below it only).

    from flax import nnx
    from cnncli.arith import layers
    from cnncli import models

    specs = layers.parse_layers("conv:c=8,k=3,p=same relu maxpool:k=2 flatten dense")
    model = models.build_model(specs, (28, 28, 1), num_classes=10,
                               rngs=nnx.Rngs(params=0, dropout=1))
    logits = model(x)                       # (N, 10)
    out, acts = models.forward_with_activations(model, x, ["conv1", "relu1"])
    model.layer_names                       # ['conv1', 'relu1', 'maxpool1', 'flatten1', 'dense1']
    model.conv_layers()                     # [('conv1', <PaddedConv>)]; blocks: 'resblock1.conv2'
    models.param_count(models.abstract_model(specs, (28, 28, 1), 10))  # shapes only, no memory

Parameter paths start with the layer name (``cnncli.arith.layers.layer_names``):
``('conv1', 'kernel')``, ``('bn1', 'scale')``, ``('resblock1', 'conv2', 'kernel')``,
``('resblock1', 'proj', 'kernel')``, ``('bottleneck3', 'bn3', 'bias')``,
``('denseblock1', 'layer3', 'conv1', 'kernel')``, ``('transition1', 'conv', 'kernel')``.
So ``nnx.state(model, nnx.Param)`` flattened with ``nnx.to_flat_state`` gives paths a
``fnmatch`` glob on ``'.'.join(path)`` (``conv*``, ``resblock1.*``) can select.
BatchNorm running statistics are `nnx.BatchStat` (``('bn1', 'mean')``); each dropout
layer holds its own RNG stream state (``('dropout1', 'rngs', 'key'|'count')``).

Train and eval mode (flax 0.12): a model is built in training mode (BatchNorm
normalizes with batch statistics and updates its running averages; dropout is on).

- In place: ``model.eval()`` / ``model.train()`` (`nnx.Module.eval`/``train``, which
  set ``use_running_average`` and ``deterministic`` on every BatchNorm and Dropout).
- Without mutating: ``nnx.view(model, use_running_average=True, deterministic=True,
  raise_if_not_found=False)`` returns a view sharing the same arrays.

The mode is static module state, so it is part of the graphdef: for a jitted step
over ``nnx.split(model)``, split once per mode (``model.train(); gd_train, state =
nnx.split(model)``; ``model.eval(); gd_eval, _ = nnx.split(model)``); both take the
same state. A train step must return the updated state: BatchNorm running stats
and the dropout streams' counters change on every training call.

Initialization: convs (and transposed convs) He normal with fan_out, variance
``2 / (prod(k) * out)``, truncated at 2 sigma (torchvision's ResNet/DenseNet choice);
dense, BatchNorm and LayerNorm keep flax's defaults (LeCun normal, ones/zeros).

Precision: modules compute in their input's dtype. A bfloat16 input (``[train]
precision = "bf16"``: `cnncli.train.step` casts the parameters and the input) runs
convolutions and dense layers on bfloat16 operands with float32 accumulation
(`ops.mixed_conv`, `ops.Dense`) and BatchNorm statistics in float32.

Modules, lowest first: `backend` (the conv-backend setting that `norm` and `ops` read),
`shapes` (padding conventions, pure Python), `pooling` (pool kernels and their fast
paths), `norm` (`BatchNorm`: `nnx.BatchNorm`'s state and semantics, a hand-written
backward pass), `ops` (single-layer modules), `blocks` (residual and dense blocks),
`model` (`Model`, `build_model`), `apply` (normalisation and the forward pass shared by
training and inference), `build` (a recipe's model). Modules inside the package import
each other by module name, never through this file. Speed measurements behind these
choices: BENCHMARKS.md.
"""

from cnncli.models.model import (
    Model,
    abstract_model,
    build_model,
    forward_with_activations,
    make_layer,
    param_count,
)

__all__ = ["Model", "abstract_model", "build_model", "forward_with_activations", "make_layer", "param_count"]
