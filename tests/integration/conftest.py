"""Fixtures shared by the integration suites."""

import io
import logging
from collections.abc import Iterator

import pytest

from tests.support import add_connection
from wspush.observability import logger


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """Everything the Powertools logger writes during the test."""
    handler = logger.registered_handler
    assert isinstance(handler, logging.StreamHandler)
    buffer = io.StringIO()
    previous = handler.setStream(buffer)
    yield buffer
    handler.setStream(previous)


@pytest.fixture
def users(aws: None) -> None:
    """alice on pc and mobile, bob on pc, carol on web."""
    add_connection("a-pc", "alice", "pc")
    add_connection("a-mobile", "alice", "mobile")
    add_connection("b-pc", "bob", "pc")
    add_connection("c-web", "carol", "web")
