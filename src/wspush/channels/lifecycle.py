"""What follows a connection's row being written or deleted (the table's stream).

A row appears: the user may have come online (``user.online`` on EventBridge). A row is
deleted, by ``$disconnect``, by a 410 during a send, or by its TTL: the connection's
subscriptions end (``presence.leave`` where it was the user's last connection in a channel)
and the user may have gone offline. Each step is idempotent, so a record handled twice
changes nothing the second time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from wspush import eventbus
from wspush.channels.subscriptions import end
from wspush.clock import now_ms
from wspush.observability import logger
from wspush.settings import Settings
from wspush.store import channels as store
from wspush.store import connections

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import (
        DynamoDBRecord,
    )


@dataclass(frozen=True)
class ConnectionChange:
    connection_id: str
    user_id: str
    platform: str
    connected_at: int
    at: int  # when the change happened (ms)
    channels: int = 0  # how many channels the connection held (the row's count)


def opened(change: ConnectionChange, settings: Settings) -> None:
    expires = connections.expiry(change.connected_at, settings.connection_ttl_seconds)
    if store.came_online(change.user_id, change.connection_id, expires=expires):
        _tell(settings, "user.online", change)


def closed(change: ConnectionChange, settings: Settings) -> None:
    # The row counts its subscriptions in the transactions that make and end them: a row
    # that held none needs no query (most connections never subscribe).
    channels = store.channels_of(change.connection_id) if change.channels else []
    for channel in channels:
        end(change.connection_id, channel, settings, connection_open=False)
    logger.info("connection ended", connection_id=change.connection_id, channels=len(channels))
    if store.went_offline(change.user_id, change.connection_id):
        _tell(settings, "user.offline", change)


def _tell(settings: Settings, detail_type: str, change: ConnectionChange) -> None:
    if not settings.event_bus_name:
        return
    detail = {
        "userId": change.user_id,
        "connectionId": change.connection_id,
        "platform": change.platform,
        "at": change.at,
    }
    eventbus.put(settings.event_bus_name, detail_type, detail, region=settings.region)


def handle(record: DynamoDBRecord, settings: Settings) -> None:
    """One stream record: an INSERT opens, a REMOVE closes; anything else is not ours."""
    stream = record.dynamodb
    if stream is None:
        return
    name = record.event_name.name if record.event_name else ""
    image = stream.new_image if name == "INSERT" else stream.old_image
    if name not in ("INSERT", "REMOVE") or not image:
        return
    at = int(stream.approximate_creation_date_time or 0) * 1000 or now_ms()
    change = ConnectionChange(
        connection_id=str(image["connectionId"]),
        user_id=str(image["userId"]),
        platform=str(image.get("platform", "")),
        connected_at=int(image.get("connectedAt", 0)),
        at=at,
        channels=int(image.get("channels", 0)),
    )
    if name == "INSERT":
        opened(change, settings)
    else:
        closed(change, settings)
