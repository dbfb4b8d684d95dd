"""Where a train step spends its time: a profiler trace and a top-ops table, offline.

Two entry points:

- `synthetic_step`: cnncli's real train step on random data, for a zoo name or layer
  tokens: the model split and the step compiled by the same functions training uses
  (`cnncli.train.program.split_model` and `build_program`: the on-device training set,
  donated state, compiled ahead of time). The benchmarks (``benchmarks/vs_pytorch.py``, ``benchmarks/regression.py``)
  and `profile_steps` use it.
- `profile_steps`: runs N compiled steps under ``jax.profiler.trace`` into a
  directory (the ``*.xplane.pb`` TensorBoard/XProf read, plus a Perfetto
  ``perfetto_trace.json.gz`` that https://ui.perfetto.dev opens), then parses the
  Perfetto JSON (no TensorBoard needed) and returns the top XLA ops by total time.
  On XLA CPU each event is one executed thunk: a fusion (``ynn_fusion.12`` is a
  YNNPACK library call, ``transpose_copy_fusion.3`` an XLA loop), named as in the
  optimized HLO (``compiled.as_text()``), which says what it computes.
- `profile_recipe`: the same for a recipe's real session (``cnncli train --profile``).

    from cnncli.train.profiling import synthetic_step, profile_steps
    bench = synthetic_step("resnet20", (32, 32, 3), batch_size=128)
    report = profile_steps(bench.step, bench.state, bench.args, 5, "runs/prof")
    print(format_top_ops(report))
"""

from __future__ import annotations

import gzip
import json
import math
import re
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnncli.config.specs import model_specs

# Event names (substrings) that are host-side bookkeeping or waiting, not computation.
_HOST_NOISE = ("PjitFunction", "PyArray", "ExecuteHelper", "pjit", "jit(", "ThunkExecutor", "ParseArguments",
               "PjRt", "Await", "Execute", "DevicePut", "TransferTo")  # fmt: skip


@dataclass
class Bench:
    """A compiled train step and the arguments it takes, ready to time."""

    step: Callable  # compiled: (state, x_all, y_all, perm, index, key) -> state
    state: Any  # a `cnncli.train.step.TrainState`; donated to each call, so use the returned one
    args: tuple  # (x_all, y_all, perm, index, key)
    compile_seconds: float  # tracing + lowering + XLA compilation of the step
    batch_size: int
    forward_flops: int  # per example, `cnncli.arith.geometry.analyze` (2 x MACs)
    specs: tuple = ()
    graphdef: Any = None
    split_filters: tuple = ()

    def run(self, n: int) -> float:
        """Run ``n`` steps (blocking at the end); return the seconds they took."""
        import jax
        import numpy as np

        x, y, perm, _, key = self.args
        steps_per_epoch = perm.shape[0] // self.batch_size
        t0 = time.perf_counter()
        state = self.state
        for i in range(n):
            state = self.step(state, x, y, perm, np.int32(i % steps_per_epoch), key)
        jax.block_until_ready(state.step)
        self.state = state
        return time.perf_counter() - t0


def synthetic_step(
    model: str,
    input_shape: tuple[int, ...],
    *,
    batch_size: int = 128,
    num_classes: int = 10,
    precision: str = "fp32",
    learning_rate: float = 0.01,
    momentum: float = 0.9,
    num_train: int | None = None,
    seed: int = 0,
    compiler_options: dict | str | None = "auto",
    conv_backend: str = "xla",
) -> Bench:
    """cnncli's train step for ``model`` with SGD+momentum on a random on-device training set.

    Built as training builds it (`cnncli.train.program.split_model` and `build_program`),
    except that parameters are initialized eagerly from rbg keys: split into (trainable,
    rest), a `StepConfig` from `cnncli.models.apply.make_step_config`, uint8 images
    normalized on the device, state donated, compiled ahead of time.

    Args:
        model: a zoo name (``resnet20``) or layer tokens.
        input_shape: per-example shape, channels last.
        batch_size: examples per step.
        num_classes: logits width.
        precision: ``fp32`` or ``bf16`` (`cnncli.models.apply.compute_dtype`).
        learning_rate, momentum: ``optax.sgd``.
        num_train: size of the random training set (default 4 batches).
        seed: parameter and data seed.
        compiler_options: XLA options (``"auto"``: cnncli's, `cnncli.models.apply.xla_options`;
            None: XLA's defaults).
        conv_backend: ``xla`` or ``onednn`` (`cnncli.models.apply.StepConfig.conv_backend`).
    """
    import jax
    import numpy as np
    import optax

    from cnncli.arith import geometry
    from cnncli.models import build_model
    from cnncli.models.apply import make_step_config
    from cnncli.runtime.jaxsetup import configure
    from cnncli.train.program import Blueprint, build_program, split_model
    from cnncli.train.step import fresh_state
    from cnncli.train.streams import SeedStreams

    configure()
    specs = model_specs(model, num_classes)
    flops = geometry.analyze(specs, input_shape, num_classes=num_classes).total.flops
    streams = SeedStreams(seed)
    # Eager init from rbg keys: one small program per distinct parameter shape, each
    # quick to compile with rbg (threefry's are slow), where one nnx.jit program for
    # the whole model compiles in time growing with depth (ResNet-110: 2.5 vs 9.9 s;
    # BENCHMARKS.md, "Compile time"). The initial values differ, the step's speed not.
    parts = split_model(build_model(specs, input_shape, num_classes, rngs=streams.init_rngs()))
    tx = optax.sgd(learning_rate, momentum=momentum)
    channels = input_shape[-1]
    synthetic = {"mean": [127.5] * channels, "std": [64.0] * channels}  # uint8 pixels, roughly standardized
    cfg = make_step_config(synthetic, num_classes=num_classes, batch_size=batch_size, precision=precision,
                           conv_backend=conv_backend)  # fmt: skip
    n = num_train or 4 * batch_size
    rng = np.random.default_rng(seed)
    x_all = jax.device_put(rng.integers(0, 256, (n, *input_shape), dtype=np.uint8))
    y_all = jax.device_put(rng.integers(0, num_classes, (n,), dtype=np.int32))
    perm = jax.device_put(rng.permutation(n).astype(np.int32))
    state = fresh_state(parts.params, parts.rest, tx)
    args = (x_all, y_all, perm, np.int32(0), streams.augment)
    program = build_program(Blueprint(parts, tx, cfg), state, args, compiler_options=compiler_options)
    return Bench(program.train_step, state, args, program.compile_seconds, batch_size, flops, specs,
                 program.graphdef, program.split_filters)  # fmt: skip


# ----------------------------------------------------------------------------- profiling


@dataclass
class OpTime:
    """One op (by name) summed over the profiled steps."""

    name: str
    category: str  # the HLO opcode-like prefix: convolution, fusion, dot, ...
    total_ms: float
    count: int


@dataclass
class ProfileReport:
    """What `profile_steps` measured."""

    trace_dir: Path
    steps: int
    wall_seconds: float  # the profiled steps, end to end (tracing overhead included)
    op_ms: float  # sum of the op events (on 2 cores ops can overlap: may exceed the wall time)
    ops: list[OpTime] = field(default_factory=list)  # sorted by total time, largest first
    categories: dict[str, float] = field(default_factory=dict)  # category -> ms
    compile_seconds: float | None = None  # the step's compile time, when known
    images_per_second: float | None = None  # over the profiled steps (profiler overhead included)
    # custom calls (oneDNN): their time, and how much of it other threads spent in XLA's ops meanwhile
    custom_call_ms: float = 0.0
    custom_call_overlap_ms: float = 0.0

    def top(self, n: int = 15) -> list[OpTime]:
        return self.ops[:n]


def profile_steps(step: Callable, state: Any, args: tuple, n_steps: int, out_dir: str | Path, *,
                  batch_size: int | None = None, index_of: Callable[[int], Any] | None = None) -> ProfileReport:  # fmt: skip
    """Run ``n_steps`` compiled train steps under ``jax.profiler.trace``; return the top ops.

    Args:
        step: the compiled step ``(state, x_all, y_all, perm, index, key) -> state``
            (e.g. a `cnncli.train.program.Program`'s ``train_step``). It must be compiled
            already: the trace should hold steps, not compilation.
        state: the `TrainState` to start from; it is donated (do not reuse it).
        args: ``(x_all, y_all, perm, index, key)``; ``index`` advances per step.
        n_steps: steps to trace (one untraced warm-up step runs first).
        out_dir: the trace directory (``RUN/profile``); created if needed.
        batch_size: with ``perm``, wraps the batch index around the epoch.
        index_of: optional ``i -> index`` override.

    Returns:
        A `ProfileReport`; ``.top(15)`` for the table, ``format_top_ops`` to print it.
    """
    import jax
    import numpy as np

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    x, y, perm, index0, key = args
    spe = max(perm.shape[0] // batch_size, 1) if batch_size else None

    def index(i: int):
        if index_of is not None:
            return index_of(i)
        i = int(index0) + i
        return np.int32(i % spe if spe else i)

    state = step(state, x, y, perm, index(0), key)  # warm-up: first-call allocations out of the trace
    jax.block_until_ready(state.step)
    with jax.profiler.trace(str(out_dir), create_perfetto_trace=True):
        t0 = time.perf_counter()
        for i in range(1, n_steps + 1):
            with jax.profiler.StepTraceAnnotation("train_step", step_num=i):
                state = step(state, x, y, perm, index(i), key)
        jax.block_until_ready(state.step)
        wall = time.perf_counter() - t0
    hlo = step.as_text() if hasattr(step, "as_text") else None  # a compiled step: name its custom calls
    report = summarize_trace(find_trace(out_dir), n_steps, custom_call_targets(hlo or ""))
    report.trace_dir, report.wall_seconds = out_dir, wall
    return report


def custom_call_targets(hlo_text: str) -> dict[str, str]:
    """``{"ffi_call.58": "cnncli_onednn_conv_fwd", ...}`` from optimized HLO text: the
    trace names a custom call by its HLO instruction, the target says what it runs."""
    return {m.group(1): m.group(2)
            for m in re.finditer(r'%([\w.\-]+) = [^\n]*?custom_call_target="([^"]+)"', hlo_text)}  # fmt: skip


def find_trace(out_dir: str | Path) -> Path:
    """The newest ``perfetto_trace.json.gz`` under ``out_dir``."""
    found = sorted(Path(out_dir).rglob("perfetto_trace.json.gz"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"no perfetto_trace.json.gz under {out_dir}")
    return found[-1]


def _category(name: str) -> str:
    """``convolution.12`` -> ``convolution``; ``transpose_copy_fusion.3`` -> ``transpose_copy_fusion``."""
    return re.sub(r"\.\d+$", "", name)


def summarize_trace(path: str | Path, n_steps: int = 1, targets: dict[str, str] | None = None) -> ProfileReport:
    """Sum the complete ('X') events of a Perfetto/Chrome JSON trace by op name.

    XLA CPU records one event per executed thunk (an HLO op or fusion, named as in
    the optimized HLO); host bookkeeping events (the Python dispatch) are left out.
    ``targets`` (`custom_call_targets`): custom calls are shown as ``ffi_call.58
    cnncli_onednn_conv_fwd`` and grouped by target in the categories.
    """
    targets = targets or {}
    with gzip.open(path, "rt") as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    threads = {}
    for e in events:
        if e.get("ph") == "M" and e.get("name") == "thread_name":
            threads[(e.get("pid"), e.get("tid"))] = e.get("args", {}).get("name", "")
    totals: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    spans: list[tuple[float, float, object, bool]] = []  # (start, end, thread, is a custom call), microseconds
    for e in events:
        if e.get("ph") != "X" or "dur" not in e:
            continue
        name = str(e.get("name", ""))
        thread = threads.get((e.get("pid"), e.get("tid")), "")
        if (any(h in name for h in _HOST_NOISE) or "python" in thread.lower() or name == "train_step"
                or name.startswith("end: ") or name.startswith("$")):  # fmt: skip
            continue
        totals[name] += float(e["dur"]) / 1e3  # microseconds -> ms
        counts[name] += 1
        start = float(e["ts"])
        spans.append((start, start + float(e["dur"]), (e.get("pid"), e.get("tid")), name in targets))
    ops = sorted((OpTime(f"{n} {targets[n]}" if n in targets else n, targets.get(n) or _category(n), t, counts[n])
                  for n, t in totals.items()), key=lambda o: -o.total_ms)  # fmt: skip
    cats: dict[str, float] = defaultdict(float)
    for op in ops:
        cats[op.category] += op.total_ms
    categories = dict(sorted(cats.items(), key=lambda kv: -kv[1]))
    report = ProfileReport(Path(path).parent, n_steps, math.nan, sum(totals.values()), ops, categories)
    report.custom_call_ms, report.custom_call_overlap_ms = _custom_call_overlap(spans)
    return report


def _custom_call_overlap(spans: list[tuple[float, float, object, bool]]) -> tuple[float, float]:
    """Milliseconds in custom calls, and of that, the time other threads ran XLA ops at the same
    moment: on a 2-core CPU, a oneDNN call (which uses every core) that shares them with XLA's
    own ops is slowed by both."""
    calls = sorted(s for s in spans if s[3])
    others = sorted(s for s in spans if not s[3])
    total = sum(b - a for a, b, _, _ in calls)
    overlap, j = 0.0, 0
    for a, b, thread, _ in calls:
        while j < len(others) and others[j][1] <= a:  # ops that ended before every later call starts
            j += 1  # (calls are sorted by start; an op ending before this one's start ends before the next's)
        for c, d, other, _ in others[j:]:
            if c >= b:
                break
            if other != thread:
                overlap += max(0.0, min(b, d) - max(a, c))
    return total / 1e3, overlap / 1e3


def format_top_ops(report: ProfileReport, n: int = 15) -> str:
    """A plain-text table of the top ops, per step, and of the categories."""
    per = max(report.steps, 1)
    extra = f", step compiled in {report.compile_seconds:.2f} s" if report.compile_seconds is not None else ""
    lines = [f"profile of {report.steps} steps: {report.wall_seconds * 1e3 / per:.1f} ms/step wall, "
             f"{report.op_ms / per:.1f} ms/step in ops (summed over threads){extra}; trace in {report.trace_dir}",
             f"{'op':<48} {'ms/step':>9} {'%':>6} {'calls':>6}"]  # fmt: skip
    total = report.op_ms or 1.0
    for op in report.top(n):
        lines.append(f"{op.name[:48]:<48} {op.total_ms / per:>9.2f} {100 * op.total_ms / total:>5.1f}% {op.count // per:>6}")
    lines.append(f"{'category':<48} {'ms/step':>9} {'%':>6}")
    for cat, ms in list(report.categories.items())[:10]:
        lines.append(f"{cat[:48]:<48} {ms / per:>9.2f} {100 * ms / total:>5.1f}%")
    if report.custom_call_ms:
        lines.append(f"custom calls: {report.custom_call_ms / per:.2f} ms/step; XLA ops on other threads during them: "
                     f"{report.custom_call_overlap_ms / per:.2f} ms/step "
                     f"({100 * report.custom_call_overlap_ms / report.custom_call_ms:.1f}%)")  # fmt: skip
    if any(op.category.startswith(("convolution", "conv_general")) for op in report.ops):  # not convert_*
        lines.append("note: XLA CPU runs its own convolutions (conv_general_dilated, convolution*) asynchronously; "
                     "their events time the launch, not the work, which shows as wall time no op accounts for")  # fmt: skip
    return "\n".join(lines)


def profile_recipe(recipe, workdir: str | Path, n_steps: int = 10) -> ProfileReport:
    """Profile a recipe's real train step: ``cnncli train RECIPE --profile N``.

    Builds the session exactly as `cnncli.train.loop.fit` does (data on the device, the
    model, the optimizer, the step compiled ahead of time), then traces ``n_steps``
    steps from a fresh state into ``WORKDIR/profile``. Nothing is trained for real:
    no checkpoint is written and ``metrics.jsonl`` is not touched.

    Returns:
        The `ProfileReport` (``format_top_ops(report)`` is the table to print);
        ``report.compile_seconds`` holds the step's compile time.
    """
    from cnncli.train.resume import fresh_state
    from cnncli.train.session import build_session, compile_program

    workdir = Path(workdir)
    sess = build_session(recipe, workdir)
    try:
        state, shardings = sess.placement.place_state(fresh_state(sess))  # on a mesh: laid out as the loop does
        if sess.feed is None:  # streamed: the step takes batches; profiling times the in-memory gather step
            from cnncli.errors import UsageError

            raise UsageError("--profile times the in-memory train step; this recipe streams its data from disk",
                             hint="profile a slice that fits: --set data.pipeline=memory --set \"data.train_split=train[:10%]\"")  # fmt: skip
        program = compile_program(sess, state, shardings)
        feed, spe = sess.feed, sess.steps.per_epoch
        report = profile_steps(program.train_step, state, feed.args(feed.permutation(0), 0), n_steps,
                               workdir / "profile", index_of=lambda i: feed.index(i % spe))  # fmt: skip
        report.compile_seconds = program.compile_seconds
        report.images_per_second = recipe.data.batch_size * n_steps / report.wall_seconds
    finally:
        sess.checkpoints.close()
    return report
