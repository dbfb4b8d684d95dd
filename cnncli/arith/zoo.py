"""Named architectures, written in the layer language.

Each entry is a plain token list (the same grammar a user types), so
``cnncli conv-arith 224x224x3 --arch resnet50`` and ``[model] arch = "resnet50"``
compute and build exactly these layers. One entry per named variant, as in timm's
registry; tests are parametrized over `names()`.

Layouts follow the papers and torchvision's ImageNet models (which the published
parameter counts refer to):

- LeNet-5: LeCun et al. 1998, with padding 2 on the first conv for 28x28 MNIST.
- AlexNet: torchvision's single-GPU variant (Krizhevsky et al. 2012; "One weird trick").
- VGG-11/13/16/19: Simonyan & Zisserman 2015, configurations A, B, D, E.
- ResNet-18/34/50/101/152: He et al. 2016, torchvision layout (stride on the 3x3 conv).
- ResNet-20/32/44/56/110: the CIFAR ResNets of He et al. 2016, section 4.2, option A
  (zero-padded identity shortcuts).
- DenseNet-121/169: Huang et al. 2017, DenseNet-BC, growth rate 32.
"""

from __future__ import annotations

from collections.abc import Callable

from cnncli.arith.layers import LayerSpec, parse_layers
from cnncli.errors import CnnCliError, unknown_choice

_STEM_IMAGENET = ["conv:c=64,k=7,s=2,p=3,bias=false", "bn", "relu", "maxpool:k=3,s=2,p=1"]


def _lenet5(num_classes: int) -> list[str]:
    return [
        "conv:c=6,k=5,p=2", "tanh", "avgpool:k=2",
        "conv:c=16,k=5", "tanh", "avgpool:k=2",
        "flatten", "dense:c=120", "tanh", "dense:c=84", "tanh", f"dense:c={num_classes}",
    ]  # fmt: skip


def _alexnet(num_classes: int) -> list[str]:
    return [
        "conv:c=64,k=11,s=4,p=2", "relu", "maxpool:k=3,s=2",
        "conv:c=192,k=5,p=2", "relu", "maxpool:k=3,s=2",
        "conv:c=384,k=3,p=1", "relu",
        "conv:c=256,k=3,p=1", "relu",
        "conv:c=256,k=3,p=1", "relu", "maxpool:k=3,s=2",
        "flatten", "dropout:r=0.5", "dense:c=4096", "relu",
        "dropout:r=0.5", "dense:c=4096", "relu", f"dense:c={num_classes}",
    ]  # fmt: skip


_VGG = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}  # fmt: skip


def _vgg(config: str) -> Callable[[int], list[str]]:
    def build(num_classes: int) -> list[str]:
        tokens: list[str] = []
        for item in _VGG[config]:
            tokens += ["maxpool:k=2"] if item == "M" else [f"conv:c={item},k=3,p=1", "relu"]
        return tokens + [
            "flatten", "dense:c=4096", "relu", "dropout:r=0.5",
            "dense:c=4096", "relu", "dropout:r=0.5", f"dense:c={num_classes}",
        ]  # fmt: skip

    return build


def _resnet(block: str, counts: tuple[int, ...]) -> Callable[[int], list[str]]:
    def build(num_classes: int) -> list[str]:
        tokens = list(_STEM_IMAGENET)
        for stage, count in enumerate(counts):
            width = 64 * 2**stage
            for i in range(count):
                stride = 2 if (i == 0 and stage > 0) else 1
                tokens.append(f"{block}:c={width}" + (f",s={stride}" if stride > 1 else ""))
        return tokens + ["gap", f"dense:c={num_classes}"]

    return build


def _resnet_cifar(depth: int) -> Callable[[int], list[str]]:
    n = (depth - 2) // 6  # blocks per stage: depth = 6n + 2

    def build(num_classes: int) -> list[str]:
        tokens = ["conv:c=16,k=3,p=1,bias=false", "bn", "relu"]
        for stage, width in enumerate((16, 32, 64)):
            for i in range(n):
                stride = ",s=2" if (i == 0 and stage > 0) else ""
                tokens.append(f"resblock:c={width}{stride},sc=pad")
        return tokens + ["gap", f"dense:c={num_classes}"]

    return build


def _densenet(blocks: tuple[int, ...], growth: int = 32, init: int = 64) -> Callable[[int], list[str]]:
    def build(num_classes: int) -> list[str]:
        tokens = list(_STEM_IMAGENET)
        channels = init
        for i, n in enumerate(blocks):
            tokens.append(f"denseblock:n={n},gr={growth}")
            channels += n * growth
            if i != len(blocks) - 1:
                channels //= 2  # compression 0.5 (DenseNet-BC)
                tokens.append(f"transition:c={channels}")
        return tokens + ["bn", "relu", "gap", f"dense:c={num_classes}"]

    return build


# name -> (builder, default class count, default input shape (channels last), summary)
_REGISTRY: dict[str, tuple[Callable[[int], list[str]], int, tuple[int, ...], str]] = {
    "lenet5": (_lenet5, 10, (28, 28, 1), "LeNet-5 (LeCun et al. 1998), padded for 28x28"),
    "alexnet": (_alexnet, 1000, (224, 224, 3), "AlexNet (Krizhevsky et al. 2012), torchvision layout"),
    **{
        name: (_vgg(name), 1000, (224, 224, 3), f"VGG-{name[3:]} (Simonyan & Zisserman 2015)")
        for name in _VGG
    },
    "resnet18": (_resnet("resblock", (2, 2, 2, 2)), 1000, (224, 224, 3), "ResNet-18 (He et al. 2016)"),
    "resnet34": (_resnet("resblock", (3, 4, 6, 3)), 1000, (224, 224, 3), "ResNet-34 (He et al. 2016)"),
    "resnet50": (_resnet("bottleneck", (3, 4, 6, 3)), 1000, (224, 224, 3), "ResNet-50 (He et al. 2016)"),
    "resnet101": (_resnet("bottleneck", (3, 4, 23, 3)), 1000, (224, 224, 3), "ResNet-101 (He et al. 2016)"),
    "resnet152": (_resnet("bottleneck", (3, 8, 36, 3)), 1000, (224, 224, 3), "ResNet-152 (He et al. 2016)"),
    **{
        f"resnet{d}": (_resnet_cifar(d), 10, (32, 32, 3), f"ResNet-{d} for CIFAR (He et al. 2016, sec. 4.2)")
        for d in (20, 32, 44, 56, 110)
    },
    "densenet121": (_densenet((6, 12, 24, 16)), 1000, (224, 224, 3), "DenseNet-121 (Huang et al. 2017)"),
    "densenet169": (_densenet((6, 12, 32, 32)), 1000, (224, 224, 3), "DenseNet-169 (Huang et al. 2017)"),
}


def names() -> list[str]:
    """Every registered architecture name."""
    return list(_REGISTRY)


def _entry(name: str):
    key = name.lower().replace("-", "").replace("_", "")
    if key not in _REGISTRY:
        raise CnnCliError(unknown_choice("architecture", name, _REGISTRY))
    return _REGISTRY[key]


def tokens(name: str, num_classes: int | None = None) -> list[str]:
    """The token list of a named architecture.

    Args:
        name: a name from `names()` (case and ``-``/``_`` ignored: ``ResNet-50`` works).
        num_classes: classifier width; None uses the architecture's default (1000 for
            ImageNet models, 10 for LeNet-5 and the CIFAR ResNets).
    """
    build, default_classes, _, _ = _entry(name)
    return build(num_classes if num_classes is not None else default_classes)


def build(name: str, num_classes: int | None = None) -> tuple[LayerSpec, ...]:
    """The parsed `LayerSpec`s of a named architecture (see `tokens`)."""
    return parse_layers(tokens(name, num_classes))


def default_input(name: str) -> tuple[int, ...]:
    """The input shape (channels last) the architecture was published for."""
    return _entry(name)[2]


def summary(name: str) -> str:
    """A one-line description with its reference."""
    return _entry(name)[3]
