"""What the WebSocket routes do: open and close connections, answer frames.

Every reply a client receives has the contract's shape ``{"type", "data", "id", "ts"}``.
"""

from __future__ import annotations

import unicodedata
import uuid
from collections.abc import Mapping
from typing import Any

from wspush import connections
from wspush.connections import ConnectionRecord
from wspush.errors import BadHandshake, InvalidMessage, StorageUnavailable
from wspush.messages import MAX_PLATFORM_LENGTH, MAX_USER_ID_LENGTH, encode_frame, parse_json
from wspush.observability import logger, metrics
from wspush.settings import Settings

DEFAULT_PLATFORM = "unknown"
SUPPORTED_ACTIONS = ("ping",)
_MAX_ECHOED_ACTION = 64


def open_connection(
    connection_id: str,
    query: Mapping[str, str],
    settings: Settings,
    *,
    now_ms: int,
    connected_at: int | None = None,
) -> ConnectionRecord:
    """Validate the handshake's query and store the connection.

    Raises ``BadHandshake`` (nothing is stored) or ``StorageUnavailable`` (the row is
    removed again if the failed write landed after all).
    """
    user_id = _user_id(query.get("userId"))
    platform = _platform(query.get("platform"), settings.allowed_platforms)
    record = ConnectionRecord(
        connection_id=connection_id,
        user_id=user_id,
        platform=platform,
        connected_at=connected_at or now_ms,
        last_seen_at=now_ms,
    )
    try:
        connections.save(record, ttl_seconds=settings.connection_ttl_seconds)
    except StorageUnavailable:
        # A write that timed out may still have landed: the refused connection must not linger.
        _forget_quietly(connection_id)
        raise
    metrics.add_metric(name="ConnectionsOpened", unit="Count", value=1)
    logger.info("connection opened", connection_id=connection_id, platform=platform)
    return record


def _forget_quietly(connection_id: str) -> None:
    try:
        connections.delete(connection_id)
    except StorageUnavailable:
        logger.warning("could not remove a refused connection", connection_id=connection_id)


def close_connection(connection_id: str) -> None:
    """Forget a connection; closing one that is already gone is fine."""
    removed = connections.delete(connection_id)
    metrics.add_metric(name="ConnectionsClosed", unit="Count", value=1)
    logger.info("connection closed", connection_id=connection_id, removed=removed)


def pong(connection_id: str, settings: Settings, *, now_ms: int) -> str:
    """Refresh the connection's liveness and build the ``pong`` reply."""
    metrics.add_metric(name="Pings", unit="Count", value=1)
    try:
        known = connections.touch(connection_id, now_ms=now_ms)
    except StorageUnavailable:
        # The client is alive whatever the table says: still answer.
        logger.warning("could not refresh connection", connection_id=connection_id)
    else:
        if not known:
            logger.info("ping from an unknown connection", connection_id=connection_id)
    return reply("pong", {"connectionId": connection_id}, now_ms=now_ms)


def unknown_frame_reply(body: str | None, *, now_ms: int) -> str:
    """The error reply to a frame no route handles: not JSON, or an unknown action."""
    try:
        frame = parse_json(body or "")
    except InvalidMessage:
        return error_reply("bad_frame", "frame is not valid JSON", now_ms=now_ms)
    if not isinstance(frame, dict):
        return error_reply(
            "bad_frame", 'frame must be a JSON object with an "action"', now_ms=now_ms
        )
    supported = ", ".join(SUPPORTED_ACTIONS)
    action = frame.get("action")
    if not isinstance(action, str) or not action:
        message = f'frame has no "action"; supported actions: {supported}'
    else:
        message = f"unknown action {action[:_MAX_ECHOED_ACTION]!r}; supported actions: {supported}"
    return error_reply("unknown_action", message, now_ms=now_ms)


def reply(reply_type: str, data: Any, *, now_ms: int) -> str:
    return encode_frame(reply_type, data, message_id=uuid.uuid4().hex, ts=now_ms).decode("utf-8")


def error_reply(code: str, message: str, *, now_ms: int) -> str:
    return reply("error", {"code": code, "message": message}, now_ms=now_ms)


def _user_id(value: str | None) -> str:
    if not value:
        raise BadHandshake("userId query parameter is required")
    if len(value) > MAX_USER_ID_LENGTH:
        raise BadHandshake(f"userId is longer than {MAX_USER_ID_LENGTH} characters")
    if not _printable(value):
        raise BadHandshake("userId holds whitespace or control characters")
    return value


def _platform(value: str | None, allowed: frozenset[str]) -> str:
    if allowed:
        if value not in allowed:
            choices = ", ".join(sorted(allowed))
            raise BadHandshake(f"platform must be one of: {choices}")
        return value
    if not value:
        return DEFAULT_PLATFORM
    if len(value) > MAX_PLATFORM_LENGTH or not _printable(value):
        raise BadHandshake(f"platform must be up to {MAX_PLATFORM_LENGTH} printable characters")
    return value


def _printable(value: str) -> bool:
    return all(not char.isspace() and unicodedata.category(char)[0] != "C" for char in value)


def route_response(status: int, body: str) -> dict[str, Any]:
    """A WebSocket route's answer; with a route response, ``body`` goes to the client."""
    return {"statusCode": status, "body": body}
