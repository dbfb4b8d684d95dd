"""Where a run executes: its device mesh and its convolution kernels, checked before anything is written."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import jax

from cnncli.config.recipe import Recipe
from cnncli.errors import RecipeError
from cnncli.runtime import distributed


def place_run(recipe: Recipe) -> distributed.Placement:
    """The run's device mesh, checked against the recipe (before anything is written).

    Raises:
        RecipeError: the mesh needs more or fewer devices than JAX sees, the batch does not
            split over the data axis (names the nearest sizes), or ``conv_backend =
            "onednn"`` on a mesh of several devices.
    """
    mesh = recipe.train.mesh
    mesh_keys = [("train", "mesh", "data"), ("train", "mesh", "model"), ("train", "mesh")]
    with _blamed(recipe, mesh_keys, ("train", "mesh")):
        placement = distributed.Placement(mesh.data, mesh.model)
    if placement.multi:
        with _blamed(recipe, [("data", "batch_size"), *mesh_keys], ("data", "batch_size")):
            distributed.check_batch(recipe.data.batch_size, placement.mesh)
        if recipe.train.conv_backend == "onednn":
            raise RecipeError(
                f"train.conv_backend = {recipe.train.conv_backend!r} runs on one device, but this run's mesh has "
                f"{placement.mesh.size} ({placement.describe()})",
                hint='drop train.conv_backend (the default, "auto", takes xla on several devices) or set it to "xla" '
                     "(or make one device visible)",
            )
    return placement


@contextlib.contextmanager
def _blamed(recipe: Recipe, keys: list[tuple], fallback: tuple) -> Iterator[None]:
    """Re-raise a `RecipeError` at the first of ``keys`` a ``--set`` gave (a usage error), else at ``fallback``'s line."""
    try:
        yield
    except RecipeError as err:
        origin = recipe.origin
        loc = next((key for key in keys if origin.override_of(key)), fallback)
        raise origin.error([(loc, err.message)], hint=err.hint) from None


def resolve_conv_backend(recipe: Recipe, placement: distributed.Placement,
                         before_build: Callable[[Path], None] | None = None) -> tuple[str, str | None]:  # fmt: skip
    """The conv backend this run uses, and why, where ``auto`` (the default) chose (else None).

    ``auto``: oneDNN on one CPU device where it loads (the extension built, or built now
    with g++), else XLA, never an error; the reason is the second value, which the
    terminal, the JSON summary and ``env.json`` carry. An explicit ``onednn`` fails before
    anything is written where it cannot run. ``before_build(cache_dir)`` is called when
    loading oneDNN will first compile the extension (seconds, once per machine).

    Raises:
        RecipeError: ``onednn`` on a non-CPU backend.
        OneDNNUnavailable: ``onednn`` asked for, and oneDNN, its headers or g++ is
            missing (builds the extension on first use; a few seconds).
    """
    asked = recipe.train.conv_backend
    if asked == "xla":
        return "xla", None
    platform = jax.default_backend()
    if asked == "onednn" and platform != "cpu":
        raise RecipeError(
            f"train.conv_backend = 'onednn' is for the CPU, but JAX runs on {platform}",
            hint='drop train.conv_backend (the default, "auto", takes xla there): XLA\'s own kernels are the fast ones',
        )
    from cnncli.native import onednn

    def load() -> str:
        if before_build is not None and onednn.needs_build():
            before_build(onednn.cache_dir())
        return onednn.load()

    if asked == "onednn":
        load()
        return "onednn", None
    # auto: the choice and its reason, one form for every case
    if platform != "cpu":
        return "xla", f"conv_backend auto: xla (JAX runs on {platform}, where XLA's own kernels are the fast ones)"
    if placement.multi:
        return "xla", f"conv_backend auto: xla (oneDNN runs on one device; this mesh has {placement.mesh.size})"
    try:
        version = load()
    except onednn.OneDNNUnavailable as err:
        reason = err.message.splitlines()[0]  # a failed build carries the compiler's output below
        fix = err.hint or onednn.HINT
        return "xla", f"conv_backend auto: xla (oneDNN is not usable here: {reason}; to use it: {fix})"
    return "onednn", f"conv_backend auto: onednn (one CPU device, oneDNN {version})"
