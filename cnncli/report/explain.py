"""``cnncli explain``: the maps' figures as a table (or one JSON object), the self-checks, previews."""

from __future__ import annotations

from typing import Any

from cnncli.report.console import fitted, print_json, stderr_console, stdout_console


def _fmt(v, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def explain_json(report) -> dict[str, Any]:
    """The ``--json`` object (keys pinned by tests/test_explain_cli.py)."""
    out = {
        "workdir": report.workdir,
        "checkpoint_step": report.checkpoint_step,
        "layer": report.layer,
        "layer_reason": report.layer_reason,
        "methods": [c.method for c in report.methods],
        "images": [
            {
                "input": img.input,
                "label": img.label,
                "predicted": img.predicted,
                "predicted_class": report.class_names[img.predicted],
                "probability": img.predicted_probability,
                "png": img.png,
                "note": img.note,
                "explanations": [
                    {"method": e.method, "class": e.class_name, "index": e.index, "probability": e.probability,
                     "peak": e.peak, "top10_share": e.top10_share, "map_file": e.map_file}
                    for e in img.explanations
                ],
            }
            for img in report.images
        ],
        "seconds": report.seconds,
        "compile_seconds": report.compile_seconds,
    }
    if report.checks:
        out["check"] = {c.method: check_json(c) for c in report.checks}
    return out


def check_json(c) -> dict[str, Any]:
    return {
        "result": "PASS" if c.passed else "FAIL",
        "rank_correlation": c.rank_correlation, "sanity": c.sanity, "randomized_layers": c.randomized_layers,
        "deletion_auc": c.deletion_auc, "insertion_auc": c.insertion_auc,
        "random_deletion_auc": c.random_deletion_auc, "random_insertion_auc": c.random_insertion_auc,
        "curves": c.curves, "completeness_error": c.completeness_error, "completeness": c.completeness,
    }  # fmt: skip


def print_explain(report, *, json_out: bool, previews: list | None = None, out_dir=None) -> None:
    """The maps' table (one row per image, target and method), previews, the checks; or one JSON object."""
    if json_out:
        print_json(explain_json(report))
        return
    from rich.markup import escape
    from rich.table import Table

    console = stdout_console()
    if report.layer:
        console.print(f"Grad-CAM layer: [bold]{escape(report.layer)}[/] ({escape(report.layer_reason or '')})")
    table = Table(title=f"explain {report.workdir} (step {report.checkpoint_step})", title_justify="left")
    for col in ("input", "method", "class", "prob", "peak", "top 10%"):
        table.add_column(col, justify="right" if col in ("prob", "top 10%") else "left")
    for img in report.images:
        for e in img.explanations:
            table.add_row(escape(img.input), e.method, escape(e.class_name), f"{e.probability:.3f}",
                          "-" if e.peak is None else ",".join(map(str, e.peak)), _fmt(e.top10_share, 2))  # fmt: skip
    console.print(fitted(console, table))
    for img in report.images:
        if img.note:
            console.print(f"{img.input}: {img.note}", markup=False, highlight=False)
    if any(e.peak is None for img in report.images for e in img.explanations):
        console.print("peak -: the map is zero everywhere (nothing in the input raises the class score)",
                      markup=False, highlight=False)  # fmt: skip
    for text in previews or []:
        console.print(text)
    if report.checks:
        print_checks(report.checks)
    if out_dir is not None:
        stderr_console().print(f"[dim]wrote PNGs:[/] {escape(str(out_dir))}", markup=True, highlight=False)


def print_checks(checks) -> None:
    """PASS/FAIL per method with its figures, and a plain sentence for each failure."""
    from rich.table import Table

    console = stdout_console()
    table = Table(title="self-check", title_justify="left")
    for col in ("method", "result", "rank corr.", "deletion", "(random)", "insertion", "(random)", "completeness"):
        table.add_column(col, justify="left" if col in ("method", "result") else "right")
    for c in checks:
        table.add_row(c.method, "PASS" if c.passed else "FAIL", _fmt(c.rank_correlation, 2), _fmt(c.deletion_auc),
                      _fmt(c.random_deletion_auc), _fmt(c.insertion_auc), _fmt(c.random_insertion_auc),
                      _fmt(c.completeness_error, 4))  # fmt: skip
    console.print(fitted(console, table))
    for line in check_sentences(checks):
        console.print(line, markup=False, highlight=False)


def check_sentences(checks) -> list[str]:
    """What each failure means, in words."""
    lines = []
    for c in checks:
        if c.rank_correlation is None:
            lines.append(
                f"{c.method} cannot take the model-randomization sanity test here: its maps are zero everywhere "
                "on these inputs, so they show nothing to compare; give other inputs or another method."
            )
        elif not c.sanity:
            lines.append(
                f"{c.method} fails the model-randomization sanity test on this model: its maps barely change "
                f"(rank correlation {c.rank_correlation:.2f}) when {', '.join(c.randomized_layers)} are "
                "re-initialized, so they show the input more than what the model learned."
            )
        if not c.curves:
            lines.append(
                f"{c.method}: its most attributed pixels separate the class no better than a random order "
                f"(insertion - deletion AUC {c.insertion_auc - c.deletion_auc:.3f}, random order "
                f"{c.random_insertion_auc - c.random_deletion_auc:.3f})."
            )
        if c.completeness is False:
            lines.append(
                f"{c.method}: the attributions miss f(x) - f(baseline) by {c.completeness_error:.2%}; "
                "raise --steps."
            )
    return lines


def print_split_summary(summary: dict, *, json_out: bool) -> None:
    """``--all``: where the maps and the manifest went, and the speed."""
    if json_out:
        print_json(summary)
        return
    rates = ", ".join(f"{m} {_fmt(v, 1)} images/s" for m, v in summary["images_per_second"].items())
    stdout_console().print(
        f"explained {summary['images']} images of {summary['split']}: maps in {summary['maps_dir']}, "
        f"one line per image in {summary['manifest']} ({rates})",
        markup=False, highlight=False,
    )  # fmt: skip
