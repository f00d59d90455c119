"""What the send and sender Lambdas do with a message, from envelope to report.

``send`` answers a direct invocation synchronously. ``process_queued`` handles one
SQS message and guarantees that each recipient either got the message, was found
gone, or is named in a dead-letter message with its reason:

- an invalid message goes to the dead-letter queue at once (retrying cannot fix it);
- recipients that failed with a retryable error are re-queued as a new message that
  names only them (with its attempt count), so a retry never reaches recipients that
  already received the message; after ``max_requeues`` they are dead-lettered;
- recipients that failed for good (413, 403, other 4xx) are dead-lettered at once;
- recipients not reached before the invocation's deadline are re-queued untried;
- if the table cannot be read, or the deadline passes before the message is started,
  nothing has been sent: the error propagates and SQS delivers the message again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import cache
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from wspush import connections, delivery, idempotency, queues
from wspush.clock import Deadline, now_ms
from wspush.delivery import DeliveryReport, Failure
from wspush.errors import DeadlineReached, InvalidMessage, QueueUnavailable, StorageUnavailable
from wspush.gateway import Gateway
from wspush.idempotency import AlreadyInProgress
from wspush.messages import (
    MAX_MESSAGES_PER_SEND,
    Message,
    parse_json,
    parse_message,
    sqs_body,
    to_envelope,
    with_target,
)
from wspush.observability import logger, metrics
from wspush.settings import Settings

if TYPE_CHECKING:  # the send Lambda has no SQS records, and need not load their types
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

MAX_MESSAGES_PER_INVOCATION = MAX_MESSAGES_PER_SEND
REQUEUE_CHUNK = 1_000


class _PartlySent(Exception):
    """A direct send whose retryable failures must not be remembered as done."""

    def __init__(self, answer: dict[str, Any]) -> None:
        super().__init__("some recipients may still be reached")
        self.answer = answer


@cache
def gateway_for(endpoint: str, region: str, max_connections: int) -> Gateway:
    """One Management API client per container (and per endpoint)."""
    return Gateway(endpoint, region=region, max_connections=max_connections)


def _gateway(settings: Settings) -> Gateway:
    return gateway_for(settings.management_endpoint, settings.region, settings.delivery_concurrency)


def send(
    event: Any,
    settings: Settings,
    *,
    request_id: str,
    deadline: Deadline,
    context: LambdaContext | None = None,
) -> dict[str, Any] | list[dict[str, Any]]:
    """Deliver one envelope, or a list of them, and answer what happened to each.

    A message without an ``id`` is given one derived from ``request_id``, which Lambda
    keeps when it retries an asynchronous invocation. A message already delivered (same
    ``id`` and target, within the idempotency TTL) is answered from the first delivery.
    """
    try:
        envelopes = _envelopes(event)
    except InvalidMessage as exc:
        return _rejected(exc)
    if isinstance(envelopes, list):
        return [
            _send_one(envelope, settings, f"{request_id}-{index}", deadline, context)
            for index, envelope in enumerate(envelopes)
        ]
    return _send_one(envelopes, settings, request_id, deadline, context)


def _envelopes(event: Any) -> Any:
    """The event as one envelope or a bounded list of them (a JSON string is parsed)."""
    if isinstance(event, str | bytes):
        event = parse_json(event)
    if isinstance(event, list) and not 0 < len(event) <= MAX_MESSAGES_PER_INVOCATION:
        raise InvalidMessage(
            "invalid_envelope", f"a list must hold 1 to {MAX_MESSAGES_PER_INVOCATION} messages"
        )
    return event


def _rejected(exc: InvalidMessage) -> dict[str, Any]:
    metrics.add_metric(name="InvalidMessages", unit="Count", value=1)
    logger.info("invalid message", code=exc.code, field=exc.field)
    return {"error": exc.as_dict()}


def _not_sent(message: Message, code: str, text: str) -> dict[str, Any]:
    metrics.add_metric(name="MessagesNotSent", unit="Count", value=1)
    logger.warning("message not sent", message_id=message.id, code=code)
    return {"id": message.id, "error": {"code": code, "message": text, "field": None}}


def _send_one(
    envelope: Any,
    settings: Settings,
    default_id: str,
    deadline: Deadline,
    context: LambdaContext | None,
) -> dict[str, Any]:
    try:
        message = parse_message(envelope, now_ms=now_ms(), default_id=default_id)
    except InvalidMessage as exc:
        return _rejected(exc)

    def deliver_now() -> dict[str, Any]:
        if deadline.passed():
            raise DeadlineReached("no time left to start this message")
        recipients = _recipients(message, settings)
        report = delivery.deliver(
            message, recipients, gateway=_gateway(settings), settings=settings, deadline=deadline
        )
        _log_report(report)
        if report.retryable:
            # Not remembered as done: the caller may retry the same id for what failed.
            raise _PartlySent(report.as_dict())
        return report.as_dict()

    try:
        handled = _once(message, 0, deliver_now, settings, context)
    except _PartlySent as partly:
        return partly.answer
    except DeadlineReached:
        return _not_sent(message, "deadline", "not sent: the invocation ran out of time")
    except AlreadyInProgress:
        return _not_sent(message, "in_progress", "another invocation is sending this message")
    except StorageUnavailable:
        return _not_sent(
            message, "storage_unavailable", "wspush's tables could not be used; nothing was sent"
        )
    if not handled.kept:
        # Sent, but not remembered: a retry with this id would be sent again.
        return {**handled.answer, "remembered": False}
    return handled.answer


def _once(
    message: Message,
    round_number: int,
    work: Callable[[], dict[str, Any]],
    settings: Settings,
    context: LambdaContext | None,
) -> idempotency.Handled:
    return idempotency.run_once(
        idempotency.key_of(message, round_number),
        work,
        table_name=settings.processed_table_name,
        ttl_seconds=settings.idempotency_ttl_seconds,
        context=context,
    )


def process_queued(
    record: SQSRecord,
    settings: Settings,
    *,
    deadline: Deadline,
    context: LambdaContext | None = None,
) -> None:
    """Handle one message from the queue; raise only when SQS should deliver it again."""
    try:
        _process(record, settings, deadline, context)
    except (StorageUnavailable, QueueUnavailable, DeadlineReached, AlreadyInProgress) as exc:
        logger.warning(
            "message left for SQS to deliver again",
            sqs_message_id=record.message_id,
            error=type(exc).__name__,
        )
        metrics.add_metric(name="MessagesRetried", unit="Count", value=1)
        raise


def _process(
    record: SQSRecord, settings: Settings, deadline: Deadline, context: LambdaContext | None
) -> None:
    if deadline.passed():
        raise DeadlineReached("no time left to start this message")
    queued = queues.QueuedAttributes.of(record)
    try:
        message = parse_message(
            parse_json(record.body), now_ms=now_ms(), ts=queued.ts, default_id=record.message_id
        )
    except InvalidMessage as exc:
        queues.dead_letter(
            settings.dead_letter_queue_url,
            record.body,
            queues.DeadLetter(exc.code, exc.message, exc.field),
            region=settings.region,
        )
        logger.warning("invalid message dead-lettered", code=exc.code, field=exc.field)
        metrics.add_metric(name="InvalidMessages", unit="Count", value=1)
        metrics.add_metric(name="DeadLettered", unit="Count", value=1)
        return
    if queued.segment is not None and message.target.broadcast:
        message = replace(message, target=replace(message.target, segment=queued.segment))
    logger.append_keys(message_id=message.id)

    def deliver_and_settle() -> dict[str, Any]:
        shares = _shares(message, settings)
        if shares:
            return _split(message, shares, queued, settings)
        recipients = _recipients(message, settings)
        report = delivery.deliver(
            message, recipients, gateway=_gateway(settings), settings=settings, deadline=deadline
        )
        _log_report(report)
        _settle_failures(message, report.failed, queued, settings)
        # What is remembered stays small whatever the audience: every failure was handed on.
        return report.as_dict(max_errors=0)

    try:
        _once(message, queued.round, deliver_and_settle, settings, context)
    finally:
        logger.remove_keys(["message_id"])


Share = tuple[dict[str, Any], tuple[int, int] | None]  # an envelope, and its scan segment


def _shares(message: Message, settings: Settings) -> list[Share]:
    """How to split a big audience so many invocations deliver it in parallel (none if small).

    A broadcast becomes scan segments of about ``connections_per_segment`` connections each
    (DynamoDB's parallel scan: a connection always falls in the same segment, so the split
    is the same whenever it is redone); a long user list becomes chunks of users.
    """
    target = message.target
    if target.broadcast and target.segment is None:
        try:
            count = connections.approximate_count()
        except StorageUnavailable:
            logger.exception("could not size the audience", message_id=message.id)
            raise
        total = min(-(-count // settings.connections_per_segment), queues.MAX_SEGMENTS)
        if total <= 1:
            return []
        envelope = with_target(message, broadcast=True)
        return [(envelope, (segment, total)) for segment in range(total)]
    if len(target.user_ids) > settings.users_per_chunk:
        size = settings.users_per_chunk
        return [
            (with_target(message, userIds=list(target.user_ids[start : start + size])), None)
            for start in range(0, len(target.user_ids), size)
        ]
    return []


def _split(
    message: Message, shares: list[Share], queued: queues.QueuedAttributes, settings: Settings
) -> dict[str, Any]:
    """Queue each share as its own message (same id and timestamp) for another invocation."""
    queues.queue_shares(
        settings.queue_url,
        shares,
        region=settings.region,
        attempt=queued.attempt,
        round_number=queued.round,
        ts=message.ts,
    )
    metrics.add_metric(name="AudiencesSplit", unit="Count", value=1)
    logger.info("audience split", shares=len(shares))
    return {"id": message.id, "shares": len(shares)}


def _recipients(message: Message, settings: Settings) -> list[str]:
    try:
        return delivery.resolve_targets(
            message.target, now_ms=now_ms(), page_size=settings.page_size
        )
    except StorageUnavailable:
        # Nothing was sent yet: the whole message can be tried again.
        logger.exception("could not resolve targets", message_id=message.id)
        metrics.add_metric(name="StorageErrors", unit="Count", value=1)
        raise


def _settle_failures(
    message: Message, failed: list[Failure], queued: queues.QueuedAttributes, settings: Settings
) -> None:
    """Re-queue what may still succeed; dead-letter what will not."""
    attempt = queued.attempt
    can_retry = attempt < settings.max_requeues
    untried = [f.connection_id for f in failed if not f.attempted]
    retry = [f.connection_id for f in failed if f.attempted and f.retryable and can_retry]
    final = [f for f in failed if f.attempted and not (f.retryable and can_retry)]
    # Untried recipients keep their attempt count: running out of time is not their failure.
    next_round = queued.round + 1
    _requeue(message, untried, attempt, next_round, delay_seconds=0, settings=settings)
    _requeue(
        message,
        retry,
        attempt + 1,
        next_round,
        delay_seconds=settings.requeue_delay_seconds * (2 ** min(attempt, 10)),
        settings=settings,
    )
    # A dead letter names as many recipients as its attributes can give reasons for.
    for start in range(0, len(final), queues.MAX_LISTED_FAILURES):
        chunk = final[start : start + queues.MAX_LISTED_FAILURES]
        queues.dead_letter(
            settings.dead_letter_queue_url,
            sqs_body(to_envelope(message, [f.connection_id for f in chunk])),
            queues.DeadLetter(
                "delivery_failed",
                _summary(chunk, attempt),
                failures=tuple((f.connection_id, f.reason) for f in chunk),
            ),
            region=settings.region,
        )
    if final:
        metrics.add_metric(name="DeadLettered", unit="Count", value=len(final))
        logger.warning("dead-lettered failed recipients", recipients=len(final))


def _requeue(
    message: Message,
    recipients: list[str],
    attempt: int,
    round_number: int,
    *,
    delay_seconds: int,
    settings: Settings,
) -> None:
    for start in range(0, len(recipients), REQUEUE_CHUNK):
        queues.requeue(
            settings.queue_url,
            to_envelope(message, recipients[start : start + REQUEUE_CHUNK]),
            region=settings.region,
            attempt=attempt,
            round_number=round_number,
            ts=message.ts,
            delay_seconds=delay_seconds,
        )
    if recipients:
        metrics.add_metric(name="Requeued", unit="Count", value=len(recipients))
        logger.info("requeued recipients", recipients=len(recipients), attempt=attempt)


def _summary(failures: list[Failure], attempt: int) -> str:
    reasons: dict[str, int] = {}
    for failure in failures:
        reasons[failure.reason] = reasons.get(failure.reason, 0) + 1
    listed = ", ".join(f"{reason} x{count}" for reason, count in sorted(reasons.items()))
    return f"{len(failures)} recipient(s) failed after {attempt + 1} delivery round(s): {listed}"


def _log_report(report: DeliveryReport) -> None:
    logger.info(
        "message delivered",
        message_id=report.message_id,
        targets=report.targets,
        delivered=len(report.delivered),
        gone=len(report.gone),
        failed=len(report.failed),
        throttled=report.throttled,
    )
