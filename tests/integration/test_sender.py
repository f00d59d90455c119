"""The SQS sender under moto: partial batch responses, re-queues, dead letters."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from handlers import sender
from tests.conftest import DLQ_URL, PROCESSED_TABLE, QUEUE_URL, REGION, TABLE, FakeLambdaContext
from tests.fakes.management_api import FakeManagementApi, Reply
from tests.support import (
    PAYLOAD,
    add_connection,
    attributes_of,
    drain,
    frames,
    sqs_event,
    sqs_record,
    stored_ids,
)
from wspush.clock import now_ms
from wspush.fanout import queues
from wspush.settings import get_settings
from wspush.store import connections


def run(event: dict[str, Any], context: FakeLambdaContext) -> list[str]:
    """Invoke the sender; the ids of the records it reports as failed."""
    response = sender.handler(event, context)
    return [item["itemIdentifier"] for item in response["batchItemFailures"]]


def run_queue_until_empty(context: FakeLambdaContext, limit: int = 10) -> int:
    """Play Lambda's event source mapping on the moto queue; the number of rounds run."""
    for round_number in range(limit):
        records = drain(QUEUE_URL)
        if not records:
            return round_number
        assert run(sqs_event(*records), context) == []
    raise AssertionError("queue never drained")


@pytest.fixture(autouse=True)
def no_requeue_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    """Re-queued messages become visible at once so tests can drain them."""
    monkeypatch.setattr(queues, "MAX_DELAY_SECONDS", 0)


@pytest.mark.usefixtures("users")
def test_a_valid_batch_is_delivered_and_nothing_is_reported_failed(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    event = sqs_event(
        sqs_record({"userId": "alice", "payload": PAYLOAD}),
        sqs_record({"connectionId": "b-pc", "payload": PAYLOAD}),
    )
    assert run(event, lambda_context) == []
    assert {cid: len(b) for cid, b in management_api.received.items()} == {
        "a-pc": 1,
        "a-mobile": 1,
        "b-pc": 1,
    }


@pytest.mark.usefixtures("users")
def test_an_invalid_message_goes_to_the_dlq_with_its_reason_and_the_rest_is_delivered(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    # Given a batch with one message lacking payload.type between two valid ones
    bad_body = json.dumps({"userId": "bob", "payload": {"data": 1}})
    event = sqs_event(
        sqs_record({"userId": "alice", "payload": PAYLOAD}),
        sqs_record(bad_body),
        sqs_record({"userId": "bob", "payload": PAYLOAD}),
    )
    # When the sender runs
    failed = run(event, lambda_context)
    # Then no record is retried: the invalid one is dead-lettered with why, as sent
    assert failed == []
    [letter] = drain(DLQ_URL)
    assert letter["body"] == bad_body
    assert attributes_of(letter) == {
        "wspush-error-code": "invalid_payload",
        "wspush-error-reason": "payload.type must be a non-empty string",
        "wspush-error-field": "payload.type",
    }
    # And the valid ones were delivered
    assert set(management_api.received) == {"a-pc", "a-mobile", "b-pc"}


@pytest.mark.usefixtures("users")
def test_a_partly_failed_message_is_retried_only_for_the_failed_recipient(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    # Given alice's mobile connection errors for the first three posts (one invocation's worth)
    management_api.script("a-mobile", *[Reply.aws(500)] * 3)
    # When a message to alice is processed
    assert (
        run(
            sqs_event(sqs_record({"userId": "alice", "id": "m-1", "payload": PAYLOAD})),
            lambda_context,
        )
        == []
    )
    # Then pc got it, and a new message naming only mobile is back on the queue
    [requeued] = drain(QUEUE_URL)
    body = json.loads(requeued["body"])
    assert body == {"id": "m-1", "connectionIds": ["a-mobile"], "payload": PAYLOAD}
    assert attributes_of(requeued)["wspush-attempt"] == "1"
    # When the re-queued message is processed
    assert run(sqs_event(requeued), lambda_context) == []
    # Then mobile got it once, pc was not sent it again, and both frames are identical
    assert len(management_api.received["a-pc"]) == 1
    assert len(management_api.received["a-mobile"]) == 1
    assert frames(management_api, "a-pc") == frames(management_api, "a-mobile")
    assert drain(QUEUE_URL) == []
    assert drain(DLQ_URL) == []


@pytest.mark.usefixtures("users")
def test_a_recipient_that_keeps_failing_ends_in_the_dlq_with_its_reason(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    # Given alice's mobile connection always answers 500
    management_api.script("a-mobile", *[Reply.aws(500)] * 100)
    # When the message and its re-queues run until the queue is empty
    assert (
        run(
            sqs_event(sqs_record({"userId": "alice", "id": "m-2", "payload": PAYLOAD})),
            lambda_context,
        )
        == []
    )
    rounds = run_queue_until_empty(lambda_context)
    # Then it was re-queued max_requeues (3) times, then dead-lettered naming that recipient
    assert rounds == 3
    [letter] = drain(DLQ_URL)
    assert json.loads(letter["body"]) == {
        "id": "m-2",
        "connectionIds": ["a-mobile"],
        "payload": PAYLOAD,
    }
    attributes = attributes_of(letter)
    assert attributes["wspush-error-code"] == "delivery_failed"
    assert "500 InternalServerErrorException" in attributes["wspush-error-reason"]
    assert json.loads(attributes["wspush-failures"]) == [
        {"connectionId": "a-mobile", "reason": "500 InternalServerErrorException"}
    ]
    # And pc received the message exactly once throughout
    assert len(management_api.received["a-pc"]) == 1


@pytest.mark.usefixtures("users")
@pytest.mark.parametrize("status", [413, 403])
def test_final_failures_are_dead_lettered_at_once(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext, status: int
) -> None:
    # Given bob's connection answers a final error
    management_api.script("b-pc", Reply.aws(status))
    # When a message to bob is processed
    assert run(sqs_event(sqs_record({"userId": "bob", "payload": PAYLOAD})), lambda_context) == []
    # Then nothing is re-queued and the dead letter names bob's connection and the status
    assert drain(QUEUE_URL) == []
    [letter] = drain(DLQ_URL)
    assert json.loads(letter["body"])["connectionIds"] == ["b-pc"]
    assert attributes_of(letter)["wspush-error-reason"].count(str(status)) == 1
    assert management_api.calls["b-pc"] == 1


@pytest.mark.usefixtures("users")
def test_gone_connections_are_removed_and_not_retried(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    # Given alice's mobile connection is gone
    management_api.gone("a-mobile")
    # When a message to alice is processed
    assert run(sqs_event(sqs_record({"userId": "alice", "payload": PAYLOAD})), lambda_context) == []
    # Then nothing is re-queued or dead-lettered, and the gone connection was posted to once
    assert drain(QUEUE_URL) == []
    assert drain(DLQ_URL) == []
    assert management_api.calls["a-mobile"] == 1


@pytest.mark.usefixtures("users")
def test_a_batch_where_every_record_fails_is_reported_record_by_record(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    # Given the table cannot be read
    boto3.client("dynamodb", region_name=REGION).delete_table(TableName=TABLE)
    records = [sqs_record({"userId": "alice", "payload": PAYLOAD}) for _ in range(3)]
    # When the sender runs, it does not raise and names every record
    assert run(sqs_event(*records), lambda_context) == [r["messageId"] for r in records]
    assert not management_api.calls


@pytest.mark.usefixtures("users")
def test_an_invalid_message_is_retried_by_sqs_when_the_dlq_is_unreachable(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    # Given the dead-letter queue cannot be written
    boto3.client("sqs", region_name=REGION).delete_queue(QueueUrl=DLQ_URL)
    bad = sqs_record("{not json")
    good = sqs_record({"userId": "bob", "payload": PAYLOAD})
    # When the batch runs, the invalid record is reported failed (SQS keeps it), the valid one lands
    assert run(sqs_event(bad, good), lambda_context) == [bad["messageId"]]
    assert len(management_api.received["b-pc"]) == 1


@pytest.mark.usefixtures("users")
def test_a_requeued_message_keeps_its_id_and_timestamp(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    record = sqs_record(
        {"connectionIds": ["b-pc"], "id": "m-3", "payload": PAYLOAD},
        {"wspush-attempt": "1", "wspush-ts": "1795867200000"},
    )
    assert run(sqs_event(record), lambda_context) == []
    assert frames(management_api, "b-pc") == [{**PAYLOAD, "id": "m-3", "ts": 1795867200000}]


@pytest.mark.usefixtures("users")
def test_a_message_sqs_delivers_again_after_it_was_processed_is_not_sent_again(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    # Given one SQS message with no id of its own, delivered twice (SQS is at-least-once)
    record = sqs_record({"userId": "bob", "payload": PAYLOAD})
    # When the sender handles both deliveries
    assert run(sqs_event(record), lambda_context) == []
    assert run(sqs_event(record), lambda_context) == []
    # Then bob received it once, with the SQS message id as its id
    assert [frame["id"] for frame in frames(management_api, "b-pc")] == [record["messageId"]]


@pytest.mark.usefixtures("users")
def test_a_producer_retry_with_the_same_id_is_sent_once_but_another_target_is_not_a_retry(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    # Given a producer that sent the same message twice (same id, same target)...
    first = sqs_record({"userId": "bob", "id": "order-7", "payload": PAYLOAD})
    retry = sqs_record({"userId": "bob", "id": "order-7", "payload": PAYLOAD})
    # ...and the same id to another user
    other = sqs_record({"userId": "carol", "id": "order-7", "payload": PAYLOAD})
    # When all three are processed
    assert run(sqs_event(first, retry, other), lambda_context) == []
    # Then bob got it once and carol once
    assert len(frames(management_api, "b-pc")) == 1
    assert len(frames(management_api, "c-web")) == 1


@pytest.mark.usefixtures("users")
def test_when_the_processed_table_is_down_the_record_is_retried_not_lost(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    # Given the processed-messages table is unavailable
    boto3.client("dynamodb", region_name=REGION).delete_table(TableName=PROCESSED_TABLE)
    record = sqs_record({"userId": "bob", "payload": PAYLOAD})
    # When the sender runs, the record goes back to SQS untouched
    assert run(sqs_event(record), lambda_context) == [record["messageId"]]
    assert not management_api.calls


@pytest.mark.usefixtures("users")
def test_records_not_started_before_the_deadline_are_put_back_as_fresh_copies(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    # Given an invocation with less time left than the safety margin, and two records: one
    # without an id, one a re-queued share with wspush's attributes
    lambda_context.remaining_ms = get_settings().deadline_margin_ms - 1
    plain = sqs_record({"userId": "alice", "payload": PAYLOAD})
    requeued = sqs_record(
        {"connectionIds": ["a-pc"], "id": "m-2", "payload": PAYLOAD},
        {"wspush-attempt": "1", "wspush-round": "2", "wspush-ts": "1795867200000"},
    )
    # When the sender runs
    failed = run(sqs_event(plain, requeued), lambda_context)
    # Then nothing was posted, and both were acknowledged: SQS never counts a receive toward
    # the dead-letter queue for a message nobody tried
    assert failed == []
    assert not management_api.calls
    # And each is back on the queue as a copy: the first keeps its SQS message id as its id,
    # the second its attributes
    copies = {json.loads(r["body"]).get("id"): r for r in drain(QUEUE_URL)}
    assert set(copies) == {plain["messageId"], "m-2"}
    assert json.loads(copies[plain["messageId"]]["body"]) == {
        "id": plain["messageId"],
        **json.loads(plain["body"]),
    }
    assert attributes_of(copies["m-2"]) == attributes_of(requeued)
    # When the copies are handled with time to spare
    lambda_context.remaining_ms = 30_000
    assert run(sqs_event(*copies.values()), lambda_context) == []
    # Then each message reached its recipients once, under its first id
    assert [f["id"] for f in frames(management_api, "a-mobile")] == [plain["messageId"]]
    assert sorted(f["id"] for f in frames(management_api, "a-pc")) == sorted(
        [plain["messageId"], "m-2"]
    )


@pytest.fixture
def one_post_at_a_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("WSPUSH_DELIVERY_CONCURRENCY", "1")
    monkeypatch.setenv("WSPUSH_DEADLINE_MARGIN_MS", "200")
    monkeypatch.setenv("WSPUSH_SETTLE_RESERVE_MS", "0")
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.mark.usefixtures("one_post_at_a_time")
def test_recipients_not_reached_before_the_deadline_are_requeued_untried(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext, aws: None
) -> None:
    # Given 8 connections, a gateway answering in 100 ms, and 350 ms left before the margin
    ids = [f"slow-{index}" for index in range(8)]
    for connection_id in ids:
        add_connection(connection_id, "sam")
    management_api.slow(0.1)
    lambda_context.remaining_ms = 550
    # When a message to sam is processed
    assert (
        run(
            sqs_event(sqs_record({"userId": "sam", "id": "m-late", "payload": PAYLOAD})),
            lambda_context,
        )
        == []
    )
    # Then the first few were delivered and the rest re-queued untried, attempt count unchanged
    reached = {cid for cid in ids if management_api.received.get(cid)}
    assert len(reached) < len(ids)
    [requeued] = drain(QUEUE_URL)
    assert set(json.loads(requeued["body"])["connectionIds"]) == set(ids) - reached
    assert attributes_of(requeued)["wspush-attempt"] == "0"
    # When the re-queued message runs with time to spare
    management_api.slow(0)
    lambda_context.remaining_ms = 30_000
    assert run(sqs_event(requeued), lambda_context) == []
    # Then every connection got the message exactly once
    assert {cid: len(management_api.received[cid]) for cid in ids} == dict.fromkeys(ids, 1)


def test_a_connection_whose_connect_has_not_returned_gets_the_message_once_it_has(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext, aws: None
) -> None:
    # Given dana on pc for a while, and on mobile this very moment: the row is stored, but
    # API Gateway answers 410 until $connect returns (here: for her next two posts)
    add_connection("d-pc", "dana")
    add_connection("d-mobile", "dana", "mobile", opened_ago_ms=0)
    management_api.connecting("d-mobile", posts=2)
    # When a message to dana is processed
    record = sqs_record({"userId": "dana", "id": "m-new", "payload": PAYLOAD})
    assert run(sqs_event(record), lambda_context) == []
    # Then both connections got it once, the 410s were retried, and the new row is kept
    assert management_api.frames_of("d-pc", "m-new") == 1
    assert management_api.frames_of("d-mobile", "m-new") == 1
    assert management_api.calls["d-mobile"] == 3
    assert stored_ids() == {"d-pc", "d-mobile"}
    assert drain(QUEUE_URL) == []


def test_a_connection_still_connecting_after_the_retries_is_requeued_not_deleted(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext, aws: None
) -> None:
    # Given a connection that opened just now and answers 410 for longer than one invocation
    # retries (3 posts)
    add_connection("e-mobile", "erin", "mobile", opened_ago_ms=0)
    management_api.connecting("e-mobile", posts=4)
    # When a message to erin is processed
    record = sqs_record({"userId": "erin", "id": "m-soon", "payload": PAYLOAD})
    assert run(sqs_event(record), lambda_context) == []
    # Then its row is kept and the message re-queued for it, saying why
    assert stored_ids() == {"e-mobile"}
    [requeued] = drain(QUEUE_URL)
    assert json.loads(requeued["body"])["connectionIds"] == ["e-mobile"]
    # When the re-queued message runs, the connection is open: it gets the message once
    assert run(sqs_event(requeued), lambda_context) == []
    assert management_api.frames_of("e-mobile", "m-soon") == 1
    assert drain(DLQ_URL) == []


def test_a_410_for_a_connection_past_the_grace_deletes_it_at_once(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext, aws: None
) -> None:
    # Given a connection that opened a minute ago and is gone
    add_connection("f-pc", "fred")
    management_api.gone("f-pc")
    # When a message to fred is processed
    assert run(sqs_event(sqs_record({"userId": "fred", "payload": PAYLOAD})), lambda_context) == []
    # Then it was posted once and its row deleted
    assert management_api.calls["f-pc"] == 1
    assert stored_ids() == set()


def test_a_young_connection_that_closed_during_the_fan_out_is_gone_not_retried(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext, aws: None
) -> None:
    # Given a connection that opened a moment ago and closes while a message is on its way:
    # $disconnect deletes its row, and API Gateway answers 410
    add_connection("k-pc", "kim", opened_ago_ms=0)

    def closes(connection_id: str, message_id: str | None, tries: int) -> Reply:
        connections.delete(connection_id)
        return Reply.aws(410)

    management_api.plan(closes)
    # When a message to kim is processed
    assert run(sqs_event(sqs_record({"userId": "kim", "payload": PAYLOAD})), lambda_context) == []
    # Then the 410 was final at once: one post, nothing re-queued or dead-lettered
    assert management_api.calls["k-pc"] == 1
    assert drain(QUEUE_URL) == []
    assert drain(DLQ_URL) == []


@pytest.mark.usefixtures("users")
@pytest.mark.parametrize("sent", [None, "0", "not a time"], ids=["absent", "zero", "garbage"])
def test_a_queued_message_without_a_plausible_sent_time_is_stamped_when_handled(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext, sent: str | None
) -> None:
    # Given a queued message whose record has no plausible SentTimestamp
    record = sqs_record({"userId": "bob", "id": "m-ts", "payload": PAYLOAD})
    if sent is None:
        del record["attributes"]["SentTimestamp"]
    else:
        record["attributes"]["SentTimestamp"] = sent
    # When the sender handles it
    before = now_ms()
    assert run(sqs_event(record), lambda_context) == []
    after = now_ms()
    # Then bob's frame carries the time it was handled
    [frame] = frames(management_api, "b-pc")
    assert before <= frame["ts"] <= after
