"""The rotation sweeper: at each tick, the connections whose cut is near are asked to reconnect.

It posts nothing itself. For each bucket due (``buckets.due``) it reads the ``byRotation``
index shard by shard and queues ``connectionIds`` messages of at most ``CHUNK`` ids carrying
the reconnect frame on the messages queue; the sender delivers them with its retries, its
410 clean-up (a connection that closed meanwhile is gone) and its dead letters.

Work is done once however often a tick comes (EventBridge and Lambda deliver at least once;
ticks catch up on earlier buckets). A bucket queued in full is remembered in the
processed-messages table, so later ticks skip it. A bucket whose queueing failed part way is
queued again, and what was already queued is not delivered twice: a message's id is fixed by
its bucket and shard and its recipients by the sorted index, so the sender's idempotency
finds each repeated message already delivered; a client that receives a repeat anyway (the
chunks of a shard holding more than ``CHUNK`` moved because a connection closed meanwhile)
drops it by its id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any

from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from wspush.clock import Deadline
from wspush.contract.messages import sqs_body
from wspush.errors import QueueUnavailable, RotationIncomplete, StorageUnavailable
from wspush.fanout import idempotency, queues
from wspush.fanout.idempotency import AlreadyInProgress
from wspush.observability import logger, metrics
from wspush.rotation import buckets
from wspush.settings import Settings
from wspush.store import connections

RECONNECT = "reconnect"
REASON = "max_duration"
# Connections per queued message: one sender invocation posts a thousand in well under a
# second, and the body (about 20 KB of ids) stays far below SQS's limit.
CHUNK = 1_000


def reconnect_payload(bucket: int) -> dict[str, Any]:
    """The frame a bucket's connections receive: reconnect before the bucket's first cut."""
    return {"type": RECONNECT, "data": {"reason": REASON, "before": buckets.before_ms(bucket)}}


def message_id(bucket: int, shard: int) -> str:
    """The same for every run that queues this bucket's shard."""
    return f"{RECONNECT}-{bucket}-{shard:02d}"


@dataclass
class SweepReport:
    """What one tick did with each bucket due."""

    queued: list[int] = field(default_factory=list)  # queued by this tick
    earlier: list[int] = field(default_factory=list)  # queued by an earlier tick
    busy: list[int] = field(default_factory=list)  # another invocation is queueing it
    failed: list[int] = field(default_factory=list)
    left: list[int] = field(default_factory=list)  # not started: the invocation's time ran out
    connections: int = 0
    messages: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "queued": self.queued,
            "earlier": self.earlier,
            "busy": self.busy,
            "failed": self.failed,
            "left": self.left,
            "connections": self.connections,
            "messages": self.messages,
        }


def sweep(
    tick_ms: int,
    settings: Settings,
    *,
    now_ms: int,
    deadline: Deadline,
    context: LambdaContext | None = None,
) -> SweepReport:
    """Queue the reconnect messages of every bucket due at ``tick_ms``, oldest bucket first.

    Raises ``RotationIncomplete`` (after trying every bucket) when a bucket could not be
    queued, so the tick is tried again; a bucket it had no time left to start is left to the
    next tick, which catches up on it.
    """
    report = SweepReport()
    for bucket in buckets.due(tick_ms, now_ms=now_ms, settings=settings):
        if deadline.passed():
            report.left.append(bucket)
            continue
        try:
            handled = idempotency.run_once(
                {"rotation": bucket},
                partial(_queue, bucket, settings),
                table_name=settings.processed_table_name,
                ttl_seconds=_remembered_for(settings),
                context=context,
                on_repeat=_queued_before,
            )
        except AlreadyInProgress:
            report.busy.append(bucket)
            continue
        except (StorageUnavailable, QueueUnavailable) as exc:
            logger.warning("rotation bucket not queued", bucket=bucket, error=type(exc).__name__)
            report.failed.append(bucket)
            continue
        if handled.answer.get("earlier"):
            report.earlier.append(bucket)
            continue
        report.queued.append(bucket)
        report.connections += int(handled.answer["connections"])
        report.messages += int(handled.answer["messages"])
    _count(report)
    if report.failed:
        raise RotationIncomplete(f"rotation buckets not queued: {report.failed}")
    return report


def _queue(bucket: int, settings: Settings) -> dict[str, Any]:
    """Queue one bucket's reconnect messages, shard by shard; what was queued."""
    outgoing: list[queues.Outgoing] = []
    total = 0
    payload = reconnect_payload(bucket)
    for shard in range(buckets.SHARDS):
        ids = connections.due_for_rotation(buckets.shard_key(bucket, shard))
        total += len(ids)
        outgoing.extend(
            queues.Outgoing(
                sqs_body(
                    {
                        "id": message_id(bucket, shard),
                        "connectionIds": ids[start : start + CHUNK],
                        "payload": payload,
                    }
                ),
                {},
            )
            for start in range(0, len(ids), CHUNK)
        )
    queues.send_all(settings.queue_url, outgoing, region=settings.region)
    logger.info(
        "rotation bucket queued",
        bucket=bucket,
        before=buckets.before_ms(bucket),
        connections=total,
        messages=len(outgoing),
    )
    return {"connections": total, "messages": len(outgoing)}


def _queued_before(response: Any, idempotent_data: DataRecord) -> Any:
    """An earlier tick's answer for the bucket (not a duplicate message: nothing to count)."""
    return {**response, "earlier": True}


def _remembered_for(settings: Settings) -> int:
    """How long a queued bucket is remembered: at least until ticks stop catching up on it
    (its cut, at most ``lead`` and a bucket after it was due)."""
    return max(
        settings.idempotency_ttl_seconds,
        settings.rotation_lead_seconds + 2 * settings.rotation_bucket_seconds,
    )


def _count(report: SweepReport) -> None:
    if report.connections:
        metrics.add_metric(name="ReconnectsQueued", unit="Count", value=report.connections)
    if report.failed:
        metrics.add_metric(name="RotationBucketsFailed", unit="Count", value=len(report.failed))
    if report.left:
        metrics.add_metric(name="RotationBucketsLeft", unit="Count", value=len(report.left))
    if len(report.queued) > 1:
        # More than the tick's own bucket: an earlier tick was missed, late, or failed.
        logger.info("rotation caught up", buckets=report.queued)
