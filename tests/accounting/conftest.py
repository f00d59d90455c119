"""Size and seed of the accounting run.

``--accounting-scale N`` / ``WSPUSH_ACCOUNTING_SCALE=N`` multiplies the number of
(message, connection) pairs by about N (default 1); ``--accounting-seed S`` /
``WSPUSH_ACCOUNTING_SEED=S`` replays one fault mix (default fixed). The options work when
tests/accounting is named on the command line; the variables work however pytest is run.
"""

from __future__ import annotations

import os

import pytest

DEFAULT_SEED = 20261128


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("accounting", "wspush accounting test")
    group.addoption(
        "--accounting-scale",
        type=float,
        default=None,
        help="multiply the accounting test's (message, connection) pairs by this (default 1)",
    )
    group.addoption(
        "--accounting-seed",
        type=int,
        default=None,
        help=f"seed of the accounting test's faults (default {DEFAULT_SEED})",
    )


def _setting(config: pytest.Config, option: str, variable: str) -> str | None:
    value = config.getoption(option, default=None)
    return str(value) if value is not None else os.environ.get(variable) or None


@pytest.fixture
def accounting_scale(pytestconfig: pytest.Config) -> float:
    scale = float(_setting(pytestconfig, "--accounting-scale", "WSPUSH_ACCOUNTING_SCALE") or 1)
    assert scale > 0, "the accounting scale must be positive"
    return scale


@pytest.fixture
def accounting_seed(pytestconfig: pytest.Config) -> int:
    return int(
        _setting(pytestconfig, "--accounting-seed", "WSPUSH_ACCOUNTING_SEED") or DEFAULT_SEED
    )
