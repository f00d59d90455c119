"""Queueing a split's shares: SendMessageBatch answers as SQS gives them (botocore's Stubber),
partial failures included."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from botocore.stub import Stubber

from tests.conftest import logged
from wspush.contract.messages import MAX_SQS_MESSAGE_BYTES
from wspush.errors import QueueUnavailable
from wspush.fanout import queues

REGION = "us-east-1"
QUEUE_URL = "https://sqs.us-east-1.amazonaws.com/123456789012/wspush-test-messages"
TS = 1_795_867_200_000
SHARES = [
    queues.Share({"broadcast": True, "id": "m-1", "payload": {"type": "t", "data": {}}}, (s, 3))
    for s in range(3)
]


@pytest.fixture
def sqs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stubber]:
    monkeypatch.setattr(queues, "_BATCH_RETRY_BASE_SECONDS", 0)
    with Stubber(queues._client(REGION)) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


def entry(position: int, segment: int) -> dict[str, Any]:
    """A share as it must reach SQS: its own message, segment attribute, no delay."""
    attributes = {"wspush-attempt": "0", "wspush-round": "0", "wspush-ts": str(TS)}
    attributes["wspush-segment"] = f"{segment}/3"
    return outgoing_entry(
        position, queues.Outgoing(queues.sqs_body(SHARES[segment].envelope), attributes)
    )


def outgoing_entry(position: int, message: queues.Outgoing) -> dict[str, Any]:
    return {
        "Id": str(position),
        "MessageBody": message.body,
        "DelaySeconds": message.delay_seconds,
        "MessageAttributes": {
            name: {"DataType": "String", "StringValue": value}
            for name, value in message.attributes.items()
        },
    }


def sent(*ids: str) -> list[dict[str, str]]:
    return [{"Id": i, "MessageId": f"sqs-{i}", "MD5OfMessageBody": "0" * 32} for i in ids]


def failed(*ids: str, sender_fault: bool = False) -> list[dict[str, Any]]:
    code = "InvalidParameterValue" if sender_fault else "InternalError"
    return [{"Id": i, "SenderFault": sender_fault, "Code": code} for i in ids]


def queue_shares() -> None:
    queues.queue_shares(QUEUE_URL, SHARES, region=REGION, attempt=0, round_number=0, ts=TS)


def test_shares_sqs_failed_on_its_side_are_sent_again_alone(sqs: Stubber) -> None:
    # Given SQS takes shares 0 and 2 and fails share 1 on its side, then takes it
    sqs.add_response(
        "send_message_batch",
        {"Successful": sent("0", "2"), "Failed": failed("1")},
        {"QueueUrl": QUEUE_URL, "Entries": [entry(0, 0), entry(1, 1), entry(2, 2)]},
    )
    sqs.add_response(
        "send_message_batch",
        {"Successful": sent("0"), "Failed": []},
        {"QueueUrl": QUEUE_URL, "Entries": [entry(0, 1)]},
    )
    # When the shares are queued, then only share 1 is sent again, and nothing is raised
    queue_shares()


def test_a_share_sqs_refuses_as_malformed_is_not_sent_again(sqs: Stubber) -> None:
    sqs.add_response(
        "send_message_batch",
        {"Successful": sent("0", "2"), "Failed": failed("1", sender_fault=True)},
    )

    with pytest.raises(QueueUnavailable) as caught:
        queue_shares()

    assert "1 of 3 messages were not queued (InvalidParameterValue)" in str(caught.value)


def test_a_share_still_failing_after_the_last_attempt_fails_the_split(sqs: Stubber) -> None:
    sqs.add_response("send_message_batch", {"Successful": sent("0", "2"), "Failed": failed("1")})
    for _ in range(queues.BATCH_ENTRY_ATTEMPTS - 1):
        sqs.add_response("send_message_batch", {"Successful": [], "Failed": failed("0")})

    with pytest.raises(QueueUnavailable) as caught:
        queue_shares()

    assert "1 of 3 messages were not queued (InternalError)" in str(caught.value)


def test_a_refused_call_fails_the_split(sqs: Stubber) -> None:
    sqs.add_client_error("send_message_batch", "AccessDenied", http_status_code=403)

    with pytest.raises(QueueUnavailable):
        queue_shares()


# --- what wspush writes on a queued message, and reads back --------------------------------


def record(body: str = "{}", **attributes: str | None) -> SQSRecord:
    """An SQS event record with these string attributes (None: an attribute without a value)."""
    return SQSRecord(
        {
            "messageId": "sqs-1",
            "body": body,
            "messageAttributes": {
                name: {"stringValue": value, "dataType": "String"}
                for name, value in attributes.items()
            },
        }
    )


def read(**attributes: str | None) -> queues.QueuedAttributes:
    return queues.QueuedAttributes.of(
        record(**{k.replace("_", "-"): v for k, v in attributes.items()})
    )


def test_a_service_s_message_has_no_wspush_attributes() -> None:
    assert queues.QueuedAttributes.of(record()) == queues.QueuedAttributes(0, 0, None, None, None)


@pytest.mark.parametrize(
    ("sent", "wspush_ts", "ts"),
    [("1795867200000", None, 1795867200000), ("1795867200000", str(TS), TS), ("junk", None, None)],
)
def test_a_message_s_ts_is_when_sqs_took_it_unless_wspush_recorded_one(
    sent: str, wspush_ts: str | None, ts: int | None
) -> None:
    # Given a record as SQS hands it over (again and again: SentTimestamp stays the same)
    attributes = {"wspush-ts": wspush_ts} if wspush_ts else {}
    raw = {**record(**attributes).raw_event, "attributes": {"SentTimestamp": sent}}
    # Then its ts is wspush's own, else when SQS took it, else none (now)
    assert queues.QueuedAttributes.of(SQSRecord(raw)).ts == ts
    # And a copy put back carries it
    if ts is not None:
        assert queues.wspush_attributes(SQSRecord(raw))[queues.TIMESTAMP] == str(ts)


def test_wspush_s_attributes_are_read_back_as_written() -> None:
    written = queues.requeued(
        {"id": "m"},
        attempt=2,
        round_number=5,
        ts=TS,
        segment=(3, 8),
        after="c-9",
        channel="room:42",
        seq=17,
    )
    assert written.attributes == {
        "wspush-attempt": "2",
        "wspush-round": "5",
        "wspush-ts": str(TS),
        "wspush-channel": "room:42",
        "wspush-seq": "17",
        "wspush-segment": "3/8",
        "wspush-after": "c-9",
    }
    assert queues.QueuedAttributes.of(record(**written.attributes)) == queues.QueuedAttributes(
        attempt=2, round=5, ts=TS, segment=(3, 8), after="c-9", channel="room:42", seq=17
    )


@pytest.mark.parametrize(
    ("raw", "channel"), [("room:42", "room:42"), ("room", None), ("", None), (None, None)]
)
def test_a_channel_is_read_only_when_it_is_a_channel_s_name(
    raw: str | None, channel: str | None
) -> None:
    assert read(wspush_channel=raw).channel == channel


@pytest.mark.parametrize(
    ("raw", "seq"),
    [
        ("0", 0),
        ("17", 17),
        ("99999999999999999999", 10**20 - 1),
        ("100000000000000000000", None),
        ("-1", None),
        ("x", None),
    ],
)
def test_a_seq_is_read_only_when_it_is_a_place_in_a_stream(raw: str, seq: int | None) -> None:
    assert read(wspush_seq=raw).seq == seq


@pytest.mark.parametrize(
    ("raw", "count"),
    [("0", 0), ("7", 7), ("-3", 0), ("1000", 1000), ("1001", 1000), ("x", 0), (None, 0)],
)
def test_attempt_and_round_counts_are_kept_within_zero_and_a_thousand(
    raw: str | None, count: int
) -> None:
    read_back = read(wspush_attempt=raw, wspush_round=raw)
    assert (read_back.attempt, read_back.round) == (count, count)


@pytest.mark.parametrize(
    ("raw", "ts"),
    [
        (str(TS), TS),
        ("1000000000000", 1_000_000_000_000),
        ("999999999999", None),
        ("100000000000000", 100_000_000_000_000),
        ("100000000000001", None),
        ("soon", None),
    ],
)
def test_only_a_plausible_timestamp_is_kept(raw: str, ts: int | None) -> None:
    assert read(wspush_ts=raw).ts == ts


@pytest.mark.parametrize(
    ("raw", "segment"),
    [
        ("0/1", (0, 1)),
        ("999/1000", (999, 1000)),
        ("1/1", None),
        ("-1/4", None),
        ("0/1001", None),
        ("1/2/3", None),
        ("a/b", None),
        ("3", None),
    ],
)
def test_a_segment_is_read_only_when_it_is_one_of_its_scan(
    raw: str, segment: tuple[int, int] | None
) -> None:
    assert read(wspush_segment=raw).segment == segment


@pytest.mark.parametrize(
    ("raw", "after"), [("c", "c"), ("c" * 128, "c" * 128), ("c" * 129, None), ("", None)]
)
def test_where_a_scan_starts_is_a_connection_id(raw: str, after: str | None) -> None:
    assert read(wspush_after=raw).after == after


def test_a_requeued_message_carries_its_counts_and_timestamp_and_a_bounded_delay() -> None:
    outgoing = queues.requeued(
        {"id": "m", "x": "é"}, attempt=1, round_number=2, ts=TS, delay_seconds=5_000
    )
    assert outgoing == queues.Outgoing(
        '{"id":"m","x":"\\u00e9"}',
        {"wspush-attempt": "1", "wspush-round": "2", "wspush-ts": str(TS)},
        900,
    )
    assert queues.requeued({}, attempt=0, round_number=0, ts=TS).delay_seconds == 0


def test_only_wspush_s_own_attributes_are_carried_over() -> None:
    given = record(**{"wspush-attempt": "1", "wspush-after": None, "other": "x"})
    assert queues.wspush_attributes(given) == {"wspush-attempt": "1"}


@pytest.mark.parametrize(
    ("body", "copied"),
    [
        ('{"userId":"u"}', '{"id":"sqs-1","userId":"u"}'),
        ('{"id":"m","userId":"u"}', '{"id":"m","userId":"u"}'),
        ("[1]", "[1]"),
        ("not json", "not json"),
    ],
)
def test_a_message_put_back_keeps_its_id_or_gets_its_first_sqs_id(body: str, copied: str) -> None:
    assert queues._with_id(body, "sqs-1") == copied


def test_a_dead_letter_says_why_in_its_attributes() -> None:
    letter = queues.DeadLetter(
        "delivery_failed", "r" * 1_500, "payload", failures=(("c-1", "413"), ("c-2", "403"))
    )
    assert queues.dead_lettered("{}", letter) == queues.Outgoing(
        "{}",
        {
            "wspush-error-code": "delivery_failed",
            "wspush-error-reason": "r" * 1_000,
            "wspush-error-field": "payload",
            "wspush-failures": '[{"connectionId":"c-1","reason":"413"},'
            '{"connectionId":"c-2","reason":"403"}]',
        },
    )
    bare = queues.dead_lettered("{}", queues.DeadLetter("invalid_json", "not JSON"))
    assert bare.attributes == {
        "wspush-error-code": "invalid_json",
        "wspush-error-reason": "not JSON",
    }


def test_a_dead_letter_lists_at_most_a_hundred_failures() -> None:
    failures = tuple((f"c-{i}", "500") for i in range(150))
    letter = queues.dead_lettered(
        "{}", queues.DeadLetter("delivery_failed", "r", failures=failures)
    )
    listed = json.loads(letter.attributes["wspush-failures"])
    assert len(listed) == 100
    assert listed[-1] == {"connectionId": "c-99", "reason": "500"}


def test_a_dead_letter_too_large_for_its_reasons_drops_the_least_needed_first(
    log_output: io.StringIO,
) -> None:
    # Given a letter whose attributes all take room
    letter = queues.DeadLetter("code", "reason", "field", failures=(("c-1", "500"),))
    full = queues.dead_lettered("{}", letter).attributes
    sizes = {name: len(name) + len("String") + len(value) for name, value in full.items()}
    total = sum(sizes.values())

    def kept(room: int) -> list[str]:
        body = "x" * (MAX_SQS_MESSAGE_BYTES - room)
        return sorted(queues.dead_lettered(body, letter).attributes)

    # Then each byte less of room drops the next attribute: failures, field, reason, code
    assert kept(total) == sorted(full)
    without_failures = total - sizes[queues.FAILURES]
    assert kept(total - 1) == sorted(set(full) - {queues.FAILURES})
    assert kept(without_failures - 1) == [queues.ERROR_CODE, queues.ERROR_REASON]
    assert kept(sizes[queues.ERROR_CODE]) == [queues.ERROR_CODE]
    assert kept(sizes[queues.ERROR_CODE] - 1) == []
    assert logged(log_output)[0] == {
        "level": "WARNING",
        "message": "dead letter too large for its reason attribute",
        "attribute": queues.FAILURES,
    }


def test_attributes_are_counted_as_sqs_counts_them() -> None:
    assert queues._attributes_size({"ab": "é"}) == 2 + 6 + 2


def test_entries_failed_on_sqs_s_side_are_logged_before_being_sent_again(
    sqs: Stubber, log_output: io.StringIO
) -> None:
    sqs.add_response("send_message_batch", {"Successful": sent("0", "2"), "Failed": failed("1")})
    sqs.add_response("send_message_batch", {"Successful": sent("0"), "Failed": []})
    queue_shares()
    assert logged(log_output) == [
        {
            "level": "WARNING",
            "message": "messages not queued, sending them again",
            "count": 1,
            "codes": "InternalError",
        }
    ]


def test_a_refused_call_says_the_queue_could_not_be_used(sqs: Stubber) -> None:
    sqs.add_client_error("send_message_batch", "AccessDenied", http_status_code=403)
    with pytest.raises(QueueUnavailable, match=r"^could not send to the queue$"):
        queue_shares()


def test_sqs_calls_give_up_quickly_and_retry_in_standard_mode() -> None:
    config = queues._client(REGION).meta.config
    assert (config.connect_timeout, config.read_timeout) == (2, 5)
    assert config.retries["mode"] == "standard"
    assert queues._client(REGION).meta.region_name == REGION


def test_a_share_carries_where_its_scan_starts_and_its_place_in_its_stream(sqs: Stubber) -> None:
    # Given a channel's share that starts after connection c-9, of a message kept at seq 4
    envelope = {"channel": "room:42", "id": "m-1", "payload": {"type": "t", "data": {}}}
    share = queues.Share(envelope, after="c-9", seq=4)
    attributes = {
        "wspush-attempt": "1",
        "wspush-round": "2",
        "wspush-ts": str(TS),
        "wspush-seq": "4",
        "wspush-after": "c-9",
    }
    sqs.add_response(
        "send_message_batch",
        {"Successful": sent("0"), "Failed": []},
        {
            "QueueUrl": QUEUE_URL,
            "Entries": [outgoing_entry(0, queues.Outgoing(queues.sqs_body(envelope), attributes))],
        },
    )
    # When it is queued, then SQS gets both
    queues.queue_shares(QUEUE_URL, [share], region=REGION, attempt=1, round_number=2, ts=TS)


@pytest.mark.parametrize(("delay", "sent_delay"), [(0, 0), (30, 30), (900, 900), (901, 900)])
def test_a_message_put_back_is_a_copy_with_its_id_attributes_and_a_bounded_delay(
    sqs: Stubber, delay: int, sent_delay: int
) -> None:
    # Given a message without an id of its own, and wspush's attributes on it
    attributes = {"wspush-attempt": "1", "wspush-ts": str(TS)}
    sqs.add_response(
        "send_message_batch",
        {"Successful": sent("0"), "Failed": []},
        {
            "QueueUrl": QUEUE_URL,
            "Entries": [
                outgoing_entry(
                    0, queues.Outgoing('{"id":"sqs-1","userId":"u"}', attributes, sent_delay)
                )
            ],
        },
    )
    # When it is put back, then its copy has its first SQS id, its attributes and the delay
    # SQS allows
    queues.put_back(
        QUEUE_URL,
        '{"userId":"u"}',
        attributes,
        message_id="sqs-1",
        region=REGION,
        delay_seconds=delay,
    )


def test_eleven_messages_take_two_calls(sqs: Stubber) -> None:
    # Given eleven messages
    messages = [queues.Outgoing(f'{{"n":{n}}}', {}) for n in range(11)]
    # Then the first ten go in one call and the eleventh in a second one
    sqs.add_response(
        "send_message_batch",
        {"Successful": sent(*map(str, range(10))), "Failed": []},
        {"QueueUrl": QUEUE_URL, "Entries": [outgoing_entry(n, messages[n]) for n in range(10)]},
    )
    sqs.add_response(
        "send_message_batch",
        {"Successful": sent("0"), "Failed": []},
        {"QueueUrl": QUEUE_URL, "Entries": [outgoing_entry(0, messages[10])]},
    )
    queues.send_all(QUEUE_URL, messages, region=REGION)


def test_a_batch_counts_its_messages_attributes_toward_its_mebibyte(sqs: Stubber) -> None:
    # Given two messages whose bodies fit one call together, but not with their attributes
    attributes = {"wspush-attempt": "1"}
    body = "x" * (MAX_SQS_MESSAGE_BYTES // 2 - 5)
    messages = [queues.Outgoing(body, attributes), queues.Outgoing(body, attributes)]
    # Then each goes in its own call
    for message in messages:
        sqs.add_response(
            "send_message_batch",
            {"Successful": sent("0"), "Failed": []},
            {"QueueUrl": QUEUE_URL, "Entries": [outgoing_entry(0, message)]},
        )
    queues.send_all(QUEUE_URL, messages, region=REGION)


def test_a_failed_call_names_every_code_sqs_gave(sqs: Stubber) -> None:
    # Given SQS refuses two shares, each for its own reason
    refused = [
        {"Id": "0", "SenderFault": True, "Code": "InvalidParameterValue"},
        {"Id": "2", "SenderFault": True, "Code": "BatchEntryIdsNotDistinct"},
    ]
    sqs.add_response("send_message_batch", {"Successful": sent("1"), "Failed": refused})
    # Then the error counts them and lists both codes, in order
    with pytest.raises(QueueUnavailable) as caught:
        queue_shares()
    assert str(caught.value) == (
        "2 of 3 messages were not queued (BatchEntryIdsNotDistinct, InvalidParameterValue)"
    )


def test_entries_are_sent_again_after_jittered_pauses_that_double(
    sqs: Stubber, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given four attempts with a base pause of 50 ms, and SQS failing an entry three times
    monkeypatch.setattr(queues, "BATCH_ENTRY_ATTEMPTS", 4)
    monkeypatch.setattr(queues, "_BATCH_RETRY_BASE_SECONDS", 0.05)
    drawn: list[tuple[float, float]] = []
    slept: list[float] = []

    def longest(low: float, high: float) -> float:
        drawn.append((low, high))
        return high

    monkeypatch.setattr(queues.random, "uniform", longest)
    monkeypatch.setattr(queues.time, "sleep", slept.append)
    sqs.add_response("send_message_batch", {"Successful": sent("0", "2"), "Failed": failed("1")})
    sqs.add_response("send_message_batch", {"Successful": [], "Failed": failed("0")})
    sqs.add_response("send_message_batch", {"Successful": [], "Failed": failed("0")})
    sqs.add_response("send_message_batch", {"Successful": sent("0"), "Failed": []})
    # When the shares are queued
    queue_shares()
    # Then each pause is drawn between none and twice the one before
    assert drawn == [(0, 0.1), (0, 0.2), (0, 0.4)]
    assert slept == [0.1, 0.2, 0.4]


def test_a_dead_letter_is_sent_with_its_reasons_to_the_queue_given(sqs: Stubber) -> None:
    # Given an undeliverable message and why
    letter = queues.DeadLetter("invalid_field", "userId must be a non-empty string", "userId")
    reasons = {
        "wspush-error-code": "invalid_field",
        "wspush-error-reason": "userId must be a non-empty string",
        "wspush-error-field": "userId",
    }
    sqs.add_response(
        "send_message_batch",
        {"Successful": sent("0"), "Failed": []},
        {
            "QueueUrl": QUEUE_URL,
            "Entries": [outgoing_entry(0, queues.Outgoing('{"userId":""}', reasons))],
        },
    )
    # When it is dead-lettered, then the dead-letter queue gets the body and its reasons
    queues.dead_letter(QUEUE_URL, '{"userId":""}', letter, region=REGION)


def test_a_dead_letter_without_field_or_failures_too_large_drops_its_reason() -> None:
    # Given a letter with only a code and a reason, and a body leaving room for the code only
    letter = queues.DeadLetter("code", "reason")
    room = len(queues.ERROR_CODE) + len("String") + len("code")
    # When it is made
    outgoing = queues.dead_lettered("x" * (MAX_SQS_MESSAGE_BYTES - room), letter)
    # Then only its reason is left out
    assert outgoing.attributes == {queues.ERROR_CODE: "code"}


def test_a_message_put_back_with_an_id_of_its_own_is_kept_byte_for_byte() -> None:
    body = '{ "userId": "u", "id": "m" }'
    assert queues._with_id(body, "sqs-1") == body


def test_a_batch_counts_its_bodies_in_utf8_bytes(sqs: Stubber) -> None:
    # Given two bodies (put back as a service wrote them) that fit one call in characters,
    # not in bytes
    body = "é" * (MAX_SQS_MESSAGE_BYTES // 3)
    messages = [queues.Outgoing(body, {}), queues.Outgoing(body, {})]
    # Then each goes in its own call
    for message in messages:
        sqs.add_response(
            "send_message_batch",
            {"Successful": sent("0"), "Failed": []},
            {"QueueUrl": QUEUE_URL, "Entries": [outgoing_entry(0, message)]},
        )
    queues.send_all(QUEUE_URL, messages, region=REGION)
