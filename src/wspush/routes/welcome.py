"""``hello`` and ``recover``: who this connection is and where its user stream stands, and
what it missed of that stream.

- ``{"action": "hello"}`` → ``welcome`` with ``connectionId``, ``userId``, ``connectedAt``,
  ``expiresAt`` (when API Gateway will cut it) and ``stream`` (the user stream's ``epoch`` and
  ``seq``; null when user history is off);
- ``{"action": "recover", "since": {"epoch", "seq"}}`` → the missed messages, then
  ``recovered`` with the position reached and ``"recovered": true | false``.
"""

from __future__ import annotations

from typing import Any

from wspush.clock import Deadline
from wspush.contract.frames import Request
from wspush.errors import ChannelRefused
from wspush.history import recovery
from wspush.history.streams import Since, user_stream
from wspush.routes.requests import answer
from wspush.settings import Settings
from wspush.store import connections, history
from wspush.store.connections import ConnectionRecord

ACTIONS = ("hello", "recover")


def handle(
    connection_id: str,
    body: str | None,
    settings: Settings,
    *,
    now_ms: int,
    deadline: Deadline | None = None,
) -> str:
    """The reply frame to a ``hello`` or ``recover`` (after a recovery's replay is posted)."""

    def work(request: Request) -> tuple[str, Any]:
        if request.action == "hello":
            return "welcome", hello(connection_id, settings, now_ms=now_ms)
        return "recovered", recover(
            connection_id, request, settings, now_ms=now_ms, deadline=deadline
        )

    return answer(
        connection_id,
        body,
        ACTIONS,
        work,
        now_ms=now_ms,
        kind="stream",
        unavailable="history is unavailable, try again later",
    )


def hello(connection_id: str, settings: Settings, *, now_ms: int) -> dict[str, Any]:
    record = _connection(connection_id)
    stream = user_stream(record.user_id, settings)
    position = history.position(stream.key, now_ms=now_ms) if stream is not None else None
    return {
        "connectionId": connection_id,
        "userId": record.user_id,
        "connectedAt": record.connected_at,
        "expiresAt": record.connected_at + settings.max_connection_seconds * 1000,
        "stream": position.as_dict() if position is not None else None,
    }


def recover(
    connection_id: str,
    request: Request,
    settings: Settings,
    *,
    now_ms: int,
    deadline: Deadline | None = None,
) -> dict[str, Any]:
    since = Since.parse(request.since)
    record = _connection(connection_id)
    stream = user_stream(record.user_id, settings)
    if stream is None:
        raise ChannelRefused("no_history", "user history is off: there is nothing to recover")
    outcome = recovery.recover(
        stream, since, connection_id, settings, now_ms=now_ms, deadline=deadline
    )
    return outcome.as_dict()


def _connection(connection_id: str) -> ConnectionRecord:
    record = connections.get(connection_id)
    if record is None:
        raise ChannelRefused("unknown_connection", "this connection is not open")
    return record
