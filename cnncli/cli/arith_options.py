"""The parsed command line of ``cnncli conv-arith``, shared by its form modules.

`cnncli.cli.arith` (the signature) fills an `Options`; `cnncli.cli.arith_run` (layer
stacks, ``--arch``, recipes) and `cnncli.cli.arith_explain` (quick form, ``--solve``,
``--draw``) read it. Kept apart so those modules import it, not each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cnncli.arith.layers import parse_padding
from cnncli.errors import UsageError, unknown_choice


@dataclass
class Options:
    """The parsed command line (see `cnncli.cli.arith.conv_arith` for each option)."""

    input: str | None = None
    tokens: list[str] = field(default_factory=list)
    kernel: tuple[int, ...] | None = None
    stride: tuple[int, ...] | None = None
    padding: object = ((0, 0),)
    padding_text: str | None = None
    dilation: tuple[int, ...] | None = None
    transpose: bool = False
    output_padding: int = 0
    pool: bool = False
    ceil: bool = False
    pad_mode: str = "zeros"
    convention: str | None = None
    solve: int | None = None
    draw: bool = False
    values: str | None = None
    kernel_values: str | None = None
    arch: str | None = None
    classes: int | None = None
    shape: str | None = None
    show_tokens: bool = False
    count_bias: bool = False
    count_norm: bool = False
    count_pool: bool = False
    json: bool = False


def axes_option(text: str | None, name: str, *, minimum: int = 1) -> tuple[int, ...] | None:
    """``"3"`` -> (3,), ``"3x5"`` -> (3, 5); a UsageError naming the option otherwise."""
    if text is None:
        return None
    try:
        values = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"{name} {text!r} is not an integer", hint=f"e.g. {name} 3 (or 3x5 per axis for --draw)") from None
    if min(values) < minimum:
        raise UsageError(f"{name} {text} must be >= {minimum}")
    return values


def parse_pad_option(text: str | None):
    """``-p``: an integer, ``same``/``valid``/``full``, ``LO,HI`` or ``LO-HI``; None -> 0."""
    if text is None:
        return ((0, 0),)
    return parse_padding(text.replace(",", "-"), where="-p/--padding")


def choice(value: str, choices: tuple[str, ...], name: str) -> str:
    """``value`` lower-cased if it is one of ``choices``; a UsageError naming the option otherwise."""
    if value.lower() not in choices:
        raise UsageError(f"{name}: " + unknown_choice("value", value, choices))
    return value.lower()
