"""The work behind ``cnncli conv-arith`` (split from `cnncli.cli.arith`, which holds the signature).

One function per form: `quick` (one axis), `solve_form`, `stack` (tokens, ``--arch``,
recipe), `tokens_form` and `draw_form`. Results go to stdout (a table, text, or one
JSON object with ``--json``); warnings go to stderr. No jax or numpy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from cnncli.arith import formulas as arith
from cnncli.arith import geometry, zoo
from cnncli.arith.layers import parse_layers
from cnncli.errors import CnnCliError, UsageError
from cnncli.report.arith import analysis_to_json, layer_table
from cnncli.report.console import print_json, stdout_console, warn


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


def parse_shape(text: str) -> tuple[int, ...]:
    """``224x224x3`` -> (224, 224, 3); a bare ``224`` -> (224,)."""
    try:
        shape = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UsageError(
            f"INPUT {text!r} is not a size, a shape or a recipe file",
            hint="e.g. 224 (quick form), 224x224x3 (channels last), or recipes/x.toml",
        ) from None
    if min(shape) < 1:
        raise UsageError(f"INPUT {text!r}: sizes must be positive")
    return shape


def is_recipe(text: str | None) -> bool:
    """A recipe path: a .toml/.yaml/.yml name, or any existing file."""
    return bool(text) and (text.lower().endswith((".toml", ".yaml", ".yml")) or os.path.isfile(text))


def dispatch(o: Options) -> None:
    """Pick the form from INPUT and the options, and run it."""
    if o.draw:
        from cnncli.cli.arith_explain import draw_form

        return draw_form(o)
    if o.show_tokens:
        return tokens_form(o)
    if o.input is None and o.arch is None:
        raise UsageError("give INPUT: a size, a shape or a recipe", hint="e.g. cnncli conv-arith 224 -k 7 -s 2 -p 3")
    if o.solve is not None:
        return solve_form(o)
    bare = o.input is not None and "x" not in o.input.lower() and not is_recipe(o.input)
    if bare and not o.tokens and o.arch is None:
        return quick(o)
    return stack(o)


def _one(values: tuple[int, ...] | None, name: str) -> int | None:
    if values is None:
        return None
    if len(values) != 1:
        raise UsageError(f"{name} takes one value in the quick form (one axis); got {'x'.join(map(str, values))}")
    return values[0]


def _pad_pair(o: Options) -> tuple[int, int] | str:
    if isinstance(o.padding, str):
        return o.padding
    if len(o.padding) != 1:
        raise UsageError("-p/--padding takes one axis in the quick form", hint="e.g. -p 3, -p same or -p 1,2")
    return o.padding[0]


def quick(o: Options) -> None:
    """One axis: the output size, the formula with numbers, and teaching notes."""
    from cnncli.cli.arith_explain import quick_result

    i = parse_shape(o.input)[0]
    k = _one(o.kernel, "-k/--kernel")
    if k is None:
        raise UsageError("the quick form needs -k/--kernel", hint="e.g. cnncli conv-arith 224 -k 7 -s 2 -p 3")
    if o.pool and o.transpose:
        raise UsageError("--pool and --transpose do not combine")
    s = _one(o.stride, "-s/--stride") or (k if o.pool else 1)
    d = _one(o.dilation, "-d/--dilation") or 1
    result = quick_result(i, k, s, _pad_pair(o), d, o)
    for text in result.pop("warnings"):
        warn(text)
    if o.json:
        print_json(result)
        return
    console = stdout_console()
    for line in [str(result["output"]), result["formula"], *result["notes"], *result.get("convention_notes", [])]:
        console.print(line, markup=False, highlight=False)


def solve_form(o: Options) -> None:
    """``--solve O``: the (k, s, p, d) that map INPUT to O, simplest first."""
    i = parse_shape(o.input or "")[0] if o.input and "x" not in o.input else None
    if i is None:
        raise UsageError("--solve needs a bare size as INPUT", hint="e.g. cnncli conv-arith 32 --solve 16")
    found = arith.solve(i, o.solve, transpose=o.transpose)
    if o.json:
        print_json({"input": i, "output": o.solve, "transpose": o.transpose, "solutions": [vars(x) for x in found]})
        return
    from cnncli.cli.arith_explain import solve_table

    console = stdout_console()
    if not found:
        hint = " (upsampling: add --transpose)" if o.solve > i and not o.transpose else ""
        console.print(f"no (k <= 11, d <= 3) maps {i} to {o.solve}{hint}", markup=False)
        return
    console.print(solve_table(i, o.solve, found, o.transpose))
    same = [s for s in range(2, 9) if -(-i // s) == o.solve]
    if same and not o.transpose:
        console.print(f"also: p=same with s={same[0]} gives ceil({i}/{same[0]}) = {o.solve} for any k", markup=False)


def _reject_quick_options(o: Options) -> None:
    given = [name for name, on in (
        ("-k", o.kernel), ("-s", o.stride), ("-p", o.padding_text), ("-d", o.dilation), ("--transpose", o.transpose),
        ("--output-padding", o.output_padding), ("--pool", o.pool), ("--ceil", o.ceil), ("--convention", o.convention),
    ) if on]  # fmt: skip
    if given:
        raise UsageError(
            f"{', '.join(given)} belong to the quick form (a bare size like 224); "
            "a shape takes layer tokens instead",
            hint="e.g. cnncli conv-arith 224x224x3 conv:c=64,k=7,s=2,p=3",
        )


def _resolve(o: Options) -> tuple[list, tuple[int, ...], str | None, int | None]:
    """(specs, input shape, title, class count) from tokens, --arch or a recipe."""
    if is_recipe(o.input):
        return _from_recipe(o)
    if o.arch is not None:
        if o.tokens:
            raise UsageError("give --arch or layer tokens, not both")
        default = zoo.default_input(o.arch)
        shape = _stack_shape(o.input, default) if o.input else default
        return list(zoo.build(o.arch, o.classes)), shape, f"{o.arch}: {zoo.summary(o.arch)}", o.classes
    if not o.tokens:
        raise UsageError(
            f"INPUT {o.input} needs layer tokens or --arch",
            hint=f"e.g. cnncli conv-arith {o.input} conv:c=16,k=3,p=same relu gap dense:c=10",
        )
    return list(parse_layers(o.tokens)), _stack_shape(o.input, (28, 28, 3)), None, o.classes


def _stack_shape(text: str, example: tuple[int, ...]) -> tuple[int, ...]:
    shape = parse_shape(text)
    if len(shape) == 1:
        like = "x".join([text] * (len(example) - 1) + [str(example[-1])])
        raise UsageError(
            f"INPUT {text} is a bare size; a layer stack needs a channels-last shape",
            hint=f"e.g. {like} (spatial sizes, then channels; {text}x1 for a 1-D signal)",
        )
    return shape


def _from_recipe(o: Options) -> tuple[list, tuple[int, ...], str | None, int | None]:
    """Layers and input shape from a recipe (needs `cnncli.config.recipe.load_recipe`)."""
    try:
        from cnncli.config.recipe import load_recipe
    except ImportError:
        raise CnnCliError("recipe input needs the train issue") from None
    if o.tokens or o.arch:
        raise UsageError("a recipe INPUT takes no layer tokens or --arch", hint="edit [model] in the recipe")
    from cnncli.config.datashape import peek

    recipe = load_recipe(o.input)
    model = recipe.model
    data_shape, data_classes = peek(recipe.data)
    classes = o.classes or model.num_classes or data_classes
    arch = model.arch
    specs = list(zoo.build(arch, classes)) if arch else list(parse_layers(model.layers))
    shape = parse_shape(o.shape) if o.shape else _recipe_shape(data_shape, arch)
    return specs, shape, f"{o.input}" + (f" ({arch})" if arch else ""), classes


def _recipe_shape(data_shape: tuple[int, ...] | None, arch: str | None) -> tuple[int, ...]:
    if data_shape:
        return data_shape
    if arch:
        return zoo.default_input(arch)
    raise CnnCliError(
        "the recipe's input shape comes from its data, which conv-arith cannot read without loading it",
        hint="give it with --shape, e.g. --shape 28x28x1 (or see `cnncli train RECIPE --dry-run`)",
    )


def stack(o: Options) -> None:
    """A layer table (or JSON) for tokens, --arch or a recipe; warnings on stderr."""
    _reject_quick_options(o)
    specs, shape, title, classes = _resolve(o)
    analysis = geometry.analyze(
        specs, shape, num_classes=classes, count_bias=o.count_bias, count_norm=o.count_norm, count_pool=o.count_pool
    )
    if o.json:
        print_json(analysis_to_json(analysis))
    else:
        stdout_console().print(layer_table(analysis, title=title))
    for text in analysis.warnings:
        warn(text)


def tokens_form(o: Options) -> None:
    """``--arch NAME --tokens``: the architecture's token list, ready to paste or edit."""
    if o.arch is None:
        raise UsageError("--tokens prints the token list of an --arch", hint="e.g. cnncli conv-arith --arch lenet5 --tokens")
    tokens = zoo.tokens(o.arch, o.classes)
    if o.json:
        print_json({"arch": o.arch, "tokens": tokens})
    else:
        stdout_console().print(" ".join(tokens), markup=False, highlight=False, soft_wrap=True)
