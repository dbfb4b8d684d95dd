"""Layer specs from what a user wrote: layer tokens (parsed once) or a zoo name.

A recipe's tokens are parsed when the recipe is validated; `parse_tokens` keeps that
result, so building the model, the dry run's table and the profiler reuse it instead
of parsing again. `LayerSpec`s are frozen: sharing them is safe.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from cnncli.arith import zoo
from cnncli.arith.layers import LayerSpec, parse_layers


@functools.lru_cache(maxsize=64)
def parse_tokens(tokens: tuple[str, ...]) -> tuple[LayerSpec, ...]:
    """Layer tokens -> specs (`cnncli.arith.layers.parse_layers`), once per distinct token list.

    Raises:
        LayerError: a token that does not parse (not cached: the next call raises again).
    """
    return parse_layers(tokens)


def specs_of(*, layers: Sequence[str] | None = None, arch: str | None = None, num_classes: int) -> tuple[LayerSpec, ...]:
    """The specs of layer tokens, or else of a zoo architecture (``num_classes``: its classifier width)."""
    if layers is not None:
        return parse_tokens(tuple(layers))
    return tuple(zoo.build(arch, num_classes))


def model_specs(model: str, num_classes: int) -> tuple[LayerSpec, ...]:
    """A zoo name (``resnet20``) or a string of space-separated layer tokens -> specs."""
    if model in zoo.names():
        return specs_of(arch=model, num_classes=num_classes)
    return specs_of(layers=(model,), num_classes=num_classes)
