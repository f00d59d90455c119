"""What the Lambdas log and count: log lines with their fields, and the metrics as CloudWatch
reads their EMF lines (names, units and values).

Dashboards and alarms are built on these names: a renamed or miscounted metric breaks them
silently, so each is asserted here exactly as it is printed.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable

import boto3
import pytest

from handlers import send, sender
from tests.conftest import (
    DLQ_URL,
    HISTORY_TABLE,
    QUEUE_URL,
    REGION,
    TABLE,
    Emitted,
    FakeLambdaContext,
    logged,
)
from tests.fakes.management_api import FakeManagementApi, Reply
from tests.support import PAYLOAD, add_connection, drain, sqs_event, sqs_record
from wspush.fanout import queues
from wspush.settings import get_settings
from wspush.store import connections

pytestmark = pytest.mark.usefixtures("aws", "users")


@pytest.fixture(autouse=True)
def no_requeue_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queues, "MAX_DELAY_SECONDS", 0)


def test_a_fan_out_counts_each_outcome_once(
    management_api: FakeManagementApi,
    lambda_context: FakeLambdaContext,
    emitted_metrics: Callable[[], Emitted],
    log_output: io.StringIO,
) -> None:
    # Given four recipients: one delivered at once, one throttled once then delivered, one
    # gone, one forbidden
    management_api.script("a-mobile", Reply.aws(429))
    management_api.script("b-pc", Reply.aws(410))
    management_api.script("c-web", Reply.aws(403))
    # When a message to all of them is sent from the queue
    record = sqs_record({"userIds": ["alice", "bob", "carol"], "id": "m-1", "payload": PAYLOAD})
    sender.handler(sqs_event(record), lambda_context)
    # Then the invocation emits each count once, in Count (the message kept in 3 user streams)
    assert emitted_metrics() == {
        "MessagesKept": ("Count", [3.0]),
        "Delivered": ("Count", [2.0]),
        "Gone": ("Count", [1.0]),
        "Throttled": ("Count", [1.0]),
        "GoneWhileConnecting": ("Count", [0.0]),
        "Failed": ("Count", [1.0]),
        "DeadLettered": ("Count", [1.0]),
    }
    # And logs each recipient that was not delivered, the report, and the dead letter
    assert logged(log_output) == [
        {"level": "INFO", "message": "connection gone", "message_id": "m-1",
         "connection_id": "b-pc"},
        {"level": "WARNING", "message": "delivery failed", "message_id": "m-1",
         "connection_id": "c-web", "reason": "403 ForbiddenException", "retryable": False},
        {"level": "INFO", "message": "message delivered", "message_id": "m-1", "targets": 4,
         "delivered": 2, "gone": 1, "failed": 1, "throttled": 1, "connecting": 0},
        {"level": "WARNING", "message": "dead-lettered failed recipients", "message_id": "m-1",
         "recipients": 1},
    ]  # fmt: skip


def test_a_recipient_still_connecting_and_one_to_retry_are_counted(
    management_api: FakeManagementApi,
    lambda_context: FakeLambdaContext,
    emitted_metrics: Callable[[], Emitted],
    log_output: io.StringIO,
) -> None:
    # Given a connection that opened just now and answers 410 twice (its $connect has not
    # returned), and one that fails every post of this invocation
    connections.delete("a-pc")
    add_connection("a-pc", "alice", "pc", opened_ago_ms=0)
    management_api.connecting("a-pc", posts=2)
    management_api.script("a-mobile", *[Reply.aws(500)] * 3)
    # When a message to alice is sent from the queue
    record = sqs_record({"userId": "alice", "id": "m-2", "payload": PAYLOAD})
    sender.handler(sqs_event(record), lambda_context)
    # Then the 410s are counted as still connecting, and the failed recipient as re-queued
    emitted = emitted_metrics()
    assert emitted["GoneWhileConnecting"] == ("Count", [2.0])
    assert emitted["Delivered"] == ("Count", [1.0])
    assert emitted["Failed"] == ("Count", [1.0])
    assert emitted["Requeued"] == ("Count", [1.0])
    assert "DeadLettered" not in emitted
    assert len(drain(QUEUE_URL)) == 1
    assert logged(log_output)[1:] == [
        {"level": "INFO", "message": "message delivered", "message_id": "m-2", "targets": 2,
         "delivered": 1, "gone": 0, "failed": 1, "throttled": 0, "connecting": 2},
        {"level": "INFO", "message": "requeued recipients", "message_id": "m-2", "untried": 0,
         "retried": 1},
    ]  # fmt: skip


def test_a_direct_send_logs_its_report_under_its_message_id(
    management_api: FakeManagementApi,
    lambda_context: FakeLambdaContext,
    log_output: io.StringIO,
) -> None:
    # Given bob's connection gone
    management_api.gone("b-pc")
    # When a service sends bob a message through the send function
    send.handler({"userId": "bob", "id": "m-7", "payload": PAYLOAD}, lambda_context)
    # Then the gone connection and the report are logged, each naming the message
    assert logged(log_output) == [
        {"level": "INFO", "message": "connection gone", "message_id": "m-7",
         "connection_id": "b-pc"},
        {"level": "INFO", "message": "message delivered", "message_id": "m-7", "targets": 1,
         "delivered": 0, "gone": 1, "failed": 0, "throttled": 0, "connecting": 0},
    ]  # fmt: skip


def test_an_invalid_queued_message_is_counted_invalid_and_dead_lettered(
    lambda_context: FakeLambdaContext,
    emitted_metrics: Callable[[], Emitted],
    log_output: io.StringIO,
) -> None:
    sender.handler(sqs_event(sqs_record(json.dumps({"userId": "bob"}))), lambda_context)
    assert emitted_metrics() == {
        "InvalidMessages": ("Count", [1.0]),
        "DeadLettered": ("Count", [1.0]),
    }
    assert len(drain(DLQ_URL)) == 1
    assert logged(log_output) == [
        {"level": "WARNING", "message": "invalid message dead-lettered",
         "code": "invalid_payload", "field": "payload"}
    ]  # fmt: skip


def test_a_record_not_started_before_the_deadline_is_counted_put_back(
    lambda_context: FakeLambdaContext,
    emitted_metrics: Callable[[], Emitted],
    log_output: io.StringIO,
) -> None:
    lambda_context.remaining_ms = 1
    record = sqs_record({"userId": "bob", "payload": PAYLOAD})
    sender.handler(sqs_event(record), lambda_context)
    assert emitted_metrics() == {"MessagesPutBack": ("Count", [1.0])}
    assert logged(log_output) == [
        {"level": "INFO", "message": "message put back on the queue",
         "sqs_message_id": record["messageId"], "reason": "deadline"}
    ]  # fmt: skip


def test_a_long_user_list_split_for_other_invocations_is_counted(
    lambda_context: FakeLambdaContext,
    emitted_metrics: Callable[[], Emitted],
    monkeypatch: pytest.MonkeyPatch,
    log_output: io.StringIO,
) -> None:
    monkeypatch.setenv("WSPUSH_USERS_PER_CHUNK", "1")
    get_settings.cache_clear()
    try:
        record = sqs_record({"userIds": ["alice", "bob"], "id": "m-3", "payload": PAYLOAD})
        sender.handler(sqs_event(record), lambda_context)
    finally:
        monkeypatch.delenv("WSPUSH_USERS_PER_CHUNK")
        get_settings.cache_clear()
    assert emitted_metrics() == {"AudiencesSplit": ("Count", [1.0])}
    assert len(drain(QUEUE_URL)) == 2
    assert logged(log_output) == [
        {"level": "INFO", "message": "audience split", "message_id": "m-3", "shares": 2}
    ]


def test_a_direct_send_counts_invalid_and_unsent_messages(
    lambda_context: FakeLambdaContext,
    emitted_metrics: Callable[[], Emitted],
    log_output: io.StringIO,
) -> None:
    # Given one invalid envelope, and one valid one when no time is left
    send.handler({"userId": "bob"}, lambda_context)
    lambda_context.remaining_ms = 1
    send.handler({"userId": "bob", "id": "m-4", "payload": PAYLOAD}, lambda_context)
    # Then each invocation counts its own
    assert emitted_metrics() == {
        "InvalidMessages": ("Count", [1.0]),
        "MessagesNotSent": ("Count", [1.0]),
    }
    assert logged(log_output) == [
        {"level": "INFO", "message": "invalid message", "code": "invalid_payload",
         "field": "payload"},
        {"level": "WARNING", "message": "message not sent", "message_id": "m-4",
         "code": "deadline"},
    ]  # fmt: skip


def test_a_message_whose_targets_cannot_be_read_is_logged_counted_and_left_to_sqs(
    lambda_context: FakeLambdaContext,
    emitted_metrics: Callable[[], Emitted],
    log_output: io.StringIO,
) -> None:
    # Given a connections table that cannot be read
    boto3.client("dynamodb", region_name=REGION).delete_table(TableName=TABLE)
    record = sqs_record({"userId": "bob", "id": "m-5", "payload": PAYLOAD})
    # When the sender takes a message
    sender.handler(sqs_event(record), lambda_context)
    # Then the read error and the record left to SQS are logged, and both counted
    lines = [
        {key: line.get(key) for key in ("level", "message", "message_id", "exception_name")}
        for line in logged(log_output)
    ]
    assert lines[0] == {
        "level": "ERROR",
        "message": "could not resolve targets",
        "message_id": "m-5",
        "exception_name": "StorageUnavailable",
    }
    assert {
        "level": "WARNING",
        "message": "message left for SQS to deliver again",
        "sqs_message_id": record["messageId"],
        "error": "StorageUnavailable",
    } in logged(log_output)
    assert emitted_metrics() == {
        "MessagesKept": ("Count", [1.0]),  # in the user's stream, before the read
        "StorageErrors": ("Count", [1.0]),
        "MessagesRetried": ("Count", [1.0]),
    }


def test_a_message_whose_place_in_its_stream_cannot_be_written_is_logged_and_not_sent(
    management_api: FakeManagementApi,
    lambda_context: FakeLambdaContext,
    emitted_metrics: Callable[[], Emitted],
    log_output: io.StringIO,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.fakes.dynamodb import DynamoDBFaults, without_retry_backoff

    # Given a history table that fails every read (bob's stream keeps his messages)
    without_retry_backoff(monkeypatch)
    DynamoDBFaults().install(monkeypatch).fail("GetItem", table=HISTORY_TABLE)
    # When a service sends bob a message
    answer = send.handler({"userId": "bob", "id": "m-6", "payload": PAYLOAD}, lambda_context)
    # Then nothing was sent, and the log says what failed, for which message
    assert answer["error"]["code"] == "storage_unavailable"
    assert not management_api.calls
    [line] = [line for line in logged(log_output) if line["level"] == "ERROR"]
    assert {key: line.get(key) for key in ("message", "message_id", "exception_name")} == {
        "message": "could not place the message in its streams",
        "message_id": "m-6",
        "exception_name": "StorageUnavailable",
    }
    assert emitted_metrics()["StorageErrors"] == ("Count", [1.0])
