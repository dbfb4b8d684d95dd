"""cnncli's train step against PyTorch eager on the same networks, alternating windows.

Run (the project venv drives; PyTorch runs in its own Python, see BENCHMARKS.md):

    uv run python benchmarks/vs_pytorch.py --torch-python .bench/torch/bin/python
    uv run python benchmarks/vs_pytorch.py --torch-python ... --models resnet20 --precision bf16
    uv run python benchmarks/vs_pytorch.py --torch-python ... --models lenet5,resnet20 --write-readme

Worker processes stay alive for the whole run: this script re-run as ``--worker
jax``, once per cnncli conv backend (``--backends auto,xla``: ``auto`` is a recipe's
default, resolved as a run resolves it; cnncli's real step:
`cnncli.train.profiling.synthetic_step`, i.e. `cnncli.train.step.make_train_step` with
donation, the training set on the device, AOT compiled, host malloc tuned as the CLI
does), and ``benchmarks/torch_worker.py``, once with glibc's default malloc and once
with cnncli's malloc settings given through ``GLIBC_TUNABLES`` (``--torch-malloc``),
each serving both memory layouts. Only one of them computes at a time: each round
runs one timed window per contestant, in an order that rotates every round, because
this machine's speed drifts 10-20% between runs and other processes share it. A
window is at least ``--seconds`` of back-to-back steps (3 at least). The first jax
worker also measures the float32 matmul peak (``benchmarks/matmul_peak.py``) in
windows of its own (before each network and at the end; the best one counts), for
the MFU: forward FLOPs (`cnncli.arith.geometry.analyze`, 2 x MACs) x 3 x images/s / peak.

Prints a markdown table: median images/s over the windows, min-max, the ratio of
each cnncli backend to the best PyTorch contestant (ratio of medians), and MFU. ``--json FILE`` saves
every window. ``--write-readme`` rewrites the table between the ``speed-table`` markers of
README.md from the run (the CPU model and the matmul peak measured in it, the command):
the README's speed figures come from here, never by hand. It refuses to start on a busy
machine (load average above 1).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
START, END = "<!-- speed-table:start", "<!-- speed-table:end -->"

# name -> (cnncli model: zoo name or tokens, per-example input shape, channels last)
MODELS = {
    "lenet5": ("lenet5", (28, 28, 1)),
    "cnn2": ("conv:c=32,k=3,p=same relu maxpool:k=2 conv:c=64,k=3,p=same relu maxpool:k=2 flatten dense", (28, 28, 1)),
    "resnet20": ("resnet20", (32, 32, 3)),
}


# ----------------------------------------------------------------------------- jax worker


def jax_worker() -> None:
    """Serve setup/window/matmul requests (JSON lines) with cnncli's compiled step."""
    from cnncli.runtime.jaxsetup import tune_host_malloc

    tune_host_malloc()  # as the cnncli CLI does, before JAX starts its threads
    bench = None
    for line in sys.stdin:
        msg = json.loads(line)
        try:
            if msg["op"] == "quit":
                break
            if msg["op"] == "setup":
                reply = _jax_setup(msg)
                bench = reply.pop("bench")
            elif msg["op"] == "window":
                reply = _jax_window(bench, msg.get("seconds", 3.0))
            elif msg["op"] == "matmul":
                sys.path.insert(0, str(HERE))
                from matmul_peak import measure

                reply = measure(msg.get("dtype", "float32"), n=msg.get("n", 2048), seconds=msg.get("seconds", 1.0))
            else:
                reply = {"error": f"unknown op {msg['op']}"}
        except Exception as err:  # report, keep serving
            reply = {"error": f"{type(err).__name__}: {err}"}
        print(json.dumps(reply), flush=True)


def _jax_setup(msg: dict) -> dict:
    import jax

    from cnncli.train.profiling import synthetic_step

    model, shape = MODELS[msg["model"]]
    backend = resolve_backend(msg.get("conv_backend", "xla"))
    t0 = time.perf_counter()
    bench = synthetic_step(model, shape, batch_size=msg.get("batch_size", 128), precision=msg.get("precision", "fp32"),
                           conv_backend=backend)  # fmt: skip
    bench.run(3)  # warm-up
    return {"ok": True, "bench": bench, "seconds": time.perf_counter() - t0, "compile_seconds": bench.compile_seconds,
            "forward_flops": bench.forward_flops, "jax": jax.__version__, "device": str(jax.devices()[0]),
            "conv_backend": backend, "onednn": _onednn_version()}  # fmt: skip


def resolve_backend(asked: str) -> str:
    """``auto`` (a recipe's default) as `cnncli.train.devices.resolve_conv_backend` decides it
    for one device: onednn on the CPU where the extension loads, else xla."""
    import jax

    if asked != "auto":
        return asked
    if jax.default_backend() != "cpu" or jax.device_count() > 1:
        return "xla"
    from cnncli.native import onednn

    return "onednn" if onednn.available() else "xla"


def _onednn_version() -> str | None:
    from cnncli.native import onednn

    return onednn.load() if onednn.available() else None


def _jax_window(bench, seconds: float, min_steps: int = 3) -> dict:
    import jax
    import numpy as np

    x, y, perm, _, key = bench.args
    spe = perm.shape[0] // bench.batch_size
    state, steps = bench.state, 0
    t0 = time.perf_counter()
    while steps < min_steps or time.perf_counter() - t0 < seconds:
        state = bench.step(state, x, y, perm, np.int32(steps % spe), key)
        steps += 1
        if steps % 8 == 0:
            jax.block_until_ready(state.step)  # bound the dispatch queue, as the train loop's log reads do
    jax.block_until_ready(state.step)
    dt = time.perf_counter() - t0
    bench.state = state
    return {"images_per_second": steps * bench.batch_size / dt, "steps": steps, "seconds": dt}


# ----------------------------------------------------------------------------- driver


class Worker:
    """A long-lived subprocess answering one JSON line per request."""

    def __init__(self, argv: list[str], env: dict | None = None):
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, bufsize=1)

    def ask(self, **msg) -> dict:
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.proc.args[:2]} exited with {self.proc.wait()}")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply

    def close(self) -> None:
        try:
            self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.proc.stdin.close()
        except (BrokenPipeError, ValueError):
            pass
        self.proc.wait(timeout=30)


def machine() -> str:
    name = platform.processor() or platform.machine()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                name = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"


def load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "?"


def run_model(name: str, precision: str, jaxws: dict, torchws: dict, args) -> dict:
    """Set every contestant up for one network, then alternate timed windows.

    ``jaxws``: conv backend -> jax worker; ``torchws``: malloc mode -> torch worker
    (each serves every layout, set up anew before each of its windows).
    """
    contestants: dict[str, tuple] = {}
    setup = None
    for backend, w in jaxws.items():
        reply = w.ask(op="setup", model=name, precision=precision, batch_size=args.batch_size, conv_backend=backend)
        setup = setup or reply
        label = f"cnncli {backend}" if backend != "auto" else f"cnncli default ({reply['conv_backend']})"
        print(f"  {name} {precision}: {label} compiled in {reply['compile_seconds']:.2f} s", file=sys.stderr)
        contestants[label] = ("jax", w, None)
    for mode, w in torchws.items():
        for layout in args.layouts:
            label = f"torch {layout}" + ("" if mode == "default" else f", {mode} malloc")
            contestants[label] = ("torch", w, layout)
    windows: dict[str, list[float]] = {k: [] for k in contestants}
    names = list(contestants)
    torch = None
    for r in range(args.windows):
        order = names[r % len(names):] + names[: r % len(names)]  # rotate who goes first
        for who in order:
            kind, w, layout = contestants[who]
            if kind == "torch":
                torch = w.ask(op="setup", model=name, layout=layout, precision=precision, batch_size=args.batch_size,
                              device=args.torch_device).get("torch")  # fmt: skip
            windows[who].append(w.ask(op="window", seconds=args.seconds)["images_per_second"])
    return {"model": name, "precision": precision, "windows": windows, "setup": setup, "torch": torch}


def summarize(result: dict, peak: float | None) -> list[str]:
    rows = []
    w = result["windows"]
    med = {k: statistics.median(v) for k, v in w.items()}
    torch_keys = [k for k in w if k.startswith("torch")]
    best = max(torch_keys, key=lambda k: med[k]) if torch_keys else None
    flops = result["setup"]["forward_flops"]
    for k, v in w.items():
        ratio = f"{med[k] / med[best]:.2f}x" if best and k.startswith("cnncli") else ("best" if k == best else "")
        mfu = f"{100 * flops * 3 * med[k] / (peak * 1e9):.0f}%" if peak else "?"
        rows.append(f"| {result['model']} | {result['precision']} | {k} | {med[k]:,.0f} | {min(v):,.0f}-{max(v):,.0f} "
                    f"| {len(v)} | {ratio} | {mfu} |")  # fmt: skip
    return rows




NETWORK_NAMES = {"lenet5": "LeNet-5, 28x28x1", "cnn2": "2-conv CNN, 28x28x1", "resnet20": "ResNet-20, 32x32x3"}


def readme_table(results: list[dict], peak: float, args, torch: str) -> str:
    """The README's speed table: cnncli's default and xla against the best PyTorch contestant, per network."""
    import datetime

    setup = results[0]["setup"]
    cmd = ("uv run python benchmarks/vs_pytorch.py --torch-python PYTORCH_PYTHON "
           f"--models {args.models} --precision {args.precision} --windows {args.windows} --seconds {args.seconds:g} "
           "--write-readme")  # fmt: skip
    lines = [
        f"Measured {datetime.date.today().isoformat()} on **{machine()}** (float32 matmul peak "
        f"**{peak:.0f} GFLOP/s** by `benchmarks/matmul_peak.py`'s kernel, measured in the same run); batch "
        f"{args.batch_size}, SGD with momentum, {args.windows} alternating windows of >= {args.seconds:g} s per "
        f"contestant, medians; JAX {setup.get('jax')}, oneDNN {setup.get('onednn') or '-'}, PyTorch {torch} "
        f"(eager; best of NCHW / channels_last, glibc malloc default / tuned). Load average at the end: {load()}. "
        f"Regenerate: `{cmd}`.",
        "",
        "| network | precision | cnncli default | cnncli `xla` | best PyTorch | default / PyTorch | MFU (default) |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in results:
        w = result["windows"]
        med = {k: statistics.median(v) for k, v in w.items()}
        default = next(k for k in w if k.startswith("cnncli default"))
        xla = med.get("cnncli xla")
        torch_keys = [k for k in w if k.startswith("torch")]
        best = max(torch_keys, key=lambda k: med[k])
        mfu = 100 * result["setup"]["forward_flops"] * 3 * med[default] / (peak * 1e9)
        backend = default.split("(")[1].rstrip(")")
        lines.append(
            f"| {NETWORK_NAMES.get(result['model'], result['model'])} | {result['precision']} "
            f"| {med[default]:,.0f} img/s ({backend}) | {f'{xla:,.0f}' if xla else '-'} "
            f"| {med[best]:,.0f} ({best.removeprefix('torch ')}) | **{med[default] / med[best]:.2f}x** | {mfu:.0f}% |"
        )
    return "\n".join(lines)


def write_between_markers(path: Path, text: str) -> None:
    """Replace what lies between the speed-table markers of ``path`` with ``text``."""
    doc = path.read_text()
    i, j = doc.find(START), doc.find(END)
    if i < 0 or j < i:
        raise SystemExit(f"{path}: no '{START} ... -->' and '{END}' markers to write the speed table between")
    i = doc.index("-->", i) + 3
    path.write_text(doc[:i] + "\n" + text + "\n" + doc[j:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=["jax"], help=argparse.SUPPRESS)
    parser.add_argument("--torch-python", default=os.environ.get("TORCH_PYTHON"),
                        help="a Python with PyTorch (default $TORCH_PYTHON); omit to time cnncli alone")  # fmt: skip
    parser.add_argument("--models", default="lenet5,cnn2,resnet20", help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--precision", default="fp32", help="fp32, bf16, or fp32,bf16")
    parser.add_argument("--layouts", default="nchw,channels_last", help="PyTorch memory formats to try")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--windows", type=int, default=5, help="timed windows per contestant (default 5)")
    parser.add_argument("--seconds", type=float, default=3.0, help="minimum seconds per window (default 3)")
    parser.add_argument("--torch-device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--backends", default=None,
                        help="cnncli conv backends to time: auto (a recipe's default: onednn on one CPU device where it "
                        "loads), xla, onednn (default auto,xla; xla alone with --torch-device cuda)")  # fmt: skip
    parser.add_argument("--torch-malloc", default="default,tuned",
                        help="PyTorch with glibc's default malloc and/or with cnncli's settings (GLIBC_TUNABLES)")  # fmt: skip
    parser.add_argument("--json", type=Path, help="save every window here")
    parser.add_argument("--write-readme", type=Path, nargs="?", const=ROOT / "README.md", default=None,
                        help="rewrite the speed table between the speed-table markers of README.md (or this file) "
                        "from this run (needs --torch-python and the auto backend)")  # fmt: skip
    parser.add_argument("--allow-busy", action="store_true",
                        help="with --write-readme: write even if the machine was busy when the run started")  # fmt: skip
    args = parser.parse_args()
    if args.worker == "jax":
        return jax_worker()
    from cnncli.runtime.jaxsetup import (
        glibc_tunables,  # pure Python; the driver itself runs no jax
    )

    args.layouts = args.layouts.split(",")
    me = [sys.executable, str(Path(__file__).resolve()), "--worker", "jax"]
    if args.backends is None:  # oneDNN is a CPU backend
        args.backends = "auto,xla" if args.torch_device == "cpu" else "xla"
    if args.write_readme and (not args.torch_python or "auto" not in args.backends.split(",")):
        parser.error("--write-readme compares cnncli's default (the auto backend) with PyTorch: give --torch-python "
                     "and keep auto in --backends")  # fmt: skip
    busy = os.getloadavg()[0]
    if args.write_readme and busy > 1.0 and not args.allow_busy:
        # PyTorch's OpenMP threads collapse when other processes compete for the cores (STACK-NOTES): a
        # table measured now would not hold. Refuse before spending minutes on it.
        parser.error(f"the machine is busy (1-minute load average {busy:.2f} > 1.0): the README's table would not hold; "
                     "rerun when it is quiet (or pass --allow-busy to write it anyway)")  # fmt: skip
    jaxws = {b: Worker(me) for b in args.backends.split(",")}
    torchws = {}
    if args.torch_python:
        for mode in args.torch_malloc.split(","):
            # the settings cnncli applies in-process (cnncli.runtime.jaxsetup.tune_host_malloc)
            env = dict(os.environ, GLIBC_TUNABLES=glibc_tunables()) if mode == "tuned" else None
            torchws[mode] = Worker([args.torch_python, str(HERE / "torch_worker.py")], env=env)
    first = next(iter(jaxws.values()))
    results, peaks = [], []
    try:
        for name in args.models.split(","):
            peaks.append(first.ask(op="matmul", dtype="float32", seconds=2.0)["gflops"])
            for precision in args.precision.split(","):
                results.append(run_model(name, precision, jaxws, torchws, args))
        peaks.append(first.ask(op="matmul", dtype="float32", seconds=2.0)["gflops"])
    finally:
        for w in [*jaxws.values(), *torchws.values()]:
            w.close()
    peak = max(peaks)
    print(f"\nmachine: {machine()}; load average at the end: {load()}; float32 matmul peak (jax, best of the "
          f"windows before each network and at the end): {peak:.0f} GFLOP/s ({', '.join(f'{p:.0f}' for p in peaks)})")  # fmt: skip
    print(f"batch {args.batch_size}, SGD momentum 0.9; {args.windows} windows of >= {args.seconds:g} s per contestant, "
          "alternating; MFU = forward FLOPs x 3 x images/s / float32 matmul peak\n")  # fmt: skip
    print("| network | precision | contestant | median img/s | min-max | windows | / best PyTorch | MFU |")
    print("|---|---|---|---|---|---|---|---|")
    for result in results:
        print("\n".join(summarize(result, peak)))
    if args.json:
        args.json.write_text(json.dumps({"results": results, "peaks": peaks, "machine": machine(), "load": load()},
                                        indent=1, default=str))  # fmt: skip
    if args.write_readme:
        text = readme_table(results, peak, args, results[0].get("torch") or "?")
        write_between_markers(args.write_readme, text)
        print(f"\nwrote the speed table into {args.write_readme}:\n\n{text}")


if __name__ == "__main__":
    main()
