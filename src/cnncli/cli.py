"""The ``cnncli`` command line: one short function per subcommand.

Heavy modules (jax, flax, tensorflow_datasets) are imported inside the command
functions, so ``--help`` and ``conv-arith`` start in a fraction of a second. Every
`CnnCliError` becomes one actionable message on stderr and its exit code (1 for user
errors, 2 for usage errors); a traceback only with ``--debug``.
"""

from __future__ import annotations

import os
import sys

import typer

from cnncli import __version__
from cnncli.cli_arith import conv_arith
from cnncli.cli_data import data_app
from cnncli.cli_eval import eval_run, predict
from cnncli.cli_filters import inspect_filters
from cnncli.cli_train import train
from cnncli.errors import CnnCliError

app = typer.Typer(
    name="cnncli",
    help=(
        "Train, evaluate and inspect convolutional neural networks; conv shape "
        "arithmetic in a fraction of a second.\n\n"
        "Examples:\n\n"
        "  cnncli conv-arith 224 -k 7 -s 2 -p 3\n\n"
        "  cnncli conv-arith 224x224x3 --arch resnet50\n\n"
        "  cnncli train recipes/quickstart.toml\n\n"
        "  cnncli eval runs/quickstart\n\n"
        "  cnncli inspect-filters runs/quickstart"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)

_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cnncli {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    ctx: typer.Context,
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
) -> None:
    _state["debug"] = debug or bool(os.environ.get("CNNCLI_DEBUG"))
    if ctx.invoked_subcommand not in (None, "conv-arith"):  # commands that run jax
        from cnncli.jaxsetup import tune_host_malloc

        tune_host_malloc()


app.command("conv-arith", no_args_is_help=True)(conv_arith)
app.command("train", no_args_is_help=True)(train)

app.command("eval", no_args_is_help=True)(eval_run)
app.command("predict", no_args_is_help=True)(predict)
app.command("inspect-filters", no_args_is_help=True)(inspect_filters)
app.add_typer(data_app, name="data")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app, turning user errors into messages and exit codes."""
    try:
        app(args=argv, standalone_mode=True)
    except CnnCliError as err:
        if _state["debug"]:
            raise
        from cnncli.report import print_error

        print_error(err)
        sys.exit(err.exit_code)
    # Ctrl-C needs no branch here: typer turns KeyboardInterrupt into exit 130 itself
    # (`cnncli train` handles its own Ctrl-C: checkpoint first, see cli_train).


if __name__ == "__main__":  # pragma: no cover
    main()
