"""docs/guarantees.md names a test for every promise: each one it names must exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_test_the_guarantees_table_names_exists():
    text = (ROOT / "docs" / "guarantees.md").read_text()
    named = set(re.findall(r"`(test_\w+\.py)::(test_\w+)`", text))
    assert len(named) > 40
    missing = [f"{file}::{name}" for file, name in sorted(named)
               if not re.search(rf"^(async )?def {name}\(", (ROOT / "tests" / file).read_text()
                                if (ROOT / "tests" / file).exists() else "", re.MULTILINE)]  # fmt: skip
    assert not missing, f"docs/guarantees.md names tests that do not exist: {missing}"
