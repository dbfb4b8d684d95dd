"""The data source string, parsed once: kinds, arguments, errors, path resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnncli.config.recipe import DataConfig
from cnncli.config.source import SOURCE_KINDS, DataSource, resolve_source


@pytest.mark.parametrize(
    ("text", "kind", "arg", "stem"),
    [
        ("digits", "digits", "", "digits"),
        ("npz:data/mnist.npz", "npz", "data/mnist.npz", "mnist"),
        ("npz:C:/data/d.npz", "npz", "C:/data/d.npz", "d"),  # only the first colon splits
        ("tfds:cifar10", "tfds", "cifar10", "cifar10"),
        ("folder:~/photos/", "folder", "~/photos/", "photos"),
    ],
)
def test_parse_round_trips(text, kind, arg, stem):
    source = DataSource.parse(text)
    assert (source.kind, source.arg, source.stem) == (kind, arg, stem)
    assert str(source) == text and DataSource.parse(str(source)) == source


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("digit", "unknown data source 'digit'; did you mean 'digits'? (valid: digits, mnist1d, npz:PATH, tfds:NAME, folder:PATH)"),
        ("hdf5:x.h5", "unknown data source 'hdf5:x.h5' (valid: digits, mnist1d, npz:PATH, tfds:NAME, folder:PATH)"),
        ("npz", "npz needs a name or path: npz:..."),
        ("tfds:", "tfds needs a name or path: tfds:..."),
    ],
)
def test_parse_errors_are_the_recipe_messages(text, message):
    with pytest.raises(ValueError) as info:
        DataSource.parse(text)
    assert str(info.value) == message


def test_relative_paths_resolve_against_a_base(tmp_path):
    assert resolve_source("npz:d.npz", tmp_path) == f"npz:{tmp_path.resolve() / 'd.npz'}"
    assert resolve_source("folder:../p", tmp_path / "r") == f"folder:{tmp_path.resolve() / 'p'}"
    for unchanged in ("npz:/abs/d.npz", "folder:~/p", "tfds:mnist", "digits", "digits:", "nonsense"):
        assert resolve_source(unchanged, tmp_path) == unchanged
    source = DataSource("npz", "/abs/d.npz")
    assert source.resolved(Path("/elsewhere")) is source


def test_data_config_offers_the_parsed_source():
    assert DataConfig(source="tfds:mnist").source_spec == DataSource("tfds", "mnist")
    assert DataConfig().source_spec.kind in SOURCE_KINDS
