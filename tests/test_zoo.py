"""The zoo against published figures: parameters, MACs and receptive fields.

Sources:
- [TV] torchvision model docs, "Table of all available classification weights"
  (https://pytorch.org/vision/stable/models.html): "Params" and "GFLOPS" per model,
  at 224x224. Their GFLOPS count one multiply-add as one op, so they are GMACs in
  cnncli's terms; they are rounded to two decimals, so we compare rounded values.
- [He16] He et al., "Deep Residual Learning for Image Recognition", CVPR 2016,
  table 6 (CIFAR-10 ResNets, option A shortcuts): params rounded to 0.01M.
- [Araujo19] Araujo, Norris & Sim, "Computing Receptive Fields of Convolutional
  Neural Networks", Distill 2019, table of receptive fields (TF-slim models).
"""

from __future__ import annotations

import pytest

from cnncli.arith import zoo
from cnncli.arith.geometry import analyze
from cnncli.arith.layers import parse_layers
from cnncli.errors import CnnCliError

TORCHVISION = {  # name: (params, GFLOPS = GMACs), all from [TV]
    "alexnet": (61_100_840, 0.71),
    "vgg11": (132_863_336, 7.61),
    "vgg13": (133_047_848, 11.31),
    "vgg16": (138_357_544, 15.47),
    "vgg19": (143_667_240, 19.63),
    "resnet18": (11_689_512, 1.81),
    "resnet34": (21_797_672, 3.66),
    "resnet50": (25_557_032, 4.09),
    "resnet101": (44_549_160, 7.80),
    "resnet152": (60_192_808, 11.51),
    "densenet121": (7_978_856, 2.83),
    "densenet169": (14_149_480, 3.36),
}

CIFAR_RESNETS = {  # name: params in millions, [He16] table 6 (rounded to 0.01M)
    "resnet20": 0.27,
    "resnet32": 0.46,
    "resnet44": 0.66,
    "resnet56": 0.85,
    "resnet110": 1.7,
}


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_torchvision_params_exact_and_macs_to_published_precision(name):
    params, gmacs = TORCHVISION[name]
    analysis = analyze(zoo.build(name), (224, 224, 3))
    assert analysis.total.params == params
    assert round(analysis.total.macs / 1e9, 2) == pytest.approx(gmacs)
    assert analysis.output == (1000,)


@pytest.mark.parametrize("name", sorted(CIFAR_RESNETS))
def test_cifar_resnets_match_he_2016_table_6(name):
    analysis = analyze(zoo.build(name), (32, 32, 3))
    # [He16] prints 0.27M etc.; tolerance: half a unit of the last printed digit.
    digits = 1 if name == "resnet110" else 2
    assert round(analysis.total.params / 1e6, digits) == CIFAR_RESNETS[name]
    assert analysis.output == (10,)


def test_resnet20_exact_count():
    # [He16] option A: 3x3 conv 16 + bn, 3 stages of 3 blocks (16, 32, 64), gap, fc 10.
    # By hand: 432 + 32 (stem) + 14,016 + 51,072 + 203,520 (stages) + 650 (fc).
    assert analyze(zoo.build("resnet20"), (32, 32, 3)).total.params == 269_722


def test_lenet5_params():
    # LeNet-5 with fully connected C3 and dense output (the common modern form), 28x28
    # input with p=2 on the first conv: 156 + 2,416 + 48,120 + 10,164 + 850 = 61,706
    # (LeCun et al. 1998 report ~60,000 for the original partial-C3, RBF-output net).
    analysis = analyze(zoo.build("lenet5"), (28, 28, 1))
    assert analysis.total.params == 61_706
    assert [r.output for r in analysis.layers if r.kind == "conv"] == [(28, 28, 6), (10, 10, 16)]


def _rf_at_last(analysis, kind):
    return [r for r in analysis.layers if r.kind == kind][-1].rf


def test_alexnet_receptive_field():
    # [Araujo19]: alexnet_v2, 195 at its last layer before the classifier (pool5).
    analysis = analyze(zoo.build("alexnet"), (224, 224, 3))
    assert _rf_at_last(analysis, "maxpool") == (195, 195)


def test_vgg16_receptive_field():
    # [Araujo19]: vgg_16, 212 at pool5.
    analysis = analyze(zoo.build("vgg16"), (224, 224, 3))
    assert _rf_at_last(analysis, "maxpool") == (212, 212)


def _slim_resnet_v1(units: tuple[int, ...]) -> list[str]:
    """TF-slim's resnet_v1 layout: the stride-2 unit ends each of the first three blocks."""
    tokens = ["conv:c=64,k=7,s=2,p=3,bias=false", "bn", "relu", "maxpool:k=3,s=2,p=1"]
    for block, n in enumerate(units):
        width = 64 * 2**block
        tokens += [f"bottleneck:c={width}"] * (n - 1)
        tokens.append(f"bottleneck:c={width}" + (",s=2" if block < len(units) - 1 else ""))
    return tokens


@pytest.mark.parametrize(("units", "rf"), [((3, 4, 6, 3), 483), ((3, 4, 23, 3), 1027)])
def test_resnet_v1_receptive_fields_are_max_over_paths(units, rf):
    # [Araujo19]: resnet_v1_50 483, resnet_v1_101 1027 (the longest path through the
    # residual blocks; the shortcuts are shallower).
    analysis = analyze(parse_layers(_slim_resnet_v1(units)), (224, 224, 3))
    assert analysis.layers[-1].rf == (rf, rf)


def test_torchvision_resnet50_rf_by_hand():
    # torchvision puts stride 2 at the first unit of stages 2-4: stem 11 (jump 4), then
    # +8*3, +8+16*3, +16+32*5, +32+64*2 -> 427 (derived with the recurrence of [Araujo19]).
    analysis = analyze(zoo.build("resnet50"), (224, 224, 3))
    assert _rf_at_last(analysis, "bottleneck") == (427, 427)


@pytest.mark.parametrize("name", zoo.names())
def test_every_architecture_builds_and_analyzes_cleanly(name):
    shape = zoo.default_input(name)
    specs = zoo.build(name)
    assert specs == parse_layers(zoo.tokens(name))
    analysis = analyze(specs, shape)
    assert analysis.warnings == []  # published layouts drop no input pixel
    assert zoo.summary(name)


def test_class_count_and_name_spelling():
    assert analyze(zoo.build("ResNet-18", num_classes=7), (224, 224, 3)).output == (7,)
    assert zoo.tokens("lenet5", 3)[-1] == "dense:c=3"
    with pytest.raises(CnnCliError, match="unknown architecture 'resnet5'; did you mean 'resnet56'"):
        zoo.build("resnet5")
