"""What ``$disconnect`` and ``ping`` do with the connections table."""

from __future__ import annotations

from wspush.contract.frames import reply
from wspush.errors import StorageUnavailable
from wspush.observability import logger, metrics
from wspush.settings import Settings
from wspush.store import connections


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
