"""Printing for ``cnncli train``: a rich progress display, or JSON lines for scripts.

Human mode (stdout is a terminal, no ``--json``): a progress bar on stderr (step,
epoch, loss, accuracy, images/s, ETA), one table row per epoch, a summary at the end.
JSON mode: one object per epoch on stdout and a final object with the summary;
nothing else on stdout.
"""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from cnncli.report.console import fitted, print_json, stderr_console, stdout_console, warn
from cnncli.train.events import (
    CheckpointSaved,
    Compiled,
    EpochEnd,
    ExtensionBuild,
    RunFinished,
    RunStarted,
    RunWarning,
    StepEnd,
)


def _fmt(value: Any, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


class JsonReporter:
    """JSON lines on stdout: one per epoch, then the summary; warnings on stderr."""

    def __call__(self, event) -> None:
        if isinstance(event, RunStarted):
            for message in event.warnings:
                warn(message)
        elif isinstance(event, EpochEnd):
            print_json({"event": "epoch", **event.record})
        elif isinstance(event, RunWarning):
            warn(event.message)
        elif isinstance(event, RunFinished):
            print_json({"event": "summary", **event.summary})

    def close(self) -> None:
        pass


class RichReporter:
    """Progress bar on stderr, epoch rows and the summary for a human at a terminal."""

    def __init__(self) -> None:
        self.err = stderr_console()
        self.out = stdout_console()
        self.progress: Progress | None = None
        self.task = None

    def _start(self, event: RunStarted) -> None:
        shape = "x".join(map(str, event.input_shape))
        self.err.print(
            f"[bold]training[/] {event.num_params:,} parameters on {', '.join(event.devices)}: "
            f"{event.num_train:,} images of {shape}, {event.num_classes} classes, "
            f"{event.epochs} epochs x {event.steps_per_epoch} steps -> {event.workdir}",
            highlight=False,
        )
        for message in event.notes:
            self.err.print(f"[dim]{escape(message)}[/]", highlight=False, soft_wrap=True)
        for message in event.warnings:
            warn(message)
        if event.resumed_step is not None:
            where = resume_position(event.resumed_step, event.resumed_epoch, event.resumed_index, event.resumed_lr)
            self.err.print(f"[yellow]resuming[/] from {where}", highlight=False)
            if event.resumed_step >= event.total_steps:
                self.err.print(f"the run already finished its {event.total_steps} steps: nothing left to train "
                               "(to go on, raise train.epochs or train.steps and add --allow-recipe-change)",
                               highlight=False)  # fmt: skip
        self.progress = Progress(
            TextColumn("[bold blue]epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]} acc {task.fields[acc]} {task.fields[speed]} img/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.err,
            transient=True,
        )
        self.progress.start()
        done = event.resumed_step or 0
        self.task = self.progress.add_task(
            "train", total=event.total_steps, completed=done, epoch=min((event.resumed_epoch or 0) + 1, event.epochs),
            epochs=event.epochs, loss="-", acc="-", speed="-",
        )  # fmt: skip

    def __call__(self, event) -> None:
        if isinstance(event, ExtensionBuild):
            self.err.print(f"compiling cnncli's oneDNN extension (first use only; 5-20 s, then cached in "
                           f"{event.cache_dir})", highlight=False, soft_wrap=True)  # fmt: skip
        elif isinstance(event, RunStarted):
            self._start(event)
        elif isinstance(event, Compiled):
            self.err.print(f"compiled the train step in {event.seconds:.2f} s", highlight=False)
        elif isinstance(event, StepEnd) and self.progress is not None:
            self.progress.update(
                self.task, completed=event.step, epoch=event.epoch, loss=f"{event.loss:.4f}",
                acc=f"{event.accuracy:.3f}", speed=f"{event.images_per_second:,.0f}",
            )  # fmt: skip
        elif isinstance(event, EpochEnd):
            r = event.record
            ema = f"  ema {r['ema_eval_accuracy']:.4f}" if "ema_eval_accuracy" in r else ""
            self.err.print(
                f"epoch {r['epoch']:>3}  train loss {_fmt(r['train_loss'])} acc {_fmt(r['train_accuracy'])}  "
                f"eval loss {_fmt(r['eval_loss'])} acc {_fmt(r['eval_accuracy'])}{ema}  "
                f"lr {r['learning_rate']:.3g}  {r['images_per_second']:,.0f} img/s",
                highlight=False,
            )
        elif isinstance(event, CheckpointSaved):
            pass
        elif isinstance(event, RunWarning):
            self.err.print(f"[yellow]warning:[/] {escape(event.message)}", highlight=False, soft_wrap=True)
        elif isinstance(event, RunFinished):
            self.close()
            self.out.print(fitted(self.out, summary_table(event.summary)))  # a narrow terminal: key: value lines

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def resume_position(step: int, epoch: int, index: int, lr: float) -> str:
    """``step 30 (epoch 2 at batch 8, learning rate 0.01)`` or ``step 22 (end of epoch 1, ...)``."""
    where = f"epoch {epoch + 1} at batch {index}" if index else f"end of epoch {epoch}"
    return f"step {step} ({where}, learning rate {lr:.3g})"


def summary_table(summary: dict[str, Any]) -> Table:
    """The end-of-run summary as a two-column table."""
    table = Table(title="cnncli train", show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("eval accuracy", _fmt(summary.get("eval_accuracy"))),
        ("eval loss", _fmt(summary.get("eval_loss"))),
        ("best eval accuracy", f"{_fmt(summary.get('best_eval_accuracy'))} (epoch {summary.get('best_epoch')})"),
        ("train loss", _fmt(summary.get("train_loss"))),
        ("epochs / steps", f"{summary['epochs']} / {summary['steps']}"),
        ("train time", f"{summary['train_seconds']:.1f} s (compile {summary['compile_seconds']:.2f} s, not included)"),
        ("images/s", "- (no step trained in this invocation)" if summary["images_per_second"] is None
                     else f"{summary['images_per_second']:,.0f} (training only"
                     + ("; oneDNN convolutions)" if summary.get("conv_backend") == "onednn" else ")")),
        ("run directory", summary["workdir"]),
    ]
    if summary.get("resumed_from"):
        r = summary["resumed_from"]
        rows.append(("resumed from", resume_position(r["step"], r["epoch"], r["index"], r["learning_rate"])))
    if summary.get("ema_eval_accuracy") is not None:
        rows.insert(1, ("eval accuracy (EMA)", _fmt(summary["ema_eval_accuracy"])))
    if summary.get("stopped_early"):
        rows.append(("stopped early", "yes (train.early_stopping)"))
    for key, value in rows:
        table.add_row(key, value)
    return table
