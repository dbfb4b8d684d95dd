"""Everything a training run is built from, assembled once: the `Session`.

recipe -> data (on the device), model (split into graph + state), optimizer and
schedule, compiled steps, the run directory and its checkpoints. Also the fresh or
resumed initial state, and the SIGINT/SIGTERM handling that lets a run stop after the
current step, save, and exit 130/143.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cnncli.config.recipe import Recipe
from cnncli.data.base import Dataset, load_dataset
from cnncli.errors import CheckpointError, CnnCliError, RecipeError
from cnncli.models.build import build_model, model_specs  # noqa: F401 (re-exported)
from cnncli.runs import layout as rundir
from cnncli.runs.checkpoint import Checkpoints, flat_tree, state_nbytes, to_tree
from cnncli.runs.checkpoint_fs import committed_steps
from cnncli.runtime import distributed

# Fields whose change alters the training trajectory: resuming across them is refused.
TRAJECTORY_FIELDS = ("data", "model", "optimizer", "schedule", "train.seed", "train.epochs", "train.steps",
                     "train.label_smoothing", "train.ema_decay", "train.freeze", "train.precision")  # fmt: skip


class Interrupted(CnnCliError):
    """Training was stopped by SIGINT/SIGTERM after saving a checkpoint."""

    def __init__(self, message: str, exit_code: int, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.exit_code = exit_code


def _diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    lines = []
    for key in sorted(set(old) | set(new)):
        path = f"{prefix}{key}"
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            lines += _diff(a, b, path + ".")
        elif a != b and any(path == f or path.startswith(f + ".") for f in TRAJECTORY_FIELDS):
            lines.append(f"  {path}: {json.dumps(a)} -> {json.dumps(b)}")
    return lines


@dataclass
class Session:
    recipe: Recipe
    workdir: Path
    data: Dataset
    checkpoints: Checkpoints
    env: dict[str, Any]
    steps_per_epoch: int
    total_steps: int
    epochs: int
    allow_recipe_change: bool = False
    resume_from: str | int | None = None  # None: the newest checkpoint if any; else it must exist
    compile_seconds: float = 0.0
    resumed: tuple[int, int, int, float] | None = None  # (step, epoch, index, learning rate)
    warnings: list[str] = field(default_factory=list)  # for the reporter to show; the library never prints
    placement: distributed.Placement | None = None  # the device mesh, from `place_run` (build_session sets it)
    conv_backend: str = "xla"  # the train step's, resolved (`resolve_conv_backend`: never "auto")
    notes: list[str] = field(default_factory=list)  # informational lines for the reporter (not warnings)
    _signal: int | None = None
    _old_handlers: dict = field(default_factory=dict)

    # ---------------------------------------------------------------- set-up
    def setup_model(self) -> None:
        from cnncli.models.apply import StepConfig, trainable_filter
        from cnncli.train import optim
        from cnncli.train.step import make_eval_step, make_train_step

        seed = self.recipe.train.seed
        model, self.specs = build_model(self.recipe, self.data.input_shape, self.num_classes)
        self.split_filters = (trainable_filter(self.recipe.train.freeze), ...)
        model.train()
        self.graphdef, params, rest = nnx.split(model, *self.split_filters)
        model.eval()
        self.eval_graphdef = nnx.split(model, *self.split_filters)[0]
        self._init_params = to_tree(nnx.state(model, nnx.Param))
        self.num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
        self.num_trainable = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
        if self.num_trainable == 0:
            raise RecipeError(f"train.freeze = {self.recipe.train.freeze} freezes every parameter; nothing to train")
        self.schedule = optim.make_schedule(self.recipe.schedule, self.recipe.optimizer.learning_rate,
                                            self.steps_per_epoch, self.total_steps)  # fmt: skip
        self.tx = optim.make_optimizer(self.recipe.optimizer, self.schedule)
        place = self.placement
        cfg = StepConfig(
            num_classes=self.num_classes, mean=tuple(self.data.mean), std=tuple(self.data.std),
            batch_size=self.recipe.data.batch_size, label_smoothing=self.recipe.train.label_smoothing,
            ema_decay=self.recipe.train.ema_decay,
            compute_dtype=jnp.bfloat16 if self.recipe.train.precision == "bf16" else jnp.float32,
            batch_sharding=place.batch_sharding(), conv_backend=self.conv_backend,
        )  # fmt: skip
        self.step_config = cfg
        self.augment = _make_augment(self.recipe, self.data)
        self._make_step = lambda shardings: make_train_step(
            self.graphdef, self.split_filters, self.tx, cfg, self.augment, state_shardings=shardings
        )
        # Evaluation keeps XLA's convolutions, as `cnncli eval` does: the same numbers in both.
        self.eval_step = make_eval_step(self.eval_graphdef, dataclasses.replace(cfg, conv_backend="xla"))
        root = jax.random.key(seed)
        self.shuffle_key = jax.random.fold_in(root, 1)
        self.augment_key = place.replicate(jax.random.fold_in(root, 2))
        self._init = (params, rest)
        self.x_train = place.replicate(self.data.train.x)  # the whole training set, on every device
        self.y_train = place.replicate(self.data.train.y)
        n = self.data.train.x.shape[0]
        perm = lambda key, epoch: jax.random.permutation(jax.random.fold_in(key, epoch), n).astype(jnp.int32)  # noqa: E731
        self._perm = jax.jit(perm, out_shardings=distributed.replicated(place.mesh)) if place.multi else jax.jit(perm)

    @property
    def num_classes(self) -> int:
        return self.recipe.model.num_classes or self.data.num_classes

    @property
    def batch_size(self) -> int:
        return self.recipe.data.batch_size

    @property
    def eval_batch_size(self) -> int:
        size = min(self.recipe.data.eval_batch_size, max(self.data.eval.x.shape[0], 1))
        n = self.placement.data_size
        return -(-size // n) * n  # a multiple of the data axis: eval batches split evenly too

    @property
    def devices(self) -> list[str]:
        return [str(d) for d in self.placement.mesh.devices.flat]

    def index_arg(self, index: int):
        """The step's position argument (replicated over processes when there are several)."""
        return self.placement.scalar(index)

    def eval_args(self, x, y, mask):
        """An eval batch placed for the eval step (split over the data axis on a mesh)."""
        return tuple(self.placement.split_batch(a) for a in (x, y, mask))

    def zero_sums(self):
        from cnncli.train.step import zero_sums

        return zero_sums()

    def batches(self, n, bs):
        from cnncli.data.batching import batches

        return batches(n, bs)

    def pad(self, x, y, bs):
        from cnncli.data.batching import pad_batch

        return pad_batch(x, y, bs)

    def permutation(self, epoch: int):
        """The training-set order of an epoch: a function of (seed, epoch) only."""
        return self._perm(self.shuffle_key, epoch)

    def fresh_state(self):
        from cnncli.train.step import fresh_state

        params, rest = self._init
        return fresh_state(params, rest, self.tx, ema=self.recipe.train.ema_decay is not None)

    def compile(self, state) -> None:
        """Compile the train step ahead of time (timed), so the loop never recompiles."""
        t0 = time.perf_counter()
        self._jit_train_step = self._make_step(self.state_shardings)
        args = (state, self.x_train, self.y_train, self.permutation(0), self.index_arg(0), self.augment_key)
        self.train_step = self._jit_train_step.lower(*args).compile()
        self.compile_seconds = time.perf_counter() - t0

    def place(self, state):
        """Lay the state out on the mesh (a no-op on one device); remember its shardings."""
        state, self.state_shardings = self.placement.place_state(state)
        return state

    # ------------------------------------------------------------- resuming
    def initial_state(self):
        """(state, epoch, index): fresh, or restored from a committed checkpoint.

        The newest committed step by default; with ``resume_from`` that step (or
        ``latest``), which must exist: a missing or damaged checkpoint is an error, never
        a fresh start. Resuming from an older step sets the newer ones aside. Records of
        ``metrics.jsonl`` past the restored position are dropped, so each epoch appears
        once.
        """
        state = self.fresh_state()
        self._preflight(state)
        step = self.checkpoints.latest() if self.resume_from is None else self.checkpoints.resolve(self.resume_from)
        if step is None:
            if distributed.is_main_process():
                np.savez(self.workdir / rundir.INIT, **flat_tree(self._init_params))  # step-0 weights, for --compare-init
                rundir.keep_metrics(self.workdir, step=0, epoch=0)  # a run killed before its first checkpoint
            return self.place(state), 0, 0
        self._check_recipe_unchanged()
        state, meta = self.checkpoints.restore(step, state)
        state = jax.tree.map(jnp.asarray, state)
        if int(state.step) != step or int(meta["step"]) != step:
            where = self.checkpoints.directory / str(step)
            raise CheckpointError(f"checkpoint {where} holds step {int(state.step)}, not {step}")
        newer = [s for s in self.checkpoints.steps() if s > step]
        if newer and distributed.is_main_process():
            where = self.checkpoints.set_aside(newer)
            self.warnings.append(f"resuming from step {step}: moved the newer checkpoints {newer} to {where}")
        epoch, index = int(meta["epoch"]), int(meta["index"])
        if distributed.is_main_process():
            rundir.keep_metrics(self.workdir, step=step, epoch=epoch)
            if self.allow_recipe_change:
                rundir.write_json(self.workdir / rundir.RECIPE_JSON, self.recipe.to_dict())  # what eval rebuilds
        self.resumed = (step, epoch, index, float(self.schedule(step)))
        return self.place(state), epoch, index

    def _preflight(self, state) -> None:
        self.warnings.extend(self.checkpoints.warnings)
        if warning := self.checkpoints.disk_warning(state_nbytes(state)):
            self.warnings.append(warning)

    def _check_recipe_unchanged(self) -> None:
        saved_path = self.workdir / rundir.RECIPE_JSON
        if not saved_path.exists() or self.allow_recipe_change:
            return
        saved = json.loads(saved_path.read_text())
        lines = _diff(saved, self.recipe.to_dict())
        if lines:
            raise CheckpointError(
                f"{self.workdir} holds a run of a different recipe; resuming would change its trajectory:\n"
                + "\n".join(lines),
                hint="resume with the original recipe, pass --allow-recipe-change, or use a new --workdir",
            )

    def started_event(self, state, epoch):
        from cnncli.train.loop import RunStarted

        resumed = self.resumed or (None, None, None, None)
        return RunStarted(
            workdir=self.workdir, num_params=self.num_params, steps_per_epoch=self.steps_per_epoch,
            total_steps=self.total_steps, epochs=self.epochs, devices=self.devices,
            input_shape=self.data.input_shape, num_classes=self.num_classes,
            num_train=int(self.data.train.x.shape[0]),
            resumed_step=resumed[0], resumed_epoch=resumed[1], resumed_index=resumed[2], resumed_lr=resumed[3],
            warnings=tuple(self.warnings), notes=tuple(self.notes),
        )  # fmt: skip

    def resumed_from(self) -> dict[str, Any] | None:
        """Where this run resumed (step, epoch, index, learning rate), for the summary; None if fresh."""
        if self.resumed is None:
            return None
        return dict(zip(("step", "epoch", "index", "learning_rate"), self.resumed))

    # -------------------------------------------------------------- signals
    def install_signal_handlers(self) -> None:
        """SIGINT/SIGTERM: stop after the current step (the loop saves); a second SIGINT aborts."""

        def handler(signum, frame):
            if self._signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt  # second Ctrl-C: abort at once, without waiting for a save
            self._signal = signum

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old_handlers[sig] = signal.signal(sig, handler)
            except ValueError:  # not the main thread (e.g. inside a test runner thread)
                pass

    def should_stop(self) -> bool:
        return self._signal is not None

    def raise_interrupted(self) -> None:
        """Wait for the checkpoint just saved, then raise `Interrupted` (exit 130 or 143)."""
        self.checkpoints.wait()
        step = self.checkpoints.latest()
        code = 130 if self._signal == signal.SIGINT else 143  # 128 + the signal number, as shells do
        name = "SIGINT" if self._signal == signal.SIGINT else "SIGTERM"
        raise Interrupted(
            f"{name}: stopped after step {step}; checkpoint saved in {self.checkpoints.directory / str(step)}",
            exit_code=code,
            hint=f"resume with: cnncli train RECIPE --workdir {self.workdir}",
        )

    def _restore_handlers(self) -> None:
        for sig, old in self._old_handlers.items():
            signal.signal(sig, old)
        self._old_handlers.clear()

    def close(self) -> None:
        """Restore the signal handlers; wait for the last save. Raises its failure."""
        self._restore_handlers()
        self.checkpoints.close()

    def close_after(self, error: BaseException) -> None:
        """Close while ``error`` propagates: never mask it, never lose a save failure either.

        A second Ctrl-C (`KeyboardInterrupt`) does not wait for a background save; the
        uncommitted directory it leaves is ignored and reported by the next run.
        """
        self._restore_handlers()
        if isinstance(error, KeyboardInterrupt):
            self.checkpoints.abandon()
            return
        try:
            self.checkpoints.close()
        except CheckpointError as failure:
            if failure is error:
                return
            if isinstance(error, CnnCliError):
                error.message += f"\nalso: {failure.message}"
            else:
                error.add_note(f"also: {failure.message}")


def _make_augment(recipe: Recipe, data: Dataset):
    if not recipe.data.augment:
        return None
    try:
        from cnncli.data.augment.core import make_augment
    except ImportError:
        raise RecipeError("data.augment: augmentation is not available in this version") from None
    return make_augment(recipe.data.augment, data)


def place_run(recipe: Recipe) -> distributed.Placement:
    """The run's device mesh, checked against the recipe (before anything is written).

    Raises:
        RecipeError: the mesh needs more or fewer devices than JAX sees, the batch does not
            split over the data axis (names the nearest sizes), or ``conv_backend =
            "onednn"`` on a mesh of several devices.
    """
    mesh = recipe.train.mesh
    placement = distributed.Placement(mesh.data, mesh.model)
    if placement.multi:
        distributed.check_batch(recipe.data.batch_size, placement.mesh)
        if recipe.train.conv_backend == "onednn":
            raise RecipeError(
                f"train.conv_backend = {recipe.train.conv_backend!r} runs on one device, but this run's mesh has "
                f"{placement.mesh.size} ({placement.describe()})",
                hint='set train.conv_backend = "xla" or "auto" to train on several devices (or make one device visible)',
            )
    return placement


def resolve_conv_backend(recipe: Recipe, placement: distributed.Placement,
                         before_build: Callable[[Path], None] | None = None) -> tuple[str, str | None]:  # fmt: skip
    """The conv backend this run uses, and why, where ``auto`` chose (else None).

    Fails before anything is written if the recipe asks for one that cannot run here.
    ``before_build(cache_dir)`` is called when loading oneDNN will first compile the
    extension (seconds, once per machine).

    Raises:
        RecipeError: ``onednn`` on a non-CPU backend.
        OneDNNUnavailable: ``onednn`` asked for, and oneDNN, its headers or g++ is
            missing (builds the extension on first use; a few seconds).
    """
    asked = recipe.train.conv_backend
    if asked == "xla":
        return "xla", None
    platform = jax.default_backend()
    if asked == "onednn" and platform != "cpu":
        raise RecipeError(
            f"train.conv_backend = 'onednn' is for the CPU, but JAX runs on {platform}",
            hint='drop train.conv_backend (default "xla") or use "auto": XLA\'s own kernels are the fast ones there',
        )
    from cnncli.native import onednn

    def load() -> str:
        if before_build is not None and onednn.needs_build():
            before_build(onednn.cache_dir())
        return onednn.load()

    if asked == "onednn":
        load()
        return "onednn", None
    # auto: the choice and its reason, one form for every case
    if platform != "cpu":
        return "xla", f"conv_backend auto: xla (JAX runs on {platform}, where XLA's own kernels are the fast ones)"
    if placement.multi:
        return "xla", f"conv_backend auto: xla (oneDNN runs on one device; this mesh has {placement.mesh.size})"
    try:
        version = load()
    except onednn.OneDNNUnavailable as err:
        reason = err.message.splitlines()[0]  # a failed build carries the compiler's output below
        fix = err.hint or "install the onednn extra: uv sync --extra onednn"
        return "xla", f"conv_backend auto: xla (oneDNN is not usable here: {reason}; to use it: {fix})"
    return "onednn", f"conv_backend auto: onednn (one CPU device, oneDNN {version})"


def build_session(recipe: Recipe, workdir: Path, *, recipe_text: str | None = None, recipe_suffix: str = ".toml",
                  allow_recipe_change: bool = False, resume_from: str | int | None = None,
                  on_event: Callable | None = None) -> Session:  # fmt: skip
    """Load the data, build the model and steps, and open the run directory.

    ``on_event`` receives `cnncli.train.loop.ExtensionBuild` before a first build of the
    oneDNN extension (the other events come from `cnncli.train.loop.fit`).

    Raises:
        CheckpointError: ``resume_from`` names no committed checkpoint (checked before
            anything is written).
    """
    from cnncli.runtime.jaxsetup import configure
    from cnncli.train.loop import ExtensionBuild, steps_for

    configure()  # host malloc and the compile cache, before this process's first JAX call starts XLA's threads
    if resume_from is not None and not committed_steps(workdir / rundir.CHECKPOINTS):
        raise CheckpointError(
            f"--resume-from {resume_from}: no committed checkpoint in {workdir / rundir.CHECKPOINTS}",
            hint="check --workdir, or drop --resume-from to start a fresh run",
        )
    placement = place_run(recipe)  # the clearer error first: several devices, whatever the backend
    before_build = (lambda cache_dir: on_event(ExtensionBuild(cache_dir))) if on_event else None
    conv_backend, conv_note = resolve_conv_backend(recipe, placement, before_build)
    with warnings.catch_warnings(record=True) as caught:  # skipped image files and kin
        warnings.simplefilter("always", UserWarning)
        data = load_dataset(recipe.data)
    spe, total, epochs = steps_for(recipe, int(data.train.x.shape[0]))
    fresh = not committed_steps(workdir / rundir.CHECKPOINTS)
    main = distributed.is_main_process()  # only process 0 writes the run directory
    if main:
        rundir.prepare_workdir(workdir, recipe, recipe_text, recipe_suffix, fresh)
        rundir.write_json(workdir / rundir.DATA_JSON, data.meta() | {"num_classes": recipe.model.num_classes or data.num_classes})
    env = rundir.environment([str(d) for d in jax.devices()], recipe.train.seed)
    checkpoints = Checkpoints(workdir / rundir.CHECKPOINTS, keep=recipe.train.keep, fsync=recipe.train.fsync,
                              writer=main)  # fmt: skip
    sess = Session(recipe, workdir, data, checkpoints, env, spe, total, epochs, allow_recipe_change, resume_from,
                   placement=placement, conv_backend=conv_backend)  # fmt: skip
    env["conv_backend"] = conv_backend
    if conv_note:  # shown on a terminal; kept in env.json for scripts and later questions
        sess.notes.append(conv_note)
        env["conv_backend_note"] = conv_note
    sess.warnings.extend(str(w.message) for w in caught if issubclass(w.category, UserWarning))
    try:
        sess.setup_model()
        env["mesh"] = sess.placement.describe()
        if main:
            rundir.write_json(workdir / rundir.ENV_JSON, env)
    except Exception:
        checkpoints.close()
        if fresh and not any((workdir / rundir.CHECKPOINTS).iterdir()):
            shutil.rmtree(workdir / rundir.CHECKPOINTS, ignore_errors=True)
        raise
    sess.install_signal_handlers()
    return sess
