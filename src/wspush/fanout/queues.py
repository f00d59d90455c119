"""The messages queue and its dead-letter queue: the only module that calls SQS.

Four writes happen here: a partly delivered message is re-queued for just the
recipients that still need it, a big audience's shares are queued for other invocations,
a message the sender could not start (out of time, or another invocation holds it) is put
back as a fresh copy, and a message that cannot be delivered goes to the dead-letter queue
with its reason in message attributes. Whatever is sent in numbers goes ten to a
SendMessageBatch call, so settling a big fan-out stays a handful of calls.
"""

from __future__ import annotations

import itertools
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

from wspush.channels.names import parse_channel
from wspush.contract.messages import MAX_SQS_MESSAGE_BYTES, NOT_KEPT, sqs_batches, sqs_body
from wspush.errors import ChannelRefused, QueueUnavailable
from wspush.observability import logger

if TYPE_CHECKING:  # importing one data class loads all 30 modules (see events.py)
    from aws_lambda_powertools.utilities.data_classes.sqs_event import (
        SQSMessageAttribute,
        SQSRecord,
    )

ATTEMPT = "wspush-attempt"
ROUND = "wspush-round"
SEGMENT = "wspush-segment"  # "s/S": this copy of a broadcast delivers scan segment s of S
AFTER = "wspush-after"  # where in its segment this copy's scan starts (a connection id)
TIMESTAMP = "wspush-ts"
CHANNEL = "wspush-channel"  # the channel of a channel's message re-queued by connection id
SEQ = "wspush-seq"  # a kept message's place in its stream, once it has one (or NOT_KEPT)
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
_MAX_AFTER_CHARS = 128  # a connection id
_MAX_SEQ = 10**20  # a seq has at most 20 digits (store.history)
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
    after: str | None = None
    channel: str | None = None
    seq: int | None = None

    @classmethod
    def of(cls, record: SQSRecord) -> QueuedAttributes:
        """Read them from an SQS event record's ``messageAttributes``."""
        attributes = record.message_attributes
        ts = _plausible_ts(_int_value(attributes[TIMESTAMP]))
        if ts is None:
            # A service's message: when SQS took it, the same however often SQS hands it over,
            # so its frame (and the copy kept for recovery) is the same each time.
            sent = (record.get("attributes") or {}).get("SentTimestamp")
            ts = _plausible_ts(_int_or_none(sent))
        return cls(
            attempt=min(max(_int_value(attributes[ATTEMPT]) or 0, 0), _MAX_COUNT),
            round=min(max(_int_value(attributes[ROUND]) or 0, 0), _MAX_COUNT),
            ts=ts,
            segment=_segment(attributes[SEGMENT]),
            after=_after(attributes[AFTER]),
            channel=_channel(attributes[CHANNEL]),
            seq=_seq(attributes[SEQ]),
        )


class Share(NamedTuple):
    """One part of a split audience, for another invocation: its envelope and, for a
    broadcast, its scan segment and where in it to start."""

    envelope: Mapping[str, Any]
    segment: tuple[int, int] | None = None
    after: str | None = None
    seq: int | None = None  # a kept message's place in its stream


class Outgoing(NamedTuple):
    """One message to send: its body, wspush's attributes, its delay."""

    body: str
    attributes: Mapping[str, str]
    delay_seconds: int = 0


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


def requeued(
    body: Mapping[str, Any],
    *,
    attempt: int,
    round_number: int,
    ts: int,
    delay_seconds: int = 0,
    segment: tuple[int, int] | None = None,
    after: str | None = None,
    channel: str | None = None,
    seq: int | None = None,
) -> Outgoing:
    """A message put back on the queue, remembering its attempt count, round, timestamp and,
    for a broadcast's or a channel's share, its read position (and for a channel's message
    sent again by connection id, its channel; for a kept message, its place in its stream)."""
    attributes = {ATTEMPT: str(attempt), ROUND: str(round_number), TIMESTAMP: str(ts)}
    if channel is not None:
        attributes[CHANNEL] = channel
    if seq is not None:
        attributes[SEQ] = str(seq)
    if segment is not None:
        attributes[SEGMENT] = f"{segment[0]}/{segment[1]}"
    if after is not None:
        attributes[AFTER] = after
    return Outgoing(sqs_body(body), attributes, min(delay_seconds, MAX_DELAY_SECONDS))


def queue_shares(
    queue_url: str,
    shares: Sequence[Share],
    *,
    region: str,
    attempt: int,
    round_number: int,
    ts: int,
) -> None:
    """Queue the shares of a split audience, each its own message (with, for a broadcast, the
    scan segment it delivers and where it starts), ten to a SendMessageBatch call: a split of
    500 segments makes 50 calls, not 500.

    Raises ``QueueUnavailable`` if a share is not queued. The caller then fails the whole
    message, and SQS hands it over again: its split is redone, and each share queued twice is
    skipped by its idempotency key (id and segment or users), so no connection gets it twice.
    """
    send_all(
        queue_url,
        [
            requeued(
                share.envelope,
                attempt=attempt,
                round_number=round_number,
                ts=ts,
                segment=share.segment,
                after=share.after,
                seq=share.seq,
            )
            for share in shares
        ],
        region=region,
    )


def put_back(
    queue_url: str,
    body: str,
    attributes: Mapping[str, str],
    *,
    message_id: str,
    region: str,
    delay_seconds: int,
) -> None:
    """Queue a fresh copy of a message the sender did not start, so SQS acknowledges the
    original and its receive count (which ends in the dead-letter queue) never grows for a
    message nobody tried. The copy keeps wspush's attributes and the message's id: a message
    without one gets its first SQS message id, so clients and the idempotency record see the
    same message."""
    send_all(
        queue_url,
        [Outgoing(_with_id(body, message_id), attributes, min(delay_seconds, MAX_DELAY_SECONDS))],
        region=region,
    )


def wspush_attributes(record: SQSRecord) -> dict[str, str]:
    """The attributes wspush itself set on a queued record, as strings, and its timestamp
    (a copy put back keeps the ``ts`` of the message it copies)."""
    attributes = {
        name: str(value.get("stringValue"))
        for name, value in record.message_attributes.items()
        if name.startswith("wspush-") and value.get("stringValue") is not None
    }
    ts = QueuedAttributes.of(record).ts
    if ts is not None:
        attributes[TIMESTAMP] = str(ts)
    return attributes


def _plausible_ts(ts: int | None) -> int | None:
    """Only a plausible epoch-milliseconds value reaches clients; junk means "now"."""
    return ts if ts is not None and _EARLIEST_TS <= ts <= _LATEST_TS else None


def _int_or_none(raw: Any) -> int | None:
    """An integer from text; None for no text (``int(None)`` is a TypeError) or junk."""
    try:
        return int(raw)
    except (TypeError, ValueError):
        return None


def _with_id(body: str, message_id: str) -> str:
    try:
        envelope = json.loads(body)
    except ValueError:
        return body  # not JSON: it is dead-lettered as it is when it is handled
    if not isinstance(envelope, dict) or "id" in envelope:
        return body
    return sqs_body({"id": message_id, **envelope})


def dead_lettered(body: str, letter: DeadLetter) -> Outgoing:
    """An undeliverable message for the dead-letter queue, with why it failed.

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
    return Outgoing(body, attributes)


def dead_letter(queue_url: str, body: str, letter: DeadLetter, *, region: str) -> None:
    """Park one undeliverable message on the dead-letter queue with why it failed."""
    send_all(queue_url, [dead_lettered(body, letter)], region=region)


def send_all(queue_url: str, messages: Sequence[Outgoing], *, region: str) -> None:
    """Send every message, ten (and at most 1 MiB) to a SendMessageBatch call.

    Entries SQS fails on its side (throttled, internal error) are sent again
    (``BATCH_ENTRY_ATTEMPTS``, after a short jittered pause; botocore's own retries cover only
    whole calls). Raises ``QueueUnavailable`` if a message still is not sent, or at once when
    SQS says an entry itself is wrong.
    """
    for batch in sqs_batches(
        messages, lambda m: len(m.body.encode()) + _attributes_size(m.attributes)
    ):
        pending = batch
        for attempt_number in itertools.count(1):  # the last attempt raises
            failed = _send_batch(queue_url, pending, region=region)
            if not failed:
                break
            codes = ", ".join(sorted({failure.code for failure in failed}))
            if any(failure.sender_fault for failure in failed) or (
                attempt_number == BATCH_ENTRY_ATTEMPTS
            ):
                raise QueueUnavailable(
                    f"{len(failed)} of {len(batch)} messages were not queued ({codes})"
                )
            logger.warning(
                "messages not queued, sending them again", count=len(failed), codes=codes
            )
            pending = [pending[failure.position] for failure in failed]
            time.sleep(random.uniform(0, _BATCH_RETRY_BASE_SECONDS * 2**attempt_number))  # noqa: S311


def _attributes_size(attributes: Mapping[str, str]) -> int:
    # SQS counts each attribute's name, data type and value.
    return sum(len(k.encode()) + len(b"String") + len(v.encode()) for k, v in attributes.items())


class _BatchFailure(NamedTuple):
    position: int  # in the batch sent
    code: str
    sender_fault: bool  # the entry itself is wrong: sending it again cannot help


def _send_batch(queue_url: str, batch: Sequence[Outgoing], *, region: str) -> list[_BatchFailure]:
    """Send up to ten messages in one call; which of them SQS did not take, and why."""
    try:
        answer = _client(region).send_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {
                    "Id": str(index),
                    "MessageBody": message.body,
                    "DelaySeconds": message.delay_seconds,
                    "MessageAttributes": _message_attributes(message.attributes),
                }
                for index, message in enumerate(batch)
            ],
        )
    except (ClientError, BotoCoreError) as exc:
        raise QueueUnavailable("could not send to the queue") from exc
    return [
        _BatchFailure(
            position=int(failed["Id"]),
            code=str(failed["Code"]),  # Code and SenderFault: always there (required)
            sender_fault=bool(failed["SenderFault"]),
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


def _after(attribute: SQSMessageAttribute | None) -> str | None:
    raw = attribute.get("stringValue") if attribute is not None else None
    return raw if isinstance(raw, str) and 0 < len(raw) <= _MAX_AFTER_CHARS else None


def _channel(attribute: SQSMessageAttribute | None) -> str | None:
    raw = attribute.get("stringValue") if attribute is not None else None
    try:
        return str(parse_channel(raw))
    except ChannelRefused:
        return None


def _seq(attribute: SQSMessageAttribute | None) -> int | None:
    value = _int_value(attribute)
    return value if value is not None and NOT_KEPT <= value < _MAX_SEQ else None


def _int_value(attribute: SQSMessageAttribute | None) -> int | None:
    return _int_or_none(attribute.get("stringValue") if attribute is not None else None)
