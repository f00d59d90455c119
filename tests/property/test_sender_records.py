"""SQS records through the sender Lambda under moto, posting to the fake Management API.

A batch mixes bodies that are not JSON, JSON that is not an object, broken envelopes and
valid ones, with junk in wspush's own message attributes. The sender never raises; each
invalid record is dead-lettered with its reason and not reported failed; each recipient
of each valid record receives exactly one frame.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handlers import sender
from tests.conftest import DLQ_URL, QUEUE_URL, REGION, FakeLambdaContext
from tests.fakes.management_api import FakeManagementApi, Reply
from tests.property.strategies import (
    ERROR_CODES,
    UNICODE_ODD_CHARACTERS,
    broken_envelopes,
    expected_recipients,
    json_values,
    odd_text,
    padded_data,
    sqs_legal,
    valid_envelopes,
)
from tests.support import PAYLOAD, attributes_of, drain, frames, sqs_event, sqs_record
from wspush.contract.messages import MAX_CLIENT_FRAME_BYTES, MAX_SQS_MESSAGE_BYTES, SEQ_ROOM
from wspush.fanout import queues

pytestmark = pytest.mark.usefixtures("online")

NOW = 1_795_867_200_000

# Junk a producer may put in wspush's own attributes; none of it may hurt a valid message.
# (Huge counts, either sign, have tests of their own below.)
JUNK_ATTEMPTS = ("abc", " ", "-5", "-0", "0x10", "1e3", "99999", "\u0663", "\u00b2")
JUNK_ROUNDS = ("abc", "-1", "9" * 400)
JUNK_TIMESTAMPS = ("abc", "-1", "1e3", "0", "9" * 40, "-" + "9" * 40, "\u0661\u0662", str(NOW))


@dataclass(frozen=True)
class Entry:
    """One record of a batch, and what must become of it."""

    body: str
    attributes: dict[str, str]
    envelope: dict[str, Any] | None = None  # set when the message is valid
    field: str | None = None  # for a broken envelope: the field its dead letter must name


def sqs_body(value: Any) -> str:
    """How a producer's SDK would put ``value`` on the queue: raw UTF-8 where SQS accepts the
    characters, \\u escapes where it does not (lone surrogates, NUL, U+FFFE...)."""
    text = json.dumps(value, ensure_ascii=False)
    return text if sqs_legal(text) else json.dumps(value)


def _is_not_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return True
    return False


def _fits_sqs(entry: Entry) -> bool:
    return len(entry.body.encode("utf-8")) <= MAX_SQS_MESSAGE_BYTES


@pytest.fixture
def no_requeue_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    """Re-queued messages become visible at once, so a test can read them."""
    monkeypatch.setattr(queues, "MAX_DELAY_SECONDS", 0)


def waiting(queue_url: str) -> int:
    """Messages on a queue, visible or still delayed."""
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed"]
    answer = boto3.client("sqs", region_name=REGION).get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=names
    )
    return sum(int(answer["Attributes"][name]) for name in names)


def junk_attributes() -> Any:
    return st.fixed_dictionaries(
        {},
        optional={
            queues.ATTEMPT: st.sampled_from(JUNK_ATTEMPTS),
            queues.TIMESTAMP: st.sampled_from(JUNK_TIMESTAMPS),
            "wspush-round": st.sampled_from(JUNK_ROUNDS),
        },
    )


def entries() -> Any:
    sqs_text = odd_text(max_size=60).map(lambda text: "".join(filter(sqs_legal, text)))
    not_json = sqs_text.filter(_is_not_json).map(lambda body: (body, None))
    not_an_object = (
        json_values(max_leaves=4)
        .filter(lambda value: not isinstance(value, dict))
        .map(lambda value: (sqs_body(value), None))
    )
    broken = broken_envelopes().map(lambda pair: (sqs_body(pair[0]), pair[1]))
    invalid = st.builds(
        lambda body_field, attributes: Entry(body_field[0], attributes, field=body_field[1]),
        st.one_of(not_json, not_an_object, broken),
        junk_attributes(),
    )
    valid = st.builds(
        lambda envelope, attributes: Entry(sqs_body(envelope), attributes, envelope=envelope),
        valid_envelopes(with_id=False),
        junk_attributes(),
    )
    return st.one_of(valid, invalid).filter(_fits_sqs)


def clean_slate(api: FakeManagementApi) -> None:
    """Each example starts with nothing posted and empty queues (moto lives for the test)."""
    api.reset()
    drain(QUEUE_URL)
    drain(DLQ_URL)


def run(records: list[dict[str, Any]], context: FakeLambdaContext) -> list[str]:
    response = sender.handler(sqs_event(*records), context)
    assert set(response) == {"batchItemFailures"}
    return [item["itemIdentifier"] for item in response["batchItemFailures"]]


def sqs_size(letter: dict[str, Any]) -> int:
    """What SQS counts for a message: its body and each attribute's name, type and value."""
    return len(letter["body"].encode("utf-8")) + sum(
        len(name.encode()) + len(b"String") + len(value.encode("utf-8"))
        for name, value in attributes_of(letter).items()
    )


def assert_sqs_would_accept(letter: dict[str, Any]) -> None:
    assert sqs_legal(letter["body"])
    assert all(sqs_legal(value) for value in attributes_of(letter).values())
    assert sqs_size(letter) <= MAX_SQS_MESSAGE_BYTES


@settings(max_examples=25, deadline=None)
@given(batch=st.lists(entries(), min_size=1, max_size=8))
def test_a_hostile_batch_delivers_every_valid_message_once_and_dead_letters_the_rest(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext, batch: list[Entry]
) -> None:
    # Given a batch mixing junk, broken and valid messages, with junk attributes
    clean_slate(management_api)
    records = [sqs_record(entry.body, entry.attributes) for entry in batch]
    # When the sender handles it
    failed = run(records, lambda_context)
    # Then no record is left for SQS to retry, and nothing is re-queued (every post succeeded)
    assert failed == []
    assert drain(QUEUE_URL) == []
    # And each invalid record is dead-lettered as it was sent, with its reason
    letters = drain(DLQ_URL)
    invalid = [entry for entry in batch if entry.envelope is None]
    assert sorted(letter["body"] for letter in letters) == sorted(e.body for e in invalid)
    fields = {entry.body: entry.field for entry in invalid}
    for letter in letters:
        attributes = attributes_of(letter)
        assert attributes[queues.ERROR_CODE] in ERROR_CODES
        assert attributes[queues.ERROR_REASON]
        if fields[letter["body"]] is not None:
            assert attributes[queues.ERROR_FIELD]
        assert_sqs_would_accept(letter)
    # And each recipient of each valid message received exactly one frame of it
    expected: dict[str, Counter[str]] = {}
    for entry, record in zip(batch, records, strict=True):
        if entry.envelope is not None:
            for connection_id in expected_recipients(entry.envelope):
                expected.setdefault(connection_id, Counter())[record["messageId"]] += 1
    received = {
        connection_id: Counter(frame["id"] for frame in frames(management_api, connection_id))
        for connection_id in management_api.received
    }
    assert received == expected
    # And every frame is the contract's object with the payload as sent
    payloads = {r["messageId"]: e.envelope for e, r in zip(batch, records, strict=True)}
    for connection_id in received:
        for frame in frames(management_api, connection_id):
            envelope = payloads[frame["id"]]
            assert envelope is not None
            assert (frame["type"], frame["data"]) == (
                envelope["payload"]["type"],
                envelope["payload"]["data"],
            )
            assert isinstance(frame["ts"], int)


# A message kept in a stream (to a user, user history on) carries its seq in its frame too:
# it must leave room for the longest one; a message kept nowhere may fill the frame.
LIMITS = {
    "userId": MAX_CLIENT_FRAME_BYTES - SEQ_ROOM,
    "connectionId": MAX_CLIENT_FRAME_BYTES,
}


@pytest.mark.parametrize("target", sorted(LIMITS))
@settings(max_examples=12, deadline=None)
@given(
    filler=st.sampled_from(("x", "\u00e9", "\u20ac", "\U0001f600", *UNICODE_ODD_CHARACTERS)),
    delta=st.sampled_from((-1, 0, 1)),
)
def test_the_frame_limit_holds_through_the_sender_to_the_byte(
    management_api: FakeManagementApi,
    lambda_context: FakeLambdaContext,
    target: str,
    filler: str,
    delta: int,
) -> None:
    # Given a message to bob (or his pc's connection) whose frame is its limit + delta bytes
    # (ts fixed by attribute)
    clean_slate(management_api)
    size = LIMITS[target] + delta
    message_id = f"m-{uuid.uuid4().hex}"  # (a repeated id + target may count as redelivery)
    data = padded_data(filler, size, payload_type="t", message_id=message_id, ts=NOW)
    to = "bob" if target == "userId" else "b-pc"
    body = sqs_body({target: to, "id": message_id, "payload": {"type": "t", "data": data}})
    record = sqs_record(body, {queues.TIMESTAMP: str(NOW)})
    # When the sender handles it
    assert run([record], lambda_context) == []
    # Then up to the limit bob got those exact bytes (and a kept message its seq, never past
    # the gateway's 131,072, which refuses larger ones with 413)
    if delta <= 0:
        [frame] = management_api.received["b-pc"]
        seq = json.loads(frame).get("seq")
        assert (seq is not None) == (target == "userId")
        assert len(frame) == size + (len(f',"seq":{seq}') if seq is not None else 0)
        assert len(frame) <= MAX_CLIENT_FRAME_BYTES
        assert drain(DLQ_URL) == []
    # And one byte more is never posted: it is dead-lettered as too large, naming payload
    else:
        assert not management_api.calls
        [letter] = drain(DLQ_URL)
        assert attributes_of(letter)[queues.ERROR_CODE] == "payload_too_large"
        assert attributes_of(letter)[queues.ERROR_FIELD] == "payload"


@pytest.mark.parametrize("unit", ["x", "\u20ac", "\U0001f600"])
def test_a_one_mebibyte_record_is_dead_lettered_and_nothing_is_posted(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext, unit: str
) -> None:
    # Given a 1 MiB message (SQS's own limit) to alice: far over the 128 KB frame limit
    clean_slate(management_api)
    envelope = {"userId": "alice", "payload": {"type": "t", "data": ""}}
    room = MAX_SQS_MESSAGE_BYTES - len(json.dumps(envelope).encode())
    envelope["payload"]["data"] = unit * (room // len(unit.encode("utf-8")))
    body = json.dumps(envelope, ensure_ascii=False)
    assert MAX_SQS_MESSAGE_BYTES - 4 < len(body.encode("utf-8")) <= MAX_SQS_MESSAGE_BYTES
    # When the sender handles it
    assert run([sqs_record(body)], lambda_context) == []
    # Then nothing was posted and the dead letter holds the message, whole; its reason rides in
    # attributes only as far as SQS's 1 MiB (body and attributes together) leaves room, and
    # the log has it in any case
    assert not management_api.calls
    [letter] = drain(DLQ_URL)
    assert letter["body"] == body
    attributes = attributes_of(letter)
    size = len(body.encode()) + sum(
        len(k) + len("String") + len(v.encode()) for k, v in attributes.items()
    )
    assert size <= MAX_SQS_MESSAGE_BYTES
    assert attributes.get(queues.ERROR_CODE, "payload_too_large") == "payload_too_large"


def test_the_dead_letter_of_a_one_mebibyte_record_fits_in_an_sqs_message(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    # Given an invalid message of exactly 1 MiB (moto does not enforce the limit; SQS does)
    clean_slate(management_api)
    body = json.dumps({"userId": "alice", "payload": {"type": "t", "data": ""}})
    body = body.replace('""', '"' + "x" * (MAX_SQS_MESSAGE_BYTES - len(body)) + '"')
    assert len(body) == MAX_SQS_MESSAGE_BYTES
    # When the sender dead-letters it
    assert run([sqs_record(body)], lambda_context) == []
    [letter] = drain(DLQ_URL)
    # Then what it sent to the dead-letter queue is a message SQS accepts
    assert_sqs_would_accept(letter)


def settle_with_a_failing_recipient(
    api: FakeManagementApi, context: FakeLambdaContext, attempt: str
) -> float:
    """Send alice a message carrying ``attempt`` while her mobile answers 500; the seconds
    the sender took. Asserts the record was settled: pc got it once, mobile handed on."""
    clean_slate(api)
    api.script("a-mobile", *[Reply.aws(500)] * 3)
    record = sqs_record({"userId": "alice", "payload": PAYLOAD}, {queues.ATTEMPT: attempt})
    started = time.monotonic()
    failed = run([record], context)
    took = time.monotonic() - started
    # The record is acknowledged (SQS would otherwise deliver it to pc again)
    assert failed == []
    assert len(api.received["a-pc"]) == 1
    # Mobile is re-queued (perhaps delayed: the real 900 s cap applies here) or dead-lettered
    assert waiting(QUEUE_URL) + waiting(DLQ_URL) == 1
    return took


@pytest.mark.parametrize("attempt", ["-5", "-" + "9" * 400], ids=["negative", "-huge"])
def test_a_negative_attempt_count_still_hands_the_failed_recipient_on(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext, attempt: str
) -> None:
    # Given a message with a negative attempt count, and one recipient failing with 500
    # When the sender handles it, then the record is settled as if no attempt was made yet
    settle_with_a_failing_recipient(management_api, lambda_context, attempt)


def test_a_huge_attempt_count_is_settled_promptly(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    # Given a message with an attempt count of 300 million, and one recipient failing with 500
    # When the sender handles it, then the record is settled in well under a second
    took = settle_with_a_failing_recipient(management_api, lambda_context, str(3 * 10**8))
    assert took < 0.5


@pytest.mark.usefixtures("no_requeue_delay")
@pytest.mark.parametrize("status", [500, 403], ids=["requeued", "dead-lettered"])
def test_what_the_sender_writes_to_sqs_is_what_sqs_accepts(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext, status: int
) -> None:
    # Given a valid message whose data holds characters SQS refuses raw, and bob failing
    clean_slate(management_api)
    management_api.script("b-pc", *[Reply.aws(status)] * 3)
    envelope = {"userId": "bob", "payload": {"type": "t", "data": "nul \x00, not a char \ufffe"}}
    # When the sender hands bob's delivery on (re-queue on 500, dead letter on 403)
    assert run([sqs_record(json.dumps(envelope))], lambda_context) == []
    [letter] = drain(QUEUE_URL) + drain(DLQ_URL)
    # Then that message is one SQS would accept
    assert_sqs_would_accept(letter)


@pytest.mark.parametrize("ts", ["-5", "9" * 40])
def test_a_junk_timestamp_never_reaches_a_client(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext, ts: str
) -> None:
    # Given a message to bob carrying a junk wspush-ts attribute
    clean_slate(management_api)
    record = sqs_record({"userId": "bob", "payload": PAYLOAD}, {queues.TIMESTAMP: ts})
    # When it is delivered
    assert run([record], lambda_context) == []
    # Then the frame's ts is milliseconds since the epoch that JavaScript can hold exactly
    [frame] = frames(management_api, "b-pc")
    assert 0 <= frame["ts"] < 2**53
