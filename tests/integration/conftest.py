"""Fixtures shared by the integration suites."""

from typing import Any

import pytest
from pynamodb.connection.base import Connection

from tests.support import add_connection


@pytest.fixture
def users(aws: None) -> None:
    """alice on pc and mobile, bob on pc, carol on web."""
    add_connection("a-pc", "alice", "pc")
    add_connection("a-mobile", "alice", "mobile")
    add_connection("b-pc", "bob", "pc")
    add_connection("c-web", "carol", "web")


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """Every DynamoDB call pynamodb makes during the test: (operation, its arguments)."""
    made: list[tuple[str, dict[str, Any]]] = []
    dispatch = Connection.dispatch

    def recorded(self: Connection, operation: str, arguments: dict[str, Any]) -> Any:
        made.append((operation, dict(arguments)))
        return dispatch(self, operation, arguments)

    monkeypatch.setattr(Connection, "dispatch", recorded)
    return made


def operations(made: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [operation for operation, _ in made]
