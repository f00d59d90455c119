"""Recovery: post what a reconnecting client missed of a stream, in seq order, before its
reply says whether that was everything.

``recovered`` is true only when every message after the client's ``since`` up to the
stream's position was posted to it. It is false, and nothing is posted, when the history
does not reach back that far (by count or age), the epoch changed, ``since`` is ahead of the
stream, or the replay would pass its bounds (``max_replay_messages`` / ``max_replay_bytes``):
then the client reloads its state instead of replaying. A replay cut short (the connection
went, posts kept failing, the invocation ran out of time) also answers false.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

from wspush.clock import Deadline
from wspush.fanout.delivery import RetryPolicy, backoff_seconds
from wspush.fanout.gateway import PostOutcome, settings_gateway
from wspush.history.streams import Since, Stream
from wspush.observability import logger, metrics
from wspush.settings import Settings
from wspush.store import history
from wspush.store.history import Kept, Position, Span


@dataclass(frozen=True)
class Outcome:
    """Where the client now is in the stream, and whether nothing in between was lost."""

    position: Position
    recovered: bool

    def as_dict(self) -> dict[str, object]:
        return {**self.position.as_dict(), "recovered": self.recovered}


def missed(
    stream: Stream, since: Since, head: Position, settings: Settings, *, now_ms: int
) -> list[Kept] | None:
    """The kept messages after ``since`` up to ``head``; None when they cannot all be had."""
    if since.epoch != head.epoch or since.seq > head.seq:
        return None
    if since.seq == head.seq:
        return []
    if since.seq + 1 < stream.first_kept(head.seq):
        return None  # older than the stream keeps
    if head.seq - since.seq > settings.max_replay_messages:
        return None  # more than one replay may post
    span = Span(stream.key, head.epoch, since.seq, head.seq)
    return history.read(span, now_ms=now_ms, max_bytes=settings.max_replay_bytes)


def recover(
    stream: Stream,
    since: Since,
    connection_id: str,
    settings: Settings,
    *,
    now_ms: int,
    deadline: Deadline | None = None,
) -> Outcome:
    """Post what ``connection_id`` missed of ``stream`` since ``since``, in seq order."""
    head = history.position(stream.key, now_ms=now_ms)
    frames = missed(stream, since, head, settings, now_ms=now_ms)
    if frames is None:
        metrics.add_metric(name="RecoveriesMissed", unit="Count", value=1)
        logger.info("history does not reach back", connection_id=connection_id, missed=True)
        return Outcome(head, recovered=False)
    posted = post_in_order(connection_id, frames, settings, deadline or Deadline.never())
    metrics.add_metric(name="RecoveredMessages", unit="Count", value=posted)
    if posted < len(frames):
        metrics.add_metric(name="RecoveriesCut", unit="Count", value=1)
        logger.warning(
            "replay cut short", connection_id=connection_id, posted=posted, missed=len(frames)
        )
        return Outcome(head, recovered=False)
    metrics.add_metric(name="Recoveries", unit="Count", value=1)
    logger.info("recovered", connection_id=connection_id, replayed=posted)
    return Outcome(head, recovered=True)


def post_in_order(
    connection_id: str, frames: list[Kept], settings: Settings, deadline: Deadline
) -> int:
    """Post ``frames`` one after the other (each answered before the next starts, so they
    arrive in order), retrying throttled and transient failures; how many were posted."""
    if not frames:
        return 0
    gateway = settings_gateway(settings)
    policy = RetryPolicy.from_settings(settings)
    jitter = random.Random()  # noqa: S311 - jitter, not security

    async def post_all() -> int:
        for posted, kept in enumerate(frames):
            if not await _post_one(kept.frame):
                return posted
        return len(frames)

    async def _post_one(frame: bytes) -> bool:
        for attempt in range(policy.max_attempts):
            if attempt:
                await asyncio.sleep(backoff_seconds(attempt - 1, policy, jitter))
            if deadline.passed():
                return False
            result = await gateway.post(connection_id, frame)
            if result.outcome is PostOutcome.DELIVERED:
                return True
            if not result.retryable:
                return False
        return False

    return gateway.run(post_all())
