"""``cnncli train``: the command function (heavy imports happen inside it)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cnncli.errors import CnnCliError, UsageError

RecipeArg = Annotated[Path, typer.Argument(help="Recipe file (.toml or .yaml).", show_default=False)]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a recipe key: KEY.PATH=VALUE (repeatable), e.g. --set train.epochs=3."),
]
WorkdirOpt = Annotated[
    Path | None,
    typer.Option(
        "--workdir", "-w",
        help="Run directory. Default: runs/<recipe name> (numbered if taken). An existing run "
        "directory with checkpoints is resumed from its newest checkpoint.",
    ),
]  # fmt: skip
ResumeOpt = Annotated[
    str | None,
    typer.Option(
        "--resume-from",
        help="Resume --workdir from this checkpoint: latest or a step number. It must exist (an error, never a "
        "fresh start); newer checkpoints are moved to checkpoints/superseded/.",
    ),
]
JsonOpt = Annotated[
    bool,
    typer.Option("--json", help="One JSON object per epoch and a final summary on stdout (default when piped)."),
]
SweepOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--sweep", metavar="KEY=V1,V2,...",
        help="Train a grid: one run per combination of the values of every --sweep (repeatable), each a --set "
        "for that run, into WORKDIR/KEY=VALUE,... (WORKDIR default: runs/STEM-sweep, STEM the recipe's file name). "
        "Run again to skip finished runs and resume the others. With --json: one summary line per run.",
    ),
]  # fmt: skip


CoordinatorOpt = Annotated[
    str | None,
    typer.Option("--coordinator", help="HOST:PORT of process 0, to train over several processes/hosts (JAX distributed).",
                 rich_help_panel="Scaling out"),
]  # fmt: skip
NumProcOpt = Annotated[
    int | None, typer.Option("--num-processes", help="How many processes take part.", rich_help_panel="Scaling out")
]
ProcIdOpt = Annotated[
    int | None, typer.Option("--process-id", help="This process's index, 0..N-1.", rich_help_panel="Scaling out")
]


def train(
    recipe: RecipeArg,
    set_: SetOpt = None,
    workdir: WorkdirOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the resolved recipe, layer table, schedule and cost; train nothing.")
    ] = False,
    json_out: JsonOpt = False,
    allow_recipe_change: Annotated[
        bool, typer.Option("--allow-recipe-change", help="Resume even if the recipe changed in a field that alters training.")
    ] = False,
    resume_from: ResumeOpt = None,
    sweep: SweepOpt = None,
    profile: Annotated[
        int | None,
        typer.Option("--profile", metavar="N", help="Trace N train steps into WORKDIR/profile (JAX profiler; "
                     "Perfetto/TensorBoard can open it), print the top ops by time, and exit without training."),
    ] = None,
    coordinator: CoordinatorOpt = None,
    num_processes: NumProcOpt = None,
    process_id: ProcIdOpt = None,
    allow_nonempty_workdir: Annotated[
        bool, typer.Option("--allow-nonempty-workdir", help="Train into a --workdir that holds files other than a "
                           "run's (refused by default, so a typo cannot scatter a run among other files).")
    ] = False,
) -> None:
    """Train a CNN from a recipe and leave a run directory.

    The run directory holds the recipe (as given and resolved), metrics.jsonl,
    summary.json, curves.png and orbax checkpoints (latest and best), which `cnncli
    eval` and `cnncli inspect-filters` read.

    **images_per_second** counts training images per second of training time: the
    first step's compilation and all evaluation are excluded (compile time is reported
    separately as compile_seconds); null when no step was trained (a finished run
    run again).

    Examples:

      cnncli train recipes/quickstart.toml

      cnncli train recipes/quickstart.toml --set train.epochs=3 --set optimizer.learning_rate=0.01

      cnncli train recipes/quickstart.toml --dry-run

      cnncli train recipes/quickstart.toml --json | tail -1 | jq .eval_accuracy

      cnncli train recipes/quickstart.toml --workdir runs/quickstart --resume-from 308

      cnncli train recipes/quickstart.toml --sweep optimizer.learning_rate=1e-3,3e-3 --sweep train.seed=0,1

    **Scaling out**: every device JAX sees is used (the batch is split over them); on
    several hosts, start one process per host with --coordinator, --num-processes and
    --process-id (or let SLURM / Cloud TPU / Kubernetes environment variables say so).

    **Speed on a CPU**: by default (train.conv_backend = "auto") a run on one CPU device
    sends its convolutions (and BatchNorm's sums) through oneDNN, installed with cnncli on
    Linux x86-64 (the first use builds a small extension with g++), and XLA's kernels
    elsewhere (GPU, several devices, no oneDNN or g++); it says which and why.
    --set train.conv_backend=xla keeps XLA's kernels; =onednn insists (BENCHMARKS.md).

    **Resuming**: on a run directory with checkpoints, train continues from the newest
    committed one (by step number) and says so; the resumed run is bit-identical to an
    uninterrupted one. Ctrl-C or SIGTERM saves a checkpoint after the current step and
    exits 130/143; a second Ctrl-C aborts at once.

    **Sweeps**: every value of every --sweep is checked against the recipe schema before
    anything trains (exit 2 for a malformed --sweep, 1 for a refused value). --workdir
    names the sweep folder; --resume-from, --profile and several processes do not go
    with --sweep (each run resumes from its own newest checkpoint). A run that fails does
    not stop the others; the command ends with `cnncli runs` of the sweep folder, and
    exits 1 if a run failed. --dry-run lists the runs and what each would do.
    """
    from cnncli.config.recipe import read_recipe
    from cnncli.report import console as report
    from cnncli.runs import layout as rundir

    if sweep:
        several = (coordinator, num_processes, process_id) != (None, None, None)
        refused = {"--resume-from": resume_from is not None, "--profile": profile is not None,
                   "--coordinator/--num-processes/--process-id": several}  # fmt: skip
        return _sweep(recipe, list(set_ or []), list(sweep), workdir, dry_run=dry_run, refused=refused,
                      json_mode=json_out or not report.is_interactive(), allow_recipe_change=allow_recipe_change)
    loaded = read_recipe(recipe, list(set_ or []))  # the file is read once: its text is saved with the run
    if dry_run:
        from cnncli.report.plan import print_plan
        from cnncli.train.plan import dry_run as plan

        if workdir is not None:  # what train would refuse, the dry run refuses too (nothing is created)
            rundir.check_workdir(workdir, allow_foreign=allow_nonempty_workdir)
        print_plan(plan(loaded.recipe), json_out=json_out or not report.is_interactive())
        return
    if profile is not None:
        target = workdir or rundir.default_workdir(recipe)
        rundir.check_workdir(target, allow_foreign=allow_nonempty_workdir)
        _profile(loaded.recipe, target, profile)
        return
    from cnncli.runtime import distributed
    from cnncli.train.loop import fit
    from cnncli.train.signals import Interrupted, resume_command

    _check_coordinator(coordinator)  # before JAX: a bad port crashes its gRPC server (a segfault, exit 139)
    if distributed.initialize(coordinator, num_processes, process_id) and workdir is None:
        raise UsageError("training over several processes needs --workdir (the same path for every process)")
    resume = _resume_arg(resume_from, workdir)
    target = workdir if workdir is not None else rundir.default_workdir(recipe)
    rundir.check_workdir(target, allow_foreign=allow_nonempty_workdir)  # before anything is created
    reporter = _reporter(json_out or not report.is_interactive()) if distributed.is_main_process() else _Quiet()
    watch = _Watch(reporter, created=rundir.created_root(target))
    from cnncli.report.progress import first_pass_bar

    try:
        with first_pass_bar(not (json_out or not report.is_interactive()) and distributed.is_main_process()):
            fit(
                loaded.recipe, target, recipe_text=loaded.text, recipe_suffix=loaded.suffix,
                on_event=watch, allow_recipe_change=allow_recipe_change, resume_from=resume,
            )  # fmt: skip
    except Interrupted as err:  # a checkpoint is saved: the hint is this very command, so following it resumes
        err.hint = "resume with: " + resume_command(recipe, list(set_ or []), target, allow_recipe_change=allow_recipe_change)
        raise
    except CnnCliError:
        if not watch.compiled and distributed.is_main_process():  # failed before its first step: leave nothing
            rundir.discard_untrained(target, created=watch.created)
        raise
    except KeyboardInterrupt:  # a second Ctrl-C, or a first one before the handlers (typer: a quiet exit 130)
        reporter.close()
        again = "resume with: " + resume_command(recipe, list(set_ or []), target,
                                                  allow_recipe_change=allow_recipe_change)
        if not watch.compiled:  # before the first step: nothing of this attempt is worth keeping
            if distributed.is_main_process() and rundir.discard_untrained(target, created=watch.created):
                _abort(target, message="interrupted before the first step: nothing was trained and nothing was "
                       f"left in {target}", hint="run the same command again to train")  # fmt: skip
            _abort(target, message="interrupted before the first step of this attempt", hint=f"the run's "
                   f"checkpoints are as they were; {again}")  # fmt: skip
        _abort(target, again)
    finally:
        reporter.close()


def _sweep(recipe: Path, sets: list[str], sweeps: list[str], workdir: Path | None, *, dry_run: bool,
           refused: dict[str, bool], json_mode: bool, allow_recipe_change: bool) -> None:
    """``--sweep``: validate the whole grid, train each point not finished, end with the sweep's runs table."""
    from cnncli.errors import CnnCliError
    from cnncli.report.runs import SweepReporter, print_runs, print_sweep_plan
    from cnncli.runs.catalog import catalogue
    from cnncli.train.sweep import default_folder, plan_sweep, run_sweep, status_of

    if flag := next((flag for flag, given in refused.items() if given), None):
        raise UsageError(f"--sweep does not go with {flag}", hint="a sweep resumes each of its runs from the "
                         "run's newest checkpoint; train one point with --workdir SWEEP/NAME for the rest")  # fmt: skip
    plan = plan_sweep(recipe, sets, sweeps, workdir or default_folder(recipe))
    if dry_run:
        rows = [(p.name, str(plan.workdir(p)), status_of(plan.workdir(p))) for p in plan.points]
        return print_sweep_plan(rows, json_out=json_mode)
    reporter = SweepReporter(_reporter(json_mode), json_mode=json_mode)
    try:
        outcomes = run_sweep(plan, on_event=reporter, allow_recipe_change=allow_recipe_change)
    except KeyboardInterrupt:
        reporter.close()
        _abort(plan.folder, "run the same command again: finished runs are skipped, the others resume")
    finally:
        reporter.close()
    if not json_mode:
        print_runs(catalogue(plan.folder), root=str(plan.folder), json_out=False)
    if failed := [o.point.name for o in outcomes if o.action == "failed"]:
        raise CnnCliError(f"{len(failed)} of {len(outcomes)} runs of the sweep failed: {', '.join(failed)}",
                          hint="their errors are above; run the same command again to retry them")  # fmt: skip


def _profile(recipe, workdir: Path, steps: int) -> None:
    """``--profile N``: trace N steps of the recipe's real step, print the top ops."""
    from cnncli.report.console import stdout_console
    from cnncli.train.profiling import format_top_ops, profile_recipe

    if steps < 1:
        raise UsageError(f"--profile {steps}: give the number of steps to trace, e.g. --profile 10")
    report = profile_recipe(recipe, workdir, steps)
    out = stdout_console()
    out.print(f"compiled in {report.compile_seconds:.2f} s; {steps} steps traced into {workdir / 'profile'}; "
              f"{report.images_per_second:,.0f} images/s while tracing", highlight=False)  # fmt: skip
    out.print(format_top_ops(report), markup=False, highlight=False)


class _Watch:
    """The reporter, noting whether training got as far as a compiled step (else a failure leaves no run)."""

    def __init__(self, reporter, *, created):
        self.reporter, self.created, self.compiled = reporter, created, False

    def __call__(self, event) -> None:
        from cnncli.train.events import Compiled, StepEnd

        if isinstance(event, Compiled | StepEnd):
            self.compiled = True
        self.reporter(event)

    def close(self) -> None:
        self.reporter.close()


class _Quiet:
    """The reporter of processes other than 0: they train but print nothing."""

    def __call__(self, event) -> None:
        pass

    def close(self) -> None:
        pass


def _reporter(json_mode: bool):
    from cnncli.report.train import JsonReporter, RichReporter

    return JsonReporter() if json_mode else RichReporter()


def _check_coordinator(text: str | None) -> None:
    """``--coordinator HOST:PORT``: a host and a port 1..65535, else a usage error (exit 2)."""
    if text is None:
        return
    host, _, port = text.strip().rpartition(":")
    if host.strip("[]") and port.isascii() and port.isdigit() and 0 < int(port) < 65536:
        return
    raise UsageError(f"--coordinator {text!r}: expected HOST:PORT, the port a number 1..65535",
                     hint="e.g. --coordinator 10.0.0.1:1234 (process 0's address)")  # fmt: skip


def _resume_arg(text: str | None, workdir: Path | None) -> str | int | None:
    """``latest`` or a step number; anything else, or no --workdir, is a usage error (exit 2)."""
    from cnncli.errors import UsageError

    if text is None:
        return None
    if workdir is None:
        raise UsageError("--resume-from needs --workdir: the run directory to resume", hint="e.g. --workdir runs/quickstart")
    text = text.strip().lower()
    if text == "latest":
        return text
    if text.isascii() and text.isdigit():  # not `²`: isdigit takes it, int refuses it
        return int(text)
    raise UsageError(f"--resume-from {text!r}: expected latest or a step number", hint="e.g. --resume-from 440")


def _abort(workdir: Path, again: str | None = None, *, message: str | None = None, hint: str | None = None) -> None:
    """Exit 130 at once: `sys.exit` would first wait for a background save's threads."""
    import os
    import sys

    from cnncli.errors import CnnCliError
    from cnncli.report.console import print_error

    again = again or f"resume with: cnncli train RECIPE --workdir {workdir}"
    print_error(CnnCliError(
        message or "interrupted twice: aborted without waiting for the checkpoint being written",
        hint=hint or f"the last committed checkpoint is kept; {again}",
    ))  # fmt: skip
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)  # the uncommitted directory it leaves is ignored and reported by the next run
