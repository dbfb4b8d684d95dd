"""Winograd convolutions written in XLA ops against oneDNN's direct ones, per ResNet-20 layer.

Run: ``uv run python benchmarks/winograd.py [--repeats 15]``

Winograd's F(m x m, 3 x 3) computes an m x m output tile from an (m+2) x (m+2)
input tile with (m+2)^2 multiplications per channel pair instead of 9 m^2: 2.25x
fewer for F(2x2), 4x fewer for F(4x4) (Lavin & Gray 2016). The 3x3, stride-1
convolutions of ResNet-20 (16, 32 and 64 channels at 32x32, 16x16, 8x8) are where
that could beat direct convolutions that already run near the matmul peak. Here
each transform (input tiles, kernel, output tiles) is a sum of slices XLA fuses,
and the multiplications one batched matmul per tile position; the gradient is
autodiff's. Prints, per layer shape at batch 128, the median milliseconds of the
forward pass and of the gradient (input and kernel, from a given output
cotangent) for XLA's convolution, oneDNN's (cnncli's ``conv_backend = "onednn"``,
skipped when the extra is missing) and both Winograd variants, with the largest
forward difference from XLA's result relative to its largest value.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
from jax import lax

# (B^T, G, A^T) of F(m x m, 3 x 3), Lavin & Gray's points 0, +-1 (m = 2) and 0, +-1, +-2 (m = 4).
MATRICES = {
    2: (
        [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
        [[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]],
        [[1, 1, 1, 0], [0, 1, -1, -1]],
    ),
    4: (
        [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
         [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
        [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
         [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]],
        [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
    ),
}  # fmt: skip


def combine(matrix, items):
    """``[sum_j matrix[i][j] * items[j] for i]``, skipping zero coefficients (XLA fuses the sums)."""
    out = []
    for row in matrix:
        terms = [x if c == 1 else -x if c == -1 else c * x for c, x in zip(row, items) if c != 0]
        total = terms[0]
        for t in terms[1:]:
            total = total + t
        out.append(total)
    return out


def winograd(x: jax.Array, w: jax.Array, m: int) -> jax.Array:
    """3x3, stride 1, padding 1 convolution of NHWC ``x`` with HWIO ``w`` by F(m x m, 3 x 3)."""
    bt, g, at = MATRICES[m]
    a = m + 2
    n, h, wd, c = x.shape
    th, tw = -(-h // m), -(-wd // m)
    xp = jnp.pad(x, ((0, 0), (1, 1 + th * m - h), (1, 1 + tw * m - wd), (0, 0)))
    tiles = [[xp[:, i:i + m * th:m, j:j + m * tw:m, :] for j in range(a)] for i in range(a)]  # d[i][j]: (N, th, tw, C)
    rows = [combine(bt, [tiles[i][j] for i in range(a)]) for j in range(a)]  # B^T d, by column
    v = [combine(bt, [rows[j][p] for j in range(a)]) for p in range(a)]  # (B^T d) B
    v = jnp.stack([t for row in v for t in row]).reshape(a * a, n * th * tw, c)
    taps = [[w[i, j] for j in range(3)] for i in range(3)]
    rows = [combine(g, [taps[i][j] for i in range(3)]) for j in range(3)]
    u = jnp.stack([t for p in range(a) for t in combine(g, [rows[j][p] for j in range(3)])])  # G w G^T
    prod = jnp.einsum("ptc,pcd->ptd", v, u).reshape(a, a, n, th, tw, -1)  # one matmul per tile position
    rows = [combine(at, [prod[i, j] for i in range(a)]) for j in range(a)]
    y = [combine(at, [rows[j][p] for j in range(a)]) for p in range(m)]  # A^T M A: y[p][q]
    y = jnp.stack([jnp.stack(r, axis=3) for r in y], axis=2)  # (N, th, p, tw, q, C_out)
    return y.reshape(n, th * m, tw * m, -1)[:, :h, :wd]


def direct(x, w):
    return lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))


def median_ms(f, args, repeats: int) -> float:
    jax.block_until_ready(f(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    from cnncli.runtime.jaxsetup import configure

    configure()
    methods = {"xla": direct, "winograd F(2x2)": lambda x, w: winograd(x, w, 2),
               "winograd F(4x4)": lambda x, w: winograd(x, w, 4)}  # fmt: skip
    try:
        from cnncli.native import onednn

        onednn.load()
        methods["onednn"] = lambda x, w: onednn.conv(x, w, (1, 1), ((1, 1), (1, 1)), (1, 1), 1)
    except Exception as err:  # noqa: BLE001 - the extra is optional
        print(f"(oneDNN skipped: {err})")
    print(f"batch {args.batch_size}, median of {args.repeats}; gradient = input and kernel gradients from an output cotangent")
    print("| layer | method | forward ms | gradient ms | max diff / max |\n|---|---|---|---|---|")
    keys = jax.random.split(jax.random.key(0), 3)
    for size, ch in [(32, 16), (16, 32), (8, 64)]:
        x = jax.random.normal(keys[0], (args.batch_size, size, size, ch))
        w = jax.random.normal(keys[1], (3, 3, ch, ch)) * (2 / (9 * ch)) ** 0.5
        dy = jax.random.normal(keys[2], (args.batch_size, size, size, ch))
        ref = direct(x, w)
        for name, conv in methods.items():
            fwd = jax.jit(conv)
            grad = jax.jit(jax.grad(lambda x, w, conv=conv: jnp.vdot(conv(x, w), dy), argnums=(0, 1)))
            err = float(jnp.max(jnp.abs(fwd(x, w) - ref)) / jnp.max(jnp.abs(ref)))
            print(f"| {size}x{size}x{ch} | {name} | {median_ms(fwd, (x, w), args.repeats):.2f} | "
                  f"{median_ms(grad, (x, w), args.repeats):.2f} | {err:.1e} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
