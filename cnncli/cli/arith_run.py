"""The work behind ``cnncli conv-arith``: stacks, ``--arch``, recipes, ``--tokens`` (`cnncli.cli.arith` holds the signature).

`dispatch` picks the form: the one-axis forms (quick, ``--solve``, ``--draw``) are in
`cnncli.cli.arith_explain`; here are `stack` (tokens, ``--arch``, recipe) and
`tokens_form`. Each resolves its input, asks `cnncli.arith` for the answer and hands
it to `cnncli.report.arith` to print (a table, text, or one JSON object with
``--json``; warnings on stderr). No jax or numpy.
"""

from __future__ import annotations

import os

from cnncli.arith import geometry, zoo
from cnncli.arith.layers import parse_layers, parse_shape
from cnncli.cli.arith_explain import draw_form, quick, solve_form
from cnncli.cli.arith_options import Options
from cnncli.errors import CnnCliError, UsageError
from cnncli.report.arith import print_analysis, print_tokens


def is_recipe(text: str | None) -> bool:
    """A recipe path: a .toml/.yaml/.yml name, or any existing file."""
    return bool(text) and (text.lower().endswith((".toml", ".yaml", ".yml")) or os.path.isfile(text))


def dispatch(o: Options) -> None:
    """Pick the form from INPUT and the options, and run it."""
    if o.draw:
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
    if len(shape) == 2 and shape[0] == shape[1] and shape[1] > 4:  # an image's size, channels forgotten?
        n = shape[0]
        raise UsageError(
            f"INPUT {text} is ambiguous: two numbers are a 1-D signal (length {n}, {n} channels), "
            f"but {text} looks like an image's height and width",
            hint=f"for an image add its channels: {text}x1 (grey) or {text}x3 (RGB); a 1-D signal is LENGTHxCHANNELS, e.g. {n}x1",
        )
    return shape


def one_d_warning(shape: tuple[int, ...], text: str) -> str | None:
    """A 2-number INPUT with more channels than an image has: say that it is read as 1-D."""
    if len(shape) == 2 and shape[1] > 4:
        return (f"INPUT {text} is read as a 1-D signal: length {shape[0]}, {shape[1]} channels "
                f"(for a {text} image write {text}x1 or {text}x3)")  # fmt: skip
    return None


def _from_recipe(o: Options) -> tuple[list, tuple[int, ...], str | None, int | None]:
    """Layers and input shape from a recipe (needs `cnncli.config.recipe.load_recipe`)."""
    try:
        from cnncli.config.recipe import load_recipe
    except ImportError:
        raise CnnCliError("recipe input needs the train issue") from None
    if o.tokens or o.arch:
        raise UsageError("a recipe INPUT takes no layer tokens or --arch", hint="edit [model] in the recipe")
    from cnncli.config.datashape import peek
    from cnncli.config.plan import layer_specs, num_classes

    recipe = load_recipe(o.input)
    model = recipe.model
    data_shape, data_classes = peek(recipe.data)
    classes = o.classes or num_classes(recipe, data_classes)
    arch = model.arch
    specs = list(layer_specs(recipe, classes))  # the tokens as parsed when the recipe was validated
    shape = _stack_shape(o.shape, (28, 28, 1)) if o.shape else _recipe_shape(data_shape, arch)
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
    notes = [w for w in [one_d_warning(shape, o.input)] if w] if o.input and not is_recipe(o.input) else []
    print_analysis(analysis, title=title, as_json=o.json, warnings=notes)


def tokens_form(o: Options) -> None:
    """``--arch NAME --tokens``: the architecture's token list, ready to paste or edit."""
    if o.arch is None:
        raise UsageError("--tokens prints the token list of an --arch", hint="e.g. cnncli conv-arith --arch lenet5 --tokens")
    print_tokens(o.arch, zoo.tokens(o.arch, o.classes), as_json=o.json)
