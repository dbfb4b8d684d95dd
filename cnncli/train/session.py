"""Everything a training run is built from, assembled once: the `Session`.

recipe -> the device mesh and conv backend (`cnncli.train.devices`), the data (in
memory, or streamed from disk when it does not fit: `cnncli.data.stream.plan_pipeline`),
the run directory and its checkpoints, the seed streams and the training set on the
device (`cnncli.train.streams`) or its stream (`cnncli.train.stream_feed`), and the
model split into graph and state with its optimizer and step settings (a `Blueprint`,
what the `Program` compiles from).
`build_session` builds it in one phase and nothing in it changes while training: the
loop's own state is `cnncli.train.state.LoopState`, the resume point comes from
`cnncli.train.resume`, Ctrl-C handling from `cnncli.train.signals`.
"""

from __future__ import annotations

import shutil
import warnings
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import optax

from cnncli.config.plan import Steps, data_json, eval_batch_size, steps_for
from cnncli.config.recipe import Recipe
from cnncli.data.base import Dataset
from cnncli.data.batching import batches, pad_batch
from cnncli.data.sources import load_dataset
from cnncli.data.stream import PipelinePlan, StreamSplit, open_stream_dataset, plan_pipeline
from cnncli.errors import CheckpointError, RecipeError
from cnncli.models.apply import make_step_config
from cnncli.models.build import build_model
from cnncli.runs import layout as rundir
from cnncli.runs.checkpoint import Checkpoints
from cnncli.runs.checkpoint_fs import committed_steps
from cnncli.runtime import distributed
from cnncli.train import optim
from cnncli.train.devices import place_run, resolve_conv_backend
from cnncli.train.events import ExtensionBuild
from cnncli.train.plan import check_recipe
from cnncli.train.program import Blueprint, Program, build_program, split_model
from cnncli.train.stream_feed import StreamFeed, make_stream_feed
from cnncli.train.streams import Feed, SeedStreams, make_feed


@dataclass(frozen=True)
class Session:
    """A run, ready to train (see the module docstring)."""

    recipe: Recipe
    workdir: Path
    data: Dataset
    steps: Steps
    checkpoints: Checkpoints
    env: dict[str, Any]  # what env.json holds
    placement: distributed.Placement  # the device mesh, from `place_run`
    blueprint: Blueprint
    schedule: optax.Schedule  # the learning rate of each optimizer step
    streams: SeedStreams
    feed: Feed | None  # the training set on the device (None: streamed)
    warnings: tuple[str, ...] = ()  # for the reporter to show (skipped image files, ...); the library never prints
    notes: tuple[str, ...] = ()  # informational lines for the reporter (not warnings)
    stream: StreamFeed | None = None  # the training set read from disk by grain (None: in memory)
    pipeline: PipelinePlan | None = None  # which of the two, and why

    @property
    def conv_backend(self) -> str:
        """The train step's, resolved (`resolve_conv_backend`: never "auto")."""
        return self.blueprint.config.conv_backend

    @property
    def devices(self) -> list[str]:
        return [str(d) for d in self.placement.mesh.devices.flat]


def eval_batches(sess: Session) -> Iterator[tuple[Any, Any, Any]]:
    """The eval split as ``(x, y, mask)`` batches of one fixed size (the last padded), split over the mesh."""
    split = sess.data.eval
    size = eval_batch_size(sess.recipe, split.x.shape[0], sess.placement.data_size)
    if isinstance(split, StreamSplit):  # each process reads its rows; the batch comes back on the mesh
        yield from sess.stream.eval_batches(split, size)
        return
    for start, stop in batches(split.x.shape[0], size):
        batch = pad_batch(split.x[start:stop], split.y[start:stop], size)
        yield tuple(sess.placement.split_batch(a) for a in batch)  # split over the data axis on a mesh


def compile_program(sess: Session, state, shardings=None) -> Program:
    """Compile the session's train step for ``state`` (laid out with ``shardings``) and the loop's arguments."""
    feed = sess.feed
    if sess.stream is not None:
        sess.stream.order(0)  # compiles the permutation now, off the training clock, as feed.permutation(0) does below
    args = sess.stream.example_args() if sess.stream is not None else feed.args(feed.permutation(0), 0)
    return build_program(sess.blueprint, state, args, state_shardings=shardings)


def _make_augment(recipe: Recipe, data: Dataset):
    if not recipe.data.augment:
        return None
    from cnncli.data.augment.core import make_augment

    return make_augment(recipe.data.augment, data)


def _blueprint(recipe: Recipe, data: Dataset, facts: dict, steps: Steps, placement, conv_backend: str,
               batched: bool = False):  # fmt: skip
    """(blueprint, schedule): the model split, the optimizer and its schedule, the step settings."""
    model, _ = build_model(recipe, data.input_shape, facts["num_classes"])
    parts = split_model(model, recipe.train.freeze)
    if parts.num_trainable == 0:
        raise RecipeError(f"train.freeze = {recipe.train.freeze} freezes every parameter; nothing to train")
    schedule = optim.make_schedule(recipe.schedule, recipe.optimizer.learning_rate, steps.per_epoch, steps.total)
    cfg = make_step_config(
        facts, num_classes=facts["num_classes"], batch_size=recipe.data.batch_size, precision=recipe.train.precision,
        label_smoothing=recipe.train.label_smoothing, ema_decay=recipe.train.ema_decay,
        batch_sharding=placement.batch_sharding(), conv_backend=conv_backend,
    )  # fmt: skip
    tx = optim.make_optimizer(recipe.optimizer, schedule)
    return Blueprint(parts, tx, cfg, _make_augment(recipe, data), batched), schedule


def _load_data(recipe: Recipe, plan: PipelinePlan) -> tuple[Dataset, list[str]]:
    """The recipe's data (in memory, or opened for streaming), and the warnings loading it raised (skipped files)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        data = load_dataset(recipe.data) if plan.kind == "memory" else open_stream_dataset(recipe.data)
    notes = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    for split in (data.train, data.eval) if plan.kind == "stream" else ():
        if split.skipped:
            named = "; ".join(f"{p} ({why})" for p, why in split.skipped[:3])
            more = f"; and {len(split.skipped) - 3} more" if len(split.skipped) > 3 else ""
            notes.append(f"{split.where}: skipped {len(split.skipped)} files that could not be read: {named}{more} "
                         "(set data.strict = true to fail instead)")  # fmt: skip
    return data, notes


def build_session(recipe: Recipe, workdir: Path, **options) -> Session:
    """`_build_session` (``options`` are its keywords) in a run directory claimed first.

    Process 0 checks, creates and locks ``workdir`` (`cnncli.runs.layout.claim_workdir`:
    a second process training it fails at once, naming the holder) before anything is
    read or written. If building fails, a run that had trained no step is removed again
    (nothing half-written: the fixed recipe trains into the same name). The lock is
    released when the session is dropped, or by the kernel when the process ends.
    """
    claim = rundir.claim_workdir(Path(workdir), lock=distributed.is_main_process())
    try:
        sess = _build_session(recipe, Path(workdir), **options)
    except BaseException:
        claim.release(discard=True)
        raise
    weakref.finalize(sess, claim.release)
    return sess


def _build_session(recipe: Recipe, workdir: Path, *, recipe_text: str | None = None, recipe_suffix: str = ".toml",
                   resume_from: str | int | None = None, on_event: Callable | None = None) -> Session:  # fmt: skip
    """Load the data, open the run directory, build the model and its blueprint, put the data on the device.

    ``on_event`` receives `cnncli.train.events.ExtensionBuild` before a first build of
    the oneDNN extension (the other events come from `cnncli.train.loop.fit`).

    Raises:
        CheckpointError: ``resume_from`` is given but the run directory holds no committed
            checkpoint (checked before anything is written).
    """
    from cnncli.runtime.jaxsetup import configure

    configure()  # host malloc and the compile cache, before this process's first JAX call starts XLA's threads
    if resume_from is not None and not committed_steps(workdir / rundir.CHECKPOINTS):
        raise CheckpointError(
            f"--resume-from {resume_from}: no committed checkpoint in {workdir / rundir.CHECKPOINTS}",
            hint="check --workdir, or drop --resume-from to start a fresh run",
        )
    placement = place_run(recipe)  # the clearer error first: several devices, whatever the backend
    before_build = (lambda cache_dir: on_event(ExtensionBuild(cache_dir))) if on_event else None
    conv_backend, conv_note = resolve_conv_backend(recipe, placement, before_build)
    plan = plan_pipeline(recipe.data)
    data, data_warnings = _load_data(recipe, plan)
    check_recipe(recipe, tuple(data.input_shape), data.num_classes)  # every problem at once, before a file is written
    steps = steps_for(recipe, int(data.train.x.shape[0]))
    facts = data_json(recipe, data.meta(), data.num_classes)
    fresh = not committed_steps(workdir / rundir.CHECKPOINTS)
    main = distributed.is_main_process()  # only process 0 writes the run directory
    if main:
        rundir.prepare_workdir(workdir, recipe, recipe_text, recipe_suffix, fresh)
        rundir.write_json(workdir / rundir.DATA_JSON, facts)
    env = rundir.environment([str(d) for d in jax.devices()], recipe.train.seed)
    env["conv_backend"] = conv_backend
    env["data_pipeline"] = plan.to_dict()
    if conv_note:  # shown on a terminal; kept in env.json for scripts and later questions
        env["conv_backend_note"] = conv_note
    checkpoints = Checkpoints(workdir / rundir.CHECKPOINTS, keep=recipe.train.keep, fsync=recipe.train.fsync,
                              writer=main)  # fmt: skip
    try:
        blueprint, schedule = _blueprint(recipe, data, facts, steps, placement, conv_backend, plan.kind == "stream")
        streams = SeedStreams(recipe.train.seed)
        feed = make_feed(data, streams, placement) if plan.kind == "memory" else None
        stream = None if feed else make_stream_feed(data, streams, placement, recipe.data, steps.per_epoch, plan.workers,
                                                  facts["num_classes"], steps.epochs)
        env["mesh"] = placement.describe()
        if main:
            rundir.write_json(workdir / rundir.ENV_JSON, env)
    except Exception:
        checkpoints.close()
        if fresh and not any((workdir / rundir.CHECKPOINTS).iterdir()):
            shutil.rmtree(workdir / rundir.CHECKPOINTS, ignore_errors=True)
        raise
    return Session(recipe, workdir, data, steps, checkpoints, env, placement, blueprint, schedule, streams, feed,
                   tuple(data_warnings), (conv_note,) if conv_note else (), stream, plan)  # fmt: skip
