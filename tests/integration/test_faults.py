"""Injected faults against the handlers under moto: a table that errors or throttles, a
Management API that throttles, fails, hangs or resets, and a Lambda running out of time.

Every test ends with the same question: did each recipient end exactly once as
delivered, gone, or dead-lettered with its reason?
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest

from handlers import connect, send, sender
from tests.conftest import (
    DLQ_URL,
    PROCESSED_TABLE,
    QUEUE_URL,
    REGION,
    TABLE,
    Emitted,
    FakeLambdaContext,
    load_event,
    logged,
)
from tests.contract import assert_valid
from tests.fakes.dynamodb import (
    INTERNAL_ERROR,
    THROTTLED,
    DynamoDBError,
    DynamoDBFaults,
    without_retry_backoff,
)
from tests.fakes.event_source import CountdownContext, SenderEventSource, redeliver_at_once
from tests.fakes.management_api import FakeManagementApi, Reply
from tests.support import (
    PAYLOAD,
    add_connection,
    attributes_of,
    drain,
    sqs_event,
    sqs_record,
)
from wspush.fanout import gateway, queues
from wspush.settings import get_settings
from wspush.store import connections

# Where a test hangs posts on purpose, the Management API client gives up after READ_TIMEOUT
# (3 s in Lambda) and a hung post answers after STALL. Every other test keeps Lambda's
# timeouts: a short one would let a loaded machine turn a healthy answer into a fault.
READ_TIMEOUT = 0.5
STALL = 1.0
# PynamoDB's client makes 1 + max_retry_attempts (2) attempts before the error surfaces.
DYNAMODB_ATTEMPTS = 3

WIRE_FAULTS = {
    "500": (Reply.aws(500), "500 InternalServerErrorException"),
    "timeout": (Reply.timeout(STALL), "ReadTimeoutError"),
    "reset": (Reply.connection_reset(), "ConnectionClosedError"),
}
DYNAMODB_ERRORS = {"throttled": THROTTLED, "internal-error": INTERNAL_ERROR}


@pytest.fixture(autouse=True)
def no_requeue_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    """Re-queued messages become visible at once so tests can drain them."""
    monkeypatch.setattr(queues, "MAX_DELAY_SECONDS", 0)


@pytest.fixture(autouse=True)
def fresh_gateway() -> Iterator[None]:
    """Each test posts through a new Gateway, which reads its timeouts when created."""
    gateway.gateway_for.cache_clear()
    yield
    gateway.gateway_for.cache_clear()


def expect_hung_posts(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hung post costs READ_TIMEOUT instead of 3 s."""
    monkeypatch.setattr(gateway, "READ_TIMEOUT_SECONDS", READ_TIMEOUT)
    gateway.gateway_for.cache_clear()


@pytest.fixture
def dynamodb_faults(aws: None, monkeypatch: pytest.MonkeyPatch) -> DynamoDBFaults:
    without_retry_backoff(monkeypatch)
    return DynamoDBFaults().install(monkeypatch)


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Set WSPUSH_* variables for one test; settings are re-read before and after."""
    get_settings.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    get_settings.cache_clear()


def connect_event(connection_id: str, **query: str) -> dict[str, Any]:
    event = load_event("ws_connect.json")
    event["requestContext"]["connectionId"] = connection_id
    event["queryStringParameters"] = query
    event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()}
    return event


def raw_item(connection_id: str) -> dict[str, Any] | None:
    table = boto3.resource("dynamodb", region_name=REGION).Table(TABLE)
    item: dict[str, Any] | None = table.get_item(
        Key={"connectionId": connection_id}, ConsistentRead=True
    ).get("Item")
    return item


def run(event: dict[str, Any], context: FakeLambdaContext) -> list[str]:
    """Invoke the sender; the ids of the records it reports as failed."""
    response = sender.handler(event, context)
    return [item["itemIdentifier"] for item in response["batchItemFailures"]]


def run_rounds(
    api: FakeManagementApi, message_id: str, context: FakeLambdaContext, limit: int = 10
) -> list[list[str]]:
    """Run the queue until empty; the recipients each round's re-queued message named.

    Checks on the way that a re-queued message never names a recipient that already
    received the message: nothing is sent twice.
    """
    rounds: list[list[str]] = []
    for _ in range(limit):
        records = drain(QUEUE_URL)
        if not records:
            return rounds
        named = [cid for r in records for cid in json.loads(r["body"])["connectionIds"]]
        already = [cid for cid in named if api.frames_of(cid, message_id)]
        assert already == [], f"re-queued for recipients that already have it: {already}"
        rounds.append(named)
        assert run(sqs_event(*records), context) == []
    raise AssertionError("queue never drained")


def frame_counts(api: FakeManagementApi, message_id: str, ids: list[str]) -> dict[str, int]:
    return {cid: api.frames_of(cid, message_id) for cid in ids}


def failures_of(letter: dict[str, Any]) -> list[dict[str, str]]:
    failures: list[dict[str, str]] = json.loads(attributes_of(letter)["wspush-failures"])
    return failures


def add_user(user_id: str, count: int) -> list[str]:
    ids = [f"{user_id}-{index:03d}" for index in range(count)]
    for connection_id in ids:
        add_connection(connection_id, user_id)
    return ids


# --- DynamoDB during $connect -------------------------------------------------------------


@pytest.mark.parametrize("error", DYNAMODB_ERRORS.values(), ids=DYNAMODB_ERRORS.keys())
def test_connect_is_refused_with_5xx_and_stores_nothing_when_dynamodb_fails(
    dynamodb_faults: DynamoDBFaults, lambda_context: FakeLambdaContext, error: DynamoDBError
) -> None:
    # Given DynamoDB answers every PutItem with an error
    dynamodb_faults.fail("PutItem", error=error, table=TABLE)
    # When a client connects
    response = connect.handler(connect_event("conn-1", userId="u-1"), lambda_context)
    # Then the handshake fails with a server error once botocore's retries are spent
    assert response["statusCode"] == 500
    assert dynamodb_faults.calls["PutItem"] == DYNAMODB_ATTEMPTS
    # And no row exists for the refused connection
    assert raw_item("conn-1") is None


def test_connect_leaves_no_row_when_the_write_lands_but_dynamodb_answers_an_error(
    dynamodb_faults: DynamoDBFaults, lambda_context: FakeLambdaContext
) -> None:
    # Given every PutItem is stored, then answered with InternalServerError
    dynamodb_faults.fail("PutItem", error=INTERNAL_ERROR, after_write=True, table=TABLE)
    # When a client connects
    response = connect.handler(connect_event("conn-1", userId="u-1"), lambda_context)
    # Then the handshake fails, and the row that landed was deleted again
    assert response["statusCode"] == 500
    assert dynamodb_faults.calls["DeleteItem"] >= 1
    assert raw_item("conn-1") is None


def test_a_brief_throttle_during_connect_is_absorbed_by_the_client_retries(
    dynamodb_faults: DynamoDBFaults, lambda_context: FakeLambdaContext
) -> None:
    # Given DynamoDB throttles the next two PutItems only
    dynamodb_faults.fail("PutItem", error=THROTTLED, times=DYNAMODB_ATTEMPTS - 1, table=TABLE)
    # When a client connects
    response = connect.handler(connect_event("conn-1", userId="u-1"), lambda_context)
    # Then the third attempt stores it and the handshake succeeds
    assert response["statusCode"] == 200
    item = raw_item("conn-1")
    assert item is not None
    assert item["userId"] == "u-1"


def test_a_refused_connection_whose_row_cannot_be_removed_is_cleaned_up_by_the_first_post(
    dynamodb_faults: DynamoDBFaults,
    management_api: FakeManagementApi,
    lambda_context: FakeLambdaContext,
) -> None:
    # Given a table in trouble: a PutItem lands but answers an error, and DeleteItem fails
    dynamodb_faults.fail("PutItem", error=INTERNAL_ERROR, after_write=True, table=TABLE)
    dynamodb_faults.fail("DeleteItem", error=INTERNAL_ERROR, table=TABLE)
    # When a client connects
    event = connect_event("conn-1", userId="u-1")
    event["requestContext"]["connectedAt"] -= 60_000  # a minute before the message below
    response = connect.handler(event, lambda_context)
    # Then the handshake is refused, but the row that landed could not be removed
    assert response["statusCode"] == 500
    assert raw_item("conn-1") is not None
    # When the table recovers and, a minute later, a message for that user is sent (API
    # Gateway never opened that socket, so it answers 410)
    dynamodb_faults.clear()
    management_api.gone("conn-1")
    record = sqs_record({"userId": "u-1", "id": "m-1", "payload": PAYLOAD})
    assert run(sqs_event(record), lambda_context) == []
    # Then the stray row is deleted, and nothing is re-queued or dead-lettered
    assert raw_item("conn-1") is None
    assert drain(QUEUE_URL) == []
    assert drain(DLQ_URL) == []


# --- The processed-messages table after delivery --------------------------------------------


@pytest.mark.usefixtures("users")
def test_a_send_whose_record_cannot_be_written_still_answers_what_was_delivered(
    dynamodb_faults: DynamoDBFaults,
    management_api: FakeManagementApi,
    lambda_context: FakeLambdaContext,
    log_output: io.StringIO,
    emitted_metrics: Callable[[], Emitted],
) -> None:
    # Given the processed-messages table takes the claim but fails the write after delivery
    dynamodb_faults.fail("UpdateItem", error=INTERNAL_ERROR, table=PROCESSED_TABLE)
    # When a service sends to alice through the send Lambda
    answer = send.handler({"userId": "alice", "id": "m-kept", "payload": PAYLOAD}, lambda_context)
    # Then the answer is the delivery report, saying the message was not remembered
    assert answer == {
        "id": "m-kept",
        "targets": 2,
        "delivered": 2,
        "gone": 0,
        "failed": 0,
        "errors": [],
        "remembered": False,
    }
    assert_valid("send-answer", answer)
    assert frame_counts(management_api, "m-kept", ["a-pc", "a-mobile"]) == {
        "a-pc": 1,
        "a-mobile": 1,
    }
    # And the record left unwritten is logged with its cause, and counted
    assert {
        "level": "WARNING",
        "message": "processed record not written",
        "error": "InternalServerError",
    } in logged(log_output)
    assert emitted_metrics()["RecordsNotKept"] == ("Count", [1.0])


@pytest.mark.usefixtures("users")
def test_a_partly_failed_send_whose_claim_cannot_be_released_still_answers_its_report(
    dynamodb_faults: DynamoDBFaults,
    management_api: FakeManagementApi,
    lambda_context: FakeLambdaContext,
) -> None:
    # Given bob's connection fails every attempt, and the claim on the message cannot be removed
    management_api.script("b-pc", *[Reply.aws(500)] * 3)
    dynamodb_faults.fail("DeleteItem", error=INTERNAL_ERROR, table=PROCESSED_TABLE)
    # When a service sends to alice and bob
    answer = send.handler(
        {"userIds": ["alice", "bob"], "id": "m-part", "payload": PAYLOAD}, lambda_context
    )
    # Then the answer is what happened to each recipient, not a storage error
    assert (answer["delivered"], answer["failed"]) == (2, 1)
    assert answer["errors"] == [
        {"connectionId": "b-pc", "reason": "500 InternalServerErrorException"}
    ]


@pytest.mark.usefixtures("users")
def test_a_queued_message_whose_record_cannot_be_written_is_not_sent_again(
    dynamodb_faults: DynamoDBFaults,
    management_api: FakeManagementApi,
    lambda_context: FakeLambdaContext,
) -> None:
    # Given the processed-messages table fails the write after delivery
    dynamodb_faults.fail("UpdateItem", error=INTERNAL_ERROR, table=PROCESSED_TABLE)
    record = sqs_record({"userId": "alice", "id": "m-done", "payload": PAYLOAD})
    # When the sender handles the message
    failed = run(sqs_event(record), lambda_context)
    # Then the record is acknowledged (SQS would deliver the whole message again otherwise)
    assert failed == []
    assert frame_counts(management_api, "m-done", ["a-pc", "a-mobile"]) == {
        "a-pc": 1,
        "a-mobile": 1,
    }
    assert drain(QUEUE_URL) == []
    assert drain(DLQ_URL) == []


# --- DynamoDB during target resolution ----------------------------------------------------

EVERYONE = ["a-pc", "a-mobile", "b-pc", "c-web"]


@pytest.mark.usefixtures("users")
@pytest.mark.parametrize("error", DYNAMODB_ERRORS.values(), ids=DYNAMODB_ERRORS.keys())
@pytest.mark.parametrize(
    ("target", "operation", "recipients"),
    [
        ({"userId": "alice"}, "Query", ["a-pc", "a-mobile"]),
        ({"broadcast": True}, "Scan", EVERYONE),
        (
            {"connectionIds": ["a-pc", "c-web"], "platform": ["pc", "web"]},
            "BatchGetItem",
            ["a-pc", "c-web"],
        ),
    ],
    ids=["user", "broadcast", "ids-with-platform"],
)
def test_a_message_whose_targets_cannot_be_read_is_left_to_sqs_and_nothing_is_sent(
    dynamodb_faults: DynamoDBFaults,
    management_api: FakeManagementApi,
    lambda_context: FakeLambdaContext,
    error: DynamoDBError,
    target: dict[str, Any],
    operation: str,
    recipients: list[str],
) -> None:
    # Given the table answers every read of this kind with an error
    dynamodb_faults.fail(operation, error=error, table=TABLE)
    record = sqs_record({**target, "id": "m-db", "payload": PAYLOAD})
    # When the sender handles the message
    failed = run(sqs_event(record), lambda_context)
    # Then the record is reported failed, so SQS delivers it again
    assert failed == [record["messageId"]]
    assert dynamodb_faults.failures[operation] == DYNAMODB_ATTEMPTS
    # And nothing was posted, re-queued or dead-lettered: the message is whole in SQS's hands
    assert management_api.posts == []
    assert drain(QUEUE_URL) == []
    assert drain(DLQ_URL) == []
    # When the table recovers and SQS delivers the same record again
    dynamodb_faults.clear()
    assert run(sqs_event(record), lambda_context) == []
    # Then every recipient has the message exactly once
    assert frame_counts(management_api, "m-db", EVERYONE) == {
        cid: int(cid in recipients) for cid in EVERYONE
    }


@pytest.mark.usefixtures("users")
def test_only_the_record_whose_targets_cannot_be_read_is_retried(
    dynamodb_faults: DynamoDBFaults,
    management_api: FakeManagementApi,
    lambda_context: FakeLambdaContext,
) -> None:
    # Given the table fails only the query for bob's connections
    dynamodb_faults.fail("Query", table=TABLE, when=lambda params: "bob" in json.dumps(params))
    alice, bob, carol = (
        sqs_record({"userId": user, "id": f"m-{user}", "payload": PAYLOAD})
        for user in ("alice", "bob", "carol")
    )
    # When the three messages arrive in one batch
    failed = run(sqs_event(alice, bob, carol), lambda_context)
    # Then only bob's record goes back to SQS, and the other two were delivered
    assert failed == [bob["messageId"]]
    assert set(management_api.received) == {"a-pc", "a-mobile", "c-web"}
    # When SQS delivers bob's record again and the table has recovered
    dynamodb_faults.clear()
    assert run(sqs_event(bob), lambda_context) == []
    # Then everyone has their message once
    assert {cid: len(frames) for cid, frames in management_api.received.items()} == dict.fromkeys(
        EVERYONE, 1
    )


@pytest.mark.usefixtures("users")
def test_a_message_whose_targets_stay_unreadable_ends_whole_in_the_dlq_after_five_receives(
    dynamodb_faults: DynamoDBFaults, management_api: FakeManagementApi
) -> None:
    # Given the queue's redrive policy from serverless.yml and a table that never answers queries
    redeliver_at_once(QUEUE_URL)
    dynamodb_faults.fail("Query", error=THROTTLED, table=TABLE)
    body = json.dumps({"userId": "alice", "id": "m-stuck", "payload": PAYLOAD})
    boto3.client("sqs", region_name=REGION).send_message(QueueUrl=QUEUE_URL, MessageBody=body)
    # When Lambda's event source mapping runs the queue until it is empty
    source = SenderEventSource(QUEUE_URL)
    source.run_until_empty()
    # Then the sender saw the record five times, failing it each time without posting
    assert [(i.records, i.failed) for i in source.invocations] == [(1, 1)] * 5
    assert management_api.posts == []
    # And SQS moved the untouched message to the dead-letter queue
    [letter] = drain(DLQ_URL)
    assert letter["body"] == body


# --- Management API: 429 storms ------------------------------------------------------------


@pytest.mark.parametrize(
    "storm_posts",
    [50, 60, 120, 180],
    ids=["part-of-a-round", "one-round", "two-rounds", "three-rounds"],
)
def test_a_429_storm_is_retried_boundedly_requeued_and_every_recipient_gets_the_message_once(
    aws: None,
    management_api: FakeManagementApi,
    lambda_context: FakeLambdaContext,
    storm_posts: int,
) -> None:
    # Given 20 connections of one user and a gateway whose next posts are all throttled
    # (3 posts per recipient is one invocation's worth)
    ids = add_user("storm", 20)
    management_api.storm(Reply.aws(429), posts=storm_posts)
    record = sqs_record({"userId": "storm", "id": "m-storm", "payload": PAYLOAD})
    # When the sender handles the message, and then every re-queued message until none is left
    assert run(sqs_event(record), lambda_context) == []
    requeue_rounds = run_rounds(management_api, "m-storm", lambda_context)
    # Then each round posted to a recipient at most 3 times (bounded retries)...
    assert len(requeue_rounds) == -(-storm_posts // 60)
    assert all(calls <= 3 * (len(requeue_rounds) + 1) for calls in management_api.calls.values())
    assert sum(management_api.calls.values()) == storm_posts + len(ids)
    # ...and in the end every recipient has the message exactly once, nothing dead-lettered
    assert frame_counts(management_api, "m-storm", ids) == dict.fromkeys(ids, 1)
    assert drain(DLQ_URL) == []


def test_a_429_storm_outlasting_every_round_dead_letters_each_recipient_once(
    aws: None, management_api: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    # Given 20 connections and a gateway throttling for 4 rounds of 3 posts per recipient
    ids = add_user("storm", 20)
    management_api.storm(Reply.aws(429), posts=20 * 3 * 4)
    record = sqs_record({"userId": "storm", "id": "m-storm", "payload": PAYLOAD})
    # When the message and its re-queues run until the queue is empty
    assert run(sqs_event(record), lambda_context) == []
    assert len(run_rounds(management_api, "m-storm", lambda_context)) == 3
    # Then nobody got it, each recipient was posted exactly 12 times...
    assert management_api.received == {}
    assert dict(management_api.calls) == dict.fromkeys(ids, 12)
    # ...and one dead letter names each recipient once, with the throttling as the reason
    [letter] = drain(DLQ_URL)
    assert sorted(json.loads(letter["body"])["connectionIds"]) == ids
    assert sorted(f["connectionId"] for f in failures_of(letter)) == ids
    assert {f["reason"] for f in failures_of(letter)} == {"429 LimitExceededException"}
    assert attributes_of(letter)["wspush-error-code"] == "delivery_failed"


def test_every_recipient_of_a_large_dead_letter_is_named_with_its_reason(
    aws: None, management_api: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    # Given 150 connections of one user, all answering 403 (final at once)
    ids = add_user("walled", 150)
    for connection_id in ids:
        management_api.script(connection_id, Reply.aws(403))
    record = sqs_record({"userId": "walled", "id": "m-403", "payload": PAYLOAD})
    # When the message is handled
    assert run(sqs_event(record), lambda_context) == []
    # Then the dead letters name all 150 in their bodies, each exactly once...
    letters = drain(DLQ_URL)
    named = [cid for letter in letters for cid in json.loads(letter["body"])["connectionIds"]]
    assert sorted(named) == ids
    # ...and each letter gives every recipient it names a reason in wspush-failures
    for letter in letters:
        body_ids = sorted(json.loads(letter["body"])["connectionIds"])
        assert sorted(f["connectionId"] for f in failures_of(letter)) == body_ids
        assert {f["reason"] for f in failures_of(letter)} == {"403 ForbiddenException"}


# --- Management API: 5xx, timeouts, resets ---------------------------------------------------


@pytest.mark.usefixtures("users")
@pytest.mark.parametrize("fault", WIRE_FAULTS, ids=WIRE_FAULTS.keys())
def test_a_transient_wire_fault_is_retried_within_the_invocation(
    management_api: FakeManagementApi,
    lambda_context: FakeLambdaContext,
    monkeypatch: pytest.MonkeyPatch,
    fault: str,
) -> None:
    if fault == "timeout":
        expect_hung_posts(monkeypatch)
    # Given bob's connection fails twice, then recovers
    reply, _ = WIRE_FAULTS[fault]
    management_api.script("b-pc", reply, reply)
    # When a message to bob is handled
    record = sqs_record({"userId": "bob", "id": "m-1", "payload": PAYLOAD})
    assert run(sqs_event(record), lambda_context) == []
    # Then the third post delivered it, once, and nothing was re-queued or dead-lettered
    assert management_api.calls["b-pc"] == 3
    assert management_api.frames_of("b-pc", "m-1") == 1
    assert drain(QUEUE_URL) == []
    assert drain(DLQ_URL) == []


@pytest.mark.usefixtures("users")
@pytest.mark.parametrize("fault", WIRE_FAULTS, ids=WIRE_FAULTS.keys())
def test_a_wire_fault_outlasting_the_invocation_is_requeued_and_delivered_once_later(
    management_api: FakeManagementApi,
    lambda_context: FakeLambdaContext,
    monkeypatch: pytest.MonkeyPatch,
    fault: str,
) -> None:
    if fault == "timeout":
        expect_hung_posts(monkeypatch)
    # Given bob's connection fails 4 times in a row (one more than an invocation retries)
    reply, _ = WIRE_FAULTS[fault]
    management_api.script("b-pc", *[reply] * 4)
    # When a message to alice and bob is handled, then its re-queues
    record = sqs_record({"userIds": ["alice", "bob"], "id": "m-1", "payload": PAYLOAD})
    assert run(sqs_event(record), lambda_context) == []
    # Then the error was taken as retryable: only bob is re-queued, as attempt 1
    [requeued] = drain(QUEUE_URL)
    assert json.loads(requeued["body"])["connectionIds"] == ["b-pc"]
    assert attributes_of(requeued)["wspush-attempt"] == "1"
    assert run(sqs_event(requeued), lambda_context) == []
    # And everyone has the message exactly once
    assert frame_counts(management_api, "m-1", ["a-pc", "a-mobile", "b-pc"]) == {
        "a-pc": 1,
        "a-mobile": 1,
        "b-pc": 1,
    }
    assert drain(QUEUE_URL) == []
    assert drain(DLQ_URL) == []


@pytest.mark.usefixtures("users")
@pytest.mark.parametrize("fault", WIRE_FAULTS, ids=WIRE_FAULTS.keys())
def test_a_wire_fault_that_never_ends_is_dead_lettered_with_its_reason(
    management_api: FakeManagementApi,
    lambda_context: FakeLambdaContext,
    monkeypatch: pytest.MonkeyPatch,
    fault: str,
) -> None:
    if fault == "timeout":
        expect_hung_posts(monkeypatch)
    # Given bob's connection fails every post
    reply, reason = WIRE_FAULTS[fault]
    management_api.script("b-pc", *[reply] * 20)
    # When a message to alice and bob and its re-queues run until the queue is empty
    record = sqs_record({"userIds": ["alice", "bob"], "id": "m-1", "payload": PAYLOAD})
    assert run(sqs_event(record), lambda_context) == []
    assert len(run_rounds(management_api, "m-1", lambda_context)) == 3
    # Then bob was tried 3 times in each of the 4 rounds and never received it
    assert management_api.calls["b-pc"] == 12
    assert management_api.frames_of("b-pc", "m-1") == 0
    # And the dead letter names bob alone, with what went wrong
    [letter] = drain(DLQ_URL)
    assert json.loads(letter["body"])["connectionIds"] == ["b-pc"]
    assert failures_of(letter) == [{"connectionId": "b-pc", "reason": reason}]
    assert reason in attributes_of(letter)["wspush-error-reason"]
    # While alice's connections got it once each
    assert frame_counts(management_api, "m-1", ["a-pc", "a-mobile"]) == {"a-pc": 1, "a-mobile": 1}


@pytest.mark.usefixtures("users")
def test_a_post_that_landed_but_was_answered_too_late_is_sent_again_with_the_same_id(
    management_api: FakeManagementApi,
    lambda_context: FakeLambdaContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given bob's first post reaches the client but its 200 comes after the read timeout
    expect_hung_posts(monkeypatch)
    management_api.script("b-pc", Reply.late(STALL))
    # When a message to bob is handled
    record = sqs_record({"userId": "bob", "id": "m-late", "payload": PAYLOAD})
    assert run(sqs_event(record), lambda_context) == []
    # Then the sender could not know and posted again: delivery is at least once, and the
    # two frames carry the same id so the client drops the second
    received = [json.loads(body) for body in management_api.received["b-pc"]]
    assert len(received) == 2
    assert received[0] == received[1]
    assert received[0]["id"] == "m-late"


# --- A Lambda nearing its timeout in a large fan-out -----------------------------------------


@pytest.fixture
def slow_fan_out(
    aws: None, management_api: FakeManagementApi, settings_env: pytest.MonkeyPatch
) -> list[str]:
    """300 connections of one user, a gateway answering in 100 ms, 8 posts in flight.

    Posts here are slow, never hung: the client waits as long as in Lambda, so a loaded
    machine cannot turn a slow answer into a retried duplicate.
    """
    settings_env.setenv("WSPUSH_DELIVERY_CONCURRENCY", "8")
    gateway.gateway_for.cache_clear()
    ids = add_user("crowd", 300)
    management_api.slow(0.1)
    return ids


@pytest.mark.timing
def test_a_sender_running_out_of_time_mid_fan_out_hands_the_rest_back_untried(
    slow_fan_out: list[str], management_api: FakeManagementApi
) -> None:
    ids = slow_fan_out
    # Given an invocation with 1.5 s left before the safety margin (too little for 300 posts)
    context = CountdownContext(remaining_ms=get_settings().deadline_margin_ms + 1_500)
    record = sqs_record({"userId": "crowd", "id": "m-crowd", "payload": PAYLOAD})
    # When the sender handles a message to all 300 connections
    assert run(sqs_event(record), context) == []
    # Then it stopped early: some were reached, the rest were never posted to
    reached = {cid for cid in ids if management_api.calls.get(cid)}
    assert 0 < len(reached) < len(ids)
    assert all(management_api.frames_of(cid, "m-crowd") == 1 for cid in reached)
    # And exactly the recipients not reached are re-queued, their attempt count unchanged
    [requeued] = drain(QUEUE_URL)
    named = json.loads(requeued["body"])["connectionIds"]
    assert sorted(named) == sorted(set(ids) - reached)
    assert len(named) == len(set(named))
    assert attributes_of(requeued)["wspush-attempt"] == "0"
    # When the re-queued message runs with time to spare
    management_api.slow(0)
    assert run(sqs_event(requeued), CountdownContext()) == []
    # Then every connection has the message exactly once, and nothing was dead-lettered
    assert frame_counts(management_api, "m-crowd", ids) == dict.fromkeys(ids, 1)
    assert drain(QUEUE_URL) == []
    assert drain(DLQ_URL) == []


@pytest.mark.timing
def test_cleaning_up_a_big_fan_out_never_runs_past_the_function_s_time_limit(
    aws: None,
    management_api: FakeManagementApi,
    monkeypatch: pytest.MonkeyPatch,
    log_output: io.StringIO,
    request: pytest.FixtureRequest,
) -> None:
    # Given 400 connections that are all gone, a table that takes 4 s per batch of 25
    # deletes (16 batches, 8 at a time), and an invocation 3 s past its margin: time for the
    # posts even on a busy machine (what is tested is the clean-up's cut, not their speed),
    # far too little for the deletes
    ids = add_user("ghosts", 400)
    management_api.gone(*ids)
    delete_many = connections.delete_many
    test_over = threading.Event()

    def slow(connection_ids: list[str]) -> None:
        if not test_over.wait(4.0):  # (deletes left running end quietly with the test)
            delete_many(connection_ids)

    monkeypatch.setattr(connections, "delete_many", slow)
    request.addfinalizer(test_over.set)
    context = CountdownContext(remaining_ms=get_settings().deadline_margin_ms + 3_000)
    record = sqs_record({"userId": "ghosts", "id": "m-ghosts", "payload": PAYLOAD})
    # When the sender handles a message to all of them
    assert run(sqs_event(record), context) == []
    # Then it returned before Lambda would have stopped it, leaving what it had no time to
    # delete to the rows' TTL
    assert context.get_remaining_time_in_millis() > 0
    assert '"message":"gone connections left to their TTL"' in log_output.getvalue()
    # And the message is settled: nothing re-queued or dead-lettered, every post made once
    assert drain(QUEUE_URL) == []
    assert drain(DLQ_URL) == []
    assert dict(management_api.calls) == dict.fromkeys(ids, 1)


@pytest.mark.timing
def test_messages_not_started_before_the_deadline_come_back_as_copies_and_arrive_once(
    slow_fan_out: list[str], management_api: FakeManagementApi
) -> None:
    ids = slow_fan_out
    # Given three messages to all 300 connections in one batch, and 1.5 s before the margin
    budget_ms = get_settings().deadline_margin_ms + 1_500
    records = [
        sqs_record({"userId": "crowd", "id": f"m-{n}", "payload": PAYLOAD}) for n in range(3)
    ]
    # When the sender handles the batch with a clock that runs down as Lambda's does
    failed = run(sqs_event(*records), CountdownContext(remaining_ms=budget_ms))
    # Then the first message was cut short, and the two not started were put back as copies:
    # every record is acknowledged, none counts toward the dead-letter queue untried
    assert failed == []
    assert {post.message_id for post in management_api.posts} == {"m-0"}
    # When Lambda's event source mapping runs the queue (the two copies, and m-0's re-queue)
    # until it is empty, with time to spare
    management_api.slow(0)
    redeliver_at_once(QUEUE_URL)
    source = SenderEventSource(QUEUE_URL)
    source.run_until_empty()
    # Then each of the three messages reached each connection exactly once
    for n in range(3):
        assert frame_counts(management_api, f"m-{n}", ids) == dict.fromkeys(ids, 1)
    assert drain(DLQ_URL) == []


def test_under_congestion_a_message_never_reaches_the_dlq_untried(
    aws: None, management_api: FakeManagementApi
) -> None:
    # Given the queue's redrive policy (5 receives), and invocations that always run out of
    # time before they can start anything, for more receives than that
    redeliver_at_once(QUEUE_URL)
    add_user("busy", 3)
    body = json.dumps({"userId": "busy", "id": "m-congested", "payload": PAYLOAD})
    boto3.client("sqs", region_name=REGION).send_message(QueueUrl=QUEUE_URL, MessageBody=body)
    margin = get_settings().deadline_margin_ms
    source = SenderEventSource(QUEUE_URL, budget=lambda n: margin - 1 if n < 8 else 30_000)
    # When the event source runs the queue until it is empty
    source.run_until_empty()
    # Then the message was put back 8 times, then delivered once to each connection
    assert [i.failed for i in source.invocations] == [0] * 9
    assert frame_counts(management_api, "m-congested", [f"busy-{i:03d}" for i in range(3)]) == {
        f"busy-{i:03d}": 1 for i in range(3)
    }
    # And nothing reached the dead-letter queue
    assert drain(DLQ_URL) == []
