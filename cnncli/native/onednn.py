"""oneDNN convolutions for the CPU, as XLA FFI custom calls.

``[train] conv_backend = "onednn"`` (and ``"auto"``, the default, on one CPU device)
sends every channels-last convolution of the train step (forward, backward-data,
backward-weights) to oneDNN, the library PyTorch's CPU convolutions use, instead of
XLA's own CPU kernels. oneDNN comes with cnncli on Linux x86-64 (the
``onednn-cpu-gomp`` and ``onednn-devel-cpu-gomp`` wheels: Intel's oneDNN 3.2 CPU build
and its headers, about 165 MB); the first use compiles ``onednn_conv.cc`` against
jaxlib's FFI headers with g++ (seconds) into cnncli's cache
(``~/.cache/cnncli/native``, or ``$CNNCLI_CACHE_DIR/native``: `cnncli.config.cache`), keyed by the source,
jax's version and the oneDNN found; later uses load it.

`conv` has the meaning of ``lax.conv_general_dilated`` with channels-last
dimension numbers (``(N, *spatial, C)`` inputs, ``(*spatial, C_in / groups, C_out)``
kernels), zero padding ``(lo, hi)`` per axis, strides, kernel dilation and feature
groups; it is differentiable through `jax.custom_vjp` and tested against lax for
equality (``tests/test_onednn.py``). Input dilation (transposed convolutions),
negative padding, 3-D convolutions and bfloat16 on CPUs without oneDNN bfloat16
kernels (before AVX-512) are not covered: `supports` says so and the models keep
lax for those.

The same extension holds `channel_sums`, the per-channel sums BatchNorm needs
(`cnncli.models.norm`), used under the same backend: one pass over the activations
for two sums, where XLA's column reductions took one slower pass per sum.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import site
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from cnncli.arith.formulas import conv_output
from cnncli.config.cache import cache_path
from cnncli.errors import CnnCliError

SOURCE = Path(__file__).with_name("onednn_conv.cc")
TARGETS = ("cnncli_onednn_conv_fwd", "cnncli_onednn_conv_bwd_data", "cnncli_onednn_conv_bwd_weights")
SUMS_TARGETS = ("cnncli_channel_sums", "cnncli_channel_sums_relu")
HINT = ("oneDNN comes with cnncli on Linux x86-64 (the onednn-cpu-gomp and onednn-devel-cpu-gomp wheels; "
        "elsewhere set CNNCLI_ONEDNN_ROOT to a oneDNN 3.x prefix), and its first use needs g++ on the PATH; "
        'train.conv_backend = "xla" keeps XLA\'s own kernels')


class OneDNNUnavailable(CnnCliError):
    """oneDNN, its headers or a C++ compiler is missing, or the build failed."""


def find_root() -> Path:
    """The oneDNN 3.x prefix (``include/oneapi/dnnl/dnnl.hpp`` and ``lib/libdnnl.so``)."""
    if env := os.environ.get("CNNCLI_ONEDNN_ROOT"):  # asked for: that one or an error
        if is_onednn_prefix(Path(env)):
            return Path(env)
        raise OneDNNUnavailable(
            f"CNNCLI_ONEDNN_ROOT={env} is not a oneDNN 3.x prefix (it needs include/oneapi/dnnl/dnnl.hpp and lib/libdnnl.so)",
            hint="point it at a oneDNN 3.x installation, or unset it to use the oneDNN installed with cnncli",
        )
    candidates = [Path(sys.prefix), Path(sys.base_prefix)]
    if site.USER_BASE:  # pip install --user puts the wheel's data files here
        candidates.append(Path(site.USER_BASE))
    candidates += [Path("/usr/local"), Path("/usr")]
    for root in candidates:
        if is_onednn_prefix(root):
            return root
    raise OneDNNUnavailable("oneDNN 3.x was not found (looked in " + ", ".join(map(str, candidates)) + ")", hint=HINT)


def is_onednn_prefix(root: Path) -> bool:
    """Whether ``root`` holds oneDNN 3.x: its version header, 3 or newer, and libdnnl.so."""
    header = root / "include" / "oneapi" / "dnnl" / "dnnl_version.h"
    return header.is_file() and _libdnnl(root) is not None and _major(header) >= 3


def _libdnnl(root: Path) -> Path | None:
    for lib in ("lib", "lib64", "lib/x86_64-linux-gnu"):
        if (root / lib / "libdnnl.so").exists():
            return root / lib
    return None


def _major(header: Path) -> int:
    for line in header.read_text().splitlines():
        if line.startswith("#define DNNL_VERSION_MAJOR"):
            return int(line.split()[2])
    return 0


def cache_dir() -> Path:
    """Where built extensions are kept: ``native/`` in cnncli's cache (`cnncli.config.cache`:
    ``$CNNCLI_CACHE_DIR``, else ``~/.cache/cnncli``). With ``CNNCLI_CACHE_DIR=off``, a folder
    of this process's own, removed at exit (each process compiles the extension again)."""
    return cache_path("native") or _private_dir()


@functools.cache
def _private_dir() -> Path:
    import atexit

    path = Path(tempfile.mkdtemp(prefix="cnncli-native-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def build(root: Path | None = None) -> Path:
    """Compile the extension (or find it already compiled, or shipped built) and return the .so's path."""
    root = root or find_root()
    out = _built_path(root)
    if found := _already_built(out) or _shipped(root):
        return found
    _compile(root, _libdnnl(root), jax.ffi.include_dir(), out)
    return out


PREBUILT = Path(__file__).with_name("_prebuilt")  # where a wheel's build hook puts the extension (hatch_build.py)


def shipped_name(root: Path) -> str:
    """The file name of an extension built for this source, jax version and oneDNN build,
    independent of where they are installed (the build hook compiles in another
    environment): the digest of the source, jax's version and oneDNN's version and
    configuration headers."""
    headers = root / "include" / "oneapi" / "dnnl"
    key = hashlib.sha256(SOURCE.read_bytes() + f"|{jax.__version__}|".encode() + (headers / "dnnl_version.h").read_bytes()
                         + (headers / "dnnl_config.h").read_bytes()).hexdigest()[:16]  # fmt: skip
    return f"libcnncli_onednn-shipped-{key}.so"


def _shipped(root: Path) -> Path | None:
    """The extension that came built with cnncli, when it matches this source, jax and oneDNN
    (``CNNCLI_NO_PREBUILT=1``: never; the hook then ships none either)."""
    if os.environ.get("CNNCLI_NO_PREBUILT", "") not in ("", "0"):
        return None
    try:
        path = PREBUILT / shipped_name(root)
    except OSError:  # a oneDNN prefix without its configuration header
        return None
    return path if path.is_file() else None


PREBUILT_ENV = "CNNCLI_ONEDNN_PREBUILT"


def _already_built(out: Path) -> Path | None:
    """The extension ``out`` names, in the cache or, read-only, in a folder of
    ``$CNNCLI_ONEDNN_PREBUILT`` (``os.pathsep``-separated; e.g. another cache's
    ``native/``, so a test session with an empty cache of its own need not compile it
    again). The file name holds the digest of the source, jax and the oneDNN prefix, so
    a file found under it is this build."""
    extra = [Path(d) / out.name for d in os.environ.get(PREBUILT_ENV, "").split(os.pathsep) if d]
    return next((p for p in (out, *extra) if p.is_file()), None)


def _built_path(root: Path) -> Path:
    """Where the extension for this source, jax and oneDNN lives in the cache."""
    include = jax.ffi.include_dir()
    key = hashlib.sha256(
        SOURCE.read_bytes() + f"|{jax.__version__}|{root.resolve()}|{include}".encode()
    ).hexdigest()[:16]
    return cache_dir() / f"libcnncli_onednn-{key}.so"


def needs_build() -> bool:
    """Whether oneDNN is here but the extension is not compiled yet (the next `load` compiles it)."""
    try:
        root = find_root()
    except OneDNNUnavailable:
        return False
    return _already_built(_built_path(root)) is None and _shipped(root) is None


def _compile(root: Path, libdir: Path, include: str, out: Path) -> None:
    compiler = shutil.which(os.environ.get("CXX", "g++"))
    if compiler is None:
        raise OneDNNUnavailable("no C++ compiler (g++) on the PATH to build the oneDNN extension", hint=HINT)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=out.parent, suffix=".so", delete=False) as tmp:
        tmp_path = Path(tmp.name)
    cmd = [
        compiler, "-O3", "-fopenmp", "-std=c++17", "-shared", "-fPIC", "-w",
        f"-I{include}", f"-I{root / 'include'}", str(SOURCE), "-o", str(tmp_path),
        f"-L{libdir}", "-ldnnl", f"-Wl,-rpath,{libdir}",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tmp_path.unlink(missing_ok=True)
        raise OneDNNUnavailable(
            f"building the oneDNN extension failed ({' '.join(cmd[:2])} ... exit {proc.returncode}):\n"
            + proc.stderr[-2000:],
            hint=HINT,
        )
    os.replace(tmp_path, out)  # atomic: concurrent builders each publish a whole file


@functools.cache
def _library() -> ctypes.CDLL:
    """Build if needed, load, and register the FFI targets (once per process)."""
    try:
        root = find_root()
        path = build(root)
        # A shipped extension was linked elsewhere: load this oneDNN first, so that its
        # libdnnl.so.3 is the one the extension binds to (the dynamic linker matches the
        # name of a library already loaded); harmless for one built here.
        dnnl = next((_libdnnl(root) / n for n in ("libdnnl.so.3", "libdnnl.so") if (_libdnnl(root) / n).exists()))
        ctypes.CDLL(str(dnnl), mode=ctypes.RTLD_GLOBAL)
        lib = ctypes.cdll.LoadLibrary(str(path))
    except OSError as err:  # unreadable cache folder, a broken libgomp or libdnnl, ...
        raise OneDNNUnavailable(f"the oneDNN extension could not be built or loaded: {err}", hint=HINT) from err
    for name in (*TARGETS, *SUMS_TARGETS):
        jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, name)), platform="cpu")
    lib.cnncli_onednn_version.restype = ctypes.c_char_p
    lib.cnncli_onednn_supports_bf16.restype = ctypes.c_int
    lib.cnncli_onednn_plans.restype = ctypes.c_char_p
    lib.cnncli_onednn_configure.argtypes = [ctypes.c_int, ctypes.c_char_p]
    _configure(lib, tuning_enabled(), _default_choices_path(lib))
    return lib


def _default_choices_path(lib: ctypes.CDLL) -> Path | None:
    return choices_path(lib.cnncli_onednn_version().decode(), lib.cnncli_onednn_threads())


def tuning_enabled() -> bool:
    """Whether the first call of each convolution times oneDNN's implementations
    (``CNNCLI_ONEDNN_TUNE=off`` keeps oneDNN's first pick; see `implementations`)."""
    return os.environ.get("CNNCLI_ONEDNN_TUNE", "on").lower() not in ("off", "0", "false", "no")


def choices_path(version: str, threads: int) -> Path | None:
    """The file that records this machine's implementation choices for this oneDNN at
    this OpenMP thread count (in `cache_dir`; None with ``CNNCLI_CACHE_DIR=off``: this
    process only). Kernels rank differently on another CPU or thread count."""
    if cache_path("native") is None:
        return None
    return cache_dir() / f"onednn-{version}-impls-{_cpu_key()}-{threads}t.tsv"


def _cpu_key() -> str:
    """A short digest of this CPU's model and instruction-set flags (choices are per CPU)."""
    text = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("model name", "flags", "Features", "CPU part")):
                    text += line
                if line.strip() == "":  # the first processor's block is enough
                    break
    except OSError:
        pass
    import platform

    text = text or f"{platform.machine()}|{platform.processor()}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _configure(lib: ctypes.CDLL, tune: bool, path: Path | None) -> None:
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError:
            path = None  # an unwritable cache: choose again in each process
    lib.cnncli_onednn_configure(int(tune), str(path).encode() if path else b"")


def configure(tune: bool | None = None, path: Path | None | str = "default") -> None:
    """Set the implementation choice (tests; the defaults are applied at `load`).

    ``tune``: time implementations on first use (default: `tuning_enabled`);
    ``path``: the record of choices (default: `choices_path`; None: none). Drops the
    process's built convolutions, so call it while none runs.
    """
    lib = _library()
    _configure(lib, tuning_enabled() if tune is None else tune,
               _default_choices_path(lib) if path == "default" else (Path(path) if path else None))  # fmt: skip


def implementations() -> dict[str, str]:
    """The oneDNN implementation each convolution built in this process runs, by problem
    (``"fwd|11:128,28,28,1,|...": "jit:avx512_core"``)."""
    text = _library().cnncli_onednn_plans().decode()
    out = {}
    for line in text.splitlines():
        key, _, impl = line.split("\t")
        out[key] = impl
    return out


def load() -> str:
    """Build if needed, load and register the FFI targets; return oneDNN's version."""
    return _library().cnncli_onednn_version().decode()


@functools.cache
def bf16_supported() -> bool:
    """Whether oneDNN has bfloat16 convolutions on this CPU (AVX-512 and newer)."""
    return bool(_library().cnncli_onednn_supports_bf16())


def available() -> bool:
    """Whether `load` succeeds here (builds the extension on first call)."""
    try:
        load()
    except OneDNNUnavailable:
        return False
    return True


def supports(x_ndim: int, padding, lhs_dilation=None, dtype=jnp.float32) -> bool:
    """Whether `conv` covers this convolution (else the caller keeps lax).

    bfloat16 only where oneDNN has bfloat16 kernels for this CPU (`bf16_supported`).
    """
    dtype = jnp.dtype(dtype)
    return (
        3 <= x_ndim <= 4  # 1 or 2 spatial axes: oneDNN 3.2's 3-D backward-weights kernel failed a test
        and all(lo >= 0 and hi >= 0 for lo, hi in padding)
        and (lhs_dilation is None or all(d == 1 for d in lhs_dilation))
        and (dtype == jnp.dtype(jnp.float32) or (dtype == jnp.dtype(jnp.bfloat16) and bf16_supported()))
    )


def _attrs(strides, padding, dilation, groups) -> dict:
    i64 = functools.partial(np.asarray, dtype=np.int64)
    return dict(
        strides=i64(strides), pad_lo=i64([p[0] for p in padding]), pad_hi=i64([p[1] for p in padding]),
        dilation=i64(dilation), groups=np.int64(groups),
    )  # fmt: skip


def _call(target: str, shape, dtype, a, b, attrs):
    load()  # registers the targets (cached after the first call)
    return jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(shape, dtype))(a, b, **attrs)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def conv(x: jax.Array, w: jax.Array, strides: tuple, padding: tuple, dilation: tuple, groups: int) -> jax.Array:
    """Channels-last convolution through oneDNN; lax.conv_general_dilated's meaning."""
    return _forward(x, w, strides, padding, dilation, groups)


def _forward(x, w, strides, padding, dilation, groups):
    spatial = tuple(
        conv_output(x.shape[1 + i], w.shape[i], strides[i], padding[i], dilation[i]) for i in range(x.ndim - 2)
    )
    shape = (x.shape[0], *spatial, w.shape[-1])
    return _call(TARGETS[0], shape, x.dtype, x, w, _attrs(strides, padding, dilation, groups))


def _conv_fwd(x, w, strides, padding, dilation, groups):
    return _forward(x, w, strides, padding, dilation, groups), (x, w)


def _conv_bwd(strides, padding, dilation, groups, res, dy):
    x, w = res
    attrs = _attrs(strides, padding, dilation, groups)
    dx = _call(TARGETS[1], x.shape, x.dtype, dy, w, attrs)
    dw = _call(TARGETS[2], w.shape, w.dtype, x, dy, attrs)
    return dx, dw


conv.defvjp(_conv_fwd, _conv_bwd)


def channel_sums(a: jax.Array, b: jax.Array, mult: jax.Array | None = None,
                 shift: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Per-channel ``(sum(a), sum(a * b))`` over every axis but the last, in float32.

    One pass over ``a`` and ``b`` (same shape; float32 or bfloat16) on every core:
    BatchNorm's statistics (``b = a``) and backward reductions (``a = dy, b = x``) with
    the oneDNN backend (`cnncli.models.norm`). With per-channel float32 ``mult`` and
    ``shift``, ``a`` counts only where ``b * mult + shift > 0``: the backward of
    BatchNorm followed by ReLU, whose mask is recomputed from the input, not stored.
    Not differentiable: use it inside a custom_vjp rule, as BatchNorm does.
    """
    load()
    c = a.shape[-1]
    out = jax.ShapeDtypeStruct((c,), jnp.float32)
    if mult is None:
        return jax.ffi.ffi_call(SUMS_TARGETS[0], (out, out))(a, b)
    return jax.ffi.ffi_call(SUMS_TARGETS[1], (out, out))(a, b, mult.astype(jnp.float32), shift.astype(jnp.float32))
