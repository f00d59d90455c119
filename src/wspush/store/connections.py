"""The connections table: the only module that talks to DynamoDB.

One item per open WebSocket, keyed by API Gateway's ``connectionId``, with a GSI on
``userId`` so a user's connections (``pc``, ``mobile``, ...) are found with one query, and a
sparse, keys-only GSI on ``rotation`` (the bucket and shard of the connection's cut) so the
connections to ask to reconnect soon are found without reading the others.
Every item carries a TTL; DynamoDB removes expired items late (up to days), so
every read here skips them itself.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache

from pynamodb.attributes import (
    NumberAttribute,
    TTLAttribute,
    UnicodeAttribute,
    UnicodeSetAttribute,
)
from pynamodb.connection import Connection
from pynamodb.exceptions import DeleteError, PynamoDBException, UpdateError
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex, KeysOnlyProjection
from pynamodb.models import Model

from wspush.errors import StorageUnavailable
from wspush.settings import get_settings

_CONDITION_FAILED = "ConditionalCheckFailedException"
_BATCH_GET_LIMIT = 100


class _UserIndex(GlobalSecondaryIndex["ConnectionItem"]):
    class Meta:
        index_name = "byUser"
        projection = AllProjection()

    user_id = UnicodeAttribute(hash_key=True, attr_name="userId")


class _RotationIndex(GlobalSecondaryIndex["ConnectionItem"]):
    """Only connection ids: written once at $connect and once at the row's deletion (a ping's
    update changes no attribute it holds, so it costs the index nothing)."""

    class Meta:
        index_name = "byRotation"
        projection = KeysOnlyProjection()

    rotation = UnicodeAttribute(hash_key=True, attr_name="rotation")


class ConnectionItem(Model):
    class Meta:
        table_name = get_settings().table_name
        region = get_settings().region
        connect_timeout_seconds = 2
        read_timeout_seconds = 5
        max_retry_attempts = 2

    connection_id = UnicodeAttribute(hash_key=True, attr_name="connectionId")
    user_id = UnicodeAttribute(attr_name="userId")
    platform = UnicodeAttribute(attr_name="platform")
    connected_at = NumberAttribute(attr_name="connectedAt")
    last_seen_at = NumberAttribute(attr_name="lastSeenAt")
    ttl = TTLAttribute(attr_name="ttl")
    # The channels its token's `channels` claim grants, and how many it is subscribed to
    # (kept by wspush.store.channels, in the same transaction as each subscription).
    grants = UnicodeSetAttribute(null=True, attr_name="grants")
    channels = NumberAttribute(null=True, attr_name="channels")
    # The bucket and shard of the connection's cut (wspush.rotation.buckets); absent when
    # rotation is off, so the row stays out of the byRotation index.
    rotation = UnicodeAttribute(null=True, attr_name="rotation")
    by_user = _UserIndex()
    by_rotation = _RotationIndex()


@dataclass(frozen=True)
class ConnectionRecord:
    """One open connection, as the rest of the code sees it (times in ms since epoch)."""

    connection_id: str
    user_id: str
    platform: str
    connected_at: int
    last_seen_at: int
    grants: tuple[str, ...] = ()


def save(record: ConnectionRecord, *, ttl_seconds: int, rotation: str | None = None) -> None:
    """Store a new connection in one PutItem: the row exists whole or not at all.

    Its TTL counts from ``connected_at``: API Gateway's 2-hour lifetime cap plus a margin.
    ``rotation`` puts it in the ``byRotation`` index under that key (None: not at all).
    """
    item = ConnectionItem(
        record.connection_id,
        user_id=record.user_id,
        platform=record.platform,
        connected_at=record.connected_at,
        last_seen_at=record.last_seen_at,
        ttl=_expiry(record.connected_at, ttl_seconds),
        grants=set(record.grants) or None,
        rotation=rotation,
    )
    try:
        item.save()
    except PynamoDBException as exc:
        raise StorageUnavailable("could not store the connection") from exc


def delete(connection_id: str) -> bool:
    """Delete a connection if it is still there; True when this call removed it.

    Conditional, so a missing row (already deleted, expired, or never stored) is not an
    error: ``$disconnect`` and the 410 clean-up may both run for one connection.
    """
    try:
        ConnectionItem(connection_id).delete(condition=ConnectionItem.connection_id.exists())
    except DeleteError as exc:
        if exc.cause_response_code == _CONDITION_FAILED:
            return False
        raise StorageUnavailable("could not delete the connection") from exc
    return True


def delete_many(connection_ids: Sequence[str]) -> None:
    """Delete these rows, 25 to a BatchWriteItem call (the 410 clean-up of a big fan-out)."""
    try:
        with ConnectionItem.batch_write() as batch:
            for connection_id in connection_ids:
                batch.delete(ConnectionItem(connection_id))
    except PynamoDBException as exc:
        raise StorageUnavailable("could not delete the connections") from exc


def get(connection_id: str) -> ConnectionRecord | None:
    """A stored connection (a consistent read), or None."""
    try:
        item = ConnectionItem.get(connection_id, consistent_read=True)
    except ConnectionItem.DoesNotExist:
        return None
    except PynamoDBException as exc:
        raise StorageUnavailable("could not read the connection") from exc
    return _record(item)


def expiry(connected_at_ms: int, ttl_seconds: int) -> datetime:
    """When a connection's row, and everything that lives as long, expires."""
    return _expiry(connected_at_ms, ttl_seconds)


def connected_at(connection_id: str) -> int | None:
    """When a stored connection opened (ms), or None if it is not stored (a consistent read:
    the row may have been written a moment ago)."""
    record = get(connection_id)
    return record.connected_at if record is not None else None


def touch(connection_id: str, *, now_ms: int) -> bool:
    """Record that a known connection is alive; False if it is unknown.

    The TTL stays where ``save`` put it: API Gateway closes every connection 2 hours after
    it opened, however active, so a row never needs to outlive that.
    """
    try:
        ConnectionItem(connection_id).update(
            actions=[ConnectionItem.last_seen_at.set(now_ms)],
            condition=ConnectionItem.connection_id.exists(),
        )
    except UpdateError as exc:
        if exc.cause_response_code == _CONDITION_FAILED:
            return False
        raise StorageUnavailable("could not refresh the connection") from exc
    return True


def for_user(
    user_id: str, *, now_ms: int, page_size: int | None = None
) -> Iterator[ConnectionRecord]:
    """Every live connection of one user, following the query's pages to the end."""
    try:
        for item in ConnectionItem.by_user.query(user_id, page_size=page_size):
            if _is_live(item, now_ms):
                yield _record(item)
    except PynamoDBException as exc:
        raise StorageUnavailable("could not query the user's connections") from exc


def due_for_rotation(key: str) -> list[str]:
    """The ids of the connections under one ``byRotation`` key, every page of them, sorted (so
    the same rows always make the same chunks). Rows whose connection closed are gone from the
    index with the row; the index holds no TTL, and needs none: a row's cut comes long before
    its TTL."""
    try:
        return sorted(item.connection_id for item in ConnectionItem.by_rotation.query(key))
    except PynamoDBException as exc:
        raise StorageUnavailable("could not query the connections due to rotate") from exc


def all_connections(
    *,
    now_ms: int,
    page_size: int | None = None,
    segment: int | None = None,
    total_segments: int | None = None,
) -> Iterator[ConnectionRecord]:
    """Every live connection (or one segment of a parallel scan), page after page."""
    try:
        for item in ConnectionItem.scan(
            page_size=page_size, segment=segment, total_segments=total_segments
        ):
            if _is_live(item, now_ms):
                yield _record(item)
    except PynamoDBException as exc:
        raise StorageUnavailable("could not scan the connections") from exc


@dataclass(frozen=True)
class Page:
    """One bounded page of a scan, and where the next one starts (None: the scan is done)."""

    records: list[ConnectionRecord]
    after: str | None


def scan_page(
    *,
    now_ms: int,
    limit: int,
    segment: int | None = None,
    total_segments: int | None = None,
    after: str | None = None,
) -> Page:
    """At most ``limit`` rows of the table (or of one parallel-scan segment), read in one
    Scan call from ``after`` on, so one invocation's share of a broadcast stays bounded
    however big the table is."""
    start = {"connectionId": {"S": after}} if after is not None else None
    try:
        results = ConnectionItem.scan(
            segment=segment,
            total_segments=total_segments,
            limit=limit,  # also the page size: one Scan call
            last_evaluated_key=start,
        )
        records = [_record(item) for item in results if _is_live(item, now_ms)]
        next_key = results.last_evaluated_key
    except PynamoDBException as exc:
        raise StorageUnavailable("could not scan the connections") from exc
    return Page(records, next_key["connectionId"]["S"] if next_key else None)


def approximate_count() -> int:
    """How many rows the table holds, as DynamoDB last counted: it recounts about every 6 hours,
    so a new or fast-growing table reports 0 or far too few. Only ever a hint."""
    try:
        description = ConnectionItem.describe_table()
    except PynamoDBException as exc:
        raise StorageUnavailable("could not describe the connections table") from exc
    return int(description["ItemCount"])


def get_many(connection_ids: Iterable[str], *, now_ms: int) -> Iterator[ConnectionRecord]:
    """The live connections among ``connection_ids``; unknown ids are skipped."""
    ids = list(dict.fromkeys(connection_ids))
    try:
        for start in range(0, len(ids), _BATCH_GET_LIMIT):
            for item in ConnectionItem.batch_get(ids[start : start + _BATCH_GET_LIMIT]):
                if _is_live(item, now_ms):
                    yield _record(item)
    except PynamoDBException as exc:
        raise StorageUnavailable("could not read the connections") from exc


def _expiry(from_ms: int, ttl_seconds: int) -> datetime:
    return datetime.fromtimestamp(from_ms / 1000, tz=UTC) + timedelta(seconds=ttl_seconds)


def _is_live(item: ConnectionItem, now_ms: int) -> bool:
    return item.ttl is None or item.ttl.timestamp() * 1000 > now_ms


def _record(item: ConnectionItem) -> ConnectionRecord:
    return ConnectionRecord(
        connection_id=item.connection_id,
        user_id=item.user_id,
        platform=item.platform,
        connected_at=int(item.connected_at),
        last_seen_at=int(item.last_seen_at),
        grants=tuple(sorted(item.grants or ())),
    )


@cache
def transaction_connection() -> Connection:
    """The client transactions are written with (the tables' region, timeouts and retries):
    a subscription with its connection's channel count, a stream's message with its head."""
    meta = ConnectionItem.Meta
    return Connection(
        region=meta.region,
        connect_timeout_seconds=meta.connect_timeout_seconds,
        read_timeout_seconds=meta.read_timeout_seconds,
        max_retry_attempts=meta.max_retry_attempts,
    )


def pause_before_retry(attempt: int, base_seconds: float, cap_seconds: float) -> None:
    """Before a conditional write that lost to another writer is tried again: nothing before
    the first attempt, then full jitter over a doubling, capped window."""
    if attempt:
        ceiling = min(cap_seconds, base_seconds * 2**attempt)
        time.sleep(random.uniform(0, ceiling))  # noqa: S311 - jitter, not security
