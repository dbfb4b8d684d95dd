"""Teaching text for ``cnncli conv-arith``: the quick form's notes, conventions, solve, draw.

Every note is computed from the user's numbers, as plain data (dicts, strings, a
`cnncli.arith.draw.Drawing`); `cnncli.report.arith` prints them. Pure Python: no
jax, numpy or rich.

- `quick_result`: one axis: output size, the formula with numbers, notes, warnings.
- `convention_notes`: how PyTorch and Flax spell that layer, and how they differ.
- `same_stride_note`, `no_solution_note`: the text around ``--solve``'s table.
- `draw_example`: ``--draw``'s values, kernel and worked drawing from a `DrawRequest`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cnncli.arith import draw
from cnncli.arith import formulas as arith
from cnncli.arith.layers import Padding, parse_shape
from cnncli.errors import UsageError


def _p(pads: tuple[int, int]) -> str:
    return str(pads[0]) if pads[0] == pads[1] else f"{pads[0]},{pads[1]}"


def _remainder_note(i: int, k: int, s: int, pads: tuple[int, int], d: int) -> list[str]:
    ke = arith.effective_kernel(k, d)
    span = i + pads[0] + pads[1] - ke
    u = arith.unused(i, k, s, pads, d)
    notes = []
    if span % s:
        q, r = divmod(span, s)
        n = u.tail_pixels
        lost = (f"{n} of them {'is an input pixel' if n == 1 else 'are input pixels'}" if n
                else "all of them padding, so the floor itself drops no input pixel")  # fmt: skip
        notes.append(
            f"({i} + {pads[0]} + {pads[1]} - {ke}) / {s} = {span}/{s} is not an integer ({span} = {q}*{s} + {r}): "
            f"the floor drops the last {r} position(s) of the padded input ({lost})"
        )
    if u.gap_pixels:
        if d > 1 and ke >= s:  # the window is wide, but the dilated kernel reads only every d-th pixel of it
            why = f"dilation {d} reads one pixel in {d} of the {ke}-wide window, and stride {s} does not fill the holes"
        else:
            why = f"the window ({ke} wide) is narrower than the stride ({s})"
        notes.append(f"{why}: {u.gap_pixels} of {i} input pixels fall between windows and are never read")
    return notes


def _pad_notes(pad, i: int, k: int, s: int, d: int, pads: tuple[int, int]) -> list[str]:
    ke = arith.effective_kernel(k, d)
    notes = []
    if d > 1:
        notes.append(f"dilation {d}: the kernel spans d*(k-1) + 1 = {ke} pixels")
    if pad == "same":
        total = pads[0] + pads[1]
        odd = " (the odd pixel goes at the end, as in XLA, TensorFlow and PyTorch)" if total % 2 else ""
        notes.append(
            f"same: total = max((ceil({i}/{s}) - 1)*{s} + {ke} - {i}, 0) = {total}; lo = {total}//2 = {pads[0]}, "
            f"hi = {pads[1]}{odd}"
        )
    elif pad == "full":
        notes.append(f"full: lo = hi = d*(k-1) = {ke - 1}: every partial overlap counts")
    return notes


def quick_result(
    i: int, k: int, s: int, pad, d: int, *, transpose: bool = False, output_padding: int = 0,
    pool: bool = False, ceil: bool = False, convention: str | None = None,
) -> dict[str, Any]:
    """The quick form's answer as a JSON-ready dict: output, formula, notes, warnings.

    Args:
        i: input size (one axis).
        k, s, d: kernel, stride and dilation.
        pad: a padding name (``same``/``valid``/``full``) or one ``(lo, hi)`` pair.
        transpose: a transposed conv with ``output_padding``.
        pool: a pooling window, rounded up with ``ceil`` (PyTorch ``ceil_mode``).
        convention: ``torch`` or ``flax``: add ``convention_notes`` (`convention_notes`).

    Returns:
        ``kind``, ``input``, ``output``, ``kernel``, ``stride``, ``padding``, ``dilation``,
        ``formula``, ``notes`` and ``warnings``, plus the keys of its kind (see the
        ``_quick_*`` functions).
    """
    if transpose:
        result = _quick_tconv(i, k, s, pad, d, output_padding)
    elif pool:
        result = _quick_pool(i, k, s, pad, d, ceil)
    else:
        result = _quick_conv(i, k, s, pad, d)
    if convention:
        result["convention_notes"] = convention_notes(convention, result)
    return result


def _base(kind: str, i: int, o: int, k: int, s: int, pads, d: int, formula: str) -> dict[str, Any]:
    return {"kind": kind, "input": i, "output": o, "kernel": k, "stride": s, "padding": list(pads),
            "dilation": d, "formula": formula, "notes": [], "warnings": []}  # fmt: skip


def _quick_conv(i: int, k: int, s: int, pad, d: int) -> dict[str, Any]:
    pads = arith.resolve_pads(pad, i, k, s, d)
    out = arith.conv_output(i, k, s, pads, d, where="conv: ")
    result = _base("conv", i, out, k, s, pads, d, arith.conv_formula(i, k, s, pads, d))
    op = arith.transpose_output_padding(i, k, s, pads, d)
    result["transpose_output_padding"] = op
    result["notes"] = _pad_notes(pad, i, k, s, d, pads) + _remainder_note(i, k, s, pads, d)
    result["notes"].append(
        f"transpose: tconv k={k}, s={s}, p={_p(pads)}" + (f", d={d}" if d > 1 else "")
        + f", output_padding={op} maps {out} back to {i}"
    )
    warning = arith.unused_warning(i, k, s, pads, d)
    result["warnings"] = [warning] if warning else []
    return result


def _quick_pool(i: int, k: int, s: int, pad, d: int, ceil: bool) -> dict[str, Any]:
    pads = arith.resolve_pads(pad, i, k, s, d)
    out, extra = arith.pool_output(i, k, s, pads, d, ceil, where="pool: ")
    result = _base("pool", i, out, k, s, pads, d, arith.pool_formula(i, k, s, pads, d, ceil))
    result.update(ceil=ceil, applied_padding=[pads[0], pads[1] + extra])
    notes = _pad_notes(pad, i, k, s, d, pads)
    if ceil and extra:
        notes.append(
            f"ceil mode: the last window hangs {extra} past the padded input; frameworks without ceil mode "
            f"(Flax, jax.lax.reduce_window) get the same output with padding ({pads[0]}, {pads[1] + extra})"
        )
    elif not ceil:
        notes += _remainder_note(i, k, s, pads, d)
        warning = arith.unused_warning(i, k, s, pads, d)
        result["warnings"] = [warning] if warning else []
    result["notes"] = notes
    return result


def _quick_tconv(i: int, k: int, s: int, pad, d: int, op: int) -> dict[str, Any]:
    pads, op2 = arith.tconv_pads(pad, i, k, s, d, op)
    out = arith.tconv_output(i, k, s, pads, d, op2, where="tconv: ")
    lax = arith.tconv_lax_padding(k, s, pads, d, op2)
    result = _base("tconv", i, out, k, s, pads, d, arith.tconv_formula(i, k, s, pads, d, op2))
    result.update(output_padding=op2, lax_padding=list(lax))
    notes = []
    if isinstance(pad, str) and pad != "full":
        notes.append(
            f"{pad} follows Flax/TensorFlow; as PyTorch spells it: padding={_p(pads)}, output_padding={op2}"
        )
    notes.append(
        f"as a direct conv (Dumoulin & Visin): put {s - 1} zero(s) between the {i} inputs, pad ({lax[0]}, {lax[1]}), "
        f"slide the kernel with stride 1"
    )
    back = arith.conv_output(out, k, s, pads, d)
    notes.append(f"the conv with k={k}, s={s}, p={_p(pads)} maps {out} back to {back}")
    result["notes"] = notes
    return result


_DIFFERENCES = {
    "conv": "PyTorch pads both ends by one number (uneven padding needs F.pad first) and refuses padding='same' "
    "with stride > 1; Flax takes (lo, hi) pairs and 'SAME' at any stride (ceil(i/s), odd pad at the end).",
    "tconv": "PyTorch's padding is the padding of the direct conv being transposed, plus output_padding; Flax "
    "(jax.lax.conv_transpose) pads the stride-dilated input itself, p' = d*(k-1) - p, with output_padding on the "
    "high side, and its 'SAME' gives i*s, 'VALID' i*s + max(d*(k-1)+1 - s, 0).",
    "pool": "PyTorch has ceil_mode and pads with -inf; Flax's pools (jax.lax.reduce_window) have no ceil mode: "
    "pad the high side by the hanging amount instead (padding is -inf for max, counted for avg by default).",
}


def _torch_call(r: dict[str, Any]) -> str:
    """The PyTorch layer for this result (1-D spelling); uneven pads need a pad or a crop."""
    lo, hi = r["padding"]
    k, s, d = r["kernel"], r["stride"], r["dilation"]
    p = lo if lo == hi else 0
    if r["kind"] == "conv":
        call = f"nn.Conv1d(cin, cout, kernel_size={k}, stride={s}, padding={p}, dilation={d})"
        return call if lo == hi else f"F.pad(x, ({lo}, {hi})) then {call}"
    if r["kind"] == "tconv":
        call = (f"nn.ConvTranspose1d(cin, cout, kernel_size={k}, stride={s}, padding={p}, "
                f"output_padding={r['output_padding']}, dilation={d})")  # fmt: skip
        return call if lo == hi else f"{call} then crop y[..., {lo}:{-hi if hi else ''}]"
    call = f"nn.MaxPool1d(kernel_size={k}, stride={s}, padding={p}, dilation={d}, ceil_mode={r['ceil']})"
    return call if lo == hi else f"F.pad(x, ({lo}, {hi}), value=-inf) then {call}"


def _flax_call(r: dict[str, Any]) -> str:
    """The Flax NNX layer for this result (1-D spelling), with explicit (lo, hi) pads."""
    lo, hi = r["padding"]
    k, s, d = r["kernel"], r["stride"], r["dilation"]
    if r["kind"] == "conv":
        return f"nnx.Conv(cin, cout, kernel_size=({k},), strides=({s},), padding=(({lo}, {hi}),), kernel_dilation=({d},))"
    if r["kind"] == "tconv":
        a, b = r["lax_padding"]
        return f"nnx.ConvTranspose(cin, cout, kernel_size=({k},), strides=({s},), padding=(({a}, {b}),), kernel_dilation=({d},))"
    ahi = r["applied_padding"][1]
    return f"nnx.max_pool(x, window_shape=({k},), strides=({s},), padding=(({lo}, {ahi}),))"


def convention_notes(convention: str, r: dict[str, Any]) -> list[str]:
    """How ``convention`` (torch or flax) spells this layer, and how the other one differs."""
    calls = {"torch": _torch_call(r), "flax": _flax_call(r)}
    other = "flax" if convention == "torch" else "torch"
    notes = [f"{convention}: {calls[convention]}", f"{other}: {calls[other]}", f"difference: {_DIFFERENCES[r['kind']]}"]
    if r["kind"] == "pool" and r["dilation"] > 1:
        notes.append("note: Flax's nnx.max_pool has no dilation; use jax.lax.reduce_window(window_dilation=...)")
    return notes


def no_solution_note(i: int, o: int, transpose: bool) -> str:
    """What ``--solve`` says when no (k, s, p, d) in its search maps ``i`` to ``o``."""
    hint = " (upsampling: add --transpose)" if o > i and not transpose else ""
    return f"no (k <= 11, d <= 3) maps {i} to {o}{hint}"


def same_stride_note(i: int, o: int, transpose: bool) -> str | None:
    """``p=same`` with the smallest stride that gives ``ceil(i/s) = o``, if one of 2..8 does."""
    same = [s for s in range(2, 9) if -(-i // s) == o]
    if same and not transpose:
        return f"also: p=same with s={same[0]} gives ceil({i}/{same[0]}) = {o} for any k"
    return None


@dataclass(frozen=True)
class DrawRequest:
    """What ``--draw`` was asked for; None: the default of the worked example.

    Attributes:
        input: INPUT as typed (``5``, ``5x5``; a trailing ``x1`` is the channel).
        values, kernel_values: ``--values``/``--kernel-values`` as typed (``1,2;3,4``).
        kernel, stride, dilation: per axis (one value broadcasts).
        padding: a padding name, or ``(lo, hi)`` pairs (one broadcasts).
        pad_mode, pool, ceil, transpose, output_padding: as the quick form's options.
    """

    input: str | None = None
    values: str | None = None
    kernel_values: str | None = None
    kernel: tuple[int, ...] | None = None
    stride: tuple[int, ...] | None = None
    padding: Padding = ((0, 0),)
    dilation: tuple[int, ...] | None = None
    pad_mode: str = "zeros"
    pool: bool = False
    ceil: bool = False
    transpose: bool = False
    output_padding: int = 0


def draw_example(o: DrawRequest) -> tuple[list, list, draw.Drawing]:
    """``--draw``: a small example worked by hand (see `cnncli.arith.draw`).

    Args:
        o: the request.

    Returns:
        ``(values, kernel, drawing)``: the input and kernel values used (given or
        default) and the worked `cnncli.arith.draw.Drawing`.

    Raises:
        UsageError: values that disagree with INPUT or with each other, or too large to draw.
        ShapeError: a kernel larger than the padded input.
    """
    values, kernel, setup, out_size = _draw_inputs(o)
    if o.transpose:
        result = draw.draw_tconv_1d(values, kernel, setup, out_size)
    elif len(setup.stride) == 1:
        result = draw.draw_1d(values, kernel, setup)
    else:
        result = draw.draw_2d(values, kernel, setup)
    return values, kernel, result


def _draw_shape(o: DrawRequest) -> tuple[int, ...]:
    if o.input is None:
        return (5, 5)
    shape = parse_shape(o.input)
    return shape[:-1] if len(shape) > 1 and shape[-1] == 1 else shape  # a trailing x1 is the channel


def _draw_inputs(o: DrawRequest):
    """Values, kernel, `draw.Setup` and (tconv) output size from the options, checked."""
    values = draw.parse_values(o.values) if o.values else None
    shape = draw.shape_of(values) if values else _draw_shape(o)
    if values and o.input and _draw_shape(o) != shape:
        raise UsageError(f"INPUT {o.input} does not match --values ({'x'.join(map(str, shape))})", hint="drop INPUT")
    draw.check_small(shape)
    nd = len(shape)
    kernel = draw.parse_values(o.kernel_values, what="--kernel-values") if o.kernel_values else None
    if kernel is not None and len(draw.shape_of(kernel)) != nd:
        raise UsageError(f"--kernel-values has {len(draw.shape_of(kernel))} axes but the input has {nd}")
    kshape = draw.shape_of(kernel) if kernel else _per_axis(o.kernel, nd, "-k/--kernel") or (3,) * nd
    kernel = kernel or draw.default_kernel(kshape)
    values = values or draw.default_values(shape)
    stride = _per_axis(o.stride, nd, "-s/--stride") or (kshape if o.pool else (1,) * nd)
    dil = _per_axis(o.dilation, nd, "-d/--dilation") or (1,) * nd
    if o.transpose and nd != 1:
        raise UsageError("--draw --transpose draws 1-D inputs only", hint="e.g. cnncli conv-arith 3 --draw --transpose -k 3 -s 2")
    pads, out_size = _draw_pads(o, shape, kshape, stride, dil)
    setup = draw.Setup(stride, pads, dil, o.pad_mode, o.pool, (o.output_padding,) if o.transpose else ())
    return values, kernel, setup, out_size


def _per_axis(values, nd: int, name: str):
    if values is None:
        return None
    if len(values) == 1:
        return values * nd
    if len(values) != nd:
        raise UsageError(f"{name} has {len(values)} values but the input has {nd} axes")
    return values


def _draw_pads(o: DrawRequest, shape, kshape, stride, dil):
    pads, out_size = [], None
    for ax, (n, k, s, d) in enumerate(zip(shape, kshape, stride, dil)):
        pad = o.padding if isinstance(o.padding, str) else (o.padding[ax] if len(o.padding) > 1 else o.padding[0])
        if o.transpose:
            pp, op = arith.tconv_pads(pad, n, k, s, d, o.output_padding)
            out_size = arith.tconv_output(n, k, s, pp, d, op, where="tconv: ")
        else:
            pp = arith.resolve_pads(pad, n, k, s, d)
            if o.pool:
                _, extra = arith.pool_output(n, k, s, pp, d, o.ceil, where=f"axis {ax}: ")
                pp = (pp[0], pp[1] + extra)
            arith.conv_output(n, k, s, pp, d, where=f"axis {ax}: ")
        pads.append(pp)
    return tuple(pads), out_size
