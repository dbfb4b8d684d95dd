"""Comparing catalogued runs: the recipe values that differ, filters, order, seed groups, a diff.

Plain data in, plain data out (`cnncli.runs.catalog.RunEntry` lists); `cnncli.report.runs`
prints them. Keys are the catalogue's columns (`COLUMNS`: ``status``,
``eval_accuracy``, ...) or dotted recipe keys (``optimizer.learning_rate``); values
typed by the user are read as TOML, as ``--set`` reads them (``0.01``, ``1e-2``,
``true``, ``"adam"``; a bare word is a string).
"""

from __future__ import annotations

import json
import math
import re
import statistics
import tomllib
from dataclasses import dataclass
from typing import Any

from cnncli.errors import UsageError, did_you_mean, unknown_choice
from cnncli.runs.catalog import COLUMNS, MISSING, STATUSES, RunEntry

SEED_KEY = "train.seed"
GROUP_METRICS = ("eval_accuracy", "best_eval_accuracy", "train_seconds", "images_per_second")
DIFF_METRICS = ("status", *COLUMNS[2:], "num_params")
_WHERE = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(==|!=|>=|<=|=|>|<)\s*(.*?)\s*$")


def differing_keys(entries: list[RunEntry]) -> list[str]:
    """Recipe keys whose values are not the same in every listed run, in recipe order.

    Runs whose ``recipe.json`` could not be read are left out of the comparison (every
    key would differ); a key only some runs have (a newer cnncli's) differs.
    """
    recipes = [e.recipe for e in entries if e.recipe]
    keys: dict[str, None] = {}
    for recipe in recipes:
        keys.update(dict.fromkeys(recipe))
    return [k for k in keys if len({_canon(r.get(k, MISSING)) for r in recipes}) > 1]


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def parse_value(text: str) -> Any:
    """A value typed at the shell, read as TOML (``0.01``, ``true``, ``[1, 2]``); a bare word is a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def known_keys(entries: list[RunEntry]) -> set[str]:
    """The columns and every recipe key the listed runs have."""
    keys = set(COLUMNS)
    for e in entries:
        keys.update(e.recipe)
    return keys


def check_key(key: str, entries: list[RunEntry], flag: str) -> None:
    """Raise a usage error (exit 2) with a did-you-mean when ``key`` is neither a column nor a recipe key.

    A key of the recipe schema that no listed run has (runs of an older cnncli) is accepted.
    """
    known = known_keys(entries)
    if key in known or key in _schema_keys():
        return
    guess = did_you_mean(key, known | _schema_keys())
    raise UsageError(
        f"{flag}: unknown key {key!r}" + (f"; did you mean {guess!r}?" if guess else ""),
        hint=f"a column ({', '.join(COLUMNS)}) or a recipe key in dotted form, e.g. optimizer.learning_rate",
    )


def _schema_keys() -> set[str]:
    from cnncli.config.recipe import Recipe

    keys: set[str] = set()

    def walk(model, prefix: str) -> None:
        for name, info in model.model_fields.items():
            sub = info.annotation
            if isinstance(sub, type) and hasattr(sub, "model_fields"):
                walk(sub, f"{prefix}{name}.")
            keys.add(f"{prefix}{name}")

    walk(Recipe, "")
    return keys


@dataclass(frozen=True)
class Where:
    """One ``--where KEY OP VALUE`` filter: ``=``/``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=``."""

    key: str
    op: str
    value: Any
    text: str

    def matches(self, entry: RunEntry) -> bool:
        """Does ``entry`` pass? A run without the key passes only ``!=``."""
        have = entry.value(self.key)
        if have is MISSING:
            return self.op == "!="
        if self.op in ("=", "==", "!="):
            return _equal(have, self.value) == (self.op != "!=")
        if not (_is_number(have) and _is_number(self.value)):
            return False
        return {"<": have < self.value, "<=": have <= self.value, ">": have > self.value,
                ">=": have >= self.value}[self.op]  # fmt: skip


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _equal(a: Any, b: Any) -> bool:
    if _is_number(a) and _is_number(b):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0) or a == b
    return _canon(a) == _canon(b)


def parse_where(text: str, entries: list[RunEntry]) -> Where:
    """``--where optimizer.learning_rate=0.01`` -> a `Where`; a malformed filter or an unknown key is exit 2."""
    match = _WHERE.match(text)
    if not match or not match.group(3):
        raise UsageError(f"--where {text!r}: expected KEY=VALUE (or KEY!=, <, <=, >, >= VALUE)",
                         hint="e.g. --where status=finished --where optimizer.learning_rate=0.01")  # fmt: skip
    key, op, raw = match.groups()
    check_key(key, entries, f"--where {text!r}")
    value = parse_value(raw)
    if key == "status" and value not in STATUSES:
        raise UsageError(f"--where {text!r}: " + unknown_choice("status", str(value), STATUSES))
    return Where(key, op, value, text)


def select(entries: list[RunEntry], wheres: list[str]) -> list[RunEntry]:
    """The entries that pass every ``--where`` (ANDed)."""
    filters = [parse_where(text, entries) for text in wheres]
    return [e for e in entries if all(f.matches(e) for f in filters)]


def sort_entries(entries: list[RunEntry], key: str | None) -> list[RunEntry]:
    """Sorted by ``key`` ascending (``-key``: descending); runs without a value last. None: by name."""
    if not key:
        return sorted(entries, key=lambda e: e.name)
    descending = key.startswith("-")
    key = key.lstrip("-")
    check_key(key, entries, f"--sort {key}")
    have = [e for e in entries if e.value(key) is not MISSING]
    rest = [e for e in entries if e.value(key) is MISSING]

    def order(e: RunEntry):
        v = e.value(key)
        return (0, v, e.name) if _is_number(v) else (1, _canon(v), e.name)

    return sorted(have, key=order, reverse=descending) + sorted(rest, key=lambda e: e.name)


# ------------------------------------------------------------------ seed groups


@dataclass(frozen=True)
class Stat:
    """One metric over a group's runs that have it: count, mean, sample std (None below 2), min, max."""

    n: int
    mean: float | None
    std: float | None
    min: float | None
    max: float | None


@dataclass(frozen=True)
class SeedGroup:
    """The runs of one setting (equal in every differing recipe key but ``train.seed``)."""

    setting: dict[str, Any]
    names: tuple[str, ...]
    seeds: tuple[Any, ...]
    statuses: dict[str, int]
    stats: dict[str, Stat]


def _stat(values: list[float]) -> Stat:
    if not values:
        return Stat(0, None, None, None, None)
    std = statistics.stdev(values) if len(values) > 1 else None
    return Stat(len(values), statistics.fmean(values), std, min(values), max(values))


def group_by_seed(entries: list[RunEntry]) -> list[SeedGroup]:
    """One group per setting, in the order the settings first appear in ``entries``."""
    keys = [k for k in differing_keys(entries) if k != SEED_KEY]
    groups: dict[str, list[RunEntry]] = {}
    for e in entries:
        groups.setdefault(_canon({k: e.recipe.get(k, MISSING) for k in keys}), []).append(e)
    out = []
    for members in groups.values():
        statuses: dict[str, int] = {}
        for e in members:
            statuses[e.status] = statuses.get(e.status, 0) + 1
        stats = {m: _stat([v for e in members if _is_number(v := e.value(m))]) for m in GROUP_METRICS}
        out.append(SeedGroup({k: members[0].recipe.get(k, MISSING) for k in keys}, tuple(e.name for e in members),
                             tuple(e.recipe.get(SEED_KEY, MISSING) for e in members), statuses, stats))  # fmt: skip
    return out


def seeds_vary(entries: list[RunEntry]) -> bool:
    """The automatic rule for the grouped view: seeds differ and some setting has two runs or more."""
    if SEED_KEY not in differing_keys(entries):
        return False
    return any(len(g.names) > 1 for g in group_by_seed(entries))


# ------------------------------------------------------------------ diff


@dataclass(frozen=True)
class RunDiff:
    """Two runs side by side: the recipe keys that differ, and every metric (equal or not)."""

    a: RunEntry
    b: RunEntry
    recipe: list[tuple[str, Any, Any]]  # (key, a's value, b's value); MISSING where a run lacks the key
    metrics: list[tuple[str, Any, Any]]


def _metric(entry: RunEntry, key: str) -> Any:
    if key in COLUMNS:
        return entry.value(key)
    return (entry.summary or {}).get(key)


def diff_runs(a: RunEntry, b: RunEntry) -> RunDiff:
    """The recipe differences and the metrics of two runs (`RunDiff`)."""
    keys = differing_keys([a, b]) if a.recipe and b.recipe else sorted(set(a.recipe) | set(b.recipe))
    recipe = [(k, a.recipe.get(k, MISSING), b.recipe.get(k, MISSING)) for k in keys]
    return RunDiff(a, b, recipe, [(k, _metric(a, k), _metric(b, k)) for k in DIFF_METRICS])
