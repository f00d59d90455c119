"""The messages queue and its dead-letter queue: the only module that calls SQS.

Three writes happen here: a partly delivered message is re-queued for just the
recipients that still need it, a big audience's shares are queued for other invocations,
and a message that cannot be delivered goes to the dead-letter queue with its reason in
message attributes.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, NamedTuple

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from wspush.errors import QueueUnavailable
from wspush.messages import MAX_SQS_MESSAGE_BYTES, sqs_batches, sqs_body
from wspush.observability import logger

if TYPE_CHECKING:  # importing one data class loads all 30 modules (see events.py)
    from aws_lambda_powertools.utilities.data_classes.sqs_event import (
        SQSMessageAttribute,
        SQSRecord,
    )

ATTEMPT = "wspush-attempt"
ROUND = "wspush-round"
SEGMENT = "wspush-segment"  # "s/S": this copy of a broadcast delivers scan segment s of S
TIMESTAMP = "wspush-ts"
ERROR_CODE = "wspush-error-code"
ERROR_REASON = "wspush-error-reason"
ERROR_FIELD = "wspush-error-field"
FAILURES = "wspush-failures"

MAX_DELAY_SECONDS = 900  # SQS's limit for DelaySeconds
MAX_SEGMENTS = 1_000  # DynamoDB allows up to 1,000,000; this bounds one split's work
_MAX_COUNT = 1_000  # attempt and round counters beyond this are junk, not history
_EARLIEST_TS = 1_000_000_000_000  # 2001-09-09, in ms
_LATEST_TS = 100_000_000_000_000  # 5138, in ms
_MAX_REASON_CHARS = 1_000
MAX_LISTED_FAILURES = 100  # per dead letter: each named with its reason
# Entries of a SendMessageBatch that SQS answers as failed on its side (throttled, internal
# error) are sent again this many times, after a short jittered pause; botocore's own retries
# cover only whole calls.
BATCH_ENTRY_ATTEMPTS = 3
_BATCH_RETRY_BASE_SECONDS = 0.05


@dataclass(frozen=True)
class QueuedAttributes:
    """What wspush itself recorded on a queued message (absent on a service's message)."""

    attempt: int = 0  # delivery rounds that failed for these recipients
    round: int = 0  # times this message was re-queued, for whatever reason
    ts: int | None = None
    segment: tuple[int, int] | None = None

    @classmethod
    def of(cls, record: SQSRecord) -> QueuedAttributes:
        """Read them from an SQS event record's ``messageAttributes``."""
        attributes = record.message_attributes
        ts = _int_value(attributes[TIMESTAMP])
        return cls(
            attempt=min(max(_int_value(attributes[ATTEMPT]) or 0, 0), _MAX_COUNT),
            round=min(max(_int_value(attributes[ROUND]) or 0, 0), _MAX_COUNT),
            # Only a plausible epoch-milliseconds value reaches clients; junk means "now".
            ts=ts if ts is not None and _EARLIEST_TS <= ts <= _LATEST_TS else None,
            segment=_segment(attributes[SEGMENT]),
        )


@dataclass(frozen=True)
class DeadLetter:
    code: str
    reason: str
    field: str | None = None
    failures: tuple[tuple[str, str], ...] = ()  # (connection id, reason)


@cache
def _client(region: str) -> Any:
    return boto3.session.Session().client(
        "sqs",
        region_name=region,
        config=Config(connect_timeout=2, read_timeout=5, retries={"mode": "standard"}),
    )


def requeue(
    queue_url: str,
    body: Mapping[str, Any],
    *,
    region: str,
    attempt: int,
    round_number: int,
    ts: int,
    delay_seconds: int,
) -> None:
    """Put a message back on the queue, remembering its attempt count, round and timestamp."""
    _send(
        queue_url,
        sqs_body(body),
        region=region,
        attributes=_requeue_attributes(attempt, round_number, ts, None),
        delay_seconds=min(delay_seconds, MAX_DELAY_SECONDS),
    )


def queue_shares(
    queue_url: str,
    shares: Sequence[tuple[Mapping[str, Any], tuple[int, int] | None]],
    *,
    region: str,
    attempt: int,
    round_number: int,
    ts: int,
) -> None:
    """Queue the shares of a split audience, each its own message (with, for a broadcast, the
    scan segment it delivers), ten to a SendMessageBatch call: a split of 500 segments makes
    50 calls, not 500.

    Entries SQS fails on its side are sent again (``BATCH_ENTRY_ATTEMPTS``). Raises
    ``QueueUnavailable`` if a share still is not queued. The caller then fails the whole
    message, and SQS hands it over again: its split is redone, and each share queued twice is
    skipped by its idempotency key (id and segment or users), so no connection gets it twice.
    """
    entries = [
        (sqs_body(body), _requeue_attributes(attempt, round_number, ts, segment))
        for body, segment in shares
    ]
    for batch in sqs_batches(entries, lambda entry: len(entry[0]) + _attributes_size(entry[1])):
        pending = batch
        for attempt_number in range(1, BATCH_ENTRY_ATTEMPTS + 1):
            failed = _send_batch(queue_url, pending, region=region)
            if not failed:
                break
            codes = ", ".join(sorted({failure.code for failure in failed}))
            if any(failure.sender_fault for failure in failed) or (
                attempt_number == BATCH_ENTRY_ATTEMPTS
            ):
                raise QueueUnavailable(
                    f"{len(failed)} of {len(batch)} shares were not queued ({codes})"
                )
            logger.warning("shares not queued, sending them again", count=len(failed), codes=codes)
            pending = [pending[failure.position] for failure in failed]
            time.sleep(random.uniform(0, _BATCH_RETRY_BASE_SECONDS * 2**attempt_number))  # noqa: S311


def _requeue_attributes(
    attempt: int, round_number: int, ts: int, segment: tuple[int, int] | None
) -> dict[str, str]:
    attributes = {ATTEMPT: str(attempt), ROUND: str(round_number), TIMESTAMP: str(ts)}
    if segment is not None:
        attributes[SEGMENT] = f"{segment[0]}/{segment[1]}"
    return attributes


def dead_letter(queue_url: str, body: str, letter: DeadLetter, *, region: str) -> None:
    """Park an undeliverable message on the dead-letter queue with why it failed.

    The reason travels in message attributes, which count toward SQS's 1 MiB with the body:
    when the body leaves no room for all of them, the least needed are left out (and logged).
    """
    attributes = {ERROR_CODE: letter.code, ERROR_REASON: letter.reason[:_MAX_REASON_CHARS]}
    if letter.field:
        attributes[ERROR_FIELD] = letter.field
    if letter.failures:
        listed = [
            {"connectionId": cid, "reason": reason}
            for cid, reason in letter.failures[:MAX_LISTED_FAILURES]
        ]
        attributes[FAILURES] = json.dumps(listed, separators=(",", ":"))
    room = MAX_SQS_MESSAGE_BYTES - len(body.encode("utf-8"))
    for name in (FAILURES, ERROR_FIELD, ERROR_REASON, ERROR_CODE):
        if _attributes_size(attributes) <= room:
            break
        if attributes.pop(name, None) is not None:
            logger.warning("dead letter too large for its reason attribute", attribute=name)
    _send(queue_url, body, region=region, attributes=attributes, delay_seconds=0)


def _attributes_size(attributes: Mapping[str, str]) -> int:
    # SQS counts each attribute's name, data type and value.
    return sum(len(k.encode()) + len(b"String") + len(v.encode()) for k, v in attributes.items())


def _send(
    queue_url: str, body: str, *, region: str, attributes: Mapping[str, str], delay_seconds: int
) -> None:
    try:
        _client(region).send_message(
            QueueUrl=queue_url,
            MessageBody=body,
            DelaySeconds=delay_seconds,
            MessageAttributes=_message_attributes(attributes),
        )
    except (ClientError, BotoCoreError) as exc:
        raise QueueUnavailable("could not send to the queue") from exc


class _BatchFailure(NamedTuple):
    position: int  # in the batch sent
    code: str
    sender_fault: bool  # the entry itself is wrong: sending it again cannot help


def _send_batch(
    queue_url: str, batch: Sequence[tuple[str, Mapping[str, str]]], *, region: str
) -> list[_BatchFailure]:
    """Send up to ten messages in one call; which of them SQS did not take, and why."""
    try:
        answer = _client(region).send_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {
                    "Id": str(index),
                    "MessageBody": body,
                    "DelaySeconds": 0,
                    "MessageAttributes": _message_attributes(attributes),
                }
                for index, (body, attributes) in enumerate(batch)
            ],
        )
    except (ClientError, BotoCoreError) as exc:
        raise QueueUnavailable("could not send to the queue") from exc
    return [
        _BatchFailure(
            position=int(failed["Id"]),
            code=str(failed.get("Code", "unknown")),
            sender_fault=bool(failed.get("SenderFault", True)),
        )
        for failed in answer.get("Failed", [])
    ]


def _message_attributes(attributes: Mapping[str, str]) -> dict[str, dict[str, str]]:
    return {
        name: {"DataType": "String", "StringValue": value} for name, value in attributes.items()
    }


def _segment(attribute: SQSMessageAttribute | None) -> tuple[int, int] | None:
    raw = attribute.get("stringValue") if attribute is not None else None
    try:
        segment, total = (int(part) for part in str(raw).split("/"))
    except ValueError:
        return None
    return (segment, total) if 0 <= segment < total <= MAX_SEGMENTS else None


def _int_value(attribute: SQSMessageAttribute | None) -> int | None:
    raw = attribute.get("stringValue") if attribute is not None else None
    try:
        return int(raw) if raw is not None else None
    except (TypeError, ValueError):
        return None
