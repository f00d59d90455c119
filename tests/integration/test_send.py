"""The send Lambda under moto, posting to a local Management API that answers like AWS."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from handlers import send
from tests.conftest import PROCESSED_TABLE, REGION, TABLE, FakeLambdaContext
from tests.contract import assert_valid
from tests.fakes.management_api import FakeManagementApi, Reply
from tests.support import PAYLOAD, add_connection, frames, stored_ids
from wspush.clock import Deadline
from wspush.fanout import delivery, sending
from wspush.settings import get_settings

pytestmark = pytest.mark.usefixtures("aws")


def invoke(event: Any, context: FakeLambdaContext) -> Any:
    return send.handler(event, context)


def receivers(api: FakeManagementApi) -> set[str]:
    return {cid for cid, bodies in api.received.items() if bodies}


@pytest.mark.usefixtures("users")
def test_a_user_with_two_connections_gets_the_message_on_both(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    # When a service sends to alice
    result = invoke({"userId": "alice", "id": "m-1", "payload": PAYLOAD}, lambda_context)
    # Then both of alice's connections got exactly the contract frame, and nobody else
    assert result == {
        "id": "m-1",
        "targets": 2,
        "delivered": 2,
        "gone": 0,
        "failed": 0,
        "errors": [],
    }
    assert receivers(management_api) == {"a-pc", "a-mobile"}
    frame = frames(management_api, "a-pc")[0]
    assert frame == {**PAYLOAD, "id": "m-1", "ts": frame["ts"], "seq": 1}
    # And the answer and the frame are what the schemas in schemas/ describe
    assert_valid("send-answer", result)
    assert_valid("frame", frame)
    assert management_api.received["a-pc"] == management_api.received["a-mobile"]


@pytest.mark.usefixtures("users")
def test_platform_filter_and_exclude_list(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    # When alice and bob are messaged on pc only
    invoke({"userIds": ["alice", "bob"], "platform": "pc", "payload": PAYLOAD}, lambda_context)
    # Then only their pc connections received it
    assert receivers(management_api) == {"a-pc", "b-pc"}
    # When everyone on pc or web except b-pc is messaged
    management_api.reset()
    invoke(
        {
            "broadcast": True,
            "platform": ["pc", "web"],
            "excludeConnectionIds": ["b-pc"],
            "payload": PAYLOAD,
        },
        lambda_context,
    )
    # Then a-pc and c-web received it, and nobody else
    assert receivers(management_api) == {"a-pc", "c-web"}


@pytest.fixture
def small_pages(aws: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("WSPUSH_PAGE_SIZE", "3")
    get_settings.cache_clear()
    yield
    monkeypatch.delenv("WSPUSH_PAGE_SIZE")
    get_settings.cache_clear()


@pytest.mark.usefixtures("small_pages")
def test_broadcast_reaches_every_connection_past_one_scan_page(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    # Given 25 connections and a scan page of 3 items
    for index in range(25):
        add_connection(f"c-{index:02d}", f"user-{index}")
    # When a broadcast is sent
    result = invoke({"broadcast": True, "payload": PAYLOAD}, lambda_context)
    # Then all 25 received it, once each
    assert result["delivered"] == 25
    assert all(len(management_api.received[f"c-{i:02d}"]) == 1 for i in range(25))


@pytest.mark.usefixtures("small_pages")
def test_a_user_with_more_connections_than_one_query_page_gets_them_all(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    # Given one user with 10 connections and a query page of 3 items
    for index in range(10):
        add_connection(f"d-{index}", "dora", "pc" if index % 2 else "mobile")
    # When the user is messaged on pc only
    result = invoke({"userId": "dora", "platform": "pc", "payload": PAYLOAD}, lambda_context)
    # Then the five pc connections received it
    assert result["delivered"] == 5
    assert receivers(management_api) == {f"d-{i}" for i in range(1, 10, 2)}


@pytest.mark.usefixtures("users")
@pytest.mark.parametrize(
    "gone_reply", [Reply.aws(410), Reply.bare(410)], ids=["GoneException", "bare-410"]
)
def test_410_deletes_that_connection_and_no_other(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext, gone_reply: Reply
) -> None:
    # Given alice's mobile connection died without $disconnect
    management_api.script("a-mobile", gone_reply)
    # When a message goes to alice
    result = invoke({"userId": "alice", "payload": PAYLOAD}, lambda_context)
    # Then pc received it, mobile is counted gone and only its row was deleted
    assert (result["delivered"], result["gone"], result["failed"]) == (1, 1, 0)
    assert stored_ids() == {"a-pc", "b-pc", "c-web"}


@pytest.mark.usefixtures("users")
def test_throttling_is_retried_until_delivered(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    # Given bob's connection is throttled twice
    management_api.script("b-pc", Reply.aws(429), Reply.aws(429))
    # When a message goes to bob
    result = invoke({"userId": "bob", "payload": PAYLOAD}, lambda_context)
    # Then the third attempt delivered it, once
    assert result["delivered"] == 1
    assert management_api.calls["b-pc"] == 3
    assert len(management_api.received["b-pc"]) == 1


@pytest.mark.usefixtures("users")
@pytest.mark.parametrize(("status", "calls"), [(413, 1), (403, 1), (500, 3)])
def test_failures_are_reported_with_their_reason(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext, status: int, calls: int
) -> None:
    # Given bob's connection answers with an error every time
    management_api.script("b-pc", *[Reply.aws(status)] * 5)
    # When a message goes to bob
    result = invoke({"userId": "bob", "payload": PAYLOAD}, lambda_context)
    # Then it failed with the status and code; 413/403 were not retried, 500 was (bounded)
    assert result["failed"] == 1
    assert result["errors"][0]["connectionId"] == "b-pc"
    assert result["errors"][0]["reason"].startswith(str(status))
    assert management_api.calls["b-pc"] == calls
    assert "b-pc" in stored_ids()


def test_seed_form_posts_to_the_given_connection(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    result = invoke({"connectionId": "Xk1aAconnA0=", "payload": PAYLOAD}, lambda_context)
    assert result["delivered"] == 1
    assert frames(management_api, "Xk1aAconnA0=")[0]["type"] == "order.updated"


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({"payload": PAYLOAD}, "target"),
        ({"userId": "alice", "payload": {"type": "", "data": 1}}, "payload.type"),
        ({"userId": "alice", "payload": {"type": "t", "data": "x" * 140_000}}, "payload"),
        ("not json", None),
        ([], None),
    ],
)
def test_invalid_input_returns_a_structured_error(
    management_api: FakeManagementApi,
    lambda_context: FakeLambdaContext,
    event: Any,
    field: str | None,
) -> None:
    # When the send Lambda gets invalid input
    result = invoke(event, lambda_context)
    # Then it answers a structured error naming the field, and posts nothing
    assert set(result) == {"error"}
    assert set(result["error"]) == {"code", "message", "field"}
    assert result["error"]["field"] == field
    assert_valid("send-answer", result)
    assert not management_api.received


@pytest.mark.usefixtures("users")
def test_a_list_is_answered_per_message_and_a_bad_one_does_not_stop_the_rest(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    results = invoke(
        [
            {"userId": "bob", "id": "ok-1", "payload": PAYLOAD},
            {"userId": "bob", "payload": {"type": "t"}},
            {"userId": "carol", "id": "ok-2", "payload": PAYLOAD},
        ],
        lambda_context,
    )
    assert [r.get("id") for r in results] == ["ok-1", None, "ok-2"]
    assert results[1]["error"]["field"] == "payload.data"
    assert_valid("send-answer", results)
    assert receivers(management_api) == {"b-pc", "c-web"}


def test_json_string_event_is_accepted(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    result = invoke(json.dumps({"connectionId": "c-1", "payload": PAYLOAD}), lambda_context)
    assert result["delivered"] == 1


def test_unreadable_table_is_reported_and_nothing_is_sent(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    boto3.client("dynamodb", region_name=REGION).delete_table(TableName=TABLE)
    result = invoke({"userId": "alice", "id": "m-9", "payload": PAYLOAD}, lambda_context)
    assert result["id"] == "m-9"
    assert result["error"]["code"] == "storage_unavailable"
    assert_valid("send-answer", result)
    assert not management_api.calls


@pytest.mark.usefixtures("users")
def test_expired_rows_are_ignored_even_before_dynamodb_removes_them(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    # Given alice's mobile row whose TTL passed but which DynamoDB has not removed yet
    table = boto3.resource("dynamodb", region_name=REGION).Table(TABLE)
    table.update_item(
        Key={"connectionId": "a-mobile"},
        UpdateExpression="SET #t = :past",
        ExpressionAttributeNames={"#t": "ttl"},
        ExpressionAttributeValues={":past": 1_000},
    )
    # When alice is messaged, and everyone is
    invoke({"userId": "alice", "payload": PAYLOAD}, lambda_context)
    invoke({"broadcast": True, "payload": PAYLOAD}, lambda_context)
    # Then the expired connection received nothing
    assert "a-mobile" not in management_api.received


@pytest.mark.usefixtures("users")
def test_payload_bodies_never_reach_the_logs_or_metrics(
    management_api: FakeManagementApi,
    lambda_context: FakeLambdaContext,
    capsys: pytest.CaptureFixture[str],
    log_output: io.StringIO,
) -> None:
    # Given a payload holding a secret, and one recipient that fails
    secret = "card-4111-1111-1111-1111"
    management_api.script("b-pc", *[Reply.aws(500)] * 3)
    # When it is sent to everyone, and an invalid message carrying it too
    invoke(
        {"broadcast": True, "payload": {"type": "t", "data": {"secret": secret}}}, lambda_context
    )
    invoke({"userId": "bob", "payload": {"type": "t", "data": secret, "x": 1}}, lambda_context)
    # Then logs and metrics mention connections and message ids, never the payload
    logs, metrics = log_output.getvalue(), capsys.readouterr()
    assert '"connection_id":"b-pc"' in logs
    assert '"Failed":[1.0]' in metrics.out
    assert secret not in logs + metrics.out + metrics.err


def test_messages_without_id_get_ids_from_the_request_id(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    # Given a direct invocation (Lambda keeps its request id when it retries an async one)
    lambda_context.aws_request_id = "req-1"
    # When one message, then a list, are sent without ids
    single = invoke({"connectionId": "c-1", "payload": PAYLOAD}, lambda_context)
    listed = invoke([{"connectionId": "c-2", "payload": PAYLOAD}] * 2, lambda_context)
    # Then their ids come from the request id, distinct within the list
    assert single["id"] == "req-1"
    assert [r["id"] for r in listed] == ["req-1-0", "req-1-1"]
    assert frames(management_api, "c-1")[0]["id"] == "req-1"


@pytest.mark.usefixtures("users")
def test_messages_left_when_the_deadline_passed_are_reported_not_sent(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    # Given an invocation that has already used up its time
    lambda_context.remaining_ms = 0
    # When a message is sent, then it is reported as not sent, and nothing was posted
    result = invoke({"userId": "alice", "id": "m-late", "payload": PAYLOAD}, lambda_context)
    assert result == {
        "id": "m-late",
        "error": {
            "code": "deadline",
            "message": "not sent: the invocation ran out of time",
            "field": None,
        },
    }
    assert_valid("send-answer", result)
    assert not management_api.calls


@pytest.mark.usefixtures("users")
def test_a_repeated_invocation_is_answered_from_the_first_without_sending_again(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    # Given a message sent once
    envelope = {"userId": "bob", "id": "m-once", "payload": PAYLOAD}
    first = invoke(envelope, lambda_context)
    # When the caller retries it
    again = invoke(envelope, lambda_context)
    # Then the answer is the first one, and bob received one frame
    assert again == first
    assert len(frames(management_api, "b-pc")) == 1


def test_a_message_being_sent_elsewhere_is_reported_in_progress(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext, aws: None
) -> None:
    # Given another invocation is in the middle of sending m-busy
    from wspush.contract.messages import parse_message
    from wspush.fanout import idempotency
    from wspush.settings import get_settings

    message = parse_message({"connectionId": "c-1", "id": "m-busy", "payload": PAYLOAD}, now_ms=1)
    settings = get_settings()

    def meanwhile() -> dict[str, object]:
        # When the same message arrives while the first is still in flight
        answer = invoke({"connectionId": "c-1", "id": "m-busy", "payload": PAYLOAD}, lambda_context)
        # Then it is reported as in progress, not sent twice
        assert answer == {
            "id": "m-busy",
            "error": {
                "code": "in_progress",
                "message": "another invocation is sending this message",
                "field": None,
            },
        }
        assert_valid("send-answer", answer)
        return {"id": "m-busy"}

    idempotency.run_once(
        idempotency.key_of(message, 0),
        meanwhile,
        table_name=settings.processed_table_name,
        ttl_seconds=60,
        context=lambda_context,
    )
    assert not management_api.calls


@pytest.mark.usefixtures("users")
def test_a_send_that_partly_failed_can_be_retried_with_the_same_id(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    # Given bob's connection fails every attempt of a first send
    management_api.script("b-pc", *[Reply.aws(500)] * 3)
    envelope = {"userId": "bob", "id": "m-retry", "payload": PAYLOAD}
    first = invoke(envelope, lambda_context)
    assert first["failed"] == 1
    # When the caller retries the same message once the connection recovers
    again = invoke(envelope, lambda_context)
    # Then the retry was really sent (a retryable failure is not remembered as done)
    assert again["delivered"] == 1
    assert len(frames(management_api, "b-pc")) == 1


def test_an_explicit_id_still_connecting_is_retried_and_kept(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    # Given a connection stored a moment ago whose $connect has not returned for one more post
    add_connection("g-pc", "gina", opened_ago_ms=0)
    management_api.connecting("g-pc", posts=1)
    # When a service sends to its connection id directly (no row is read for that)
    result = invoke({"connectionId": "g-pc", "id": "m-g", "payload": PAYLOAD}, lambda_context)
    # Then it was delivered on the retry and the row kept
    assert (result["delivered"], result["gone"]) == (1, 0)
    assert stored_ids() == {"g-pc"}


def test_an_explicit_id_still_connecting_after_the_retries_is_a_retryable_failure(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    add_connection("h-pc", "hana", opened_ago_ms=0)
    management_api.connecting("h-pc", posts=3)
    result = invoke({"connectionId": "h-pc", "id": "m-h", "payload": PAYLOAD}, lambda_context)
    assert (result["delivered"], result["gone"], result["failed"]) == (0, 0, 1)
    assert result["errors"] == [
        {"connectionId": "h-pc", "reason": "410 GoneException (still connecting)"}
    ]
    assert stored_ids() == {"h-pc"}


@pytest.mark.parametrize("size", [0, 101])
def test_a_list_of_no_message_or_of_more_than_a_hundred_is_refused_whole(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext, size: int
) -> None:
    result = invoke([{"connectionId": "c-1", "payload": PAYLOAD}] * size, lambda_context)
    assert result == {
        "error": {
            "code": "invalid_envelope",
            "message": "a list must hold 1 to 100 messages",
            "field": None,
        }
    }
    assert not management_api.calls


def test_a_list_of_a_hundred_messages_is_answered_message_by_message(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    results = invoke([{"connectionIds": ["c-1"], "payload": PAYLOAD}] * 100, lambda_context)
    assert [r["delivered"] for r in results] == [1] * 100


def test_a_message_whose_table_is_unreadable_says_nothing_was_sent(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    boto3.client("dynamodb", region_name=REGION).delete_table(TableName=TABLE)
    result = invoke({"userId": "alice", "id": "m-9", "payload": PAYLOAD}, lambda_context)
    assert result == {
        "id": "m-9",
        "error": {
            "code": "storage_unavailable",
            "message": "wspush's tables could not be used; nothing was sent: send it again with"
            " the same id",
            "field": None,
        },
    }


def test_a_message_to_a_channel_of_no_declared_namespace_is_refused_naming_it(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    # When a message goes to a channel whose namespace is not declared
    result = invoke({"channel": "nowhere:1", "payload": PAYLOAD}, lambda_context)
    # Then it is refused, the namespace named, and nothing is posted
    assert result == {
        "error": {
            "code": "unknown_namespace",
            "message": "no namespace 'nowhere' is declared",
            "field": "channel",
        }
    }
    assert not management_api.received


@pytest.mark.usefixtures("users")
def test_a_gone_row_is_left_to_its_ttl_when_the_invocation_has_no_time_to_delete_it(
    management_api: FakeManagementApi,
    lambda_context: FakeLambdaContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given an invocation with 30 s left, all of it kept back from deleting gone rows, and
    # alice's mobile connection dead without $disconnect
    lambda_context.remaining_ms = 30_000
    monkeypatch.setattr(delivery, "FORGET_RESERVE_SECONDS", 30.0)
    management_api.script("a-mobile", Reply.aws(410))
    # When a message goes to alice
    result = invoke({"userId": "alice", "payload": PAYLOAD}, lambda_context)
    # Then mobile is counted gone, but its row is kept (it expires through its TTL)
    assert (result["delivered"], result["gone"]) == (1, 1)
    assert stored_ids() == {"a-pc", "a-mobile", "b-pc", "c-web"}


@pytest.mark.usefixtures("users")
@pytest.mark.parametrize("as_list", [False, True], ids=["one", "list"])
def test_a_message_s_claim_lasts_only_as_long_as_its_invocation(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext, as_list: bool
) -> None:
    # Given an invocation with 30 s left
    lambda_context.remaining_ms = 30_000
    started = time.time()
    # When a message is sent, alone or in a list
    message = {"userId": "bob", "id": "m-claim", "payload": PAYLOAD}
    invoke([message] if as_list else message, lambda_context)
    # Then its processed record's claim ended with the invocation: one that died would have
    # left the message to a retry after 30 s, not after the record's TTL
    table = boto3.client("dynamodb", region_name=REGION)
    [item] = table.scan(TableName=PROCESSED_TABLE)["Items"]
    claim_ends = int(item["in_progress_expiration"]["N"]) / 1000
    assert started + 29 <= claim_ends <= time.time() + 31


@pytest.mark.usefixtures("users")
def test_a_retry_that_would_start_after_the_deadline_is_not_made(
    management_api: FakeManagementApi,
) -> None:
    # Given bob's connection throttled once, and an invocation whose deadline passes as soon
    # as that first answer has come back
    management_api.script("b-pc", Reply.aws(429))

    def clock() -> float:
        return 200.0 if management_api.calls.get("b-pc") else 0.0

    deadline = Deadline(100.0, clock=clock)
    # When a message goes to bob
    envelope = {"userId": "bob", "id": "m-late-retry", "payload": PAYLOAD}
    result = sending.send(envelope, get_settings(), request_id="req-1", deadline=deadline)
    # Then the post was not tried again: bob is reported failed with the throttling that
    # stopped it, for the caller to send again
    assert management_api.calls["b-pc"] == 1
    assert not management_api.received.get("b-pc")
    assert result == {
        "id": "m-late-retry",
        "targets": 1,
        "delivered": 0,
        "gone": 0,
        "failed": 1,
        "errors": [{"connectionId": "b-pc", "reason": "429 LimitExceededException"}],
    }
    assert_valid("send-answer", result)


@pytest.mark.usefixtures("small_pages")
def test_a_user_s_connections_are_read_a_page_of_the_page_size_at_a_time(
    management_api: FakeManagementApi,
    lambda_context: FakeLambdaContext,
    calls: list[tuple[str, dict[str, Any]]],
) -> None:
    # Given dora on 7 connections, and WSPUSH_PAGE_SIZE=3
    for index in range(7):
        add_connection(f"d-{index}", "dora")
    calls.clear()
    # When a message goes to dora
    result = invoke({"userId": "dora", "payload": PAYLOAD}, lambda_context)
    # Then all 7 got it, her connections read 3 to a query: 3 queries
    assert result["delivered"] == 7
    queries = [args for op, args in calls if op == "Query" and args["TableName"] == TABLE]
    assert [q.get("Limit") for q in queries] == [3, 3, 3]


@pytest.fixture
def one_post_at_a_time(aws: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("WSPUSH_DELIVERY_CONCURRENCY", "1")
    get_settings.cache_clear()
    yield
    monkeypatch.delenv("WSPUSH_DELIVERY_CONCURRENCY")
    get_settings.cache_clear()


@pytest.mark.usefixtures("users", "one_post_at_a_time")
def test_a_recipient_not_posted_to_before_the_deadline_is_reported_with_it(
    management_api: FakeManagementApi,
) -> None:
    # Given one post at a time, and a deadline that passes once the first post was answered

    def clock() -> float:
        return 200.0 if management_api.calls else 0.0

    # When a message goes to alice's two connections
    envelope = {"userId": "alice", "id": "m-one-of-two", "payload": PAYLOAD}
    result = sending.send(
        envelope, get_settings(), request_id="req-1", deadline=Deadline(100.0, clock=clock)
    )
    # Then one got it, and the other is reported not tried, for the deadline
    [(reached, _)] = management_api.calls.items()
    [untried] = {"a-pc", "a-mobile"} - {reached}
    assert result == {
        "id": "m-one-of-two",
        "targets": 2,
        "delivered": 1,
        "gone": 0,
        "failed": 1,
        "errors": [{"connectionId": untried, "reason": "deadline"}],
    }
