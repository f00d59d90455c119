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
- a message not started before the deadline, or held by another invocation, is put back
  on the queue as a fresh copy (it never counts toward SQS's receive limit untried);
- if the table cannot be read, nothing has been sent: the error propagates and SQS
  delivers the message again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from wspush.channels.names import parse_channel
from wspush.clock import Deadline, HasRemainingTime, now_ms
from wspush.contract.messages import (
    MAX_MESSAGES_PER_SEND,
    Message,
    parse_json,
    parse_message,
    sqs_body,
    to_envelope,
    with_target,
)
from wspush.errors import DeadlineReached, InvalidMessage, QueueUnavailable, StorageUnavailable
from wspush.fanout import delivery, idempotency, queues
from wspush.fanout.delivery import Audience, DeliveryReport, Failure
from wspush.fanout.gateway import settings_gateway
from wspush.fanout.idempotency import AlreadyInProgress
from wspush.history import stamping
from wspush.observability import logger, metrics
from wspush.settings import Settings
from wspush.store import channels as channels_store
from wspush.store import connections

if TYPE_CHECKING:  # the send Lambda has no SQS records, and need not load their types
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

MAX_MESSAGES_PER_INVOCATION = MAX_MESSAGES_PER_SEND
REQUEUE_CHUNK = 1_000


class _PartlySent(Exception):
    """A direct send whose retryable failures must not be remembered as done."""

    def __init__(self, answer: dict[str, Any]) -> None:
        super().__init__()
        self.answer = answer


def deadline_of(context: HasRemainingTime, settings: Settings) -> Deadline:
    """This invocation's deadline: its time limit less the margin for posts in flight and,
    within that margin, the reserve for settling them."""
    return Deadline.of(
        context, margin_ms=settings.deadline_margin_ms, reserve_ms=settings.settle_reserve_ms
    )


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
        message = _declared(
            parse_message(envelope, now_ms=now_ms(), default_id=default_id), settings
        )
    except InvalidMessage as exc:
        return _rejected(exc)

    def deliver_now() -> dict[str, Any]:
        if deadline.passed():
            raise DeadlineReached
        stamped = _stamp(message, settings)
        audience = _recipients(stamped, settings)
        report = delivery.deliver(
            stamped.message,
            audience,
            gateway=settings_gateway(settings),
            settings=settings,
            deadline=deadline,
        )
        _log_report(report)
        delivery.forget_gone(report.gone, deadline=deadline)
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
        # Nothing was posted, but the message may already hold its place in a stream: the
        # same id, sent again, keeps that place (a new id would be a second message).
        return _not_sent(
            message,
            "storage_unavailable",
            "wspush's tables could not be used; nothing was sent: send it again with the same id",
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
    except (StorageUnavailable, QueueUnavailable) as exc:
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
        _put_back(record, settings, delay_seconds=0, why="deadline")
        return
    queued = queues.QueuedAttributes.of(record)
    try:
        message = _declared(
            parse_message(
                parse_json(record.body),
                now_ms=now_ms(),
                ts=queued.ts,
                default_id=record.message_id,
                channel=queued.channel,
                seq=queued.seq,
            ),
            settings,
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
    if message.target.broadcast:  # a share of one (its segment and position), or all of it
        share = replace(message.target, segment=queued.segment, after=queued.after)
        message = replace(message, target=share)
    elif message.target.channel is not None:
        message = replace(message, target=replace(message.target, after=queued.after))
    logger.append_keys(message_id=message.id)

    def deliver_and_settle() -> dict[str, Any]:
        target = message.target
        kept = message
        if target.broadcast:
            share = _broadcast_share(message, queued, settings)
            if not isinstance(share, Audience):
                return share  # split for other invocations
            audience = share
        elif len(target.user_ids) > settings.users_per_chunk:
            return _split(message, _user_chunks(message, settings), queued, settings)
        else:
            # Placed in its streams before anything is sent (and before the rest of a
            # channel is handed on, which carries the place along).
            stamped = _stamp(message, settings)
            kept = stamped.message
            if target.channel is not None:
                audience = _channel_share(kept, target.channel, queued, settings)
            else:
                audience = _recipients(stamped, settings)
        report = delivery.deliver(
            kept,
            audience,
            gateway=settings_gateway(settings),
            settings=settings,
            deadline=deadline,
        )
        _log_report(report)
        _settle_failures(kept, report.failed, queued, settings, audience.seqs)
        delivery.forget_gone(report.gone, deadline=deadline)
        # What is remembered stays small whatever the audience: every failure was handed on.
        return report.as_dict(max_errors=0)

    try:
        _once(message, queued.round, deliver_and_settle, settings, context)
    except AlreadyInProgress:
        # Another invocation holds the message (its claim ends with that invocation): a copy
        # comes back once it is done, and is skipped then if it was delivered.
        _put_back(record, settings, delay_seconds=settings.busy_retry_seconds, why="in_progress")
    finally:
        logger.remove_keys(["message_id"])


def _put_back(record: SQSRecord, settings: Settings, *, delay_seconds: int, why: str) -> None:
    """Hand a message this invocation did not start back to the queue, untouched."""
    queues.put_back(
        settings.queue_url,
        record.body,
        queues.wspush_attributes(record),
        message_id=record.message_id,
        region=settings.region,
        delay_seconds=delay_seconds,
    )
    logger.info("message put back on the queue", sqs_message_id=record.message_id, reason=why)
    metrics.add_metric(name="MessagesPutBack", unit="Count", value=1)


def _broadcast_share(
    message: Message, queued: queues.QueuedAttributes, settings: Settings
) -> Audience | dict[str, Any]:
    """The connections this invocation delivers a broadcast to, or the answer of a split.

    Every invocation reads at most one page of ``connections_per_segment`` rows, whatever
    the table's size, so none runs out of time scanning. A broadcast that fits in one page
    is delivered at once; a bigger one is split into parallel scan segments (how many is
    never sized from DynamoDB's item count alone, which can be hours old); a segment with
    more than one page hands the rest of itself on (the scan position) before delivering.
    """
    target = message.target
    segment, total = target.segment or (None, None)
    page = _read(
        lambda: connections.scan_page(
            now_ms=now_ms(),
            limit=settings.connections_per_segment,
            segment=segment,
            total_segments=total,
            after=target.after,
        ),
        message,
    )
    if page.after is not None:
        if target.segment is None:
            return _split(message, _segments(message, settings), queued, settings)
        rest = queues.Share(with_target(message, broadcast=True), target.segment, page.after)
        _queue(message, [rest], queued, settings)
        logger.info("broadcast segment continues", segment=segment, total_segments=total)
    return Audience.of(page.records, target)


def _channel_share(
    message: Message, channel: str, queued: queues.QueuedAttributes, settings: Settings
) -> Audience:
    """The subscribers this invocation delivers a channel's message to: one page of at most
    ``connections_per_segment``; the rest of the channel is handed on first (its query
    position), so a big channel is read and delivered by a chain of invocations, each
    bounded, the next already running while this one posts."""
    page = _read(
        lambda: channels_store.subscriber_page(
            channel,
            now_ms=now_ms(),
            limit=settings.connections_per_segment,
            after=message.target.after,
        ),
        message,
    )
    if page.after is not None:
        rest = queues.Share(
            with_target(message, channel=channel), after=page.after, seq=message.seq
        )
        _queue(message, [rest], queued, settings)
        logger.info("channel continues", after_page=len(page.records))
    return Audience.of(page.records, message.target)


def _declared(message: Message, settings: Settings) -> Message:
    """A channel's message must name a declared namespace (nobody can subscribe elsewhere),
    and a message that will be kept must leave room in its frame for its ``seq``."""
    channel = message.target.channel
    if channel is not None:
        namespace = parse_channel(channel).namespace
        if settings.namespace(namespace) is None:
            raise InvalidMessage(
                "unknown_namespace", f"no namespace {namespace!r} is declared", "channel"
            )
    stamping.check_room(message, settings)
    return message


def _stamp(message: Message, settings: Settings) -> stamping.Stamped:
    return _read(
        lambda: stamping.stamp(message, settings, now_ms=now_ms()),
        message,
        failure="could not place the message in its streams",
    )


def _segments(message: Message, settings: Settings) -> list[queues.Share]:
    """A broadcast's scan segments: at least ``broadcast_segments``, more when DynamoDB's
    (possibly stale) item count says the table holds more than that many pages."""
    total = settings.broadcast_segments
    try:
        pages = -(-connections.approximate_count() // settings.connections_per_segment)
    except StorageUnavailable:
        logger.warning("could not read the table's item count")  # the logger holds message_id
    else:
        total = max(total, pages)
    total = min(total, queues.MAX_SEGMENTS)
    envelope = with_target(message, broadcast=True)
    return [queues.Share(envelope, (segment, total)) for segment in range(total)]


def _user_chunks(message: Message, settings: Settings) -> list[queues.Share]:
    size = settings.users_per_chunk
    users = message.target.user_ids
    return [
        queues.Share(with_target(message, userIds=list(users[start : start + size])))
        for start in range(0, len(users), size)
    ]


def _split(
    message: Message,
    shares: list[queues.Share],
    queued: queues.QueuedAttributes,
    settings: Settings,
) -> dict[str, Any]:
    """Queue each share as its own message (same id and timestamp) for another invocation."""
    _queue(message, shares, queued, settings)
    metrics.add_metric(name="AudiencesSplit", unit="Count", value=1)
    logger.info("audience split", shares=len(shares))
    return {"id": message.id, "shares": len(shares)}


def _queue(
    message: Message,
    shares: list[queues.Share],
    queued: queues.QueuedAttributes,
    settings: Settings,
) -> None:
    queues.queue_shares(
        settings.queue_url,
        shares,
        region=settings.region,
        attempt=queued.attempt,
        round_number=queued.round,
        ts=message.ts,
    )


def _recipients(stamped: stamping.Stamped, settings: Settings) -> Audience:
    return _read(
        lambda: delivery.resolve_targets(
            stamped.message.target,
            now_ms=now_ms(),
            page_size=settings.page_size,
            user_seqs=stamped.user_seqs,
        ),
        stamped.message,
    )


def _read[T](
    read: Callable[[], T], message: Message, *, failure: str = "could not resolve targets"
) -> T:
    try:
        return read()
    except StorageUnavailable:
        # Nothing was sent yet: the whole message can be tried again.
        logger.exception(failure, message_id=message.id)
        metrics.add_metric(name="StorageErrors", unit="Count", value=1)
        raise


def _settle_failures(
    message: Message,
    failed: list[Failure],
    queued: queues.QueuedAttributes,
    settings: Settings,
    seqs: Mapping[str, int] | None = None,
) -> None:
    """Re-queue what may still succeed; dead-letter what will not. Each is a handful of
    SendMessageBatch calls whatever the audience, so settling fits in the time reserved."""
    attempt = queued.attempt
    can_retry = attempt < settings.max_requeues
    untried = [f.connection_id for f in failed if not f.attempted]
    retry = [f.connection_id for f in failed if f.attempted and f.retryable and can_retry]
    final = [f for f in failed if f.attempted and not (f.retryable and can_retry)]
    next_round = queued.round + 1
    # Doubles each round; ``requeued`` holds it to SQS's 900 s.
    retry_delay = settings.requeue_delay_seconds * 2**attempt
    # Untried recipients keep their attempt count: running out of time is not their failure.
    # Recipients of a user list are re-queued user stream by user stream (each its own seq).
    requeues = [
        queues.requeued(
            to_envelope(message, chunk),
            attempt=chunk_attempt,
            round_number=next_round,
            ts=message.ts,
            delay_seconds=delay,
            channel=message.channel,
            seq=seq,
        )
        for recipients, chunk_attempt, delay in (
            (untried, attempt, 0),
            (retry, attempt + 1, retry_delay),
        )
        for seq, placed in _by_seq(recipients, message.seq, seqs or {}).items()
        for chunk in _chunks(placed, REQUEUE_CHUNK)
    ]
    queues.send_all(settings.queue_url, requeues, region=settings.region)
    for count in (len(untried), len(retry)):
        if count:
            metrics.add_metric(name="Requeued", unit="Count", value=count)
    if untried or retry:
        logger.info("requeued recipients", untried=len(untried), retried=len(retry))
    # A dead letter names as many recipients as its attributes can give reasons for.
    letters = [
        queues.dead_lettered(
            sqs_body(to_envelope(message, [f.connection_id for f in chunk])),
            queues.DeadLetter(
                "delivery_failed",
                _summary(chunk, attempt),
                failures=tuple((f.connection_id, f.reason) for f in chunk),
            ),
        )
        for chunk in _chunks(final, queues.MAX_LISTED_FAILURES)
    ]
    queues.send_all(settings.dead_letter_queue_url, letters, region=settings.region)
    if final:
        metrics.add_metric(name="DeadLettered", unit="Count", value=len(final))
        logger.warning("dead-lettered failed recipients", recipients=len(final))


def _by_seq(
    recipients: list[str], seq: int | None, seqs: Mapping[str, int]
) -> dict[int | None, list[str]]:
    """Recipients grouped by the ``seq`` their frame carries, in their order."""
    groups: dict[int | None, list[str]] = {}
    for connection_id in recipients:
        groups.setdefault(seqs.get(connection_id, seq), []).append(connection_id)
    return groups


def _chunks[T](items: list[T], size: int) -> list[list[T]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


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
        connecting=report.connecting,
    )
