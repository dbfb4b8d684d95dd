"""``--draw``: the seed examples, checked against jax/numpy on random small inputs."""

from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from jax import lax  # noqa: E402

from cnncli.arith import draw
from cnncli.arith import formulas as arith  # noqa: E402
from cnncli.errors import UsageError  # noqa: E402

NP_MODE = {"zeros": "constant", "circular": "wrap", "reflect": "reflect", "edge": "edge"}


def setup(nd, s=1, pads=(0, 0), d=1, mode="zeros", pool=False):
    return draw.Setup((s,) * nd, (pads,) * nd, (d,) * nd, mode, pool)


def test_seed_001_image_and_kernel():
    # Seed 001 ("Convolutions" slides): the 5x5 image with the 3x3 kernel
    # [[1,0,1],[0,1,0],[1,0,1]] gives the convolved feature [[4,3,4],[2,4,3],[2,3,4]].
    result = draw.draw_2d(draw.SEED_IMAGE, draw.SEED_KERNEL, setup(2))
    assert result.output == [[4, 3, 4], [2, 4, 3], [2, 3, 4]]
    assert result.convolution == result.output  # the X kernel equals its 180-degree flip
    lines = result.text.splitlines()
    assert "step 1: y[0,0] = 1×1 + 1×0 + 1×1 + 0×0 + 1×1 + 1×0 + 0×1 + 0×0 + 1×1 = 4" in lines
    # the first frame marks the window cells value×weight, as the slides' "1 x1"
    assert lines[lines.index("step 1: y[0,0] = 1×1 + 1×0 + 1×1 + 0×0 + 1×1 + 1×0 + 0×1 + 0×0 + 1×1 = 4") + 1] == (
        "  1×1 1×0 1×1   0   0      4 ? ?"
    )
    at = lines.index("output y (3x3):")
    assert lines[at + 1 : at + 4] == ["  4 3 4", "  2 4 3", "  2 3 4"]
    assert "This kernel equals its flip, so convolution gives the same output here." in lines


def test_default_values_are_the_seed():
    assert draw.default_values((5, 5)) == draw.SEED_IMAGE
    assert draw.default_kernel((3, 3)) == draw.SEED_KERNEL


def test_seed_000_circulant_matrix():
    # Seed 000, equation (1): circular padding makes w * x = C_w x with the circulant
    # rows (w0 w1 w2 0 0), (0 w0 w1 w2 0), (0 0 w0 w1 w2), (w2 0 0 w0 w1), (w1 w2 0 0 w0).
    matrix = draw.conv_matrix(5, 3, setup(1, pads=(0, 2), mode="circular"))
    symbolic = [["+".join(f"w{m}" for m in cell) or "0" for cell in row] for row in matrix]
    assert symbolic == [
        ["w0", "w1", "w2", "0", "0"],
        ["0", "w0", "w1", "w2", "0"],
        ["0", "0", "w0", "w1", "w2"],
        ["w2", "0", "0", "w0", "w1"],
        ["w1", "w2", "0", "0", "w0"],
    ]
    text = draw.draw_1d([1, 2, 3, 4, 5], [1, 0, -1], setup(1, pads=(0, 2), mode="circular")).text
    assert "circulant: each row is the previous one rotated right by one" in text


def test_seed_004_valid_toeplitz():
    # Seed 004 ("from fully connected to convolution"): valid-only convolution is a
    # banded matrix with rows (c1 c2 c3 0 ...), (0 c1 c2 c3 0 ...), shifted by one.
    matrix = draw.conv_matrix(8, 3, setup(1))
    assert len(matrix) == 6
    for r, row in enumerate(matrix):
        assert [cell for cell in row] == [[m] if 0 <= c - r < 3 and (m := c - r) >= 0 else [] for c in range(8)]
    text = draw.draw_1d(list(range(8)), [1, 2, 1], setup(1)).text
    assert "Toeplitz: constant along each diagonal" in text


def test_reflect_padding_folds_taps():
    matrix = draw.conv_matrix(3, 3, setup(1, pads=(1, 1), mode="reflect"))
    assert matrix[0] == [[1], [0, 2], []]  # x[-1] reflects to x[1]: w0 and w2 share a column


@st.composite
def cases(draw_, nd):
    n = tuple(draw_(st.integers(1, 7)) for _ in range(nd))
    k = tuple(draw_(st.integers(1, 3)) for _ in range(nd))
    s, d = draw_(st.integers(1, 3)), draw_(st.integers(1, 2))
    pads = (draw_(st.integers(0, 2)), draw_(st.integers(0, 2)))
    ints = st.integers(-3, 3)
    x = np.array(draw_(st.lists(ints, min_size=int(np.prod(n)), max_size=int(np.prod(n))))).reshape(n)
    w = np.array(draw_(st.lists(ints, min_size=int(np.prod(k)), max_size=int(np.prod(k))))).reshape(k)
    mode = draw_(st.sampled_from(["zeros", "circular", "reflect", "edge"]))
    return x, w, s, pads, d, mode


def _numpy_correlate(x, w, s, pads, d, mode):
    """Reference: pad with numpy's mode, then strided, dilated windows (sliding_window_view)."""
    nd, xp = x.ndim, x
    for ax in range(nd):  # axis by axis: a single pixel reflects onto itself (numpy's edge)
        axis_mode = "edge" if mode == "reflect" and x.shape[ax] == 1 else mode
        xp = np.pad(xp, [pads if a == ax else (0, 0) for a in range(nd)], mode=NP_MODE[axis_mode])
    span = tuple(d * (k - 1) + 1 for k in w.shape)
    windows = np.lib.stride_tricks.sliding_window_view(xp, span)
    windows = windows[(slice(None, None, s),) * nd + (slice(None, None, d),) * nd]
    return np.tensordot(windows, w, axes=nd)


def _fits(x, w, s, pads, d):
    return all(n + sum(pads) >= d * (k - 1) + 1 for n, k in zip(x.shape, w.shape))


@settings(max_examples=120, deadline=None)
@given(case=st.one_of(cases(1), cases(2)))
def test_correlate_matches_numpy(case):
    x, w, s, pads, d, mode = case
    if not _fits(x, w, s, pads, d) or (mode == "reflect" and max(pads) >= min(x.shape) > 1):
        return  # too small to convolve, or a reflection numpy and PyTorch refuse
    got = draw.correlate(x.tolist(), w.tolist(), setup(x.ndim, s, pads, d, mode))
    np.testing.assert_allclose(np.array(got), _numpy_correlate(x, w, s, pads, d, mode))
    if x.ndim == 1 and mode == "zeros":
        matrix = draw.conv_matrix(len(x), len(w), setup(1, s, pads, d))
        numeric = np.array([[sum(w[m] for m in cell) for cell in row] for row in matrix])
        np.testing.assert_allclose(numeric @ x, got)  # y = C x


def test_seed_example_matches_lax():
    x = jnp.asarray(draw.SEED_IMAGE, jnp.float32)[None, ..., None]
    w = jnp.asarray(draw.SEED_KERNEL, jnp.float32)[..., None, None]
    ref = lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    assert np.asarray(ref)[0, ..., 0].tolist() == [[4, 3, 4], [2, 4, 3], [2, 3, 4]]


def test_true_convolution_is_numpy_convolve():
    x, w = [1, 2, 3, 4, 5], [1, 0, -1]
    result = draw.draw_1d(x, w, setup(1))
    assert result.convolution == np.convolve(x, w, mode="valid").tolist()
    assert result.output == np.correlate(x, w, mode="valid").tolist()
    assert result.output != result.convolution  # an antisymmetric kernel shows the flip


def test_max_pool_matches_reduce_window():
    x = np.arange(25).reshape(5, 5) % 7
    got = draw.correlate(x.tolist(), [[0, 0], [0, 0]], setup(2, 2, (0, 1), pool=True))
    ref = lax.reduce_window(jnp.asarray(x, jnp.float32), -jnp.inf, lax.max, (2, 2), (2, 2), ((0, 1), (0, 1)))
    np.testing.assert_allclose(np.array(got), np.asarray(ref))


@pytest.mark.parametrize(("n", "k", "s", "p", "op"), [(3, 3, 2, 1, 1), (4, 3, 1, 0, 0), (2, 4, 3, 1, 2), (5, 2, 2, 0, 1)])
def test_tconv_is_the_transposed_matrix(n, k, s, p, op):
    # A transposed conv multiplies by C^T: the gradient of the direct conv (PyTorch's
    # ConvTranspose semantics), i.e. jax.vjp of the conv with respect to its input.
    x, w = [float(v) for v in range(1, n + 1)], [float(v) for v in range(1, k + 1)]
    out = arith.tconv_output(n, k, s, (p, p), 1, op)
    conv = lambda z: lax.conv_general_dilated(  # noqa: E731
        z[None, :, None], jnp.asarray(w)[:, None, None], (s,), [(p, p)], dimension_numbers=("NWC", "WIO", "NWC")
    )[0, :, 0]
    _, vjp = jax.vjp(conv, jnp.zeros(out))
    expected = np.asarray(vjp(jnp.asarray(x))[0])
    result = draw.draw_tconv_1d(x, w, draw.Setup((s,), ((p, p),), (1,), output_padding=(op,)), out)
    np.testing.assert_allclose(result.output, expected)
    assert f"C^T ({out}x{n})" in result.text


def test_parse_values():
    assert draw.parse_values("1,2,3") == [1, 2, 3]
    assert draw.parse_values("1,0.5;0,1") == [[1, 0.5], [0, 1]]
    with pytest.raises(UsageError, match="rows have different lengths"):
        draw.parse_values("1,2;3")
    with pytest.raises(UsageError, match="is not a list of numbers"):
        draw.parse_values("1,a")


def test_check_small():
    draw.check_small((12, 12))
    with pytest.raises(UsageError, match=r"--draw is for small inputs \(at most 12 per side\); got 224x224"):
        draw.check_small((224, 224))
    with pytest.raises(UsageError, match="--draw shows 1-D and 2-D inputs; got 3-D"):
        draw.check_small((4, 4, 4))
