"""What a run logs to TensorBoard, and when: the loop's side of `cnncli.runs.tensorboard`.

Tags, all against the global step (completed updates; a resumed run continues them):

- every log interval (`StepEnd`, ``train.log_every``): ``train/loss`` and
  ``train/accuracy`` (the epoch's running means up to that step, as the progress bar
  shows them; at an epoch's last step they are ``metrics.jsonl``'s ``train_loss`` and
  ``train_accuracy``), ``train/learning_rate`` (of that step's update) and
  ``train/images_per_second``;
- each evaluated epoch (`EpochEnd`, the ``metrics.jsonl`` record): ``eval/loss``,
  ``eval/accuracy``, and with ``train.ema_decay`` ``eval/ema_loss``, ``eval/ema_accuracy``;
- at the end (`RunFinished`, the summary): ``final/eval_accuracy``, ``final/eval_loss``,
  ``final/train_loss``, ``final/best_eval_accuracy`` (and ``final/ema_eval_accuracy``), and
  the HParams session's end; the hyperparameters (the resolved recipe, flattened by
  `flatten_hparams`) are written when the run starts, so a run in progress has its row;
- with ``train.tb_images``, at each evaluated epoch: ``images/filters`` (the first conv's
  kernels, drawn as ``inspect-filters`` draws them) and ``images/confusion`` (the eval
  split's confusion matrix under the current weights, not the EMA; one more forward
  pass over the eval split per evaluated epoch).

The scalars are the numbers the loop already reads for its events (`Board` listens to
the same `StepEnd`, `EpochEnd` and `RunFinished` the reporter gets), so logging adds no
device read to training. Only process 0 writes; the images are computed on every
process (on a mesh the confusion pass is a collective). A write failure becomes one
`RunWarning` and training goes on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from cnncli.models.apply import apply_model, preprocess, xla_options
from cnncli.runs.tensorboard import EventLog, flatten_hparams
from cnncli.runtime.distributed import host, is_main_process
from cnncli.train.events import EpochEnd, Event, RunFinished, RunWarning, StepEnd
from cnncli.train.resume import Start
from cnncli.train.session import Session, eval_batches

EPOCH_TAGS = {"eval_loss": "eval/loss", "eval_accuracy": "eval/accuracy",
              "ema_eval_loss": "eval/ema_loss", "ema_eval_accuracy": "eval/ema_accuracy"}  # fmt: skip
FINAL_TAGS = {key: f"final/{key}" for key in
              ("eval_accuracy", "eval_loss", "train_loss", "best_eval_accuracy", "ema_eval_accuracy")}  # fmt: skip


class Board:
    """A run's TensorBoard logging (see the module docstring); every call is a no-op when it is off."""

    def __init__(self, sess: Session, start: Start, emit: Callable[[Event], None], *, active: bool = True) -> None:
        """Open ``tb/`` for an invocation that trains from ``start``; ``active=False``: nothing to train, log nothing.

        ``emit`` receives the `RunWarning` of a write failure.
        """
        cfg = sess.recipe.train
        on = active and cfg.tensorboard
        self.sess = sess
        self.warnings: list[str] = []  # for the summary's "warnings"
        self._emit = emit
        self.log = None
        if on and is_main_process():
            first_step = (start.resumed.step if start.resumed else 0) + 1
            self.log = EventLog(sess.workdir, first_step, self._warn, fsync=cfg.fsync)
            self.log.hparams(flatten_hparams(sess.recipe.to_dict()), step=first_step - 1)
        self.images = _Images(sess) if on and cfg.tb_images else None

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        self._emit(RunWarning(message))

    def listening(self, emit: Callable[[Event], None]) -> Callable[[Event], None]:
        """``emit``, with this board seeing each event first."""

        def both(event: Event) -> None:
            self(event)
            emit(event)

        return both if self.log is not None else emit

    def __call__(self, event: Event) -> None:
        log = self.log
        if log is None:
            return
        if isinstance(event, StepEnd):
            log.scalars(event.step, {"train/loss": event.loss, "train/accuracy": event.accuracy,
                                     "train/learning_rate": event.learning_rate,
                                     "train/images_per_second": event.images_per_second})  # fmt: skip
            log.maybe_flush()
        elif isinstance(event, EpochEnd):
            r = event.record
            log.scalars(r["step"], {tag: r[key] for key, tag in EPOCH_TAGS.items() if r.get(key) is not None})
        elif isinstance(event, RunFinished):
            s = event.summary
            log.scalars(s["steps"], {tag: s[key] for key, tag in FINAL_TAGS.items() if s.get(key) is not None})
            log.session_end(s["steps"])
            self.close()

    def before_save(self) -> None:
        """Hand what was logged so far to the operating system: called before a checkpoint is written."""
        if self.log is not None:
            self.log.flush()

    def epoch_images(self, state, step: int) -> None:
        """With ``train.tb_images``: the first conv's filters and the eval confusion matrix at ``step``."""
        if self.images is None:
            return
        pictures = self.images.draw(state, step, write=self.log is not None and not self.log.failed)
        if pictures:
            self.log.images(step, pictures)
            self.log.flush()

    def close(self) -> None:
        if self.log is not None:
            self.log.close()


class _Images:
    """The pictures of ``train.tb_images``: the first conv's filters and the eval confusion matrix."""

    def __init__(self, sess: Session) -> None:
        self.sess = sess
        self.conv = _first_conv(sess)  # (name, path of its kernel) or None: no conv layer
        self._counts = None  # the jitted confusion-count pass, compiled on first use

    def draw(self, state, step: int, *, write: bool) -> dict:
        """``{tag: PIL image}``; the confusion pass runs on every process, the drawing only where ``write``."""
        from cnncli.pictures.figures import confusion_image, filter_grid_image
        from cnncli.pictures.kernels import filter_grid

        confusion = self._confusion(state)
        if not write:
            return {}
        pictures = {}
        if self.conv is not None:
            name, path = self.conv
            pictures["images/filters"] = filter_grid_image(filter_grid(_lookup(state, path), layer=name))
        names = list(self.sess.data.class_names)
        names += [str(i) for i in range(len(names), len(confusion))]
        accuracy = np.trace(confusion) / max(confusion.sum(), 1)
        title = (f"eval confusion at step {step}: accuracy {100 * accuracy:.1f}% of {int(confusion.sum())}; "
                 "colour = fraction of the true class")  # fmt: skip
        pictures["images/confusion"] = confusion_image(confusion, names, title=title)
        return pictures

    def _confusion(self, state) -> np.ndarray:
        """Counts ``[true, predicted]`` over the eval split under ``state.params`` (int64)."""
        if self._counts is None:
            graphdef = self.sess.blueprint.parts.eval_graphdef
            cfg = dataclasses.replace(self.sess.blueprint.config, conv_backend="xla")  # as evaluation's eval_step
            k = cfg.num_classes

            def counts(params, rest, x, y, mask):
                logits = apply_model(graphdef, params, rest, preprocess(x, cfg), cfg)[0]
                predicted = jax.nn.one_hot(jnp.argmax(logits, -1), k)
                return (jax.nn.one_hot(y, k) * mask[:, None]).T @ predicted

            self._counts = jax.jit(counts, compiler_options=xla_options(cfg.conv_backend))
        total = 0
        for x, y, mask in eval_batches(self.sess):
            total = total + np.asarray(host(self._counts(state.params, state.rest, x, y, mask)), np.float64)
        return np.rint(total).astype(np.int64)


def _first_conv(sess: Session) -> tuple[str, tuple[str, ...]] | None:
    """The first conv of the model in layer order: its name and the path of its kernel in the state."""
    from flax import nnx

    def shapes(tree):  # the structure only: no buffer is touched (the state's are donated to the train step)
        return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)

    parts = sess.blueprint.parts
    convs = nnx.merge(parts.graphdef, shapes(parts.params), shapes(parts.rest)).conv_layers()
    if not convs:
        return None
    name = convs[0][0]
    return name, (*name.split("."), "kernel")


def _lookup(state, path: tuple[str, ...]) -> np.ndarray:
    """A parameter by path: trainable (``state.params``) or frozen (``state.rest``), as host numpy."""
    for tree in (state.params, state.rest):
        node = tree
        try:
            for key in path:
                node = node[key]
        except KeyError:
            continue
        return np.asarray(host(node[...]), np.float32)
    raise KeyError(".".join(path))
