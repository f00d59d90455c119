"""Fan-out: resolve a message's target to connection ids and post to each of them.

Every recipient ends in exactly one bucket of the ``DeliveryReport``: delivered,
gone (HTTP 410: its row is deleted), or failed with a reason. Throttling (429) and
transient errors are retried here with capped, fully jittered exponential backoff;
413 and 403 are final at once.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from wspush import connections
from wspush.clock import Deadline
from wspush.errors import StorageUnavailable
from wspush.gateway import Gateway, PostOutcome, PostResult
from wspush.messages import Message, Target
from wspush.observability import logger, metrics, tracer
from wspush.settings import Settings

NOT_ATTEMPTED = "deadline"
_DELETE_WORKERS = 8
MAX_REPORTED_ERRORS = 100


@dataclass(frozen=True)
class Failure:
    connection_id: str
    reason: str
    retryable: bool
    # False when the invocation ran out of time before the first post to this recipient.
    attempted: bool = True


@dataclass
class DeliveryReport:
    message_id: str
    targets: int = 0
    delivered: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    throttled: int = 0

    def as_dict(self, *, max_errors: int = MAX_REPORTED_ERRORS) -> dict[str, Any]:
        """The send Lambda's per-message answer, its error list bounded (a fan-out can fail
        for thousands of recipients; the answer must stay small enough to store and return)."""
        answer: dict[str, Any] = {
            "id": self.message_id,
            "targets": self.targets,
            "delivered": len(self.delivered),
            "gone": len(self.gone),
            "failed": len(self.failed),
            "errors": [
                {"connectionId": f.connection_id, "reason": f.reason}
                for f in self.failed[:max_errors]
            ],
        }
        if len(self.failed) > max_errors:
            answer["errorsTruncated"] = len(self.failed) - max_errors
        return answer

    @property
    def retryable(self) -> bool:
        """Whether some recipient failed in a way a later attempt may fix."""
        return any(f.retryable for f in self.failed)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    base_ms: int
    cap_ms: int

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(settings.max_post_attempts, settings.backoff_base_ms, settings.backoff_cap_ms)


def backoff_seconds(retry: int, policy: RetryPolicy, rng: random.Random) -> float:
    """Delay before retry number ``retry`` (0-based): full jitter over a capped exponential."""
    ceiling_ms = min(policy.cap_ms, policy.base_ms * (2**retry))
    return rng.uniform(0, ceiling_ms) / 1000


@tracer.capture_method(capture_response=False)
def resolve_targets(target: Target, *, now_ms: int, page_size: int | None = None) -> list[str]:
    """The connection ids a target stands for, each once, in a stable order.

    Raises ``StorageUnavailable`` when the table cannot be read; nothing has been
    sent at that point, so the caller can safely retry the whole message.
    """
    return list(dict.fromkeys(_resolve(target, now_ms=now_ms, page_size=page_size)))


def _resolve(target: Target, *, now_ms: int, page_size: int | None) -> Iterator[str]:
    keep = _target_filter(target)
    if target.connection_ids and target.platforms is None:
        # Explicit ids are posted to as given: API Gateway answers 410 for dead ones.
        yield from (
            cid for cid in target.connection_ids if cid not in target.exclude_connection_ids
        )
        return
    records: Iterable[connections.ConnectionRecord]
    if target.connection_ids:
        known = {
            r.connection_id: r for r in connections.get_many(target.connection_ids, now_ms=now_ms)
        }
        records = (known[cid] for cid in target.connection_ids if cid in known)
    elif target.user_ids:
        records = (
            record
            for user_id in target.user_ids
            for record in connections.for_user(user_id, now_ms=now_ms, page_size=page_size)
        )
    else:
        segment, total = target.segment or (None, None)
        records = connections.all_connections(
            now_ms=now_ms, page_size=page_size, segment=segment, total_segments=total
        )
    yield from (record.connection_id for record in records if keep(record))


def _target_filter(target: Target) -> Callable[[connections.ConnectionRecord], bool]:
    def keep(record: connections.ConnectionRecord) -> bool:
        if record.connection_id in target.exclude_connection_ids:
            return False
        return target.platforms is None or record.platform in target.platforms

    return keep


@tracer.capture_method(capture_response=False)
def deliver(
    message: Message,
    recipients: list[str],
    *,
    gateway: Gateway,
    settings: Settings,
    deadline: Deadline | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rng: random.Random | None = None,
) -> DeliveryReport:
    """Post ``message`` to every recipient concurrently (bounded) and report each outcome.

    No post starts after ``deadline``: recipients not reached by then are reported as
    failed, retryable and not attempted, so the caller can hand them on.
    """
    report = DeliveryReport(message.id, targets=len(recipients))
    if not recipients:
        return report
    policy = RetryPolicy.from_settings(settings)
    jitter = rng or random.Random()  # noqa: S311 - jitter, not security
    limit = deadline or Deadline.never()

    async def fan_out() -> list[tuple[str, PostResult | None, int]]:
        in_flight = asyncio.Semaphore(settings.delivery_concurrency)

        async def post_one(connection_id: str) -> tuple[str, PostResult | None, int]:
            async with in_flight:
                return await _post_with_retries(
                    gateway, connection_id, message.frame, policy, limit, sleep, jitter
                )

        return await asyncio.gather(*(post_one(cid) for cid in recipients))

    gone: list[str] = []
    for connection_id, result, throttles in gateway.run(fan_out()):
        report.throttled += throttles
        _record(report, message.id, connection_id, result)
        if result is not None and result.outcome is PostOutcome.GONE:
            gone.append(connection_id)
    _forget(gone)
    _emit_metrics(report)
    return report


async def _post_with_retries(
    gateway: Gateway,
    connection_id: str,
    frame: bytes,
    policy: RetryPolicy,
    deadline: Deadline,
    sleep: Callable[[float], Awaitable[None]],
    rng: random.Random,
) -> tuple[str, PostResult | None, int]:
    """Post with bounded retries; ``None`` when the deadline passed before the first post."""
    throttles = 0
    result: PostResult | None = None
    for attempt in range(policy.max_attempts):
        if attempt:
            delay = backoff_seconds(attempt - 1, policy, rng)
            if delay >= deadline.remaining():
                break
            await sleep(delay)
        if deadline.passed():
            break
        result = await gateway.post(connection_id, frame)
        if result.outcome is PostOutcome.THROTTLED:
            throttles += 1
        if not result.retryable:
            break
    return connection_id, result, throttles


def _forget(gone: list[str]) -> None:
    """Delete the rows of the connections API Gateway says are gone (those, no other)."""
    if not gone:
        return
    with ThreadPoolExecutor(max_workers=min(len(gone), _DELETE_WORKERS)) as pool:
        list(pool.map(_forget_one, gone))


def _forget_one(connection_id: str) -> None:
    try:
        connections.delete(connection_id)
    except StorageUnavailable:
        # The row expires through its TTL; the next send will find it gone again.
        logger.warning("could not delete gone connection", connection_id=connection_id)


def _record(
    report: DeliveryReport, message_id: str, connection_id: str, result: PostResult | None
) -> None:
    if result is None:
        report.failed.append(Failure(connection_id, NOT_ATTEMPTED, retryable=True, attempted=False))
    elif result.outcome is PostOutcome.DELIVERED:
        report.delivered.append(connection_id)
    elif result.outcome is PostOutcome.GONE:
        report.gone.append(connection_id)
        logger.info("connection gone", connection_id=connection_id, message_id=message_id)
    else:
        report.failed.append(Failure(connection_id, result.reason, result.retryable))
        logger.warning(
            "delivery failed",
            connection_id=connection_id,
            message_id=message_id,
            reason=result.reason,
            retryable=result.retryable,
        )


def _emit_metrics(report: DeliveryReport) -> None:
    for name, value in (
        ("Delivered", len(report.delivered)),
        ("Gone", len(report.gone)),
        ("Throttled", report.throttled),
        ("Failed", len(report.failed)),
    ):
        metrics.add_metric(name=name, unit="Count", value=value)
