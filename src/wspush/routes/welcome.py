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
from wspush.contract.frames import Request, error_reply, parse_request, reply
from wspush.errors import ChannelRefused, StorageUnavailable
from wspush.history import recovery
from wspush.history.streams import Since, user_stream
from wspush.observability import logger, metrics
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
    ref: str | None = None
    try:
        request = parse_request(body, ACTIONS)
        ref = request.ref
        if request.action == "hello":
            reply_type, data = "welcome", hello(connection_id, settings, now_ms=now_ms)
        else:
            reply_type = "recovered"
            data = recover(connection_id, request, settings, now_ms=now_ms, deadline=deadline)
    except ChannelRefused as exc:
        metrics.add_metric(name="RequestsRefused", unit="Count", value=1)
        logger.info("request refused", connection_id=connection_id, code=exc.code)
        return error_reply(exc.code, exc.message, now_ms=now_ms, ref=ref)
    except StorageUnavailable:
        logger.exception("request failed", connection_id=connection_id)
        metrics.add_metric(name="StorageErrors", unit="Count", value=1)
        return error_reply(
            "unavailable", "history is unavailable, try again later", now_ms=now_ms, ref=ref
        )
    return reply(reply_type, data, now_ms=now_ms, ref=ref)


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
