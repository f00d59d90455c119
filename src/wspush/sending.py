"""What the send and sender Lambdas do with a message, from envelope to report.

``send`` answers a direct invocation synchronously. ``process_queued`` handles one
SQS message and guarantees that, whatever happens, each recipient either got the
message, was found gone, or is named in a dead-letter message with its reason:

- an invalid message goes to the dead-letter queue at once (retrying cannot fix it);
- recipients that failed with a retryable error are re-queued as a new message that
  names only them (with its attempt count), so a retry never reaches recipients that
  already received the message; after ``max_requeues`` they are dead-lettered;
- recipients that failed for good (413, 403) are dead-lettered at once;
- if the table cannot be read, nothing has been sent yet: the error propagates and
  SQS delivers the same message again.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from wspush import delivery, queues
from wspush.clock import now_ms
from wspush.delivery import DeliveryReport, Failure
from wspush.errors import InvalidMessage, StorageUnavailable
from wspush.gateway import Gateway
from wspush.messages import Message, parse_json, parse_message, to_envelope
from wspush.observability import logger, metrics
from wspush.settings import Settings

MAX_MESSAGES_PER_INVOCATION = 100
REQUEUE_CHUNK = 1_000


@cache
def gateway_for(endpoint: str, region: str, max_connections: int) -> Gateway:
    """One Management API client per container (and per endpoint)."""
    return Gateway(endpoint, region=region, max_connections=max_connections)


def _gateway(settings: Settings) -> Gateway:
    return gateway_for(settings.management_endpoint, settings.region, settings.delivery_concurrency)


def send(event: Any, settings: Settings) -> dict[str, Any] | list[dict[str, Any]]:
    """Deliver one envelope, or a list of them, and answer what happened to each."""
    try:
        envelopes = _envelopes(event)
    except InvalidMessage as exc:
        return _rejected(exc)
    if isinstance(envelopes, list):
        return [_send_one(envelope, settings) for envelope in envelopes]
    return _send_one(envelopes, settings)


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


def _send_one(envelope: Any, settings: Settings) -> dict[str, Any]:
    try:
        message = parse_message(envelope, now_ms=now_ms())
    except InvalidMessage as exc:
        return _rejected(exc)
    try:
        recipients = delivery.resolve_targets(
            message.target, now_ms=now_ms(), page_size=settings.page_size
        )
    except StorageUnavailable:
        logger.exception("could not resolve targets", message_id=message.id)
        metrics.add_metric(name="StorageErrors", unit="Count", value=1)
        return {
            "id": message.id,
            "error": {
                "code": "storage_unavailable",
                "message": "the connections table could not be read; nothing was sent",
                "field": None,
            },
        }
    report = delivery.deliver(message, recipients, gateway=_gateway(settings), settings=settings)
    _log_report(report)
    return report.as_dict()


def process_queued(record: SQSRecord, settings: Settings) -> None:
    """Handle one message from the queue; raise only when SQS should deliver it again."""
    queued = queues.QueuedAttributes.of(record)
    body = record.body
    try:
        message = parse_message(parse_json(body), now_ms=now_ms(), ts=queued.ts)
    except InvalidMessage as exc:
        logger.warning("invalid message dead-lettered", code=exc.code, field=exc.field)
        queues.dead_letter(
            settings.dead_letter_queue_url,
            body,
            queues.DeadLetter(exc.code, exc.message, exc.field),
            region=settings.region,
        )
        metrics.add_metric(name="InvalidMessages", unit="Count", value=1)
        metrics.add_metric(name="DeadLettered", unit="Count", value=1)
        return
    logger.append_keys(message_id=message.id)
    try:
        recipients = _recipients(message, settings)
        report = delivery.deliver(
            message, recipients, gateway=_gateway(settings), settings=settings
        )
        _log_report(report)
        _settle_failures(message, report.failed, queued.attempt, settings)
    finally:
        logger.remove_keys(["message_id"])


def _recipients(message: Message, settings: Settings) -> list[str]:
    try:
        return delivery.resolve_targets(
            message.target, now_ms=now_ms(), page_size=settings.page_size
        )
    except StorageUnavailable:
        # Nothing was sent yet: SQS delivers the whole message again.
        logger.exception("could not resolve targets; the message will be retried")
        metrics.add_metric(name="StorageErrors", unit="Count", value=1)
        raise


def _settle_failures(
    message: Message, failed: list[Failure], attempt: int, settings: Settings
) -> None:
    """Re-queue what may still succeed; dead-letter what will not."""
    can_retry = attempt < settings.max_requeues
    retry = [f.connection_id for f in failed if f.retryable and can_retry]
    final = [f for f in failed if not (f.retryable and can_retry)]
    for start in range(0, len(retry), REQUEUE_CHUNK):
        queues.requeue(
            settings.queue_url,
            to_envelope(message, retry[start : start + REQUEUE_CHUNK]),
            region=settings.region,
            attempt=attempt + 1,
            ts=message.ts,
            delay_seconds=settings.requeue_delay_seconds * (2**attempt),
        )
    if retry:
        metrics.add_metric(name="Requeued", unit="Count", value=len(retry))
        logger.info("requeued failed recipients", recipients=len(retry), attempt=attempt + 1)
    for start in range(0, len(final), REQUEUE_CHUNK):
        chunk = final[start : start + REQUEUE_CHUNK]
        queues.dead_letter(
            settings.dead_letter_queue_url,
            json.dumps(
                to_envelope(message, [f.connection_id for f in chunk]),
                separators=(",", ":"),
                ensure_ascii=False,
            ),
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
