"""A run's evaluation data: a split loaded and checked against the run's input shape and classes.

`eval`, `inspect-filters` and `export` read their examples here (`load_eval_split`), so
they load and check data the same way. It sits below `cnncli.inspect` and
`cnncli.export`, which both use it and never import each other. Nothing here prints.
"""

from __future__ import annotations

import numpy as np

from cnncli.errors import DataError


def load_eval_split(run, split: str | None = None, source: str | None = None):
    """Load a split for a run, checking it matches the run's input shape and classes.

    Args:
        run: a `cnncli.runs.load.LoadedRun`.
        split: split name; default the recipe's ``data.eval_split``.
        source: data source (``digits``, ``npz:PATH``, ...); default the recipe's.

    Returns:
        ``(Split, split_name, source, warnings)``.

    Raises:
        DataError: the source's images or classes do not fit the run.
    """
    from cnncli.data.sources import load_split
    from cnncli.data.stream import StreamSplit, open_streamed, streams_split

    cfg = run.recipe.data
    split = split or cfg.eval_split
    source = source or cfg.source
    if source != cfg.source:
        cfg = cfg.model_copy(update={"source": source})
    data, names, _ = open_streamed(cfg, split) if streams_split(cfg, split) else load_split(source, split, cfg)
    streamed = isinstance(data, StreamSplit)  # over the budget: read in batches; labels checked as they come
    where = f"{source} [{split}]"
    shape = tuple(data.x.shape[1:])
    if shape != run.input_shape:
        raise DataError(
            f"{where}: examples have shape {_shape(shape)} but the run {run.workdir} "
            f"was trained on {_shape(run.input_shape)}",
            hint="evaluate on data with the same input shape (height x width x channels)",
        )
    check_classes(run, names, data.y if isinstance(data.y, np.ndarray) else np.zeros(0, np.int32), where)
    if not streamed:  # a NaN pixel or a negative label would be scored silently (a streamed split is not read here)
        from cnncli.data.checks import check_split

        check_split(data.x, data.y, run.num_classes, where)
    warnings = []
    trained = run.data.get("value_range")
    actual = (float(data.x.min()), float(data.x.max())) if data.x.size and not streamed else None
    if source != run.recipe.data.source and trained and actual and _scale_differs(actual, trained):
        warnings.append(
            f"{where}: raw values range over {_range(actual)} but the run trained on {_range(trained)}; "
            "inputs are normalized with the training statistics, so check the data's scale"
        )
    return data, split, source, warnings


def _scale_differs(new, trained) -> bool:
    """True when the raw value scales differ by more than 1.5x (0..255 vs 0..1 vs 0..16)."""
    span_new, span_old = float(new[1]) - float(new[0]), float(trained[1]) - float(trained[0])
    if span_old <= 0 or span_new <= 0:
        return False
    return not (1 / 1.5 <= span_new / span_old <= 1.5)


def _range(r) -> str:
    return f"{float(r[0]):g}..{float(r[1]):g}"


def check_classes(run, names: list[str], labels: np.ndarray, where: str) -> None:
    """Labels must index the run's classes; explicit class names must agree with its names."""
    trained = run.class_names
    if labels.size and int(labels.max()) >= run.num_classes:
        raise DataError(
            f"{where}: labels go up to {int(labels.max())} but the run has {run.num_classes} classes",
            hint="evaluate on data labelled with the run's classes: " + ", ".join(trained[:12]),
        )
    numeric = [str(i) for i in range(len(names))]
    if names != numeric and names != trained[: len(names)]:
        raise DataError(
            f"{where}: class names {names[:6]}{'...' if len(names) > 6 else ''} differ from the run's "
            f"{trained[:6]}{'...' if len(trained) > 6 else ''}",
            hint="the data must have the same classes, in the same order, as the training data",
        )


def _shape(shape) -> str:
    return "x".join(str(v) for v in shape)
