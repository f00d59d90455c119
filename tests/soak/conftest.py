"""Size and seed of the soak, and the local stack it runs on.

``WSPUSH_SOAK_CLIENTS`` (clients held open at once, default 60), ``WSPUSH_SOAK_SECONDS``
(how long services send while clients come and go, default 15) and ``WSPUSH_SOAK_SEED``
(every choice the workload makes, default fixed). ``make soak`` sets 300 clients for 120 s.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import RunningStack, running_stack
from tests.soak.workload import Size

DEFAULT_CLIENTS = 60
DEFAULT_SECONDS = 15.0
DEFAULT_SEED = 20261209


def _setting(variable: str, default: float) -> float:
    value = os.environ.get(variable) or None
    return float(value) if value is not None else default


@pytest.fixture
def soak_size() -> Size:
    size = Size(
        clients=int(_setting("WSPUSH_SOAK_CLIENTS", DEFAULT_CLIENTS)),
        seconds=_setting("WSPUSH_SOAK_SECONDS", DEFAULT_SECONDS),
        seed=int(_setting("WSPUSH_SOAK_SEED", DEFAULT_SEED)),
    )
    assert size.clients > 0, "WSPUSH_SOAK_CLIENTS must be positive"
    assert size.seconds > 0, "WSPUSH_SOAK_SECONDS must be positive"
    return size


@pytest.fixture
def soak_stack() -> Iterator[RunningStack]:
    """Given `make dev` (auth none: clients say who they are), fresh for the soak."""
    with running_stack("none") as stack:
        yield stack
