"""Fan-out: resolve a message's target to connection ids and post to each of them.

Every recipient ends in exactly one bucket of the ``DeliveryReport``: delivered,
gone (HTTP 410: its row is then deleted by ``forget_gone``), or failed with a reason.
Throttling (429) and transient errors are retried here with capped, fully jittered
exponential backoff; 413 and 403 are final at once. A 410 for a connection younger than
the connect grace is not taken as gone: API Gateway answers 410 until ``$connect`` returns,
so it is retried like a 429 and the row is kept.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import Any

from wspush.clock import Deadline, now_ms
from wspush.contract.messages import MAX_REPORTED_ERRORS, Message, Target, with_seq
from wspush.errors import StorageUnavailable
from wspush.fanout.gateway import Gateway, PostOutcome, PostResult
from wspush.observability import logger, metrics, tracer
from wspush.settings import Settings
from wspush.store import channels as channels_store
from wspush.store import connections

NOT_ATTEMPTED = "deadline"
# A post still in flight when the invocation must settle: it may or may not have arrived.
ABANDONED = "AbandonedAtDeadline"
_DELETE_WORKERS = 8
_DELETE_BATCH = 25  # rows per BatchWriteItem call
# Deleting gone rows is the last thing an invocation does, and the least needed (a row also
# expires through its TTL): it stops this long before the function's time limit, leaving
# room for the processed-message record.
FORGET_RESERVE_SECONDS = 0.5


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
    connecting: int = 0  # 410s taken for a connection still opening, and retried

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


@dataclass(frozen=True)
class Audience:
    """The connection ids a message goes to, each once, in a stable order; and when each
    opened, for those whose row was read (explicit ids are posted to without a read); and,
    for a message to a list of users, each connection's ``seq`` in its user's stream."""

    ids: list[str]
    connected_at: dict[str, int] = field(default_factory=dict)
    seqs: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        records: Iterable[connections.ConnectionRecord],
        target: Target,
        user_seqs: Mapping[str, int] | None = None,
    ) -> Audience:
        """The connections among ``records`` that ``target``'s filters keep."""
        keep = _target_filter(target)
        kept = [r for r in records if keep(r)]
        opened = {r.connection_id: r.connected_at for r in kept}
        by_user = user_seqs or {}
        seqs = {r.connection_id: by_user[r.user_id] for r in kept if r.user_id in by_user}
        return cls(list(opened), opened, seqs)

    def frames(self, message: Message) -> Callable[[str], bytes]:
        """The frame each recipient gets: the message's, carrying its user's ``seq`` when
        the recipient has one of its own (made once per ``seq``)."""
        if not self.seqs:
            return lambda _: message.frame
        made: dict[int, bytes] = {}

        def frame_of(connection_id: str) -> bytes:
            seq = self.seqs.get(connection_id)
            if seq is None:
                return message.frame
            if seq not in made:
                made[seq] = with_seq(message.frame, seq)
            return made[seq]

        return frame_of


@tracer.capture_method(capture_response=False)
def resolve_targets(
    target: Target,
    *,
    now_ms: int,
    page_size: int | None = None,
    user_seqs: Mapping[str, int] | None = None,
) -> Audience:
    """The connections a target stands for, each once, in a stable order (with ``user_seqs``,
    each user's connections get that user's ``seq`` in their frame).

    Raises ``StorageUnavailable`` when the table cannot be read; nothing has been
    sent at that point, so the caller can safely retry the whole message.
    """
    if target.connection_ids and target.platforms is None:
        # Explicit ids are posted to as given: API Gateway answers 410 for dead ones.
        ids = [cid for cid in target.connection_ids if cid not in target.exclude_connection_ids]
        return Audience(list(dict.fromkeys(ids)))
    records: Iterable[connections.ConnectionRecord]
    if target.connection_ids:
        known = {
            r.connection_id: r for r in connections.get_many(target.connection_ids, now_ms=now_ms)
        }
        records = (known[cid] for cid in target.connection_ids if cid in known)
    elif target.channel is not None:
        records = channels_store.subscribers(target.channel, now_ms=now_ms, page_size=page_size)
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
    return Audience.of(records, target, user_seqs)


def _target_filter(target: Target) -> Callable[[connections.ConnectionRecord], bool]:
    def keep(record: connections.ConnectionRecord) -> bool:
        if record.connection_id in target.exclude_connection_ids:
            return False
        return target.platforms is None or record.platform in target.platforms

    return keep


@tracer.capture_method(capture_response=False)
def deliver(
    message: Message,
    audience: Audience,
    *,
    gateway: Gateway,
    settings: Settings,
    deadline: Deadline | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rng: random.Random | None = None,
) -> DeliveryReport:
    """Post ``message`` to every recipient concurrently (bounded) and report each outcome.

    No post starts after ``deadline``: recipients not reached by then are reported as
    failed, retryable and not attempted, so the caller can hand them on. Posts still in
    flight at the deadline's cut are abandoned and reported failed, retryable.
    """
    recipients = audience.ids
    report = DeliveryReport(message.id, targets=len(recipients))
    if not recipients:
        return report
    policy = RetryPolicy.from_settings(settings)
    jitter = rng or random.Random()  # noqa: S311 - jitter, not security
    limit = deadline or Deadline.never()
    opening = _OpeningCheck(audience.connected_at, settings.connect_grace_ms)
    frame_of = audience.frames(message)

    async def fan_out() -> list[tuple[str, PostResult | None, Counts]]:
        in_flight = asyncio.Semaphore(settings.delivery_concurrency)

        async def post_one(connection_id: str) -> tuple[str, PostResult | None, Counts]:
            async with in_flight:
                return await _post_with_retries(
                    gateway,
                    connection_id,
                    frame_of(connection_id),
                    policy,
                    limit,
                    sleep,
                    jitter,
                    opening,
                )

        return await asyncio.gather(*(post_one(cid) for cid in recipients))

    for connection_id, result, counts in gateway.run(fan_out()):
        report.throttled += counts.throttled
        report.connecting += counts.connecting
        _record(report, message.id, connection_id, result)
    _emit_metrics(report)
    return report


@dataclass
class Counts:
    throttled: int = 0
    connecting: int = 0


class _OpeningCheck:
    """Whether a 410 may only mean that a connection's ``$connect`` has not returned yet.

    A connection read with the audience that opened before the grace is gone at once, with no
    read. Any other one is read again (consistently): if its row is gone, ``$disconnect``
    (or another send's clean-up) has already seen it close, and the 410 is final.
    """

    def __init__(self, connected_at: dict[str, int], grace_ms: int) -> None:
        self._opened = connected_at
        self._grace_ms = grace_ms

    async def __call__(self, connection_id: str) -> bool:
        if self._grace_ms <= 0:
            return False
        opened = self._opened.get(connection_id)
        if opened is not None and not self._young(opened):
            return False
        stored = await asyncio.to_thread(_connected_at, connection_id)
        return stored is not None and self._young(stored)

    def _young(self, opened: int) -> bool:
        return now_ms() - opened < self._grace_ms


def _connected_at(connection_id: str) -> int | None:
    try:
        return connections.connected_at(connection_id)
    except StorageUnavailable:
        logger.warning("could not read a gone connection's age", connection_id=connection_id)
        return None


async def _post_with_retries(
    gateway: Gateway,
    connection_id: str,
    frame: bytes,
    policy: RetryPolicy,
    deadline: Deadline,
    sleep: Callable[[float], Awaitable[None]],
    rng: random.Random,
    opening: Callable[[str], Awaitable[bool]],
) -> tuple[str, PostResult | None, Counts]:
    """Post with bounded retries; ``None`` when the deadline passed before the first post."""
    counts = Counts()
    result: PostResult | None = None
    for attempt in range(policy.max_attempts):
        if attempt:
            delay = backoff_seconds(attempt - 1, policy, rng)
            if delay >= deadline.remaining():
                break
            await sleep(delay)
        if deadline.passed():
            break
        result = await _post(gateway, connection_id, frame, deadline)
        if result.outcome is PostOutcome.GONE and await opening(connection_id):
            result = replace(result, outcome=PostOutcome.CONNECTING)
            counts.connecting += 1
        if result.outcome is PostOutcome.THROTTLED:
            counts.throttled += 1
        if not result.retryable:
            break
    return connection_id, result, counts


async def _post(
    gateway: Gateway, connection_id: str, frame: bytes, deadline: Deadline
) -> PostResult:
    """One post, abandoned at the deadline's cut."""
    try:
        # No cut (an infinite one) is a timer that never fires.
        return await asyncio.wait_for(
            gateway.post(connection_id, frame), timeout=max(deadline.until_cut(), 0)
        )
    except TimeoutError:
        return PostResult(PostOutcome.ERROR, code=ABANDONED)


def forget_gone(gone: list[str], *, deadline: Deadline | None = None) -> int:
    """Delete the rows of the connections API Gateway says are gone (those, no other), while
    the invocation has time; what is left expires through its TTL. The number deleted.

    This is the last work of an invocation and the least needed, so it never holds the
    function past ``FORGET_RESERVE_SECONDS`` before its time limit: a delete still running
    then is left behind (Lambda freezes it with the sandbox).
    """
    if not gone:
        return 0
    limit = deadline or Deadline.never()
    chunks = [gone[start : start + _DELETE_BATCH] for start in range(0, len(gone), _DELETE_BATCH)]

    def forget(chunk: list[str]) -> int:
        if limit.left() <= FORGET_RESERVE_SECONDS:
            return 0
        try:
            connections.delete_many(chunk)
        except StorageUnavailable:
            # The rows expire through their TTL; the next send finds them gone again.
            logger.warning("could not delete gone connections", connections=len(chunk))
            return 0
        return len(chunk)

    pool = ThreadPoolExecutor(max_workers=min(len(chunks), _DELETE_WORKERS))
    futures = [pool.submit(forget, chunk) for chunk in chunks]
    left = limit.left() - FORGET_RESERVE_SECONDS
    done, _ = wait(futures, timeout=max(left, 0) if left != float("inf") else None)
    pool.shutdown(wait=False, cancel_futures=True)
    deleted = sum(future.result() for future in done)
    if deleted < len(gone):
        logger.warning("gone connections left to their TTL", connections=len(gone) - deleted)
    return deleted


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
        ("GoneWhileConnecting", report.connecting),
        ("Failed", len(report.failed)),
    ):
        metrics.add_metric(name=name, unit="Count", value=value)
