"""``$connect``: who is connecting, and on which platform; then the connection is stored.

Kept apart from the other routes so only ``$connect`` loads the token-checking code.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from functools import cache

from wspush.auth.tokens import verifier_for
from wspush.contract.messages import MAX_PLATFORM_LENGTH, MAX_USER_ID_LENGTH
from wspush.errors import BadHandshake, Forbidden, StorageUnavailable
from wspush.observability import logger, metrics
from wspush.rotation import buckets
from wspush.settings import AuthMode, AuthSettings, Settings
from wspush.store import connections
from wspush.store.connections import ConnectionRecord

DEFAULT_PLATFORM = "unknown"


def open_connection(
    connection_id: str,
    query: Mapping[str, str],
    settings: Settings,
    auth: AuthSettings,
    *,
    now_ms: int,
    connected_at: int | None = None,
) -> ConnectionRecord:
    """Authenticate the handshake, validate its query and store the connection.

    Raises a ``ConnectionRefused`` (``BadHandshake``, ``Unauthenticated``, ``Forbidden``:
    nothing is stored), ``AuthUnavailable`` (the token could not be checked: refused), or
    ``StorageUnavailable`` (the row is removed again if the failed write landed after all).
    """
    user_id, grants = _authenticated_user(query, settings, auth)
    platform = _platform(query.get("platform"), settings.allowed_platforms)
    record = ConnectionRecord(
        connection_id=connection_id,
        user_id=user_id,
        platform=platform,
        connected_at=connected_at or now_ms,
        last_seen_at=now_ms,
        grants=grants,
    )
    # Where the rotation sweeper will find it, shortly before API Gateway cuts it.
    rotation = buckets.index_key(connection_id, record.connected_at, settings)
    try:
        connections.save(record, ttl_seconds=settings.connection_ttl_seconds, rotation=rotation)
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


def _authenticated_user(
    query: Mapping[str, str], settings: Settings, auth: AuthSettings
) -> tuple[str, tuple[str, ...]]:
    """The user id (the token's claim in ``jwt`` mode, the client's word in ``none`` mode)
    and the channels the token grants (none without a token)."""
    asked = query.get("userId")
    if auth.mode is AuthMode.NONE:
        _warn_once_auth_is_off()
        return _user_id(asked), ()
    user_id, grants = verifier_for(auth, settings.region).identity(query.get("token"))
    if asked is not None and asked != user_id:
        raise Forbidden("the userId parameter does not match the token")
    try:
        return _user_id(user_id), grants
    except BadHandshake as exc:
        raise Forbidden(f"the token's user id is not acceptable: {exc.reason}") from exc


@cache
def _warn_once_auth_is_off() -> None:
    logger.warning(
        "authentication is off (WSPUSH_AUTH_MODE=none): any client can connect as any userId"
    )


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
