"""``cnncli explain --check``: attribution maps judged by tests they can fail.

- **Model randomization** (Adebayo et al., "Sanity Checks for Saliency Maps", 2018):
  the maps of the trained model against the maps of the same model with its top
  layers re-initialized (the upper half of the top-level layers that have parameters,
  at least one; fresh weights from another seed). A map that explains what the model
  learned must change: the mean Spearman rank correlation of the two maps (their
  non-negative mass, `attribution.mass_map`) must stay below ``SANITY_MAX``.
- **Deletion and insertion** (Petsiuk et al., "RISE", 2018): the target probability as
  the most attributed pixels are replaced by the baseline (deletion) or put back into
  the baseline (insertion), in ``CURVE_STEPS`` equal steps; the area under each curve
  (mean over the steps, trapezoid rule). A useful map separates the class better than
  a random order of the same pixels: insertion AUC minus deletion AUC above the random
  order's (either curve alone can favour a random order on tiny images, where a few
  random pixels already cut or restore the class).
- **Completeness** (integrated gradients only; Sundararajan et al. 2017): the
  attributions sum to ``f(x) - f(x0)`` (the target's logit); the error, pooled over the
  rows (`completeness_error`), must be below ``COMPLETENESS_MAX``.

A method passes when every test that applies to it passes. Nothing here prints.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnncli.inspect.attribution import Explainer, MethodConfig, mass_map

SANITY_MAX = 0.5  # mean rank correlation trained vs randomized above this: the map ignores the weights
COMPLETENESS_MAX = 0.01  # relative error of sum(attributions) against f(x) - f(x0)
CURVE_STEPS = 16  # pixel fractions 0, 1/16, ..., 1 of the deletion and insertion curves
RANDOMIZE_SEED_OFFSET = 1000  # the randomized model's init seed: the run's seed + this


@dataclass
class CheckResult:
    """One method's self-check."""

    method: str
    randomized_layers: list[str]
    rank_correlation: float | None  # mean Spearman rho, trained vs randomized maps (None: every trained map is flat)
    sanity: bool  # rank_correlation < SANITY_MAX (False when it is None: nothing shows the test passed)
    deletion_auc: float
    insertion_auc: float
    random_deletion_auc: float
    random_insertion_auc: float
    curves: bool  # insertion - deletion above the random order's
    completeness_error: float | None  # integrated gradients only
    completeness: bool | None
    passed: bool


def top_layers(run) -> list[str]:
    """The top-level layers the randomization test re-initializes: the upper half of those with parameters."""
    from flax import nnx

    with_params = [n for n in run.model.layer_names if nnx.state(getattr(run.model, n), nnx.Param)]
    return with_params[len(with_params) // 2 :] if with_params else []


def randomized_state(run, ex: Explainer, layers: list[str]):
    """The run's state with ``layers`` (top-level names) taken from a freshly initialized model."""
    import jax
    from flax import nnx

    from cnncli.models.build import build_model

    fresh, _ = build_model(run.recipe, run.input_shape, run.num_classes, seed=run.recipe.train.seed + RANDOMIZE_SEED_OFFSET)
    fresh.eval()
    _, fresh_state = nnx.split(fresh)
    wanted = set(layers)

    def pick(path, trained, new):
        return new if str(getattr(path[0], "key", path[0])) in wanted else trained

    return jax.tree_util.tree_map_with_path(pick, ex.state, fresh_state)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two maps (average ranks for ties); 0 when either is constant."""
    ra, rb = _ranks(np.ravel(a)), _ranks(np.ravel(b))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / den) if den > 0 else 0.0


def _ranks(v: np.ndarray) -> np.ndarray:
    order = np.argsort(v, kind="stable")
    ranks = np.empty(len(v), np.float64)
    ranks[order] = np.arange(len(v), dtype=np.float64)
    sorted_v = v[order]
    # average the ranks of ties
    edges = np.flatnonzero(np.diff(sorted_v)) + 1
    for group in np.split(np.arange(len(v)), edges):
        if len(group) > 1:
            ranks[order[group]] = ranks[order[group]].mean()
    return ranks


def curve_fn(ex: Explainer, baseline: str, batch: int):
    """Compiled ``(state, x_raw, targets, ranks) -> (deletion (B, S+1), insertion (B, S+1))`` probabilities.

    ``ranks (B, P)``: each pixel's position in the order (0 = removed/inserted first).
    """
    import jax
    import jax.numpy as jnp

    key = ("curves", baseline, batch)
    if key in ex._compiled:
        return ex._compiled[key]
    steps = CURVE_STEPS

    def fn(state, x, targets, ranks):
        xn = ex.normalize(x)
        x0 = ex.baseline(xn, baseline)
        p = ranks.shape[1]
        cut = jnp.round(jnp.linspace(0, p, steps + 1)).astype(jnp.int32)  # pixels changed at each step
        first = (ranks[:, None, :] < cut[None, :, None]).astype(xn.dtype)  # (B, S+1, P)
        first = first.reshape(*first.shape[:2], *ex.spatial, 1)
        deleted = xn[:, None] * (1 - first) + x0[:, None] * first
        inserted = x0[:, None] * (1 - first) + xn[:, None] * first
        both = jnp.concatenate([deleted, inserted], axis=1).reshape(-1, *xn.shape[1:])
        probs = jax.nn.softmax(ex._logits(state, both), axis=-1).reshape(xn.shape[0], 2 * (steps + 1), -1)
        picked = jnp.take_along_axis(probs, targets[:, None, None], axis=2)[..., 0]
        return picked[:, : steps + 1], picked[:, steps + 1 :]

    ex._compiled[key] = jax.jit(fn)
    return ex._compiled[key]


def auc(curve: np.ndarray) -> float:
    """Area under a curve sampled at equal steps on [0, 1] (trapezoid rule), averaged over rows."""
    c = np.asarray(curve, np.float64)
    return float(((c[:, 1:] + c[:, :-1]) / 2).mean(axis=1).mean())


def curves(ex: Explainer, x: np.ndarray, targets: np.ndarray, maps: np.ndarray, baseline: str) -> tuple[float, float]:
    """(deletion AUC, insertion AUC) of the pixel order given by ``maps`` (largest first)."""
    from cnncli.data.batching import batches, pad_batch

    b = max(1, min(len(x), ex.pass_budget // (2 * (CURVE_STEPS + 1))))
    fn = curve_fn(ex, baseline, b)
    flat = maps.reshape(len(maps), -1)
    ranks = np.argsort(np.argsort(-flat, axis=1, kind="stable"), axis=1).astype(np.int32)
    dels, ins = [], []
    for start, stop in batches(len(x), b):
        xb, tb, mask = pad_batch(np.asarray(x[start:stop], np.float32), np.asarray(targets[start:stop], np.int32), b)
        rb = np.concatenate([ranks[start:stop], np.zeros((b - (stop - start), ranks.shape[1]), np.int32)])
        d, i = fn(ex.state, xb, tb, rb)
        dels.append(np.asarray(d)[mask])
        ins.append(np.asarray(i)[mask])
    return auc(np.concatenate(dels)), auc(np.concatenate(ins))


def completeness_error(attribution_sum, score_delta) -> float:
    """``sum_rows |sum(attributions) - (f(x) - f(x0))| / sum_rows |f(x) - f(x0)|``.

    Pooled over the rows, not averaged per row: a row whose ``f(x) - f(x0)`` is near
    zero (a class barely above its baseline score) would make a per-row ratio explode
    while the attributions are as accurate in absolute terms.
    """
    delta = np.asarray(score_delta, np.float64)
    err = np.abs(np.asarray(attribution_sum, np.float64) - delta)
    return float(err.sum() / max(np.abs(delta).sum(), 1e-12))


def check_method(run, ex: Explainer, cfg: MethodConfig, x: np.ndarray, targets: np.ndarray, maps: np.ndarray,
                 *, random_state=None, layers: list[str] | None = None, ig=None) -> CheckResult:  # fmt: skip
    """All tests of one method on rows ``x``, ``targets`` whose maps (from the trained model) are ``maps``.

    Args:
        random_state: the randomized model's state (`randomized_state`); made here if None.
        layers: the re-initialized layers (`top_layers`).
        ig: the `attribution.MapBatch` of integrated gradients (for completeness).
    """
    layers = top_layers(run) if layers is None else layers
    if random_state is None:
        random_state = randomized_state(run, ex, layers)
    mass = np.stack([mass_map(m, cfg.method) for m in maps])
    rand = ex.maps(cfg, x, targets, state=random_state).maps
    # a flat trained map (a Grad-CAM map ReLU'd to zero) has no order to keep: its rank correlation
    # would be 0, a pass it did not earn; such rows are left out, and with none left there is no figure
    rhos = [spearman(a, mass_map(b, cfg.method)) for a, b in zip(mass, rand) if np.ptp(a) > 0]
    rho = float(np.mean(rhos)) if rhos else None
    baseline = cfg.baseline
    deletion, insertion = curves(ex, x, targets, mass, baseline)
    noise = np.random.default_rng(0).random(mass.shape)
    random_del, random_ins = curves(ex, x, targets, noise, baseline)
    completeness = None
    if cfg.method == "integrated-gradients" and ig is not None:
        completeness = completeness_error(ig.attribution_sum, ig.score_delta)
    sanity = rho is not None and rho < SANITY_MAX
    good_curves = insertion - deletion > random_ins - random_del
    complete_ok = None if completeness is None else completeness < COMPLETENESS_MAX
    return CheckResult(
        cfg.method, list(layers), rho, sanity, deletion, insertion, random_del, random_ins, good_curves,
        completeness, complete_ok, bool(sanity and good_curves and complete_ok is not False),
    )  # fmt: skip


def check_report(run, report, ex: Explainer) -> list[CheckResult]:
    """`check_method` for every method of an `explain.ExplainReport`, on its rows."""
    layers = top_layers(run)
    random_state = randomized_state(run, ex, layers)
    out = []
    for cfg in report.methods:
        x, targets, maps = [], [], []
        for img in report.images:
            for e in img.explanations:
                if e.method == cfg.method:
                    x.append(img.x)
                    targets.append(e.index)
                    maps.append(e.map)
        x, targets, maps = np.stack(x), np.asarray(targets, np.int32), np.stack(maps)
        ig = ex.maps(cfg, x, targets) if cfg.method == "integrated-gradients" else None
        out.append(check_method(run, ex, cfg, x, targets, maps, random_state=random_state, layers=layers, ig=ig))
    return out
