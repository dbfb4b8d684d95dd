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
from cnncli.cli.arith import conv_arith
from cnncli.cli.data import data_app
from cnncli.cli.eval import eval_run, predict
from cnncli.cli.explain import explain
from cnncli.cli.export import export
from cnncli.cli.filters import inspect_filters
from cnncli.cli.runs import runs_app
from cnncli.cli.train import train
from cnncli.errors import CnnCliError, UsageError

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
        "  cnncli runs\n\n"
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
        from cnncli.runtime.jaxsetup import tune_host_malloc

        tune_host_malloc()


app.command("conv-arith", no_args_is_help=True)(conv_arith)
app.command("train", no_args_is_help=True)(train)

app.command("eval", no_args_is_help=True)(eval_run)
app.command("predict", no_args_is_help=True)(predict)
app.command("inspect-filters", no_args_is_help=True)(inspect_filters)
app.command("explain", no_args_is_help=True)(explain)
app.command("export", no_args_is_help=True)(export)
app.add_typer(data_app, name="data")
app.add_typer(runs_app, name="runs")


_FLAG_ALIASES = {"lr": "learning_rate"}


def recipe_flag_error(argv: list[str]) -> CnnCliError | None:
    """``cnncli train R --epochs 3``: a recipe key typed as a flag gets the ``--set`` that does it.

    Only for flags that ``train`` does not have and that name a recipe field (click
    would otherwise suggest an unrelated option). None when there is nothing to say.
    """
    while argv and argv[0] == "--debug":  # the app's own options before the command
        argv = argv[1:]
    if not argv or argv[0] != "train" or any(a in ("-h", "--help") for a in argv):
        return None
    import typer.main

    command = typer.main.get_command(app).commands["train"]  # type: ignore[attr-defined]
    known = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
    takes_value = {o for p in command.params if not getattr(p, "is_flag", False) for o in p.opts}
    skip = False
    for i, token in enumerate(argv[1:], start=1):
        if skip:  # the value of the option before it (`--workdir --lr` is a path)
            skip = False
            continue
        if token == "--":
            break
        flag, eq, value = token.partition("=")
        if flag in takes_value and not eq:
            skip = True
        if not flag.startswith("--") or flag in known:
            continue
        name = flag[2:].replace("-", "_")
        paths = _recipe_paths(_FLAG_ALIASES.get(name, name))
        if not paths:
            continue
        if not eq and i + 1 < len(argv) and (not argv[i + 1].startswith("-") or _is_number(argv[i + 1])):
            value = argv[i + 1]
        return UsageError(
            f"{flag} is not an option of cnncli train: recipe values change with --set",
            hint=" or ".join(f"--set {path}={value or 'VALUE'}" for path in paths),
        )
    return None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _recipe_paths(name: str) -> list[str]:
    from cnncli.config.recipe import Recipe

    paths = []
    for section, field in Recipe.model_fields.items():
        fields = getattr(field.annotation, "model_fields", {})
        if name in fields:
            paths.append(f"{section}.{name}")
    return paths


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app, turning user errors into messages and exit codes.

    Besides `CnnCliError`, the last resort for what the library did not foresee: an
    OSError (read-only or full disk, a path under a file) or a UnicodeError (a file that
    is not UTF-8) becomes one ``error:`` line naming the file, exit 1; a Ctrl-C outside
    ``train``'s own handling exits 130 and ignores further Ctrl-Cs while Python shuts down.
    """
    from cnncli.report.console import degrade_to_ascii, print_error

    degrade_to_ascii()  # PYTHONIOENCODING=ascii: look-alikes instead of UnicodeEncodeError
    if argv is None:  # the process is cnncli's own (not a test calling main)
        _quiet_unraisable()
    try:
        if err := recipe_flag_error(sys.argv[1:] if argv is None else argv):
            raise err
        app(args=argv, standalone_mode=True)
    except CnnCliError as err:
        if _state["debug"]:
            raise
        print_error(err)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:  # outside typer's own handling (typer turns it into exit 130 inside)
        if argv is None:
            _quiet_shutdown()
        sys.exit(130)
    except SystemExit as done:
        if done.code == 130 and argv is None:  # interrupted: a second Ctrl-C must not print a traceback on the way out
            _quiet_shutdown()
        raise
    except (OSError, UnicodeError) as err:
        if _state["debug"]:
            raise
        print_error(os_error(err))
        sys.exit(1)


def os_error(err: OSError | UnicodeError) -> CnnCliError:
    """A `CnnCliError` for an OS or encoding error nothing else caught: the file and what to do."""
    import errno

    if isinstance(err, UnicodeDecodeError):
        return CnnCliError(
            f"a file is not {err.encoding} text: byte 0x{err.object[err.start]:02x} at offset {err.start} ({err.reason})",
            hint="save the file as UTF-8",
        )
    if isinstance(err, UnicodeError):
        return CnnCliError(f"text could not be encoded: {err}", hint="set PYTHONIOENCODING=utf-8")
    where = " -> ".join(str(f) for f in (err.filename, err.filename2) if f is not None)
    what = err.strerror or str(err) or type(err).__name__
    message = f"{where}: {what}" if where else what
    hints = {
        errno.ENOSPC: "free some disk space (or pick another --workdir) and run the command again",
        errno.EDQUOT: "free some disk space (or pick another --workdir) and run the command again",
        errno.EROFS: "pick a writable folder (--workdir, or copy the run somewhere writable)",
        errno.EACCES: "check the permissions of the path, or pick another folder",
        errno.EPERM: "check the permissions of the path, or pick another folder",
        errno.ENOTDIR: "a part of the path is a file, not a folder: pick another path",
        errno.EISDIR: "the path is a folder: give a file",
        errno.EEXIST: "something of that name is in the way (a file where a folder should be?): pick another path",
        errno.ENOENT: "check the path",
    }
    return CnnCliError(message, hint=hints.get(err.errno, "check the path, its permissions and the free disk space"))


def _quiet_unraisable() -> None:
    """Errors Python can only report as "unraisable", handled so that none prints a traceback.

    - "Event loop is closed" from tensorstore's threads: when orbax's restore of a damaged
      checkpoint fails, the error is reported (a `CheckpointError`) and orbax closes its
      asyncio loop; reads still in flight complete later and each tries to hand its result
      to the closed loop (0-50 tracebacks around the clean message). Nothing is lost.
    - A Ctrl-C that lands in a garbage-collection callback (jax registers one): Python
      would print it and drop it, and the interrupt would be lost. It is sent again, so
      it arrives where Python can raise it (or where ``train``'s handler counts it).

    Any other unraisable error prints as before.
    """
    previous = sys.unraisablehook
    if getattr(previous, "cnncli", False):
        return

    def hook(unraisable) -> None:
        value = unraisable.exc_value
        if isinstance(value, RuntimeError) and str(value) == "Event loop is closed" and not _state["debug"]:
            return
        if isinstance(value, KeyboardInterrupt):  # sent again shortly, from a thread: here it would be unraisable too
            import signal
            import threading

            timer = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT))
            timer.daemon = True
            timer.start()
            return
        previous(unraisable)

    hook.cnncli = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


def _quiet_shutdown() -> None:
    """Ignore further Ctrl-Cs: the process is exiting (atexit handlers must not raise KeyboardInterrupt)."""
    import signal

    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread
        pass


if __name__ == "__main__":  # pragma: no cover
    main()
