"""``cnncli explain`` runs on every zoo architecture (freshly built, tiny inputs): Grad-CAM at
the automatic layer (a block's output for the residual and dense networks) and saliency."""

from __future__ import annotations

import numpy as np
import pytest

from cnncli.arith import zoo

FAST_ZOO: set[str] = set()  # all @slow: even LeNet-5 compiles three programs (17 s on the loaded 2-core machine)
ZOO_SHAPES = {"lenet5": (16, 16, 1), "alexnet": (64, 64, 3)}  # the smallest inputs they fit; others 32x32x3
# at 32x32 the ImageNet models' last stage is 1x1: Grad-CAM's layer is the last one with spatial extent
AUTO_LAYERS = {"lenet5": "tanh2", "alexnet": "relu5", "vgg11": "relu8", "resnet18": "resblock6", "resnet20": "resblock9",
               "resnet50": "bottleneck13", "densenet121": "denseblock3"}  # fmt: skip


def _run(root, arch: str, shape, classes: int = 4):
    """A `LoadedRun` of a freshly built zoo model (eval mode); weights random, BatchNorm statistics fresh."""
    from cnncli.config.recipe import Recipe
    from cnncli.models.build import build_model
    from cnncli.runs.load import LoadedRun

    recipe = Recipe.model_validate({"data": {"source": "digits"}, "model": {"arch": arch}, "train": {"steps": 1}})
    model, specs = build_model(recipe, tuple(shape), classes)
    model.eval()
    facts = {"class_names": [f"c{i}" for i in range(classes)], "num_classes": classes, "input_shape": list(shape),
             "mean": [0.5] * shape[-1], "std": [0.25] * shape[-1], "value_range": [0.0, 1.0]}  # fmt: skip
    return LoadedRun(root, recipe, facts, model, specs, 0, {})


@pytest.fixture
def release_compiled_programs():
    """Drop JAX's compiled programs after each big model (see tests/test_export.py)."""
    yield
    import gc

    import jax

    jax.clear_caches()
    gc.collect()


@pytest.mark.parametrize("arch", [pytest.param(n, marks=() if n in FAST_ZOO else pytest.mark.slow) for n in zoo.names()])
def test_explain_runs_on_every_zoo_architecture(arch, tmp_path, release_compiled_programs):
    from cnncli.inspect.attribution import Explainer, MethodConfig
    from cnncli.inspect.explain import Inputs, explain_inputs, resolve_layer

    shape = ZOO_SHAPES.get(arch, (32, 32, 3))
    run = _run(tmp_path, arch, shape)
    layer, why = resolve_layer(run, "auto")
    if arch in AUTO_LAYERS:
        assert layer == AUTO_LAYERS[arch], why
    if arch.startswith("resnet"):
        assert why.startswith("the output after the last residual add with spatial extent"), why
    x = np.random.default_rng(0).random((2, *shape)).astype(np.float32)
    inputs = Inputs(x, ["a", "b"], ["a", "b"], [None, None], [None, None])
    cfgs = [MethodConfig("gradcam", layer=layer), MethodConfig("saliency")]
    rep = explain_inputs(run, inputs, cfgs, layer_reason=why, explainer=Explainer(run))
    for img in rep.images:
        assert [e.method for e in img.explanations] == ["gradcam", "saliency"]
        for e in img.explanations:
            assert e.map.shape == shape[:-1] and np.isfinite(e.map).all()
