"""``cnncli conv-arith``: conv shape arithmetic, in a fraction of a second.

Imports only typer, rich and cnncli's pure-Python modules: never jax or numpy
(a test holds this). The forms, chosen by INPUT and the options:

- quick form, one axis: ``224 -k 7 -s 2 -p 3`` (with ``--transpose``, ``--pool``);
- layer stack: ``224x224x3 conv:c=64,k=7,s=2,p=3 ...``;
- named architecture: ``224x224x3 --arch resnet50``; recipe: ``recipes/x.toml``;
- ``--solve O`` (which k, s, p, d map INPUT to O) and ``--draw`` (a worked example).
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from cnncli.arith import zoo
from cnncli.arith.layers import PAD_MODES
from cnncli.cli._options import json_opt
from cnncli.cli.arith_options import Options, axes_option, choice, parse_pad_option

_QUICK = "Quick form"
_STACK = "Stacks and architectures"
_OUT = "Output"


def conv_arith(
    input: Annotated[Optional[str], typer.Argument(metavar="INPUT", help="A size (224), a channels-last shape (224x224x3, 40x1, 16x112x112x3) or a recipe file.", show_default=False)] = None,
    tokens: Annotated[Optional[list[str]], typer.Argument(metavar="[TOKENS]...", help="Layer tokens, e.g. conv:c=64,k=7,s=2,p=3 maxpool:k=3,s=2,p=1 gap dense:c=10.", show_default=False)] = None,
    kernel: Annotated[Optional[str], typer.Option("-k", "--kernel", help="Kernel size (AxB per axis for --draw).", rich_help_panel=_QUICK)] = None,
    stride: Annotated[Optional[str], typer.Option("-s", "--stride", help="Stride [default: 1; the kernel for --pool].", rich_help_panel=_QUICK)] = None,
    padding: Annotated[Optional[str], typer.Option("-p", "--padding", help="Integer, same, valid, full, or LO,HI.", rich_help_panel=_QUICK)] = None,
    dilation: Annotated[Optional[str], typer.Option("-d", "--dilation", help="Dilation [default: 1].", rich_help_panel=_QUICK)] = None,
    transpose: Annotated[bool, typer.Option("--transpose", help="Transposed conv: integer -p is the padding of the conv being transposed (PyTorch); same/valid follow Flax.", rich_help_panel=_QUICK)] = False,
    output_padding: Annotated[int, typer.Option("--output-padding", min=0, help="Output padding of --transpose.", rich_help_panel=_QUICK)] = 0,
    pool: Annotated[bool, typer.Option("--pool", help="A pooling window (stride defaults to the kernel).", rich_help_panel=_QUICK)] = False,
    ceil: Annotated[bool, typer.Option("--ceil", help="Round the --pool output up (PyTorch ceil_mode).", rich_help_panel=_QUICK)] = False,
    pad_mode: Annotated[str, typer.Option("--pad-mode", help="zeros, circular, reflect or edge (values for --draw).", rich_help_panel=_QUICK)] = "zeros",
    convention: Annotated[Optional[str], typer.Option("--convention", help="torch or flax: how that framework spells this layer and how the other differs.", rich_help_panel=_QUICK)] = None,
    solve: Annotated[Optional[int], typer.Option("--solve", min=1, help="List the (k, s, p, d) that map INPUT to this size.", rich_help_panel=_QUICK)] = None,
    draw: Annotated[bool, typer.Option("--draw", help="Work a small example by hand: sliding window, output grid, matrix form (1-D).", rich_help_panel=_QUICK)] = False,
    values: Annotated[Optional[str], typer.Option("--values", help='Input values for --draw: "1,2,3" or rows "1,0;0,1".', rich_help_panel=_QUICK)] = None,
    kernel_values: Annotated[Optional[str], typer.Option("--kernel-values", help='Kernel values for --draw, same format.', rich_help_panel=_QUICK)] = None,
    arch: Annotated[Optional[str], typer.Option("--arch", help=f"Named architecture: {', '.join(zoo.names())}.", rich_help_panel=_STACK)] = None,
    classes: Annotated[Optional[int], typer.Option("--classes", min=1, help="Classifier width for --arch, or for a dense without c=.", rich_help_panel=_STACK)] = None,
    shape: Annotated[Optional[str], typer.Option("--shape", help="Input shape for a recipe INPUT (channels last).", rich_help_panel=_STACK)] = None,
    show_tokens: Annotated[bool, typer.Option("--tokens", help="Print the expanded token list of --arch.", rich_help_panel=_STACK)] = False,
    count_bias: Annotated[bool, typer.Option("--count-bias", help="Add bias adds to FLOPs.", rich_help_panel=_STACK)] = False,
    count_norm: Annotated[bool, typer.Option("--count-norm", help="Add norm ops to FLOPs.", rich_help_panel=_STACK)] = False,
    count_pool: Annotated[bool, typer.Option("--count-pool", help="Add pooling ops to FLOPs.", rich_help_panel=_STACK)] = False,
    json_out: json_opt("One JSON object on stdout (stable keys).", rich_help_panel=_OUT) = False,
) -> None:
    """Conv arithmetic you can trust: output sizes, padding, parameters, MACs and receptive fields.

    **Quick form**, one axis: prints the output size, then the formula with your numbers.

        cnncli conv-arith 224 -k 7 -s 2 -p 3          # 112
        cnncli conv-arith 224 -k 3 -s 2 -p same       # real (lo, hi) pads of same
        cnncli conv-arith 112 -k 7 -s 2 -p 3 --transpose --output-padding 1
        cnncli conv-arith 55 -k 3 -s 2 --pool --ceil

    **Layer stack**, INPUT channels last (28x28x1, 40x1 for 1-D, 16x112x112x3 for 3-D):

        cnncli conv-arith 28x28x1 conv:c=6,k=5,p=2 relu avgpool:k=2 flatten dense:c=10

    **Named architecture** or recipe: a table of shapes, params, MACs, FLOPs, RF, memory.

        cnncli conv-arith 224x224x3 --arch resnet50
        cnncli conv-arith --arch vgg16 --tokens

    **Solve and draw**:

        cnncli conv-arith 32 --solve 16               # which k, s, p, d give 16?
        cnncli conv-arith --draw                      # 5x5 image, 3x3 kernel
        cnncli conv-arith 5 --draw -k 3 -p 0,2 --pad-mode circular

    Token keys: c (channels), k, s, p (int, same, valid, full, LO-HI; AxB per axis),
    d, g (groups), bias, pm (zeros, circular, reflect, edge), ceil, op (tconv output
    padding). Add --json for one JSON object on stdout; warnings go to stderr.
    """
    from cnncli.cli import arith_run  # the work lives there; this module stays a signature

    opts = Options(
        input=input, tokens=list(tokens or []), kernel=axes_option(kernel, "-k/--kernel"),
        stride=axes_option(stride, "-s/--stride"), padding=parse_pad_option(padding), padding_text=padding,
        dilation=axes_option(dilation, "-d/--dilation"), transpose=transpose, output_padding=output_padding,
        pool=pool, ceil=ceil, pad_mode=choice(pad_mode, PAD_MODES, "--pad-mode"),
        convention=choice(convention, ("torch", "flax"), "--convention") if convention else None,
        solve=solve, draw=draw, values=values, kernel_values=kernel_values, arch=arch, classes=classes,
        shape=shape, show_tokens=show_tokens, count_bias=count_bias, count_norm=count_norm,
        count_pool=count_pool, json=json_out,
    )  # fmt: skip
    arith_run.dispatch(opts)
