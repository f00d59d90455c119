"""When a connection is asked to reconnect: the bucket its cut falls in, and its shard.

API Gateway cuts a connection ``max_connection_seconds`` after it opened. At ``$connect`` its
row is given the bucket (``rotation_bucket_seconds`` wide) that cut falls in and one of
``SHARDS`` shards, in the sparse attribute the ``byRotation`` index is keyed on. Each tick of
the schedule sweeps the first bucket whose cuts are all at least ``rotation_lead_seconds``
away, and the earlier buckets whose cuts are still ahead (those a late or missed tick left).

Keying rows by their cut, not by their warning time, keeps ``before`` (a bucket's start, so
never later than any cut in it) true for every row, and a change of the lead applies to
connections already open. Everything here is arithmetic.
"""

from __future__ import annotations

import zlib

from wspush.settings import Settings

# Connections cut in the same bucket are spread over this many index partitions: a reconnect
# storm (every connection cut at once comes back at once, into the same bucket again) then
# writes to 16 partition keys, not one, and cannot throttle the index, which would throttle
# the table's $connect writes with it.
SHARDS = 16
# Earlier buckets a tick also sweeps if a late or missed tick left them (and their cuts are
# still ahead): ten minutes of ticks at the default bucket.
MAX_CATCH_UP = 10


def shard_of(connection_id: str) -> int:
    """The connection's shard: stable for a connection id, whatever the process."""
    return zlib.crc32(connection_id.encode()) % SHARDS


def cut_bucket(connected_at_ms: int, settings: Settings) -> int:
    """The start (epoch seconds) of the bucket the connection's cut falls in."""
    cut_ms = connected_at_ms + settings.max_connection_seconds * 1000
    width_ms = settings.rotation_bucket_seconds * 1000
    return cut_ms // width_ms * settings.rotation_bucket_seconds


def index_key(connection_id: str, connected_at_ms: int, settings: Settings) -> str | None:
    """What the connection's row holds for the ``byRotation`` index; None when rotation is
    off (lead 0): the row then stays out of the index."""
    if not settings.rotation_lead_seconds:
        return None
    return shard_key(cut_bucket(connected_at_ms, settings), shard_of(connection_id))


def shard_key(bucket: int, shard: int) -> str:
    return f"{bucket}#{shard:02d}"


def before_ms(bucket: int) -> int:
    """``before`` for a bucket's connections: its start, no later than any cut in it."""
    return bucket * 1000


def due(tick_ms: int, *, now_ms: int, settings: Settings) -> list[int]:
    """The buckets a tick at ``tick_ms`` sweeps, oldest first.

    The tick's own bucket is the first that starts ``lead`` or more after the tick, so each
    connection is warned at least ``lead`` before its cut, and less than ``lead`` and two
    buckets (``lead`` and one bucket when ticks fall on bucket edges, as the local ones do;
    EventBridge runs a rule at some second of its minute).
    Up to ``MAX_CATCH_UP`` earlier buckets come with it while their first cut is still ahead of
    ``now_ms``: a retried or late tick, and ticks closer together or further apart than a
    bucket, still reach every bucket (the sweeper remembers the buckets it swept).
    """
    if not settings.rotation_lead_seconds:
        return []
    width = settings.rotation_bucket_seconds
    width_ms = width * 1000
    own = -(-(tick_ms + settings.rotation_lead_seconds * 1000) // width_ms) * width
    candidates = (own - back * width for back in range(MAX_CATCH_UP, -1, -1))
    return [bucket for bucket in candidates if before_ms(bucket) > now_ms]
