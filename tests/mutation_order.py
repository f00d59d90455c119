"""The order of each mutant's tests in a mutation run (``make mutation``).

mutmut runs, for each mutant, the tests that reach its function and stops at the first one
that fails. It hands them over in no particular order, so a mutant that one quick test kills
may first run a hundred slow ones. The verdict does not depend on the order (a survivor runs
them all either way); the time does. The tests run here:

1. those that killed other mutants of the same function, the most often first, then those that
   killed mutants of the same module (a mutant is most often killed by the test that killed its
   neighbours);
2. the unit tests before the rest (they fail in milliseconds);
3. the quickest first, by the time mutmut measured for each.

Each child of the run appends the tests that failed to ``mutation-killers.tsv`` in ``mutants/``
(one short line per append, which POSIX appends whole).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

KILLERS = "mutation-killers.tsv"
STATS = "mutmut-stats.json"
_MARK = "__mutmut_"


def mutant_under_test() -> str | None:
    """The mutant this process runs the tests of (``wspush.fanout.gateway.x_post__mutmut_3``),
    or None outside a mutant's run (mutmut's stats and clean runs set other values)."""
    name = os.environ.get("MUTANT_UNDER_TEST", "")
    return name if _MARK in name else None


def _function_of(mutant: str) -> str:
    return mutant.partition(_MARK)[0]


def _module_of(function: str) -> str:
    return function.rpartition(".")[0]


def order(items: list[pytest.Item], mutant: str, here: Path) -> None:
    """Sort ``items`` (in place) in the order above, from the records in ``here``."""
    function = _function_of(mutant)
    by_function: Counter[str] = Counter()
    by_module: Counter[str] = Counter()
    killers = here / KILLERS
    if killers.is_file():
        for line in killers.read_text().splitlines():
            killed, _, test = line.partition("\t")
            if killed == function:
                by_function[test] += 1
            if _module_of(killed) == _module_of(function):
                by_module[test] += 1
    durations: dict[str, float] = {}
    stats = here / STATS
    if stats.is_file():
        durations = json.loads(stats.read_text()).get("duration_by_test", {})

    def key(item: pytest.Item) -> tuple[int, int, bool, float]:
        test = item.nodeid
        return (
            -by_function[test],
            -by_module[test],
            not test.startswith("tests/unit/"),
            durations.get(test, float("inf")),
        )

    items.sort(key=key)


def record_kill(report: pytest.TestReport, mutant: str, here: Path) -> None:
    """Note the test a mutant failed, for the mutants after it."""
    if report.failed:
        with (here / KILLERS).open("a") as killers:
            killers.write(f"{_function_of(mutant)}\t{report.nodeid}\n")
