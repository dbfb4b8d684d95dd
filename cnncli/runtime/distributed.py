"""Scaling out on JAX's own runtime: a device mesh, shardings, multi-process start-up.

Data parallelism is the default: a 1-D mesh over every device JAX sees, the batch split
along ``data``, parameters and optimizer state replicated. ``[train] mesh = {data = N,
model = M}`` adds a ``model`` axis along which the kernels of dense layers are split
(their output features), for models whose classifier dominates memory.

Nothing here is home-made communication: ``jax.jit`` with explicit in/out shardings
lets XLA's SPMD partitioner insert the all-reduces (gradients, batch-norm statistics
over the global batch) and the gathers.

Multi-host: ``cnncli train RECIPE --coordinator HOST:PORT --num-processes N
--process-id I`` calls ``jax.distributed.initialize``; with no flags, the environment
variables JAX itself understands (SLURM, Cloud TPU, Kubernetes/JobSet) are used when
present.
"""

from __future__ import annotations

import os
from typing import Any

from cnncli.errors import RecipeError, UsageError

# Environment variables that mean "this process is one of several" to jax.distributed.
_CLUSTER_ENV = ("SLURM_JOB_ID", "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS", "JAX_COORDINATOR_ADDRESS")


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None) -> bool:
    """Start JAX's distributed runtime when asked to, or when a cluster says so.

    Returns:
        True when the runtime was started (more than one process may be running).
    """
    import jax

    explicit = coordinator is not None or num_processes is not None or process_id is not None
    if explicit:
        if coordinator is None or num_processes is None or process_id is None:
            raise UsageError(
                "--coordinator, --num-processes and --process-id go together",
                hint="e.g. --coordinator 10.0.0.1:1234 --num-processes 2 --process-id 0",
            )
        if not 0 <= process_id < num_processes:
            raise UsageError(f"--process-id {process_id} must be in [0, {num_processes})")
        _cpu_collectives(jax)
        native_output_to_stderr()
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)
        return True
    if any(os.environ.get(name) for name in _CLUSTER_ENV) and os.environ.get("CNNCLI_NO_DISTRIBUTED") is None:
        _cpu_collectives(jax)
        native_output_to_stderr()
        jax.distributed.initialize()  # reads SLURM / TPU / JobSet variables itself
        return True
    return False


def native_output_to_stderr() -> None:
    """Send what native libraries print to file descriptor 1 to stderr; Python's stdout keeps the real stdout.

    gloo (CPU collectives) prints ``[Gloo] Rank N is connected to M peer ranks`` with C
    stdio when processes connect, which would land among the JSON lines a script reads.
    Descriptor 1 becomes a copy of 2, and ``sys.stdout`` is reopened on a saved copy of
    the original descriptor 1, so cnncli's own results still go to stdout. Once per process.
    """
    import sys

    if getattr(sys.stdout, "_cnncli_results", False):
        return
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):  # a captured stdout (tests): nothing native writes into it
        return
    if fd != 1:
        return
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    old = sys.stdout
    sys.stdout = os.fdopen(saved, "w", buffering=1 if old.line_buffering else -1, encoding=old.encoding, errors=old.errors)
    sys.stdout._cnncli_results = True  # type: ignore[attr-defined]


def _cpu_collectives(jax) -> None:
    """CPU devices of different processes talk through gloo (GPUs and TPUs use their own)."""
    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except Exception:  # pragma: no cover - an older/newer jax without the option
        pass


def make_mesh(data: int | None = None, model: int = 1):
    """A ``(data, model)`` mesh over every device JAX sees.

    Args:
        data: devices along the batch axis (default: all devices / model).
        model: devices along the model axis (dense kernels are split along it).
    """
    import jax
    import numpy as np
    from jax.sharding import Mesh

    devices = jax.devices()
    if data is None and (model > len(devices) or len(devices) % model):
        raise RecipeError(f"train.mesh.model = {model} does not divide the {len(devices)} devices JAX sees",
                          hint=f"use a divisor of {len(devices)}")  # fmt: skip
    data = data or len(devices) // model
    if data * model != len(devices):
        raise RecipeError(
            f"train.mesh = {{data = {data}, model = {model}}} needs {data * model} devices; JAX sees {len(devices)}",
            hint=f"use data x model = {len(devices)}",
        )
    return Mesh(np.asarray(devices).reshape(data, model), ("data", "model"))


def check_batch(batch_size: int, mesh) -> None:
    """The global batch must split evenly over the ``data`` axis."""
    n = mesh.shape["data"]
    if batch_size % n:
        below = batch_size - batch_size % n
        above = below + n
        options = ", ".join(str(b) for b in (below, above) if b > 0)
        raise RecipeError(
            f"data.batch_size = {batch_size} does not split over {n} devices",
            hint=f"use a multiple of {n}: {options} (e.g. --set data.batch_size={above})",
        )


def replicated(mesh):
    """Every device holds the whole array."""
    from jax.sharding import NamedSharding, PartitionSpec

    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh):
    """The leading (batch) axis is split over ``data``."""
    from jax.sharding import NamedSharding, PartitionSpec

    return NamedSharding(mesh, PartitionSpec("data"))


def state_shardings(state: Any, mesh) -> Any:
    """Shardings for a train state: replicated, except dense kernels along ``model``.

    A leaf is split along ``model`` when it is a 2-D kernel whose last (output) axis
    divides evenly; the optimizer's moments have the same shapes and follow the same
    rule, so they are split the same way.
    """
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    m = mesh.shape["model"]

    def rule(leaf):
        shape = getattr(leaf, "shape", ())
        if m > 1 and len(shape) == 2 and shape[-1] % m == 0 and shape[-1] >= m:
            return NamedSharding(mesh, PartitionSpec(None, "model"))
        return NamedSharding(mesh, PartitionSpec())

    return jax.tree.map(rule, state)


def is_main_process() -> bool:
    """True on the process that writes files and prints (process 0)."""
    import jax

    return jax.process_index() == 0


class Placement:
    """Where a run's arrays live: the default device, or a mesh of several.

    With one device every method is the identity (the single-device path stays exactly
    as fast as before); with several, state is laid out by `state_shardings`, the data
    is replicated, and batches are split over the ``data`` axis inside the step.
    """

    def __init__(self, data: int | None = None, model: int = 1):
        import jax

        self.mesh = make_mesh(data, model)
        self.multi = self.mesh.size > 1
        self.processes = jax.process_count()
        if self.processes > 1 and self.mesh.shape["model"] > 1:
            raise RecipeError(
                "train.mesh.model > 1 is not supported with several processes yet",
                hint="use a data-parallel mesh (the default) across hosts",
            )

    @property
    def data_size(self) -> int:
        """Devices along the batch axis."""
        return int(self.mesh.shape["data"])

    def batch_sharding(self):
        """The batch sharding for the step, or None on one device."""
        return batch_sharded(self.mesh) if self.multi else None

    def replicate(self, x):
        """Put ``x`` (numpy or jax, any pytree) on every device; a plain device_put on one device."""
        import jax

        if not self.multi:
            return jax.device_put(x)
        return self._put(x, jax.tree.map(lambda _: replicated(self.mesh), x))

    def _put(self, tree, shardings):
        """device_put, or, across processes, a global array from this process's (identical) copy."""
        import jax
        import numpy as np

        if self.processes == 1:
            return jax.device_put(tree, shardings)

        def one(a, sharding):
            if hasattr(a, "dtype") and jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
                data = one(np.asarray(jax.random.key_data(a)), sharding)
                return jax.random.wrap_key_data(data, impl=jax.random.key_impl(a))
            return jax.make_array_from_process_local_data(sharding, np.asarray(a))

        return jax.tree.map(one, tree, shardings)

    def split_batch(self, x):
        """Put a batch split over the ``data`` axis (eval batches); plain device_put on one device."""
        return self._put(x, batch_sharded(self.mesh)) if self.multi else x

    def place_state(self, state):
        """(state laid out on the mesh, its shardings); (state, None) on one device."""
        if not self.multi:
            return state, None
        shardings = state_shardings(state, self.mesh)
        return self._put(state, shardings), shardings

    def scalar(self, value: int):
        """A step argument: an int32 scalar (replicated across processes when there are several)."""
        import jax
        import numpy as np

        value = np.int32(value)
        return jax.device_put(value, replicated(self.mesh)) if self.processes > 1 else value

    def describe(self) -> dict[str, Any]:
        """The mesh for the run's environment stamp."""
        return {"axes": {k: int(v) for k, v in self.mesh.shape.items()}, "devices": int(self.mesh.size),
                "processes": self.processes}  # fmt: skip


def host(tree):
    """Copy arrays to host numpy; a replicated array spread over processes gives its local copy.

    ``jax.device_get`` refuses arrays that are not fully addressable (multi-process); the
    values cnncli reads (step counters, metric sums, replicated parameters) are the same
    on every device, so the first local shard is the whole value.
    """
    import jax
    import numpy as np

    def one(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            if not a.is_fully_replicated:
                raise ValueError("host() needs a replicated array when it spans several processes")
            return np.asarray(a.addressable_data(0))
        return jax.device_get(a)

    return jax.tree.map(one, tree)
