"""StableHLO through `jax.export`: serialized, with a symbolic batch dimension, loadable with plain JAX.

The artifact is ``jax.export.Exported.serialize()``: StableHLO with the weights as
constants, lowered for the CPU and for CUDA GPUs (`PLATFORMS`; export verifies the CPU
one). Any JAX of a compatible serialization version loads and calls it, no cnncli::

    import jax
    exported = jax.export.deserialize(open("model.stablehlo", "rb").read())
    logits = exported.call(x)  # x: (B, *input_shape), any B
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np

from cnncli.export.serve import Signature

PLATFORMS = ("cpu", "cuda")  # lowered for both; a GPU install of JAX runs the same file
BATCH = "B"  # the symbolic batch dimension's name


def to_stablehlo(fn: Callable, sig: Signature) -> bytes:
    """Lower ``fn`` for a ``(B, *input_shape)`` input of ``sig.input_dtype`` and serialize it."""
    (batch,) = jax.export.symbolic_shape(BATCH)
    spec = jax.ShapeDtypeStruct((batch, *sig.input_shape), np.dtype(sig.input_dtype))
    exported = jax.export.export(jax.jit(fn), platforms=PLATFORMS)(spec)
    return bytes(exported.serialize())


def load_stablehlo(blob: bytes) -> Callable[[np.ndarray], np.ndarray]:
    """The serialized model as a numpy function, run by JAX on its default device."""
    exported = jax.export.deserialize(bytearray(blob))
    return lambda x: np.asarray(exported.call(x))
