"""Hypothesis settings and fixtures for the hostile-input property tests.

Failing examples are not stored between runs (no example database): a failure prints
the example and the ``@reproduce_failure`` line that replays it. (Hypothesis still keeps
caches in ``.hypothesis/``, which git-ignores itself.)
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import HealthCheck, settings

from tests.support import add_connection

settings.register_profile(
    "wspush",
    database=None,
    print_blob=True,
    deadline=timedelta(seconds=2),  # (moto-backed tests set none: their time is moto's)
    # moto and the fake Management API are set up once per test function; each example
    # resets what it changed (see the tests), which hypothesis cannot know.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile("wspush")

# Who is online in the tests that deliver: alice on pc and mobile, bob on pc, carol on web.
ONLINE = {
    "a-pc": ("alice", "pc"),
    "a-mobile": ("alice", "mobile"),
    "b-pc": ("bob", "pc"),
    "c-web": ("carol", "web"),
}


@pytest.fixture
def online(aws: None) -> None:
    """The connections of ``ONLINE``, stored once for the whole test function."""
    for connection_id, (user_id, platform) in ONLINE.items():
        add_connection(connection_id, user_id, platform)
