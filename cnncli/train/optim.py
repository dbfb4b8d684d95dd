"""Optimizers and learning-rate schedules from a recipe, as one optax chain.

``clip -> optimizer(learning_rate=schedule)``, with weight decay applied only to
kernels (parameters of rank >= 2): biases and norm scales/offsets are not decayed.
Schedules are written in epochs in the recipe and converted to optimizer steps
here, so ``warmup_epochs = 1`` means one pass over the training set.
"""

from __future__ import annotations

import jax
import optax

from cnncli.config.recipe import OptimizerConfig, ScheduleConfig


def decay_mask(params):
    """True for parameters that weight decay applies to: kernels (rank >= 2)."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_schedule(cfg: ScheduleConfig, peak_lr: float, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
    """The learning rate as a function of the optimizer step.

    Args:
        cfg: the recipe's ``[schedule]`` table (durations in epochs).
        peak_lr: ``optimizer.learning_rate``.
        steps_per_epoch: updates per pass over the training set.
        total_steps: updates in the whole run.
    """
    warmup = min(int(round(cfg.warmup_epochs * steps_per_epoch)), max(total_steps - 1, 0))
    rest = max(total_steps - warmup, 1)
    name = cfg.name
    if name == "onecycle":  # warmup is built in: 30% up, then cosine down (Smith 2018)
        return optax.cosine_onecycle_schedule(max(total_steps, 2), peak_lr, pct_start=0.3)
    if name == "warmup_cosine" or (name == "cosine" and warmup):
        return optax.warmup_cosine_decay_schedule(
            0.0, peak_lr, warmup, max(total_steps, warmup + 1), end_value=peak_lr * cfg.final_lr_fraction
        )
    if name == "cosine":
        main = optax.cosine_decay_schedule(peak_lr, rest, alpha=cfg.final_lr_fraction)
    elif name == "constant":
        main = optax.constant_schedule(peak_lr)
    elif name == "step":
        main = optax.exponential_decay(
            peak_lr, transition_steps=max(int(round(cfg.step_epochs * steps_per_epoch)), 1),
            decay_rate=cfg.gamma, staircase=True,
        )  # fmt: skip
    elif name == "multistep":
        bounds = {int(round(m * steps_per_epoch)) - warmup: cfg.gamma for m in cfg.milestones}
        main = optax.piecewise_constant_schedule(peak_lr, {b: g for b, g in bounds.items() if b > 0})
    elif name == "exponential":  # gamma per epoch, applied smoothly per step
        main = optax.exponential_decay(peak_lr, transition_steps=steps_per_epoch, decay_rate=cfg.gamma)
    else:  # pragma: no cover - the schema rejects other names
        raise ValueError(name)
    if not warmup:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, peak_lr, warmup), main], [warmup])


def _base(cfg: OptimizerConfig, lr) -> optax.GradientTransformation:
    wd, mask = cfg.weight_decay, decay_mask
    coupled = optax.add_decayed_weights(wd, mask) if wd else optax.identity()  # L2, as PyTorch
    if cfg.name == "sgd":
        return optax.chain(coupled, optax.sgd(lr))
    if cfg.name in ("momentum", "nesterov"):
        return optax.chain(coupled, optax.sgd(lr, momentum=cfg.momentum, nesterov=cfg.name == "nesterov"))
    if cfg.name == "adam":
        return optax.chain(coupled, optax.adam(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps))
    if cfg.name == "adamw":  # decoupled decay (Loshchilov & Hutter 2019)
        return optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=wd, mask=mask)
    if cfg.name == "nadam":
        return optax.chain(coupled, optax.nadam(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps))
    if cfg.name == "radam":
        return optax.chain(coupled, optax.radam(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps))
    if cfg.name == "rmsprop":
        return optax.chain(coupled, optax.rmsprop(lr, momentum=cfg.momentum, eps=cfg.eps))
    if cfg.name == "adagrad":
        return optax.chain(coupled, optax.adagrad(lr))
    if cfg.name == "adadelta":
        return optax.chain(coupled, optax.adadelta(lr))
    if cfg.name == "lamb":
        return optax.lamb(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=wd, mask=mask)
    if cfg.name == "lion":
        return optax.lion(lr, b1=cfg.b1, b2=cfg.b2, weight_decay=wd, mask=mask)
    raise ValueError(cfg.name)  # pragma: no cover - the schema rejects other names


def make_optimizer(cfg: OptimizerConfig, schedule: optax.Schedule) -> optax.GradientTransformation:
    """The full optax chain for a recipe: optional global-norm clipping, then the optimizer."""
    base = _base(cfg, schedule)
    if cfg.clip_norm:
        return optax.chain(optax.clip_by_global_norm(cfg.clip_norm), base)
    return base
