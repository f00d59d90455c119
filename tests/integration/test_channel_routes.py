"""The channel route under moto, through its handler: each refusal's words, what a subscribe,
an unsubscribe and a presence request log, count and queue, and what is answered when the
queue or a table fails."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import boto3
import pytest

from handlers import channel, send
from tests.conftest import (
    CHANNELS_TABLE,
    HISTORY_TABLE,
    QUEUE_URL,
    REGION,
    TABLE,
    Emitted,
    FakeLambdaContext,
    load_event,
    logged,
)
from tests.fakes.dynamodb import DynamoDBFaults, without_retry_backoff
from tests.fakes.management_api import FakeManagementApi
from tests.support import PAYLOAD, attributes_of, drain
from wspush.channels import subscriptions
from wspush.settings import get_settings
from wspush.store import connections

pytestmark = pytest.mark.usefixtures("users")


def request(connection_id: str, *, remaining_ms: int = 30_000, **frame: Any) -> dict[str, Any]:
    """Send one channel frame as API Gateway would, to an invocation with ``remaining_ms``
    left; the reply frame the client receives."""
    event = load_event("ws_message.json")
    event["requestContext"]["connectionId"] = connection_id
    event["requestContext"]["routeKey"] = frame["action"]
    event["body"] = json.dumps(frame)
    response = channel.handler(event, FakeLambdaContext(remaining_ms=remaining_ms))
    assert response["statusCode"] == 200
    reply: dict[str, Any] = json.loads(response["body"])
    return reply


def refusal(reply: dict[str, Any]) -> tuple[str, str, str | None]:
    assert reply["type"] == "error"
    data = reply["data"]
    return data["code"], data["message"], data.get("channel")


def lines(log_output: Any, *messages: str) -> list[dict[str, Any]]:
    """The log lines with these messages, each without its location and timing keys."""
    return [
        {key: value for key, value in line.items() if key not in ("exception", "stack_trace")}
        for line in logged(log_output)
        if line["message"] in messages
    ]


def queued() -> list[tuple[dict[str, Any], dict[str, str]]]:
    """The presence events queued (body and attributes), taken off the queue."""
    return [(json.loads(record["body"]), attributes_of(record)) for record in drain(QUEUE_URL)]


@pytest.fixture
def faults(monkeypatch: pytest.MonkeyPatch) -> DynamoDBFaults:
    without_retry_backoff(monkeypatch)
    return DynamoDBFaults().install(monkeypatch)


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (
            {"action": "subscribe", "channel": "nowhere:1"},
            ("unknown_namespace", "no namespace 'nowhere' is declared", "nowhere:1"),
        ),
        (
            {"action": "presence", "channel": "nowhere:1"},
            ("unknown_namespace", "no namespace 'nowhere' is declared", "nowhere:1"),
        ),
        (
            {"action": "presence", "channel": "room:1"},
            ("no_presence", "namespace 'room' has no presence", "room:1"),
        ),
        (
            {"action": "presence", "channel": "lobby:1", "after": 3},
            ("bad_frame", "after must be the next of an earlier page", "lobby:1"),
        ),
        (
            {"action": "presence", "channel": "lobby:1", "after": ""},
            ("bad_frame", "after must be the next of an earlier page", "lobby:1"),
        ),
        (
            {"action": "presence", "channel": "lobby:1"},
            ("not_subscribed", "subscribe to the channel to see its members", "lobby:1"),
        ),
        (
            {"action": "unsubscribe", "channel": "lobby"},
            ("invalid_channel", "a channel is named namespace:name, e.g. room:42", "lobby"),
        ),
    ],
)
def test_a_refused_channel_request_says_why_and_is_logged_and_counted(
    frame: dict[str, Any],
    expected: tuple[str, str, str],
    log_output: Any,
    emitted_metrics: Callable[[], Emitted],
) -> None:
    # Given bob, subscribed to nothing
    # When he asks for something he may not have
    reply = request("b-pc", **frame)
    # Then the refusal names its code, says why, names the channel; it is logged and counted
    # as a channel request refused
    assert refusal(reply) == expected
    assert lines(log_output, "channel request refused") == [
        {
            "level": "INFO",
            "message": "channel request refused",
            "connection_id": "b-pc",
            "code": expected[0],
        }
    ]
    assert emitted_metrics() == {"ChannelRequestsRefused": ("Count", [1.0])}


def test_a_connection_that_is_not_open_is_refused_its_subscribe() -> None:
    # Given no stored connection x-1
    # When it subscribes
    reply = request("x-1", action="subscribe", channel="lobby:1")
    # Then it is told it is not open
    assert refusal(reply) == ("unknown_connection", "this connection is not open", "lobby:1")


def test_a_subscribe_is_logged_counted_and_lives_as_long_as_its_connection(
    log_output: Any, emitted_metrics: Callable[[], Emitted]
) -> None:
    # Given bob's open connection
    # When he subscribes to room:1 (no presence)
    reply = request("b-pc", action="subscribe", channel="room:1")
    # Then the subscription is logged and counted, announces nothing, and expires with the
    # connection's row
    assert reply["type"] == "subscribed"
    assert lines(log_output, "subscribed") == [
        {"level": "INFO", "message": "subscribed", "connection_id": "b-pc", "channel": "room:1"}
    ]
    assert emitted_metrics() == {"Subscribed": ("Count", [1.0])}
    assert queued() == []
    bob = connections.get("b-pc")
    assert bob is not None
    expires = connections.expiry(bob.connected_at, get_settings().connection_ttl_seconds)
    stored = boto3.client("dynamodb", region_name=REGION).get_item(
        TableName=CHANNELS_TABLE, Key={"channel": {"S": "room:1"}, "key": {"S": "c#b-pc"}}
    )["Item"]
    assert stored["ttl"] == {"N": str(int(expires.timestamp()))}


def test_a_first_join_and_a_last_leave_are_queued_as_presence_events_kept_in_no_stream(
    log_output: Any, emitted_metrics: Callable[[], Emitted]
) -> None:
    # Given bob's open connection
    # When he joins lobby:1, then leaves it
    request("b-pc", action="subscribe", channel="lobby:1")
    joined = queued()
    request("b-pc", action="unsubscribe", channel="lobby:1")
    left = queued()
    # Then the join goes to everyone but him, the leave to everyone; neither gets a seq
    [(join, join_attributes)] = joined
    assert len(join.pop("id")) == 32
    assert join == {
        "channel": "lobby:1",
        "payload": {
            "type": "presence.join",
            "data": {"channel": "lobby:1", "userId": "bob", "info": None},
        },
        "excludeConnectionIds": ["b-pc"],
    }
    [(leave, leave_attributes)] = left
    assert len(leave.pop("id")) == 32
    assert leave == {
        "channel": "lobby:1",
        "payload": {"type": "presence.leave", "data": {"channel": "lobby:1", "userId": "bob"}},
    }
    assert join_attributes == leave_attributes == {"wspush-seq": "0"}
    # And his connection counts no channel any more
    row = boto3.client("dynamodb", region_name=REGION).get_item(
        TableName=TABLE, Key={"connectionId": {"S": "b-pc"}}
    )["Item"]
    assert row["channels"] == {"N": "0"}
    # And the unsubscribe is logged and counted
    assert lines(log_output, "unsubscribed") == [
        {
            "level": "INFO",
            "message": "unsubscribed",
            "connection_id": "b-pc",
            "channel": "lobby:1",
        }
    ]
    assert emitted_metrics() == {"Subscribed": ("Count", [1.0]), "Unsubscribed": ("Count", [1.0])}


def test_unsubscribing_from_a_channel_not_subscribed_to_answers_and_ends_nothing(
    log_output: Any, emitted_metrics: Callable[[], Emitted]
) -> None:
    # Given bob, a member of lobby:1 through no connection
    # When he unsubscribes from it
    reply = request("b-pc", action="unsubscribe", channel="lobby:1", ref="u")
    # Then he is answered as if he had been, and nothing is logged, counted or announced
    assert (reply["type"], reply["data"], reply["ref"]) == (
        "unsubscribed",
        {"channel": "lobby:1"},
        "u",
    )
    assert lines(log_output, "unsubscribed") == []
    assert emitted_metrics() == {}
    assert queued() == []


def test_presence_shows_each_member_whole_and_where_the_next_page_starts() -> None:
    # Given alice on two connections and bob on one in lobby:1
    for cid in ("a-pc", "a-mobile", "b-pc"):
        request(cid, action="subscribe", channel="lobby:1")
    # When bob asks who is there
    reply = request("b-pc", action="presence", channel="lobby:1")
    # Then each member shows its user, info and connection count; no page follows
    assert reply["type"] == "presence"
    assert reply["data"] == {
        "channel": "lobby:1",
        "count": 2,
        "members": [
            {"userId": "alice", "info": None, "connections": 2},
            {"userId": "bob", "info": None, "connections": 1},
        ],
        "next": None,
    }


def test_presence_answers_pages_of_its_page_size_each_saying_where_the_next_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given pages of one member, and alice and bob in lobby:1
    monkeypatch.setattr(subscriptions, "MEMBERS_PER_PAGE", 1)
    for cid in ("a-pc", "b-pc"):
        request(cid, action="subscribe", channel="lobby:1")
    # When bob asks who is there, then for the page after the first
    first = request("b-pc", action="presence", channel="lobby:1")["data"]
    second = request("b-pc", action="presence", channel="lobby:1", after=first["next"])["data"]
    # Then each page holds one member and the count of all; the last says none follow
    assert [(m["userId"], first["count"]) for m in first["members"]] == [("alice", 2)]
    assert first["next"] == "alice"
    assert [(m["userId"], second["count"]) for m in second["members"]] == [("bob", 2)]
    assert second["next"] is None


def test_a_presence_event_the_queue_does_not_take_is_logged_and_counted(
    log_output: Any, emitted_metrics: Callable[[], Emitted]
) -> None:
    # Given a queue that no longer exists
    boto3.client("sqs", region_name=REGION).delete_queue(QueueUrl=QUEUE_URL)
    # When bob joins lobby:1
    reply = request("b-pc", action="subscribe", channel="lobby:1")
    # Then he is subscribed; the lost join is logged and counted
    assert reply["type"] == "subscribed"
    assert lines(log_output, "presence event not queued") == [
        {
            "level": "WARNING",
            "message": "presence event not queued",
            "channel": "lobby:1",
            "event": "presence.join",
        }
    ]
    assert emitted_metrics() == {
        "Subscribed": ("Count", [1.0]),
        "PresenceEventsLost": ("Count", [1.0]),
    }


@pytest.mark.parametrize(
    ("since", "data"),
    [
        (None, {"channel": "room:1"}),
        ({"epoch": "0123456789abcdef", "seq": 1}, {"channel": "room:1", "recovered": False}),
    ],
)
def test_a_channel_position_that_cannot_be_read_leaves_the_subscription_standing(
    since: Any,
    data: dict[str, Any],
    faults: DynamoDBFaults,
    log_output: Any,
    emitted_metrics: Callable[[], Emitted],
) -> None:
    # Given a history table that cannot be read
    faults.fail("GetItem", table=HISTORY_TABLE)
    # When bob subscribes to room:1 (which keeps history), with or without since
    frame: dict[str, Any] = {"action": "subscribe", "channel": "room:1"}
    if since is not None:
        frame["since"] = since
    reply = request("b-pc", **frame)
    # Then he is subscribed without a position (nor a recovery); the failure is logged with
    # its exception and counted
    assert (reply["type"], reply["data"]) == ("subscribed", data)
    [line] = [line for line in logged(log_output) if line["message"] == "channel position not read"]
    assert {key: line[key] for key in ("level", "connection_id", "channel", "exception_name")} == {
        "level": "ERROR",
        "connection_id": "b-pc",
        "channel": "room:1",
        "exception_name": "StorageUnavailable",
    }
    assert emitted_metrics() == {
        "Subscribed": ("Count", [1.0]),
        "StorageErrors": ("Count", [1.0]),
    }


def test_a_channels_table_that_cannot_be_written_answers_unavailable(
    faults: DynamoDBFaults,
) -> None:
    # Given DynamoDB failing every transaction
    faults.fail("TransactWriteItems")
    # When bob subscribes
    reply = request("b-pc", action="subscribe", channel="room:1", ref="s")
    # Then he is told channels are unavailable for now
    assert (reply["type"], reply["data"], reply["ref"]) == (
        "error",
        {"code": "unavailable", "message": "channels are unavailable, try again later"},
        "s",
    )


@pytest.mark.parametrize(("remaining_ms", "replayed"), [(30_000, ["m-1"]), (900, [])])
def test_a_subscribe_with_since_replays_only_within_the_invocations_time(
    remaining_ms: int, replayed: list[str], management_api: FakeManagementApi
) -> None:
    # Given bob subscribed to room:1 at its position, then away while a message went
    first = request("b-pc", action="subscribe", channel="room:1")["data"]
    request("b-pc", action="unsubscribe", channel="room:1")
    send.handler({"channel": "room:1", "id": "m-1", "payload": PAYLOAD}, FakeLambdaContext())
    # When he subscribes again from there, in an invocation with time for the replay, or
    # with less than the reply's margin (1 s) left
    since = {"epoch": first["epoch"], "seq": first["seq"]}
    reply = request(
        "b-pc", remaining_ms=remaining_ms, action="subscribe", channel="room:1", since=since
    )
    # Then the missed message is replayed only when there was time, and the reply says so
    posted = [json.loads(body)["id"] for body in management_api.received.get("b-pc", [])]
    assert posted == replayed
    assert reply["data"] == {
        "channel": "room:1",
        "epoch": first["epoch"],
        "seq": 1,
        "recovered": bool(replayed),
    }
