"""Fixtures shared by the integration suites."""

import pytest

from tests.support import add_connection


@pytest.fixture
def users(aws: None) -> None:
    """alice on pc and mobile, bob on pc, carol on web."""
    add_connection("a-pc", "alice", "pc")
    add_connection("a-mobile", "alice", "mobile")
    add_connection("b-pc", "bob", "pc")
    add_connection("c-web", "carol", "web")
