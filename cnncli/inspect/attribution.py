"""Attribution maps: which input pixels (or time steps) a trained model's score depends on.

Methods (``METHODS``), each a map at the input's spatial size, one value per pixel:

- ``gradcam`` (Selvaraju et al. 2017): at a layer with spatial extent, the channels'
  activations weighted by the spatial mean of the class score's gradient, summed,
  ReLU'd, and enlarged to the input (linear interpolation).
- ``gradcam++`` (Chattopadhay et al. 2018): the channel weights are
  ``sum_ij a_ij relu(g_ij)`` with ``a = g^2 / (2 g^2 + sum_ab A_ab g^3)`` (the closed form
  for an exponential score, as pytorch-grad-cam computes it).
- ``saliency`` (Simonyan et al. 2014): ``max_c |d score / d x|``.
- ``smoothgrad`` (Smilkov et al. 2017): ``max_c |mean_n grad(x + noise_n)|``, noise
  ``sigma = 0.15 * (max - min)`` of the normalized input, fixed seed.
- ``integrated-gradients`` (Sundararajan et al. 2017): ``(x - x0) * integral_0^1 grad(x0 +
  a (x - x0)) da`` summed over channels (signed), the integral by Gauss-Legendre
  quadrature with ``steps`` nodes (captum's default rule); baselines ``x0``: ``black``
  (the raw range's low end), ``mean`` (the training mean: 0 after normalisation),
  ``blur`` (the input shrunk 8x, antialiased, and enlarged back).
- ``occlusion`` (Zeiler and Fergus 2014): the drop in the class probability when a
  window is filled with the baseline, averaged over the windows covering each pixel.

The score is the target class's logit (probability for occlusion). Every function is
compiled once per method, input shape and batch size (`Explainer`), and runs on padded
fixed-size batches; a call handles at most ``PASS_BUDGET`` image passes (images x
steps, samples or windows), fewer for models with big activations (`pass_budget`), which
bounds its memory. Nothing here prints.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from cnncli.errors import UsageError

METHODS = ("gradcam", "gradcam++", "saliency", "smoothgrad", "integrated-gradients", "occlusion")
BASELINES = ("black", "blur", "mean")
SIGNED = ("integrated-gradients", "occlusion")  # maps with negative evidence; the others are >= 0
PASS_BUDGET = 256  # image passes (forward, or forward + backward) per compiled call, at most
MEMORY_BUDGET = 1 << 30  # bytes of activations per compiled call, about (see `pass_budget`)
SMOOTHGRAD_NOISE = 0.15  # sigma as a fraction of the normalized input's range (Smilkov et al.)
BLUR_FACTOR = 8


@dataclass(frozen=True)
class MethodConfig:
    """One method and its settings (hashable: a compiled function's cache key)."""

    method: str = "gradcam"
    layer: str | None = None  # gradcam and gradcam++ only
    steps: int = 64  # integrated gradients: quadrature nodes (pooled completeness error 0.5% on the quickstart; 0.7% at 50)
    samples: int = 16  # smoothgrad: noisy copies
    baseline: str = "black"  # integrated gradients and occlusion's fill
    window: tuple[int, ...] = ()  # occlusion, per spatial axis (empty: `default_window`)
    stride: tuple[int, ...] = ()

    def passes(self, windows: int = 1) -> int:
        """Image passes per explained image (the batch cost)."""
        if self.method == "smoothgrad":
            return self.samples
        if self.method == "integrated-gradients":
            return self.steps + 2  # the nodes, and f(x), f(x0) for completeness
        if self.method == "occlusion":
            return windows
        return 1


def default_window(spatial: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Occlusion window and stride: about an eighth of each side (at least 2), half-overlapping.

    8x8 digits: 2x2 windows, stride 1 (49 windows); 28x28: 4x4, stride 2 (169); 224: 28, 14 (225).
    """
    window = tuple(min(s, max(2, -(-s // 8))) for s in spatial)
    return window, tuple(max(1, w // 2) for w in window)


def _per_axis(sizes: tuple[int, ...], spatial: tuple[int, ...], what: str) -> tuple[int, ...]:
    """One size for every spatial axis (``4`` -> ``(4, 4)``), or one per axis; () stays ()."""
    if not sizes:
        return ()
    if len(sizes) == 1:
        return tuple(sizes) * len(spatial)
    if len(sizes) != len(spatial):
        shape = "x".join(map(str, spatial))
        want = "one size" if len(spatial) == 1 else f"1 or {len(spatial)} sizes"
        raise UsageError(f"{what} {'x'.join(map(str, sizes))}: the input is {shape}, so give {want}")
    return tuple(sizes)


def occlusion_geometry(spatial: tuple[int, ...], window=(), stride=()) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``--window`` and ``--stride`` per spatial axis, checked (defaults: `default_window`).

    Raises:
        UsageError: a window larger than the input (it would be cut to the input: one window,
            a flat map), or a stride larger than the window (pixels no window covers).
    """
    window = _per_axis(tuple(window), spatial, "--window") or default_window(spatial)[0]
    stride = _per_axis(tuple(stride), spatial, "--stride") or tuple(max(1, w // 2) for w in window)
    shape = "x".join(map(str, spatial))
    if any(w > s for w, s in zip(window, spatial)):
        raise UsageError(f"--window {'x'.join(map(str, window))}: larger than the input ({shape})",
                         hint=f"give a window of at most {shape}")  # fmt: skip
    if any(s > w for s, w in zip(stride, window)):
        raise UsageError(
            f"--stride {'x'.join(map(str, stride))}: larger than the window ({'x'.join(map(str, window))}), "
            "so some pixels would be covered by no window",
            hint="give a stride of at most the window",
        )
    return window, stride


def occlusion_masks(spatial: tuple[int, ...], window, stride) -> np.ndarray:
    """One 0/1 float32 mask per window position, ``(K, *spatial)``; windows end inside the input."""
    starts = []
    for size, w, s in zip(spatial, window, stride):
        last = max(size - w, 0)
        pos = list(range(0, last + 1, s))
        if pos[-1] != last:  # cover the far edge too
            pos.append(last)
        starts.append(pos)
    grids = np.meshgrid(*starts, indexing="ij")
    corners = np.stack([g.ravel() for g in grids], axis=-1)
    masks = np.zeros((len(corners), *spatial), np.float32)
    for k, corner in enumerate(corners):
        masks[(k, *(slice(c, c + w) for c, w in zip(corner, window)))] = 1.0
    return masks


def pass_budget(model) -> int:
    """Image passes per compiled call: ``PASS_BUDGET``, fewer for big activations.

    A pass keeps about the float32 outputs of every top-level layer for the backward
    pass; counted 8x for the layers inside blocks, the gradients and XLA's temporaries
    (a rough bound: the 8x8 digits' CNN gets 256 passes, ResNet-50 at 224x224 one).
    """
    per_pass = 8 * 4 * sum(int(np.prod(s)) for s in model.layer_shapes)
    return int(max(1, min(PASS_BUDGET, MEMORY_BUDGET // max(per_pass, 1))))


def _batch_for(cfg: MethodConfig, n: int, windows: int, budget: int = PASS_BUDGET) -> tuple[int, int]:
    """(images per call, occlusion windows per call) within ``budget`` passes."""
    if cfg.method == "occlusion":
        chunk = min(windows, budget)
        return max(1, min(n, budget // chunk)), chunk
    return max(1, min(n, budget // cfg.passes())), 0


@dataclass
class MapBatch:
    """Maps of ``N`` rows (an image and a target class each) by one method."""

    maps: np.ndarray  # (N, *spatial) float32
    logits: np.ndarray  # (N, K) of the unaltered inputs
    attribution_sum: np.ndarray | None = None  # integrated gradients: sum of the attributions
    score_delta: np.ndarray | None = None  # integrated gradients: f(x) - f(x0), the logit
    seconds: float = 0.0  # compute, compilation excluded
    compile_seconds: float = 0.0


class Explainer:
    """Compiled attribution functions of a loaded run (eval-mode model, float32, XLA convolutions).

    Args:
        run: a `cnncli.runs.load.LoadedRun`.
    """

    def __init__(self, run):
        from flax import nnx

        self.graphdef, self.state = nnx.split(run.model)
        self.model = run.model
        self.input_shape = tuple(run.input_shape)
        self.spatial = self.input_shape[:-1]
        self.mean = np.asarray(run.data["mean"], np.float32)
        self.std = np.asarray(run.data["std"], np.float32)
        self.value_range = tuple(float(v) for v in (run.data.get("value_range") or (0.0, 255.0))[:2])
        self._compiled: dict = {}
        self.compile_seconds = 0.0
        self.pass_budget = pass_budget(run.model)

    # ------------------------------------------------------------ pieces
    def normalize(self, x):
        return (x - self.mean) / self.std

    def _logits(self, state, xn):
        from flax import nnx

        return nnx.merge(self.graphdef, state, copy=True)(xn)

    def _score(self, state, xn, targets):
        """Sum over the batch of each row's target logit (rows are independent in eval mode)."""
        import jax.numpy as jnp

        logits = self._logits(state, xn)
        return jnp.take_along_axis(logits, targets[:, None], axis=1).sum(), logits

    def baseline(self, xn, kind: str):
        """The baseline ``x0`` of a normalized batch (see the module docstring)."""
        import jax
        import jax.numpy as jnp

        if kind == "mean":
            return jnp.zeros_like(xn)
        if kind == "black":
            return jnp.broadcast_to(jnp.asarray((self.value_range[0] - self.mean) / self.std, xn.dtype), xn.shape)
        if kind == "blur":
            small = (xn.shape[0], *(max(1, s // BLUR_FACTOR) for s in self.spatial), xn.shape[-1])
            return jax.image.resize(jax.image.resize(xn, small, "linear", antialias=True), xn.shape, "linear")
        raise UsageError(f"--baseline {kind!r}: expected one of {', '.join(BASELINES)}")

    # ------------------------------------------------------------ methods
    def _gradcam(self, cfg, state, xn, targets):
        import jax
        import jax.numpy as jnp
        from flax import nnx

        from cnncli.models.capture import forward_at

        def score(delta):
            model = nnx.merge(self.graphdef, state, copy=True)
            logits, act = forward_at(model, xn, cfg.layer, delta)
            return jnp.take_along_axis(logits, targets[:, None], axis=1).sum(), (logits, act)

        shape = (xn.shape[0], *self._layer_shape(cfg.layer))
        g, (logits, act) = jax.grad(score, has_aux=True)(jnp.zeros(shape, jnp.float32))
        axes = tuple(range(1, act.ndim - 1))
        if cfg.method == "gradcam++":
            g2, g3 = g * g, g * g * g
            total = act.sum(axis=axes, keepdims=True)
            alpha = g2 / (2 * g2 + total * g3 + 1e-7)
            alpha = jnp.where(g != 0, alpha, 0.0)
            weights = (alpha * jax.nn.relu(g)).sum(axis=axes, keepdims=True)
        else:
            weights = g.mean(axis=axes, keepdims=True)
        cam = jax.nn.relu((weights * act).sum(axis=-1))
        cam = jax.image.resize(cam, (xn.shape[0], *self.spatial), "linear")
        return {"maps": cam, "logits": logits}

    def _saliency(self, cfg, state, xn, targets):
        import jax
        import jax.numpy as jnp

        g, logits = jax.grad(lambda x: self._score(state, x, targets), has_aux=True)(xn)
        return {"maps": jnp.abs(g).max(axis=-1), "logits": logits}

    def _smoothgrad(self, cfg, state, xn, targets):
        import jax
        import jax.numpy as jnp

        n, b = cfg.samples, xn.shape[0]
        axes = tuple(range(1, xn.ndim))
        sigma = SMOOTHGRAD_NOISE * (xn.max(axis=axes, keepdims=True) - xn.min(axis=axes, keepdims=True))
        noise = jax.random.normal(jax.random.key(0), (n, *xn.shape), xn.dtype) * sigma[None]
        noisy = (xn[None] + noise).reshape(n * b, *xn.shape[1:])
        g, _ = jax.grad(lambda x: self._score(state, x, jnp.tile(targets, n)), has_aux=True)(noisy)
        mean = g.reshape(n, *xn.shape).mean(axis=0)
        return {"maps": jnp.abs(mean).max(axis=-1), "logits": self._logits(state, xn)}

    def _integrated(self, cfg, state, xn, targets):
        import jax
        import jax.numpy as jnp

        nodes, weights = np.polynomial.legendre.leggauss(cfg.steps)
        alphas = jnp.asarray((nodes + 1) / 2, xn.dtype)  # [-1, 1] -> [0, 1]
        w = jnp.asarray(weights / 2, xn.dtype)
        x0 = self.baseline(xn, cfg.baseline)
        s, b = cfg.steps, xn.shape[0]
        shape = (s, *([1] * xn.ndim))
        path = (x0[None] + alphas.reshape(shape) * (xn - x0)[None]).reshape(s * b, *xn.shape[1:])
        g, _ = jax.grad(lambda x: self._score(state, x, jnp.tile(targets, s)), has_aux=True)(path)
        avg = (g.reshape(s, *xn.shape) * w.reshape(shape)).sum(axis=0)
        attr = (xn - x0) * avg
        both = self._logits(state, jnp.concatenate([xn, x0]))
        pick = jnp.take_along_axis(both, jnp.tile(targets, 2)[:, None], axis=1)[:, 0]
        return {
            "maps": attr.sum(axis=-1), "logits": both[:b],
            "attribution_sum": attr.reshape(b, -1).sum(axis=1), "score_delta": pick[:b] - pick[b:],
        }  # fmt: skip

    def _occlusion(self, cfg, state, xn, targets, masks):
        """Target probabilities with each window filled: ``(B, Kc)``, and the unaltered logits."""
        import jax
        import jax.numpy as jnp

        b, k = xn.shape[0], masks.shape[0]
        x0 = self.baseline(xn, cfg.baseline)
        m = masks[None, ..., None]  # (1, K, *spatial, 1)
        filled = xn[:, None] * (1 - m) + x0[:, None] * m
        logits = self._logits(state, filled.reshape(b * k, *xn.shape[1:]))
        probs = jax.nn.softmax(logits, axis=-1)
        p = jnp.take_along_axis(probs, jnp.repeat(targets, k)[:, None], axis=1).reshape(b, k)
        return {"probs": p, "logits": self._logits(state, xn)}

    # ------------------------------------------------------------ running
    def _layer_shape(self, layer: str) -> tuple[int, ...]:
        from cnncli.models.capture import point_shape

        key = ("shape", layer)
        if key not in self._compiled:
            self._compiled[key] = point_shape(self.model, layer)
        return self._compiled[key]

    def _fn(self, cfg: MethodConfig, batch: int, chunk: int):
        """The compiled ``(state, x_raw, targets[, masks]) -> dict`` of a method."""
        import jax
        import jax.numpy as jnp

        key = (cfg, batch, chunk)
        if key in self._compiled:
            return self._compiled[key]
        body = {"gradcam": self._gradcam, "gradcam++": self._gradcam, "saliency": self._saliency,
                "smoothgrad": self._smoothgrad, "integrated-gradients": self._integrated}.get(cfg.method)  # fmt: skip
        x = jax.ShapeDtypeStruct((batch, *self.input_shape), jnp.float32)
        t = jax.ShapeDtypeStruct((batch,), jnp.int32)
        t0 = time.perf_counter()
        if cfg.method == "occlusion":
            masks = jax.ShapeDtypeStruct((chunk, *self.spatial), jnp.float32)
            fn = jax.jit(lambda s, x, t, m: self._occlusion(cfg, s, self.normalize(x), t, m))
            compiled = fn.lower(self.state, x, t, masks).compile()
        else:
            fn = jax.jit(lambda s, x, t: body(cfg, s, self.normalize(x), t))
            compiled = fn.lower(self.state, x, t).compile()
        self.compile_seconds += time.perf_counter() - t0
        self._compiled[key] = compiled
        return compiled

    def check_layer(self, cfg: MethodConfig) -> None:
        """Grad-CAM needs a layer whose output keeps the input's spatial axes; occlusion a window that fits."""
        if cfg.method == "occlusion":
            occlusion_geometry(self.spatial, cfg.window, cfg.stride)
        if cfg.method not in ("gradcam", "gradcam++"):
            return
        if cfg.layer is None:
            raise UsageError(f"{cfg.method} needs a layer", hint="give --layer NAME or --layer auto")
        shape = self._layer_shape(cfg.layer)
        if len(shape) != len(self.input_shape):
            raise UsageError(
                f"--layer {cfg.layer}: its output {'x'.join(map(str, shape))} has no spatial axes for {cfg.method}",
                hint="pick a convolution or block before the global pooling (see inspect-filters --list)",
            )
        if int(np.prod(shape[:-1])) == 1:
            raise UsageError(
                f"--layer {cfg.layer}: its output {'x'.join(map(str, shape))} has a single position, so "
                f"{cfg.method}'s map would be flat",
                hint="pick an earlier layer with spatial extent, or --layer auto",
            )

    def maps(self, cfg: MethodConfig, x: np.ndarray, targets: np.ndarray, state=None) -> MapBatch:
        """Maps of raw inputs ``x (N, *input_shape)`` for ``targets (N,)`` by one method.

        Args:
            cfg: the method and its settings.
            x: raw inputs (the run's pixel scale).
            targets: one class index per row.
            state: other weights of the same model (the sanity check's randomized model);
                default the run's.
        """
        from cnncli.data.batching import batches, pad_batch

        self.check_layer(cfg)
        if cfg.method == "occlusion":
            window, stride = occlusion_geometry(self.spatial, cfg.window, cfg.stride)
            cfg = replace(cfg, window=window, stride=stride)
            all_masks = occlusion_masks(self.spatial, cfg.window, cfg.stride)
        else:
            all_masks = np.zeros((1, *self.spatial), np.float32)
        state = self.state if state is None else state
        n = len(x)
        batch, chunk = _batch_for(cfg, n, len(all_masks), self.pass_budget)
        compile0 = self.compile_seconds
        fn = self._fn(cfg, batch, chunk)
        out: dict[str, list] = {}
        seconds = 0.0
        x = np.asarray(x, np.float32)
        targets = np.asarray(targets, np.int32)
        for start, stop in batches(n, batch):
            xb, tb, mask = pad_batch(x[start:stop], targets[start:stop], batch)
            t0 = time.perf_counter()
            if cfg.method == "occlusion":
                res = self._occlude(fn, state, xb, tb, all_masks, chunk)
            else:
                res = {k: np.asarray(v) for k, v in fn(state, xb, tb).items()}
            seconds += time.perf_counter() - t0
            for k, v in res.items():
                out.setdefault(k, []).append(v[mask])
        cat = {k: np.concatenate(v) for k, v in out.items()}
        return MapBatch(
            maps=cat["maps"].astype(np.float32), logits=cat["logits"], attribution_sum=cat.get("attribution_sum"),
            score_delta=cat.get("score_delta"), seconds=seconds, compile_seconds=self.compile_seconds - compile0,
        )  # fmt: skip

    def _occlude(self, fn, state, xb, tb, all_masks, chunk) -> dict[str, np.ndarray]:
        """Occlusion of one batch: every window chunk, then the drops averaged per pixel."""
        probs, logits = [], None
        k = len(all_masks)
        for start in range(0, k, chunk):
            masks = all_masks[start : start + chunk]
            if len(masks) < chunk:
                masks = np.concatenate([masks, np.zeros((chunk - len(masks), *masks.shape[1:]), np.float32)])
            res = fn(state, xb, tb, masks)
            probs.append(np.asarray(res["probs"])[:, : min(chunk, k - start)])
            logits = np.asarray(res["logits"])
        p = np.concatenate(probs, axis=1)  # (B, K)
        base = _softmax(logits)[np.arange(len(tb)), tb]
        return {"maps": occlusion_map(base[:, None] - p, all_masks), "logits": logits, "drops": base[:, None] - p}


def occlusion_map(drops: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per-window probability drops ``(B, K)`` -> per-pixel mean over the windows covering it ``(B, *spatial)``."""
    flat = masks.reshape(len(masks), -1)
    cover = np.maximum(flat.sum(axis=0), 1.0)
    return ((drops @ flat) / cover).reshape(len(drops), *masks.shape[1:]).astype(np.float32)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# ------------------------------------------------------------ map figures
def mass_map(m: np.ndarray, method: str) -> np.ndarray:
    """The non-negative map the figures and pictures use: the positive part for signed methods."""
    return np.maximum(m, 0.0) if method in SIGNED else np.abs(m)


def peak(m: np.ndarray) -> list[int] | None:
    """Index of the map's largest value, per spatial axis; None for a map with no positive value (no peak)."""
    if not np.max(m) > 0:
        return None
    return [int(i) for i in np.unravel_index(int(np.argmax(m)), m.shape)]


def top_share(m: np.ndarray, fraction: float = 0.1) -> float | None:
    """Share of the map's mass in its top ``fraction`` of pixels (None for an all-zero map).

    A map spread evenly gives ``fraction``; one concentrated on a few pixels gives near 1.
    """
    v = np.sort(np.asarray(m, np.float64).ravel())[::-1]
    total = v.sum()
    if total <= 0:
        return None
    k = max(1, round(fraction * v.size))
    return float(v[:k].sum() / total)
