"""The order of a mutant's tests in a mutation run: the likeliest to fail first, none lost."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest

from tests import mutation_order

GATEWAY_POST = "wspush.fanout.gateway.x_post"


@dataclass
class Item:
    nodeid: str


@dataclass
class Report:
    nodeid: str
    failed: bool


def ordered(ids: list[str], mutant: str, here: Path) -> list[str]:
    items = [Item(i) for i in ids]
    mutation_order.order(cast(list[pytest.Item], items), mutant, here)
    return [i.nodeid for i in items]


def kill(here: Path, mutant: str, test: str, *, failed: bool = True) -> None:
    report = cast(pytest.TestReport, Report(test, failed))
    mutation_order.record_kill(report, mutant, here)


def test_outside_a_mutant_run_nothing_is_reordered(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given mutmut's stats run, and then no mutation run at all
    monkeypatch.setenv("MUTANT_UNDER_TEST", "stats")
    # Then no mutant is under test
    assert mutation_order.mutant_under_test() is None
    monkeypatch.delenv("MUTANT_UNDER_TEST")
    assert mutation_order.mutant_under_test() is None
    # But a mutant's own run names it
    monkeypatch.setenv("MUTANT_UNDER_TEST", f"{GATEWAY_POST}__mutmut_3")
    assert mutation_order.mutant_under_test() == f"{GATEWAY_POST}__mutmut_3"


def test_without_records_unit_tests_come_first_quickest_first(tmp_path: Path) -> None:
    # Given mutmut's measured times, and one test it never measured
    times: dict[str, Any] = {
        "tests/integration/test_a.py::quick": 0.01,
        "tests/unit/test_b.py::slow": 0.5,
        "tests/unit/test_b.py::quick": 0.001,
    }
    (tmp_path / mutation_order.STATS).write_text(json.dumps({"duration_by_test": times}))
    ids = ["tests/unit/test_b.py::unmeasured", *times]
    # When a mutant's tests are ordered
    got = ordered(ids, f"{GATEWAY_POST}__mutmut_1", tmp_path)
    # Then the unit tests run first, quickest first, the unmeasured last among them
    assert got == [
        "tests/unit/test_b.py::quick",
        "tests/unit/test_b.py::slow",
        "tests/unit/test_b.py::unmeasured",
        "tests/integration/test_a.py::quick",
    ]


def test_the_tests_that_killed_its_neighbours_run_first(tmp_path: Path) -> None:
    # Given tests that failed for earlier mutants: of the same function (twice and once), of
    # another function of the module, of another module; and one that passed
    kill(tmp_path, f"{GATEWAY_POST}__mutmut_1", "tests/integration/test_g.py::twice")
    kill(tmp_path, f"{GATEWAY_POST}__mutmut_2", "tests/integration/test_g.py::twice")
    kill(tmp_path, f"{GATEWAY_POST}__mutmut_2", "tests/integration/test_g.py::once")
    kill(tmp_path, "wspush.fanout.gateway.x_parse__mutmut_9", "tests/integration/test_g.py::module")
    kill(tmp_path, "wspush.fanout.sending.x_post__mutmut_1", "tests/unit/test_s.py::elsewhere")
    kill(tmp_path, f"{GATEWAY_POST}__mutmut_4", "tests/integration/test_g.py::passed", failed=False)
    ids = [
        "tests/unit/test_s.py::elsewhere",
        "tests/integration/test_g.py::passed",
        "tests/integration/test_g.py::module",
        "tests/integration/test_g.py::once",
        "tests/integration/test_g.py::twice",
    ]
    # When the next mutant of that function orders its tests
    got = ordered(ids, f"{GATEWAY_POST}__mutmut_5", tmp_path)
    # Then the function's killers come first, the most often first, then the module's; every
    # test is still there
    assert got == [
        "tests/integration/test_g.py::twice",
        "tests/integration/test_g.py::once",
        "tests/integration/test_g.py::module",
        "tests/unit/test_s.py::elsewhere",
        "tests/integration/test_g.py::passed",
    ]
    assert (tmp_path / mutation_order.KILLERS).read_text().count("\n") == 5
