"""``cnncli runs [DIR]`` and ``cnncli runs diff A B``: the command functions (imports inside them).

``runs`` is a sub-app whose default command is ``list``: ``cnncli runs``, ``cnncli runs
runs/x-sweep --json`` and ``cnncli runs list ...`` are the same command (a folder named
``list`` or ``diff`` is passed as ``./list``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from cnncli.cli._options import json_opt


class _DefaultList(TyperGroup):
    """A group whose first argument, when it is not a subcommand, goes to ``list``."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["list", *args]
        elif not args:
            args = ["list"]
        return super().parse_args(ctx, args)


runs_app = typer.Typer(
    name="runs",
    cls=_DefaultList,
    subcommand_metavar="[DIR] [--where ...] [--sort KEY] [--json] | diff RUN_A RUN_B",
    help="Compare runs: a table of the runs under a folder (the default command, `list`: its options are in "
    "`cnncli runs list --help`), or two runs side by side (`diff`).\n\n"
    "Examples:\n\n"
    "  cnncli runs\n\n"
    "  cnncli runs runs/quickstart-sweep --sort -eval_accuracy\n\n"
    "  cnncli runs diff runs/quickstart runs/quickstart-2",
    rich_markup_mode="markdown",
)

DirArg = Annotated[
    Path,
    typer.Argument(metavar="DIR", help="A folder of runs (searched 4 levels down), a sweep folder or a run."),
]
WhereOpt = Annotated[
    list[str] | None,
    typer.Option("--where", "-W", help="Keep the runs where KEY=VALUE (also !=, <, <=, >, >=); repeatable, ANDed. "
                 "KEY: a column (status, eval_accuracy, ...) or a dotted recipe key (optimizer.learning_rate)."),
]  # fmt: skip
SortOpt = Annotated[
    str | None,
    typer.Option("--sort", "-s", metavar="KEY", help="Sort by a column or recipe key; -KEY for descending "
                 "(--sort=-eval_accuracy). Default: by name."),
]  # fmt: skip
GroupOpt = Annotated[
    bool | None,
    typer.Option("--group-by-seed/--no-group-by-seed", help="Mean and spread over train.seed for each setting "
                 "(the other recipe values). Default: on a terminal, shown below the runs table when seeds differ "
                 "and a setting has two runs or more; --group-by-seed shows (or prints as JSON) only the groups."),
]  # fmt: skip

ListJsonOpt = json_opt("One JSON object per run, one per line (default when piped); per setting with --group-by-seed.")
DiffJsonOpt = json_opt("Print one JSON object (default when piped).")


@runs_app.command("list")
def list_runs(
    folder: DirArg = Path("runs"),
    where: WhereOpt = None,
    sort: SortOpt = None,
    group_by_seed: GroupOpt = None,
    json_out: ListJsonOpt = False,
) -> None:
    """A table of the runs under DIR (default runs/): the default command of `cnncli runs`.

    Columns: name (the path under DIR), **status**, final and best eval accuracy,
    epochs, steps, train time, images/s, then every recipe value that differs between
    the listed runs (resolved recipe.json files compared as dotted keys), so a sweep's
    table shows exactly what was swept.

    **status**: finished (summary.json), running (process.json names a live process),
    failed (failure.json: the last attempt stopped on an error), interrupted
    (checkpoints or metrics but no summary: `cnncli train` on it resumes), empty.

    **Seeds**: when the runs differ in train.seed and a setting has several seeds, a
    second table gives mean ± std (sample), and min-max of eval accuracy, per setting.

    **--json** (or a pipe): one object per run with name, path, status, eval_accuracy,
    best_eval_accuracy, best_epoch, epochs, steps, train_seconds, images_per_second,
    recipe (the differing values), failure and notes.

    Examples:

      cnncli runs

      cnncli runs runs/quickstart-sweep --where status=finished --sort=-eval_accuracy

      cnncli runs --where optimizer.learning_rate=0.01 --where "eval_accuracy>=0.95"

      cnncli runs runs/quickstart-sweep --group-by-seed --json | jq .eval_accuracy.mean
    """
    from cnncli.report import console
    from cnncli.report.runs import print_runs
    from cnncli.runs.catalog import catalogue
    from cnncli.runs.compare import select, sort_entries

    entries = sort_entries(select(catalogue(folder), list(where or [])), sort)
    print_runs(entries, root=str(folder), json_out=json_out or not console.is_interactive(), group=group_by_seed)


@runs_app.command("diff", no_args_is_help=True)
def diff(
    run_a: Annotated[Path, typer.Argument(help="A run directory.", show_default=False)],
    run_b: Annotated[Path, typer.Argument(help="Another run directory.", show_default=False)],
    json_out: DiffJsonOpt = False,
) -> None:
    """Two runs side by side: the recipe values that differ, and their metrics with B - A.

    Examples:

      cnncli runs diff runs/quickstart runs/quickstart-2

      cnncli runs diff runs/quickstart runs/quickstart-2 --json | jq .metrics.eval_accuracy
    """
    from cnncli.errors import CnnCliError
    from cnncli.report import console
    from cnncli.report.runs import print_diff
    from cnncli.runs.catalog import is_run_dir, read_run
    from cnncli.runs.compare import diff_runs

    for path in (run_a, run_b):
        if not path.is_dir() or not is_run_dir(path):
            raise CnnCliError(f"{path} is not a run directory", hint="list the runs with: cnncli runs")
    print_diff(diff_runs(read_run(run_a, str(run_a)), read_run(run_b, str(run_b))),
               json_out=json_out or not console.is_interactive())
