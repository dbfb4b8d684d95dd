"""Tests for the oneDNN convolutions (cnncli.native.onednn; the default conv backend on a CPU) and host-malloc tuning.

Every oneDNN case compares with ``lax.conv_general_dilated`` on the same inputs:
forward values and both gradients. They run wherever oneDNN is installed (a default
dependency on Linux x86-64, so the default test run covers them) and skip elsewhere,
saying why.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from cnncli.native import onednn

try:
    onednn.load()
    SKIP = None
except onednn.OneDNNUnavailable as err:  # pragma: no cover - the dev group installs it on Linux x86-64
    SKIP = str(err)
needs_onednn = pytest.mark.skipif(SKIP is not None, reason=f"oneDNN not available: {SKIP}")


def lax_conv(x, w, strides, padding, dilation, groups, **kw):
    nd = x.ndim - 2
    sp = tuple(range(1, nd + 1))
    dn = lax.ConvDimensionNumbers((0, nd + 1, *sp), (nd + 1, nd, *range(nd)), (0, nd + 1, *sp))
    return lax.conv_general_dilated(x, w, strides, padding, rhs_dilation=dilation, dimension_numbers=dn,
                                    feature_group_count=groups, **kw)  # fmt: skip


def _case(rng, nd, size, k, s, pads, d, g, cin, cout, n=2, dtype=jnp.float32):
    x = jnp.asarray(rng.normal(size=(n, *([size] * nd), cin)), dtype)
    w = jnp.asarray(rng.normal(size=(*([k] * nd), cin // g, cout)), dtype)
    return x, w, ((s,) * nd, (pads,) * nd, (d,) * nd, g)


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / (np.max(np.abs(a)) + 1e-12))


CASES = [  # (spatial size, k, stride, (lo, hi) padding, dilation, groups, cin, cout)
    (8, 3, 1, (1, 1), 1, 1, 3, 4),  # "same" 3x3, RGB in
    (9, 3, 2, (1, 1), 1, 1, 4, 8),  # strided, odd size
    (10, 3, 2, (0, 0), 1, 1, 4, 8),  # strided VALID that drops the last row
    (11, 5, 3, (2, 2), 2, 1, 2, 3),  # dilated, stride 3
    (8, 1, 1, (0, 0), 1, 1, 8, 16),  # 1x1 (bottleneck / projection shortcut)
    (12, 3, 1, (1, 1), 1, 2, 4, 6),  # grouped
    (12, 3, 2, (0, 2), 1, 4, 8, 8),  # asymmetric padding, groups = 4
    (7, 7, 2, (3, 3), 1, 1, 3, 5),  # ResNet stem shape, kernel as large as the input
    (6, 3, 1, (1, 1), 1, 16, 16, 16),  # depthwise
    (32, 3, 1, (1, 1), 1, 1, 16, 16),  # a real ResNet-20 layer shape (16 channels, 32x32)
]


@needs_onednn
@pytest.mark.parametrize("nd", [1, 2])
@pytest.mark.parametrize("case", CASES, ids=[f"s{c[0]}k{c[1]}s{c[2]}p{c[3][0]}{c[3][1]}d{c[4]}g{c[5]}" for c in CASES])
def test_forward_and_gradients_match_lax(nd, case):
    rng = np.random.default_rng(hash((nd, case)) % 2**32)
    x, w, args = _case(rng, nd, *case)
    y_ref, y = lax_conv(x, w, *args), onednn.conv(x, w, *args)
    assert y.shape == y_ref.shape
    assert _rel(y_ref, y) < 1e-5

    def loss(conv):
        return lambda x, w: jnp.sum(jnp.sin(conv(x, w, *args)))  # a non-uniform cotangent

    gx_ref, gw_ref = jax.grad(loss(lax_conv), (0, 1))(x, w)
    gx, gw = jax.jit(jax.grad(loss(onednn.conv), (0, 1)))(x, w)
    assert _rel(gx_ref, gx) < 1e-5
    assert _rel(gw_ref, gw) < 1e-5


@needs_onednn
@pytest.mark.skipif(SKIP is None and not onednn.bf16_supported(), reason="no oneDNN bfloat16 kernels on this CPU")
def test_bfloat16_matches_lax_with_float32_accumulation():
    rng = np.random.default_rng(1)
    x, w, args = _case(rng, 2, 16, 3, 1, (1, 1), 1, 1, 16, 32, n=4, dtype=jnp.bfloat16)
    ref = lax_conv(x, w, *args, preferred_element_type=jnp.float32)
    y = onednn.conv(x, w, *args)
    assert y.dtype == jnp.bfloat16
    assert _rel(ref, y) < 1e-2  # bfloat16 rounding of the output
    gx, gw = jax.grad(lambda x, w: jnp.sum(onednn.conv(x, w, *args).astype(jnp.float32)), (0, 1))(x, w)
    gx_ref, gw_ref = jax.grad(lambda x, w: jnp.sum(lax_conv(x, w, *args, preferred_element_type=jnp.float32)), (0, 1))(
        x, w
    )
    assert gx.dtype == gw.dtype == jnp.bfloat16
    assert _rel(gx_ref, gx) < 2e-2 and _rel(gw_ref, gw) < 2e-2


@needs_onednn
def test_unused_input_gradient_is_not_computed():
    """The first layer's input gradient is dead code: XLA drops that custom call."""
    rng = np.random.default_rng(2)
    x, w, args = _case(rng, 2, 8, 3, 1, (1, 1), 1, 1, 3, 4)
    hlo = jax.jit(jax.grad(lambda w: jnp.sum(onednn.conv(x, w, *args)))).lower(w).compile().as_text()
    assert "cnncli_onednn_conv_bwd_weights" in hlo
    assert "cnncli_onednn_conv_bwd_data" not in hlo


_THREADS = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from cnncli.native import onednn
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 8, 9)), jnp.float32)
    w = jnp.asarray(np.random.default_rng(1).normal(size=(2, 2, 3, 9)), jnp.float32)
    # padding wider than the kernel, groups 3: oneDNN's gemm (im2col) kernel, which
    # needs scratch memory; XLA runs the cached primitive on whichever thread is free
    f = jax.jit(lambda x, w: onednn.conv(x, w, (1, 1), ((5, 5), (5, 5)), (1, 1), 3))
    g = jax.jit(lambda x: jnp.sin(x) @ jnp.cos(x).T)
    big = jnp.ones((256, 256))
    ys = [f(x, w) for _ in range(1)]
    for i in range(300):  # no host sync inside the loop: calls overlap on XLA's threads
        ys.append(f(x, w))
        g(big)
    assert all(np.array_equal(ys[0], y) for y in ys)
    print("ok")
    """
)


@needs_onednn
def test_cached_primitives_run_on_any_thread():
    """A primitive built on one XLA thread and run on another (scratch memory is ours, per plan)."""
    out = subprocess.run([sys.executable, "-c", _THREADS], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"


@pytest.fixture
def choices(tmp_path):
    """A fresh record of implementation choices for this test; the defaults again afterwards."""
    path = tmp_path / "impls.tsv"
    onednn.configure(tune=True, path=path)
    yield path
    onednn.configure()


def _records(path) -> dict[str, list[str]]:
    """key -> the fields of its last line (index, implementation, timings)."""
    out = {}
    for line in path.read_text().splitlines():
        key, *fields = line.split("\t")
        out[key] = fields
    return out


def _fwd_bwd(x, w, args):
    f = jax.jit(jax.value_and_grad(lambda x, w: jnp.sum(onednn.conv(x, w, *args) ** 2), argnums=(0, 1)))
    return jax.block_until_ready(f(x, w))  # the record is written while the step runs


@needs_onednn
def test_implementations_are_timed_once_recorded_and_reused(choices):
    """Each pass times oneDNN's implementations on first use, records its choice, and a
    later process (here: the record read again) runs the recorded one without timing."""
    rng = np.random.default_rng(5)
    x, w, args = _case(rng, 2, 14, 5, 1, (0, 0), 1, 1, 6, 16, n=8)  # LeNet-5's second convolution
    want = jax.value_and_grad(lambda x, w: jnp.sum(lax_conv(x, w, *args) ** 2), argnums=(0, 1))(x, w)
    got = _fwd_bwd(x, w, args)
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
        assert _rel(a, b) < 1e-5
    records = _records(choices)
    assert sorted(k.split("|")[0] for k in records) == ["bwd_data", "bwd_weights", "fwd"]
    for key, (index, impl, timings) in records.items():
        timed = dict(t.split("=") for t in timings.split())  # "1:jit:avx512_core" -> "0.28"
        assert f"{index}:{impl}" in timed and not any(name.split(":")[1] == "ref" for name in timed)
        fastest = min(float(ms) for ms in timed.values())
        assert float(timed[f"{index}:{impl}"]) <= 1.1 * fastest  # never worse than 10% off the fastest
        assert onednn.implementations()[key] == impl

    # Another implementation of the forward pass, recorded by hand: honored, not re-timed.
    fwd = next(k for k in records if k.startswith("fwd"))
    names = [t.split("=")[0] for t in records[fwd][2].split()]
    others = [n for n in names if n != f"{records[fwd][0]}:{records[fwd][1]}"]
    if not others:
        pytest.skip("oneDNN lists one forward implementation here")
    other = others[0]
    index, impl = other.split(":", 1)
    choices.write_text(f"{fwd}\t{index}\t{impl}\n")
    onednn.configure(tune=True, path=choices)
    again = _fwd_bwd(x, w, args)
    assert onednn.implementations()[fwd] == impl
    assert _rel(want[0], again[0]) < 1e-5
    lines = choices.read_text().splitlines()
    assert lines[0] == f"{fwd}\t{index}\t{impl}" and len(lines) == 3  # the backward passes timed again, not fwd

    # A record that no longer matches oneDNN's list (another version's names): timed again.
    choices.write_text(f"{fwd}\t{index}\tno-such-kernel\n")
    onednn.configure(tune=True, path=choices)
    _fwd_bwd(x, w, args)
    assert _records(choices)[fwd][1] != "no-such-kernel" and len(choices.read_text().splitlines()) == 4


_TWIN = textwrap.dedent(
    """
    import json, sys, time, jax, jax.numpy as jnp, numpy as np
    from cnncli.native import onednn
    onednn.load()
    x = jnp.asarray(np.random.default_rng(0).normal(size=(8, 14, 14, 6)), jnp.float32)
    w = jnp.asarray(np.random.default_rng(1).normal(size=(5, 5, 6, 16)), jnp.float32)
    f = jax.jit(jax.grad(lambda x, w: jnp.sum(onednn.conv(x, w, (1, 1), ((0, 0), (0, 0)), (1, 1), 1) ** 2), (0, 1)))
    f = f.lower(x, w).compile()  # the handlers time on their first call, below
    time.sleep(max(0.0, float(sys.argv[1]) - time.time()))  # both processes start timing together
    jax.block_until_ready(f(x, w))
    print(json.dumps(onednn.implementations()))
    """
)


@needs_onednn
def test_two_processes_timing_at_once_take_turns_and_agree(tmp_path):
    """The second process waits for the first one's record and runs its choices."""
    env = dict(os.environ, CNNCLI_CACHE_DIR=str(tmp_path), CNNCLI_ONEDNN_TUNE="on")
    start = f"{time.time() + 8:.3f}"  # after both have imported jax and compiled (if one is late, it still passes)
    procs = [subprocess.Popen([sys.executable, "-c", _TWIN, start], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]  # fmt: skip
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    first, second = (json.loads(out.strip().splitlines()[-1]) for out, _ in outs)
    assert first == second and len(first) == 3
    (record,) = (tmp_path / "native").glob("onednn-*-impls-*.tsv")
    assert sorted(line.split("\t")[0] for line in record.read_text().splitlines()) == sorted(first)  # timed once


@needs_onednn
def test_without_tuning_oneDNN_picks_and_nothing_is_recorded(choices, monkeypatch):
    monkeypatch.setenv("CNNCLI_ONEDNN_TUNE", "off")
    assert not onednn.tuning_enabled()
    onednn.configure(path=choices)
    rng = np.random.default_rng(6)
    x, w, args = _case(rng, 2, 8, 3, 1, (1, 1), 1, 1, 4, 8)
    _fwd_bwd(x, w, args)
    assert not choices.exists() and len(onednn.implementations()) == 3


def test_the_record_is_per_cpu_onednn_version_and_thread_count(monkeypatch, tmp_path):
    monkeypatch.setenv("CNNCLI_CACHE_DIR", str(tmp_path))
    path = onednn.choices_path("3.2.0", 2)
    assert path.parent == tmp_path / "native" and path.name.startswith("onednn-3.2.0-impls-")
    assert path.name.endswith("-2t.tsv")
    assert path == onednn.choices_path("3.2.0", 2) != onednn.choices_path("3.3.0", 2) != onednn.choices_path("3.2.0", 4)
    monkeypatch.setenv("CNNCLI_CACHE_DIR", "off")
    assert onednn.choices_path("3.2.0", 2) is None


def test_bfloat16_without_onednn_kernels_stays_on_lax(monkeypatch):
    from cnncli.models import ops
    from cnncli.models.backend import conv_backend

    monkeypatch.setattr(onednn, "bf16_supported", lambda: False)
    assert not onednn.supports(4, ((1, 1), (1, 1)), dtype=jnp.bfloat16)
    assert onednn.supports(4, ((1, 1), (1, 1)), dtype=jnp.float32)
    x = jnp.ones((2, 8, 8, 3), jnp.bfloat16)
    w = jnp.ones((3, 3, 3, 4), jnp.float32)
    with conv_backend("onednn"):
        text = jax.jit(lambda x, w: ops.mixed_conv(x, w, (1, 1), ((1, 1), (1, 1)),
                                                   dimension_numbers=ops.conv_dimension_numbers(4))).lower(x, w).as_text()  # fmt: skip
    assert "cnncli_onednn" not in text and "convolution" in text


def test_supports_only_what_it_was_tested_on():
    pads = ((1, 1), (1, 1))
    assert onednn.supports(4, pads)
    assert onednn.supports(3, ((0, 2),), dtype=jnp.bfloat16)
    assert not onednn.supports(5, pads + ((1, 1),))  # 3-D: oneDNN 3.2's backward-weights failed here
    assert not onednn.supports(4, ((-1, 0), (0, 0)))  # negative padding crops
    assert not onednn.supports(4, pads, lhs_dilation=(2, 2))  # transposed convolutions
    assert not onednn.supports(4, pads, dtype=jnp.float16)


def test_a_bad_onednn_root_is_an_error_not_a_fallback(monkeypatch, tmp_path):
    monkeypatch.setenv("CNNCLI_ONEDNN_ROOT", str(tmp_path / "nowhere"))
    with pytest.raises(onednn.OneDNNUnavailable) as info:
        onednn.find_root()
    assert info.value.message == (
        f"CNNCLI_ONEDNN_ROOT={tmp_path / 'nowhere'} is not a oneDNN 3.x prefix "
        "(it needs include/oneapi/dnnl/dnnl.hpp and lib/libdnnl.so)"
    )


def test_missing_onednn_says_where_it_looked_and_what_to_do(monkeypatch, tmp_path):
    monkeypatch.delenv("CNNCLI_ONEDNN_ROOT", raising=False)
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "venv"))
    monkeypatch.setattr(sys, "base_prefix", str(tmp_path / "base"))
    monkeypatch.setattr(onednn.site, "USER_BASE", str(tmp_path / "user"))
    if any(onednn.is_onednn_prefix(onednn.Path(p)) for p in ("/usr/local", "/usr")):
        pytest.skip("a system-wide oneDNN 3 is installed")
    with pytest.raises(onednn.OneDNNUnavailable) as info:
        onednn.find_root()
    assert info.value.message.startswith(f"oneDNN 3.x was not found (looked in {tmp_path / 'venv'}, {tmp_path / 'base'}")
    assert "oneDNN comes with cnncli on Linux x86-64" in info.value.hint and "CNNCLI_ONEDNN_ROOT" in info.value.hint


@needs_onednn
def test_the_built_extension_is_reused(monkeypatch, tmp_path):
    monkeypatch.setenv("CNNCLI_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CNNCLI_NO_PREBUILT", "1")  # not the one a wheel may ship (hatch_build.py)
    assert onednn.needs_build() and onednn.cache_dir() == tmp_path / "native"
    first = onednn.build()
    assert first.parent == tmp_path / "native" and first.is_file() and not onednn.needs_build()
    mtime = first.stat().st_mtime_ns
    assert onednn.build() == first and first.stat().st_mtime_ns == mtime  # not rebuilt


@needs_onednn
def test_an_extension_built_elsewhere_is_used_read_only_when_named(monkeypatch, tmp_path):
    """CNNCLI_ONEDNN_PREBUILT: folders whose extension (same source, jax and oneDNN) an empty cache uses as is."""
    monkeypatch.setenv("CNNCLI_CACHE_DIR", str(tmp_path / "a"))
    monkeypatch.setenv("CNNCLI_NO_PREBUILT", "1")  # not the one a wheel may ship (hatch_build.py)
    built = onednn.build()
    monkeypatch.setenv("CNNCLI_CACHE_DIR", str(tmp_path / "b"))
    assert onednn.needs_build()
    monkeypatch.setenv(onednn.PREBUILT_ENV, os.pathsep.join([str(tmp_path / "nowhere"), str(built.parent)]))
    assert not onednn.needs_build() and onednn.build() == built
    assert not list((tmp_path / "b").rglob("*.so"))  # nothing compiled into the empty cache
    (tmp_path / "changed.cc").write_text("// another source")
    monkeypatch.setattr(onednn, "SOURCE", tmp_path / "changed.cc")  # another source: another name, not that file
    assert onednn.needs_build()


@needs_onednn
def test_an_extension_shipped_built_is_used_when_it_matches_source_jax_and_onednn(monkeypatch, tmp_path):
    """The wheel's build hook (hatch_build.py) puts the extension in native/_prebuilt/ under
    `shipped_name`; an empty cache then needs no compiler. Another name (source, jax or oneDNN
    changed since the wheel was built) is ignored, and the extension is built as before."""
    monkeypatch.setenv("CNNCLI_CACHE_DIR", str(tmp_path / "a"))
    monkeypatch.delenv("CNNCLI_NO_PREBUILT", raising=False)
    built = onednn.build()
    shipped = tmp_path / "prebuilt"
    shipped.mkdir()
    monkeypatch.setattr(onednn, "PREBUILT", shipped)
    monkeypatch.setenv("CNNCLI_CACHE_DIR", str(tmp_path / "b"))
    (shipped / "libcnncli_onednn-shipped-0123456789abcdef.so").write_bytes(built.read_bytes())  # another build's
    assert onednn.needs_build()
    name = onednn.shipped_name(onednn.find_root())
    assert name.startswith("libcnncli_onednn-shipped-") and str(tmp_path) not in name  # no install path in it
    (shipped / name).write_bytes(built.read_bytes())
    assert not onednn.needs_build() and onednn.build() == shipped / name
    assert not list((tmp_path / "b").rglob("*.so"))  # nothing compiled
    monkeypatch.setenv("CNNCLI_NO_PREBUILT", "1")
    assert onednn.needs_build()  # told not to use it


@needs_onednn
def test_a_terminal_run_says_before_the_first_build(tmp_path, capsys, monkeypatch):
    from helpers import TINY_RECIPE, write_recipe

    monkeypatch.setattr("cnncli.report.console.is_interactive", lambda: True)
    recipe = write_recipe(tmp_path, TINY_RECIPE)
    said = "compiling cnncli's oneDNN extension (first use only"
    monkeypatch.setattr(onednn, "needs_build", lambda: True)  # as on a fresh machine (the real build is cached)
    code, _, err = _cli(["train", str(recipe), "--set", "train.conv_backend=onednn", "--set", "train.epochs=1",
                         "--workdir", str(tmp_path / "a")], capsys)  # fmt: skip
    assert code == 0 and said in err
    monkeypatch.setattr(onednn, "needs_build", lambda: False)
    code, _, err = _cli(["train", str(recipe), "--set", "train.conv_backend=onednn", "--set", "train.epochs=1",
                         "--workdir", str(tmp_path / "b")], capsys)  # fmt: skip
    assert code == 0 and said not in err


# ----------------------------------------------------------------------------- channel sums (BatchNorm)


@needs_onednn
@pytest.mark.parametrize(
    "shape",
    [(128, 8, 8, 16), (3, 5, 7), (2, 3, 3, 40), (300, 20), (1, 2, 3, 4, 33), (1, 1)],
    ids=["resnet-like", "odd", "c=40", "2-d", "3-d", "one"],
)
def test_channel_sums_match_float64(shape):
    """Per-channel (sum(a), sum(a * b)) over all but the last axis: any rank, channel
    count (16-lane chunks and a tail) and row count (blocks and a partial block)."""
    rng = np.random.default_rng(1)
    a = rng.normal(3.0, 1.0, shape).astype(np.float32)
    b = rng.normal(size=shape).astype(np.float32)
    axes = tuple(range(len(shape) - 1))
    want = (a.astype(np.float64).sum(axes), (a.astype(np.float64) * b).sum(axes))
    got = jax.jit(onednn.channel_sums)(a, b)
    for g, w in zip(got, want):
        assert g.dtype == jnp.float32 and g.shape == (shape[-1],)
        np.testing.assert_allclose(np.asarray(g), w, rtol=2e-6, atol=1e-4)
    total, squares = jax.jit(onednn.channel_sums)(a, a)  # BatchNorm's forward: b = a
    np.testing.assert_allclose(np.asarray(total), want[0], rtol=2e-6, atol=1e-4)
    np.testing.assert_allclose(np.asarray(squares), (a.astype(np.float64) ** 2).sum(axes), rtol=2e-6)


_SUMS_THREADS = textwrap.dedent(
    """
    import numpy as np, jax
    from cnncli.native import onednn
    rng = np.random.default_rng(0)
    for shape in [(300, 20), (1, 5), (129, 3)]:  # 3, 1 and 2 blocks of 128 rows: fewer than the threads
        a = rng.normal(size=shape).astype(np.float32)
        b = rng.normal(size=shape).astype(np.float32)
        got = [np.asarray(v) for v in jax.jit(onednn.channel_sums)(a, b)]
        again = [np.asarray(v) for v in jax.jit(onednn.channel_sums)(a, b)]
        want = (a.astype(np.float64).sum(0), (a.astype(np.float64) * b).sum(0))
        for g, h, w in zip(got, again, want):
            np.testing.assert_allclose(g, w, rtol=2e-6, atol=1e-5)
            assert (g == h).all()  # the same bits every call
    print("ok")
    """
)


@needs_onednn
@pytest.mark.parametrize("threads", [1, 7])
def test_channel_sums_with_more_threads_than_row_blocks(threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, "-c", _SUMS_THREADS], capture_output=True, text=True, env=env, timeout=180)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


@needs_onednn
def test_channel_sums_with_a_relu_mask_count_only_where_the_mask_is_on():
    """mult/shift: a counts where b * mult + shift > 0 (BatchNorm+ReLU's backward)."""
    rng = np.random.default_rng(4)
    a = rng.normal(size=(50, 7, 20)).astype(np.float32)
    b = rng.normal(1.0, 2.0, (50, 7, 20)).astype(np.float32)
    mult = rng.normal(size=20).astype(np.float32)
    shift = rng.normal(size=20).astype(np.float32)
    on = (b * mult + shift) > 0
    masked = np.where(on, a, 0.0).astype(np.float64)
    got = jax.jit(onednn.channel_sums)(a, b, mult, shift)
    np.testing.assert_allclose(np.asarray(got[0]), masked.sum((0, 1)), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np.asarray(got[1]), (masked * b).sum((0, 1)), rtol=1e-5, atol=1e-4)
    assert 0.2 < on.mean() < 0.8


@needs_onednn
def test_channel_sums_of_bfloat16_accumulate_in_float32():
    rng = np.random.default_rng(2)
    a = jnp.asarray(rng.normal(size=(64, 6, 6, 24)), jnp.bfloat16)
    b = jnp.asarray(rng.normal(size=(64, 6, 6, 24)), jnp.float32)  # mixed: dy in bf16, x in f32
    a64, b64 = np.asarray(a.astype(jnp.float32), np.float64), np.asarray(b, np.float64)
    got = onednn.channel_sums(a, b)
    np.testing.assert_allclose(np.asarray(got[0]), a64.sum((0, 1, 2)), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(np.asarray(got[1]), (a64 * b64).sum((0, 1, 2)), rtol=1e-5, atol=1e-3)


@needs_onednn
def test_channel_sums_refuse_mismatched_shapes():
    with pytest.raises(Exception, match="cnncli channel sums: a and b must have one shape"):
        jax.block_until_ready(onednn.channel_sums(jnp.ones((4, 3)), jnp.ones((2, 6))))


@needs_onednn
@pytest.mark.parametrize("relu", [False, True], ids=["bn", "bn+relu"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_batch_norm_with_native_sums_matches_xla_reductions(dtype, relu):
    """Same outputs, statistics and gradients (x, scale, bias) either way."""
    from cnncli.models.norm import batch_norm_train

    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(2.0, 3.0, (16, 5, 5, 20)), dtype)
    scale = jnp.asarray(rng.normal(1.0, 0.1, 20), jnp.float32)
    bias = jnp.asarray(rng.normal(size=20), jnp.float32)
    up = jnp.asarray(rng.normal(size=x.shape), dtype)

    def run(native):
        def loss(x, scale, bias):
            y, mean, var = batch_norm_train(x, scale, bias, 1e-5, native=native, relu=relu)
            return jnp.sum(y.astype(jnp.float32) * up.astype(jnp.float32)), (y, mean, var)

        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(x, scale, bias)

    bwd = jax.jit(jax.grad(lambda x: jnp.sum(batch_norm_train(x, scale, bias, 1e-5, native=True, relu=relu)[0])))
    text = bwd.lower(x).as_text()
    assert "cnncli_channel_sums" in text and ("cnncli_channel_sums_relu" in text) == relu
    (_, ref_aux), ref_grads = run(False)
    (_, aux), grads = run(True)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == jnp.float32 else dict(rtol=2e-2, atol=2e-2)
    for got, want in zip((*aux, *grads), (*ref_aux, *ref_grads)):
        assert got.dtype == want.dtype
        np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), **tol)


# ----------------------------------------------------------------------------- in the train step


@needs_onednn
def test_a_train_step_with_onednn_matches_xla():
    """A model with BatchNorm, a strided residual block, max pool and dropout: 3 SGD steps."""
    import optax
    from flax import nnx

    from cnncli.arith import layers
    from cnncli.models import build_model
    from cnncli.models.apply import StepConfig, trainable_filter
    from cnncli.train.step import fresh_state, make_train_step

    tokens = "conv:c=8,k=3,p=same bn relu maxpool:k=2 resblock:c=16,s=2 conv:c=16,k=1 relu gap dense"
    model = build_model(layers.parse_layers(tokens), (12, 12, 3), 5,
                        rngs=nnx.Rngs(params=jax.random.key(0, impl="rbg"), dropout=1))  # fmt: skip
    filters = (trainable_filter([]), ...)
    model.train()
    graphdef, params, rest = nnx.split(model, *filters)
    tx = optax.sgd(0.05, momentum=0.9)
    rng = np.random.default_rng(0)
    data = (jnp.asarray(rng.integers(0, 256, (32, 12, 12, 3), dtype=np.uint8)),
            jnp.asarray(rng.integers(0, 5, (32,), dtype=np.int32)), jnp.arange(32, dtype=jnp.int32))  # fmt: skip
    finals = {}
    for backend in ("xla", "onednn"):
        cfg = StepConfig(num_classes=5, mean=(127.5,) * 3, std=(64.0,) * 3, batch_size=16, conv_backend=backend)
        step = make_train_step(graphdef, filters, tx, cfg)
        p, r = jax.tree.map(jnp.copy, (params, rest))
        state = fresh_state(p, r, tx)
        text = step.lower(state, *data, np.int32(0), jax.random.key(0)).compile().as_text()
        assert ("cnncli_onednn_conv" in text) == (backend == "onednn")
        assert ("cnncli_channel_sums" in text) == (backend == "onednn")  # BatchNorm's sums
        for i in range(3):
            state = step(state, *data, np.int32(i % 2), jax.random.key(0))
        assert step._cache_size() == 1  # never a recompile after the first step
        finals[backend] = state
    a, b = finals["xla"], finals["onednn"]
    assert float(b.sums["loss"]) == pytest.approx(float(a.sums["loss"]), rel=1e-4)
    for u, v in zip(jax.tree.leaves((a.params, a.rest)), jax.tree.leaves((b.params, b.rest))):
        np.testing.assert_allclose(np.asarray(v), np.asarray(u), rtol=1e-3, atol=1e-4)


@needs_onednn
def test_the_profile_names_custom_calls_by_target(tmp_path):
    from cnncli.train.profiling import (
        custom_call_targets,
        format_top_ops,
        profile_steps,
        synthetic_step,
    )

    hlo = '  %ffi_call.7 = f32[2]{0} custom-call(f32[2]{0} %p), custom_call_target="cnncli_channel_sums", api_version=4'
    assert custom_call_targets(hlo) == {"ffi_call.7": "cnncli_channel_sums"}
    bench = synthetic_step("conv:c=4,k=3,p=same bn relu gap dense", (8, 8, 1), batch_size=8, conv_backend="onednn")
    report = profile_steps(bench.step, bench.state, bench.args, 2, tmp_path / "profile", batch_size=8)
    assert {"cnncli_onednn_conv_fwd", "cnncli_onednn_conv_bwd_weights", "cnncli_channel_sums"} <= set(report.categories)
    assert any(op.name.endswith(" cnncli_onednn_conv_fwd") for op in report.ops)
    assert "XLA CPU runs its own convolutions" not in format_top_ops(report)  # no lax convolution in this step
    # how much of the custom calls' time XLA's own ops ran beside them on other threads
    assert 0 < report.custom_call_ms <= report.op_ms and 0 <= report.custom_call_overlap_ms <= report.custom_call_ms
    assert "custom calls: " in format_top_ops(report)


# ----------------------------------------------------------------------------- host malloc

_FAULTS = textwrap.dedent(
    """
    import ctypes, resource
    from cnncli.runtime.jaxsetup import tune_host_malloc
    print("tuned", tune_host_malloc())
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    SIZE = 160 << 20  # past glibc's largest mmap threshold (32 MB), as XLA's step buffers
    def touch():  # what XLA CPU does each step: a fresh block, written, freed
        p = libc.malloc(SIZE)
        ctypes.memset(p, 1, SIZE)
        libc.free(p)
    touch()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        touch()
    print("faults", resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def _faults(env_extra: dict) -> tuple[str, int]:
    env = dict(os.environ, **env_extra)
    out = subprocess.run([sys.executable, "-c", _FAULTS], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    tuned, faults = out.stdout.split()[1], int(out.stdout.split()[3])
    return tuned, faults


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_tuned_malloc_reuses_large_blocks_instead_of_faulting_fresh_pages():
    tuned, faults = _faults({})
    plain_tuned, plain_faults = _faults({"CNNCLI_MALLOC": "system"})
    assert (tuned, plain_tuned) == ("True", "False")
    # 3 x 160 MB of fresh pages is ~117,000 faults with glibc's defaults; reused, almost none
    assert plain_faults > 100_000
    assert faults < 2_000


# ----------------------------------------------------------------------------- through `cnncli train`


def _cli(argv, capsys):
    from cnncli.cli.app import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    return info.value.code, out, err


@needs_onednn
def test_train_with_onednn_matches_xla_and_eval_reproduces_it(tmp_path, capsys):
    import json

    from helpers import TINY_RECIPE, write_recipe

    recipe = write_recipe(tmp_path, TINY_RECIPE)
    finals = {}
    for backend in ("xla", "onednn", "auto", "default"):  # default: no conv_backend in the recipe
        choose = [] if backend == "default" else ["--set", f"train.conv_backend={backend}"]
        code, out, err = _cli(["train", str(recipe), *choose, "--set", "train.epochs=1",
                               "--workdir", str(tmp_path / backend), "--json"], capsys)  # fmt: skip
        assert code == 0, err
        finals[backend] = json.loads(out.splitlines()[-1])
    a, b = finals["xla"], finals["onednn"]
    assert (a["conv_backend"], b["conv_backend"]) == ("xla", "onednn")
    assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-3)  # same trajectory up to float rounding
    assert abs(b["eval_accuracy"] - a["eval_accuracy"]) <= 2 / 359
    resolved = json.loads((tmp_path / "onednn" / "recipe.json").read_text())
    assert resolved["train"]["conv_backend"] == "onednn"
    # auto on one CPU device with oneDNN installed: the onednn program, the recipe as written
    assert finals["auto"]["conv_backend"] == "onednn" and finals["auto"]["train_loss"] == b["train_loss"]
    assert json.loads((tmp_path / "auto" / "recipe.json").read_text())["train"]["conv_backend"] == "auto"
    assert json.loads((tmp_path / "auto" / "env.json").read_text())["conv_backend"] == "onednn"
    # the default is auto, and says what it chose and why in the summary and env.json
    default, note = finals["default"], f"conv_backend auto: onednn (one CPU device, oneDNN {onednn.load()})"
    assert (default["conv_backend"], default["conv_backend_note"], default["train_loss"]) == ("onednn", note, b["train_loss"])
    assert json.loads((tmp_path / "default" / "env.json").read_text())["conv_backend_note"] == note
    assert a["conv_backend_note"] is None and b["conv_backend_note"] is None  # asked for: nothing was chosen
    code, out, err = _cli(["eval", str(tmp_path / "onednn"), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["accuracy"] == pytest.approx(b["eval_accuracy"])


def test_onednn_off_the_cpu_fails_before_writing_anything(tmp_path, monkeypatch):
    from helpers import TINY_RECIPE, write_recipe

    from cnncli.config.recipe import load_recipe
    from cnncli.errors import RecipeError
    from cnncli.train import session

    recipe = load_recipe(write_recipe(tmp_path, TINY_RECIPE), ["train.conv_backend=onednn"])
    monkeypatch.setattr(session.jax, "default_backend", lambda: "gpu")
    with pytest.raises(RecipeError) as info:
        session.build_session(recipe, tmp_path / "run")
    assert "train.conv_backend = 'onednn' is for the CPU, but JAX runs on gpu" in info.value.message
    assert not (tmp_path / "run").exists()


def test_an_unknown_backend_names_the_choices(tmp_path, capsys):
    from helpers import TINY_RECIPE, write_recipe

    recipe = write_recipe(tmp_path, TINY_RECIPE)
    code, _, err = _cli(["train", str(recipe), "--set", "train.conv_backend=mkl", "--dry-run"], capsys)
    assert code == 2  # a value --set gave that the schema refuses: a usage error
    assert "`train.conv_backend`: unknown value 'mkl' (valid: xla, onednn, auto)" in err


def test_auto_falls_back_to_xla_and_says_why(tmp_path, monkeypatch):
    """auto never fails: off the CPU, on several devices, or without oneDNN it is xla, with the reason."""
    from types import SimpleNamespace

    from helpers import TINY_RECIPE, write_recipe

    from cnncli.config.recipe import load_recipe
    from cnncli.train import devices

    recipe = load_recipe(write_recipe(tmp_path, TINY_RECIPE), ["train.conv_backend=auto"])
    one = SimpleNamespace(multi=False)
    two = SimpleNamespace(multi=True, mesh=SimpleNamespace(size=2))
    if SKIP is None:  # oneDNN here: auto takes it, and says which
        assert devices.resolve_conv_backend(recipe, one) == (
            "onednn", f"conv_backend auto: onednn (one CPU device, oneDNN {onednn.load()})")  # fmt: skip
    assert devices.resolve_conv_backend(recipe, two) == (
        "xla", "conv_backend auto: xla (oneDNN runs on one device; this mesh has 2)")  # fmt: skip

    def missing():
        raise onednn.OneDNNUnavailable("oneDNN 3.x was not found (looked in /nowhere)")

    monkeypatch.setattr(onednn, "load", missing)
    assert devices.resolve_conv_backend(recipe, one) == (
        "xla", "conv_backend auto: xla (oneDNN is not usable here: oneDNN 3.x was not found (looked in /nowhere); "
        f"to use it: {onednn.HINT})")  # fmt: skip

    def no_compiler():  # the extra is there, g++ is not: the error's own hint, its first line only
        raise onednn.OneDNNUnavailable("building the oneDNN extension failed (g++ ... exit 1):\nerror: x.cc:1",
                                       hint="have g++ on the PATH")  # fmt: skip

    monkeypatch.setattr(onednn, "load", no_compiler)
    assert devices.resolve_conv_backend(recipe, one) == (
        "xla", "conv_backend auto: xla (oneDNN is not usable here: building the oneDNN extension failed "
        "(g++ ... exit 1):; to use it: have g++ on the PATH)")  # fmt: skip
    monkeypatch.setattr(onednn, "load", missing)
    monkeypatch.setattr(devices.jax, "default_backend", lambda: "gpu")
    assert devices.resolve_conv_backend(recipe, one) == (
        "xla", "conv_backend auto: xla (JAX runs on gpu, where XLA's own kernels are the fast ones)")  # fmt: skip
    xla = load_recipe(write_recipe(tmp_path, TINY_RECIPE), ["train.conv_backend=xla"])
    assert devices.resolve_conv_backend(xla, two) == ("xla", None)  # asked for: never looks for oneDNN
    default = load_recipe(write_recipe(tmp_path, TINY_RECIPE), [])
    assert default.train.conv_backend == "auto" and "conv_backend" not in TINY_RECIPE


def test_auto_tells_a_person_what_it_chose(tmp_path, capsys, monkeypatch):
    import json

    from helpers import TINY_RECIPE, write_recipe

    def missing():
        raise onednn.OneDNNUnavailable("oneDNN 3.x was not found")

    monkeypatch.setattr(onednn, "load", missing)
    monkeypatch.setattr("cnncli.report.console.is_interactive", lambda: True)  # as if stdout were a terminal
    recipe = write_recipe(tmp_path, TINY_RECIPE)
    code, out, err = _cli(["train", str(recipe), "--set", "train.conv_backend=auto", "--set", "train.epochs=1",
                           "--workdir", str(tmp_path / "run")], capsys)  # fmt: skip
    assert code == 0, err
    assert (f"conv_backend auto: xla (oneDNN is not usable here: oneDNN 3.x was not found; to use it: {onednn.HINT})"
            in " ".join(err.split()))  # fmt: skip
    assert json.loads((tmp_path / "run" / "env.json").read_text())["conv_backend_note"].startswith(
        "conv_backend auto: xla (oneDNN is not usable here")
    assert "(training only)" in out  # xla: no oneDNN remark in the summary


@needs_onednn
@pytest.mark.slow
def test_onednn_on_a_mesh_of_several_devices_is_refused(tmp_path):
    from helpers import TINY_RECIPE, write_recipe

    recipe = write_recipe(tmp_path, TINY_RECIPE)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    proc = subprocess.run([sys.executable, "-m", "cnncli.cli.app", "train", str(recipe), "--set", "train.conv_backend=onednn",
                           "--workdir", str(tmp_path / "run"), "--json"],
                          capture_output=True, text=True, env=env, timeout=240)  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "train.conv_backend = 'onednn' runs on one device, but this run's mesh has 2" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()  # refused before the run directory is written


def test_the_cli_tunes_malloc_for_commands_that_run_jax_only(monkeypatch, capsys, tmp_path):
    from cnncli.runtime import jaxsetup

    monkeypatch.chdir(tmp_path)  # data info writes its sample grid here

    calls = []
    monkeypatch.setattr(jaxsetup, "tune_host_malloc", lambda: calls.append(1) or True)
    code, _, _ = _cli(["conv-arith", "32", "-k", "3"], capsys)
    assert code == 0 and calls == []
    code, _, _ = _cli(["data", "info", "digits"], capsys)
    assert code == 0 and calls == [1]


def test_custom_call_overlap_counts_other_threads_only():
    """A profile's custom-call overlap: XLA ops on other threads during a call count, the call's own thread not."""
    from cnncli.train.profiling import _custom_call_overlap

    spans = [(0.0, 1000.0, "t1", True),  # a oneDNN call on t1, 1 ms
             (500.0, 1500.0, "t2", False),  # half of it under an op on t2: 0.5 ms
             (100.0, 200.0, "t1", False),  # same thread: not an overlap
             (2000.0, 2600.0, "t2", True), (1900.0, 2100.0, "t1", False), (2500.0, 3000.0, "t1", False)]  # fmt: skip
    total, overlap = _custom_call_overlap(spans)
    assert total == pytest.approx(1.6) and overlap == pytest.approx(0.5 + 0.1 + 0.1)
