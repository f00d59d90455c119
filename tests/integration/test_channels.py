"""Channels and presence under moto: the channel route, the sender's channel target, and the
connections table's stream ending what a connection held."""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from handlers import channel, lifecycle, sender
from tests.conftest import QUEUE_URL, REGION, TABLE, FakeLambdaContext, load_event, logged
from tests.contract import assert_valid
from tests.fakes.management_api import FakeManagementApi
from tests.support import PAYLOAD, add_connection, drain, frames, sqs_event, sqs_record
from wspush.channels import access
from wspush.clock import now_ms
from wspush.fanout import queues
from wspush.settings import get_settings
from wspush.store import channels as store
from wspush.store import connections
from wspush.store.connections import ConnectionRecord

pytestmark = pytest.mark.usefixtures("aws")


def request(connection_id: str, context: FakeLambdaContext, **frame: Any) -> dict[str, Any]:
    """Send one channel frame as API Gateway would; the reply frame the client receives."""
    event = load_event("ws_message.json")
    event["requestContext"]["connectionId"] = connection_id
    event["requestContext"]["routeKey"] = frame.get("action", "subscribe")
    event["body"] = json.dumps(frame)
    response = channel.handler(event, context)
    assert response["statusCode"] == 200
    reply: dict[str, Any] = json.loads(response["body"])
    return reply


def subscribe(cid: str, name: str, context: FakeLambdaContext, ref: str = "r1") -> dict[str, Any]:
    return request(cid, context, action="subscribe", channel=name, ref=ref)


def queued_events() -> list[dict[str, Any]]:
    """Presence events queued for the channel (and removed from the queue)."""
    return [json.loads(record["body"]) for record in drain(QUEUE_URL)]


def deliver_queue(context: FakeLambdaContext) -> None:
    while records := drain(QUEUE_URL):
        for start in range(0, len(records), 10):
            response = sender.handler(sqs_event(*records[start : start + 10]), context)
            assert response["batchItemFailures"] == []


def test_subscribe_answers_with_the_channel_and_echoes_the_ref(
    lambda_context: FakeLambdaContext,
) -> None:
    # Given an open connection
    add_connection("c-1", "alice")
    # When it subscribes to room:42 with a ref
    reply = subscribe("c-1", "room:42", lambda_context, ref="r-7")
    # Then the reply is the contract's subscribed frame, with the ref at the top level, and
    # (room keeps history) the channel's position: a new stream, at seq 0
    assert reply["type"] == "subscribed"
    assert reply["data"] == {"channel": "room:42", "epoch": reply["data"]["epoch"], "seq": 0}
    assert len(reply["data"]["epoch"]) == 16
    assert reply["ref"] == "r-7"
    assert {"id", "ts"} <= reply.keys()
    assert_valid("frame", reply)
    assert store.channels_of("c-1") == ["room:42"]


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("room", "invalid_channel"),
        ("Room:1", "invalid_channel"),
        ("room:" + "x" * 129, "invalid_channel"),
        ("room:a/b", "invalid_channel"),
        (42, "invalid_channel"),
        ("nowhere:1", "unknown_namespace"),
        ("secret:plans", "forbidden"),
    ],
)
def test_a_refused_subscribe_says_why_and_stores_nothing(
    name: Any, code: str, lambda_context: FakeLambdaContext
) -> None:
    # Given an open connection whose token grants no channel
    add_connection("c-1", "alice")
    # When it asks for a channel it may not have
    reply = request("c-1", lambda_context, action="subscribe", channel=name, ref="r2")
    # Then the error names the code, echoes the ref, and nothing is stored
    assert reply["type"] == "error"
    assert reply["data"]["code"] == code
    assert reply["data"]["message"]
    assert reply["ref"] == "r2"
    assert_valid("error-frame", reply)
    assert store.channels_of("c-1") == []


def test_the_tokens_channels_claim_opens_a_restricted_namespace(
    lambda_context: FakeLambdaContext,
) -> None:
    # Given a connection whose token granted secret:* and nothing else
    now = now_ms()
    connections.save(
        ConnectionRecord("c-1", "alice", "pc", now, now, grants=("secret:*",)), ttl_seconds=7_800
    )
    # When it subscribes to a secret channel
    # Then it is subscribed
    assert subscribe("c-1", "secret:plans", lambda_context)["type"] == "subscribed"


def test_a_connection_holds_at_most_the_configured_number_of_channels(
    lambda_context: FakeLambdaContext,
) -> None:
    # Given a connection at the limit (5 in the tests)
    add_connection("c-1", "alice")
    for index in range(5):
        assert subscribe("c-1", f"room:{index}", lambda_context)["type"] == "subscribed"
    # When it subscribes to one more
    reply = subscribe("c-1", "room:5", lambda_context)
    # Then it is refused with its own code; subscribing again to one it holds is fine
    assert reply["data"]["code"] == "too_many_channels"
    assert reply["data"]["channel"] == "room:5"
    assert subscribe("c-1", "room:0", lambda_context)["type"] == "subscribed"
    # And after an unsubscribe there is room again
    left = request("c-1", lambda_context, action="unsubscribe", channel="room:1", ref="u")
    assert (left["type"], left["data"], left["ref"]) == ("unsubscribed", {"channel": "room:1"}, "u")
    assert subscribe("c-1", "room:5", lambda_context)["type"] == "subscribed"


def test_a_presence_channel_refuses_members_past_its_limit(
    lambda_context: FakeLambdaContext,
) -> None:
    # Given tiny:* allows 2 members, and two users in tiny:1
    for cid, user in (("c-1", "alice"), ("c-2", "bob"), ("c-3", "carol"), ("c-4", "alice")):
        add_connection(cid, user)
    assert subscribe("c-1", "tiny:1", lambda_context)["type"] == "subscribed"
    assert subscribe("c-2", "tiny:1", lambda_context)["type"] == "subscribed"
    # When a third user joins
    # Then they are refused, while a member's second connection still joins
    assert subscribe("c-3", "tiny:1", lambda_context)["data"]["code"] == "channel_full"
    assert subscribe("c-4", "tiny:1", lambda_context)["type"] == "subscribed"
    assert store.channels_of("c-3") == []


def test_subscribing_a_connection_that_is_gone_is_refused(
    lambda_context: FakeLambdaContext,
) -> None:
    # Given no stored connection c-9
    # When it subscribes
    reply = subscribe("c-9", "room:1", lambda_context)
    # Then it is refused and no subscription outlives a row that does not exist
    assert reply["data"]["code"] == "unknown_connection"
    assert store.channels_of("c-9") == []


def test_presence_lists_members_counted_over_their_connections(
    lambda_context: FakeLambdaContext,
) -> None:
    # Given alice on two connections and bob on one in lobby:1
    for cid, user in (("a-1", "alice"), ("a-2", "alice"), ("b-1", "bob")):
        add_connection(cid, user)
        assert subscribe(cid, "lobby:1", lambda_context)["type"] == "subscribed"
    # When bob asks who is there
    reply = request("b-1", lambda_context, action="presence", channel="lobby:1", ref="p")
    # Then the count is users, and each member says how many connections they have
    assert reply["type"] == "presence"
    assert reply["ref"] == "p"
    data = reply["data"]
    assert data["count"] == 2
    assert data["next"] is None
    assert {m["userId"]: m["connections"] for m in data["members"]} == {"alice": 2, "bob": 1}


def test_presence_pages_big_member_lists(
    lambda_context: FakeLambdaContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given 5 members and pages of 2
    from wspush.channels import subscriptions

    monkeypatch.setattr(subscriptions, "MEMBERS_PER_PAGE", 2)
    for index in range(5):
        add_connection(f"c-{index}", f"user-{index}")
        subscribe(f"c-{index}", "lobby:big", lambda_context)
    # When c-0 follows next until it is null
    seen: list[str] = []
    after = None
    while True:
        frame: dict[str, Any] = {"action": "presence", "channel": "lobby:big"}
        if after:
            frame["after"] = after
        data = request("c-0", lambda_context, **frame)["data"]
        assert data["count"] == 5
        seen += [m["userId"] for m in data["members"]]
        after = data["next"]
        if after is None:
            break
    # Then every member was listed once
    assert sorted(seen) == [f"user-{index}" for index in range(5)]


def test_presence_needs_a_subscription_and_a_presence_namespace(
    lambda_context: FakeLambdaContext,
) -> None:
    add_connection("c-1", "alice")
    assert request("c-1", lambda_context, action="presence", channel="lobby:1")["data"]["code"] == (
        "not_subscribed"
    )
    subscribe("c-1", "room:1", lambda_context)
    assert request("c-1", lambda_context, action="presence", channel="room:1")["data"]["code"] == (
        "no_presence"
    )


def test_join_and_leave_are_told_once_per_user_not_per_connection(
    lambda_context: FakeLambdaContext,
) -> None:
    # Given alice with two connections
    add_connection("a-1", "alice")
    add_connection("a-2", "alice")
    # When both join lobby:1, then both leave
    subscribe("a-1", "lobby:1", lambda_context)
    subscribe("a-2", "lobby:1", lambda_context)
    joins = queued_events()
    request("a-1", lambda_context, action="unsubscribe", channel="lobby:1")
    assert queued_events() == []  # alice is still there through a-2
    request("a-2", lambda_context, action="unsubscribe", channel="lobby:1")
    leaves = queued_events()
    # Then one presence.join (not to the joining connection) and one presence.leave
    assert [e["payload"]["type"] for e in joins] == ["presence.join"]
    assert joins[0]["channel"] == "lobby:1"
    assert joins[0]["excludeConnectionIds"] == ["a-1"]
    assert joins[0]["payload"]["data"] == {"channel": "lobby:1", "userId": "alice", "info": None}
    assert [e["payload"] for e in leaves] == [
        {"type": "presence.leave", "data": {"channel": "lobby:1", "userId": "alice"}}
    ]
    assert store.members("lobby:1", limit=10).count == 0


def test_a_member_changed_between_read_and_write_is_read_again(
    lambda_context: FakeLambdaContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given alice's a-1 joining lobby:1 while her a-2 joins at the same moment: the second
    # writer commits between the first one's read and its transaction
    add_connection("a-1", "alice")
    add_connection("a-2", "alice")
    real_read = store._read
    raced = []

    def read_then_race(channel: str, key: str, *, consistent: bool = True) -> Any:
        item = real_read(channel, key, consistent=consistent)
        if key == "u#alice" and not raced:
            raced.append(True)
            record = connections.get("a-2")
            assert record is not None
            store.subscribe(
                record,
                "lobby:1",
                expires=connections.expiry(record.connected_at, 7_800),
                max_channels=5,
                presence=store.Presence(None, 10),
            )
        return item

    monkeypatch.setattr(store, "_read", read_then_race)
    # When a-1's subscribe runs
    first = store.subscribe(
        connections.get("a-1"),  # type: ignore[arg-type]
        "lobby:1",
        expires=connections.expiry(now_ms(), 7_800),
        max_channels=5,
        presence=store.Presence(None, 10),
    )
    # Then its transaction failed on the changed member, it read again, and it is not the
    # user's first join (a-2's was): one member, two connections, a count of one
    assert raced
    assert first is False
    page = store.members("lobby:1", limit=10)
    assert page.count == 1
    assert [(m.user_id, m.connections) for m in page.members] == [("alice", 2)]


def test_a_channel_message_reaches_its_subscribers_only_with_the_channel_in_the_frame(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    # Given a and b subscribed to room:42 (b on mobile), c connected but not subscribed
    add_connection("a", "alice")
    add_connection("b", "bob", "mobile")
    add_connection("c", "carol")
    subscribe("a", "room:42", lambda_context)
    subscribe("b", "room:42", lambda_context)
    # When a service publishes to the channel for pc only, and another message to all of it
    for message in (
        {"id": "m-pc", "channel": "room:42", "platform": "pc", "payload": PAYLOAD},
        {"id": "m-all", "channel": "room:42", "payload": PAYLOAD},
    ):
        response = sender.handler(sqs_event(sqs_record(message)), lambda_context)
        assert response["batchItemFailures"] == []
    # Then the filters apply, c gets nothing, and each frame names the channel
    assert [f["id"] for f in frames(management_api, "a")] == ["m-pc", "m-all"]
    assert [f["id"] for f in frames(management_api, "b")] == ["m-all"]
    assert frames(management_api, "c") == []
    assert all(f["channel"] == "room:42" for f in frames(management_api, "a"))
    for frame in frames(management_api, "a"):
        assert_valid("frame", frame)


def test_publishing_to_an_undeclared_namespace_is_refused(
    lambda_context: FakeLambdaContext,
) -> None:
    from handlers import send

    answer = send.handler({"channel": "nowhere:1", "payload": PAYLOAD}, lambda_context)
    assert answer["error"]["code"] == "unknown_namespace"
    answer = send.handler({"channel": "room", "payload": PAYLOAD}, lambda_context)
    assert answer["error"]["code"] == "invalid_channel"


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("WSPUSH_CONNECTIONS_PER_SEGMENT", "10")
    monkeypatch.setenv("WSPUSH_REQUEUE_DELAY_SECONDS", "0")
    monkeypatch.setattr(queues, "MAX_DELAY_SECONDS", 0)
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.mark.usefixtures("small_pages")
def test_a_big_channel_is_delivered_page_by_page_by_a_chain_of_invocations(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    # Given 35 subscribers (pages of 10)
    ids = [f"c-{index:02d}" for index in range(35)]
    for cid in ids:
        add_connection(cid, f"user-{cid}")
        subscribe(cid, "room:big", lambda_context)
    drain(QUEUE_URL)
    # When a message to the channel is taken by the sender, and the shares it queues too
    first = sender.handler(
        sqs_event(sqs_record({"id": "m-big", "channel": "room:big", "payload": PAYLOAD})),
        lambda_context,
    )
    assert first["batchItemFailures"] == []
    deliver_queue(lambda_context)
    # Then every subscriber got it exactly once, with the channel in the frame
    received = Counter(
        {cid: sum(1 for f in frames(management_api, cid) if f["id"] == "m-big") for cid in ids}
    )
    assert set(received.values()) == {1}
    assert all(f["channel"] == "room:big" for cid in ids for f in frames(management_api, cid))


@pytest.mark.usefixtures("small_pages")
def test_a_channel_message_requeued_for_some_recipients_keeps_its_channel(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    from tests.fakes.management_api import Reply

    # Given a subscriber whose first post is throttled
    add_connection("a", "alice")
    subscribe("a", "room:1", lambda_context)
    drain(QUEUE_URL)
    management_api.script("a", *([Reply.aws(429)] * 3))
    # When the message is delivered, requeued for a, and delivered again
    sender.handler(
        sqs_event(sqs_record({"id": "m-1", "channel": "room:1", "payload": PAYLOAD})),
        lambda_context,
    )
    deliver_queue(lambda_context)
    # Then a got it once, still naming its channel
    assert [(f["id"], f.get("channel")) for f in frames(management_api, "a")] == [("m-1", "room:1")]


def stream_records() -> list[dict[str, Any]]:
    """The connections table's stream records so far, as Lambda hands them to a function."""
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    arn = dynamodb.describe_table(TableName=TABLE)["Table"]["LatestStreamArn"]
    # botocore's account-based endpoint for streams is one moto does not route.
    streams = boto3.client(
        "dynamodbstreams",
        region_name=REGION,
        endpoint_url=f"https://streams.dynamodb.{REGION}.amazonaws.com",
    )
    records: list[dict[str, Any]] = []
    for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
        iterator = streams.get_shard_iterator(
            StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        for record in streams.get_records(ShardIterator=iterator)["Records"]:
            record["eventSourceARN"] = arn
            record["dynamodb"]["ApproximateCreationDateTime"] = int(
                record["dynamodb"]["ApproximateCreationDateTime"].timestamp()
            )
            records.append(record)
    return records


@pytest.fixture
def user_events() -> str:
    """An SQS queue receiving every wspush event put on the default bus; its URL."""
    sqs = boto3.client("sqs", region_name=REGION)
    url = sqs.create_queue(QueueName="user-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events = boto3.client("events", region_name=REGION)
    events.put_rule(Name="wspush-users", EventPattern=json.dumps({"source": ["wspush"]}))
    events.put_targets(Rule="wspush-users", Targets=[{"Id": "queue", "Arn": arn}])
    return url


def received_events(url: str) -> list[dict[str, Any]]:
    sqs = boto3.client("sqs", region_name=REGION)
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(m["Body"]) for m in messages]


def run_lifecycle(records: list[dict[str, Any]], context: FakeLambdaContext) -> None:
    response = lifecycle.handler({"Records": records}, context)
    assert response["batchItemFailures"] == []


def test_a_closed_connection_ends_its_subscriptions_and_its_users_presence(
    lambda_context: FakeLambdaContext, user_events: str
) -> None:
    # Given alice (one connection) and bob in lobby:1, alice also in room:1
    add_connection("a-1", "alice")
    add_connection("b-1", "bob")
    for cid, name in (("a-1", "lobby:1"), ("a-1", "room:1"), ("b-1", "lobby:1")):
        subscribe(cid, name, lambda_context)
    drain(QUEUE_URL)
    # When alice's row is deleted (as $disconnect, a 410 or the TTL does) and the stream's
    # records reach the lifecycle function, the deletion twice (after a failure, a stream
    # hands over again the records from the failed one on)
    connections.delete("a-1")
    records = stream_records()
    run_lifecycle(records, lambda_context)
    run_lifecycle(records[-1:], lambda_context)
    # Then her subscriptions are gone, lobby:1 is told once that she left, and EventBridge
    # heard each user come online once and alice go offline once
    assert store.channels_of("a-1") == []
    assert [e["payload"]["type"] for e in queued_events()] == ["presence.leave"]
    assert store.members("lobby:1", limit=10).count == 1
    told = sorted((e["detail-type"], e["detail"]["userId"]) for e in received_events(user_events))
    assert told == [("user.offline", "alice"), ("user.online", "alice"), ("user.online", "bob")]


def test_user_online_and_offline_follow_the_first_and_last_connection(
    lambda_context: FakeLambdaContext, user_events: str
) -> None:
    # Given alice opening two connections, then closing both
    add_connection("a-1", "alice", "pc")
    add_connection("a-2", "alice", "mobile")
    connections.delete("a-1")
    connections.delete("a-2")
    # When the lifecycle function takes the stream
    run_lifecycle(stream_records(), lambda_context)
    # Then one user.online (the first connection) and one user.offline (the last), in the
    # contract's shape
    events = received_events(user_events)
    assert [e["detail-type"] for e in events] == ["user.online", "user.offline"]
    online, offline = events
    assert online["source"] == "wspush"
    assert online["detail"]["connectionId"] == "a-1"
    assert offline["detail"]["connectionId"] == "a-2"
    assert set(online["detail"]) == {"userId", "connectionId", "platform", "at"}


@pytest.fixture
def authorizer(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stubber]:
    """The deployer's authorizer Lambda, answering as the Lambda Invoke API does."""
    monkeypatch.setenv("WSPUSH_CHANNEL_AUTHORIZER", "arn:aws:lambda:us-east-1:1:function:authz")
    get_settings.cache_clear()
    client = boto3.client("lambda", region_name=REGION)
    asked: list[tuple[str, int]] = []

    def lambda_client(region: str, timeout_ms: int) -> Any:
        asked.append((region, timeout_ms))
        return client

    monkeypatch.setattr(access, "_lambda", lambda_client)
    with Stubber(client) as stubber:
        yield stubber
    # (every invocation used a client of the stack's region, bounded by the route's timeout)
    assert set(asked) <= {(REGION, 2_000)}
    monkeypatch.undo()
    get_settings.cache_clear()


def answer(body: Any, *, function_error: str | None = None) -> dict[str, Any]:
    payload = json.dumps(body).encode()
    response: dict[str, Any] = {
        "StatusCode": 200,
        "Payload": StreamingBody(io.BytesIO(payload), len(payload)),
    }
    if function_error:
        response["FunctionError"] = function_error
    return response


def test_the_authorizer_is_asked_last_and_its_info_shows_in_presence(
    lambda_context: FakeLambdaContext, authorizer: Stubber
) -> None:
    # Given an authorizer that allows alice into secret:plans with her display name
    add_connection("a-1", "alice")
    authorizer.add_response(
        "invoke",
        answer({"allow": True, "info": {"name": "Alice"}}),
        {
            "FunctionName": "arn:aws:lambda:us-east-1:1:function:authz",
            "InvocationType": "RequestResponse",
            "Payload": json.dumps(
                {"userId": "alice", "connectionId": "a-1", "channel": "secret:plans", "grants": []}
            ).encode(),
        },
    )
    # When she subscribes to it (and to room:1, which never asks the authorizer)
    assert subscribe("a-1", "secret:plans", lambda_context)["type"] == "subscribed"
    assert subscribe("a-1", "room:1", lambda_context)["type"] == "subscribed"
    # Then the member shows the authorizer's info
    data = request("a-1", lambda_context, action="presence", channel="secret:plans")["data"]
    assert data["members"] == [{"userId": "alice", "info": {"name": "Alice"}, "connections": 1}]
    authorizer.assert_no_pending_responses()


@pytest.mark.parametrize(
    "reply",
    [
        answer({"allow": False}),
        answer({"allow": "yes"}),
        answer({"errorMessage": "boom", "errorType": "Exception"}, function_error="Unhandled"),
        answer(["allow"]),
        None,  # the service fails
    ],
    ids=["deny", "not-true", "function-error", "not-an-object", "service-error"],
)
def test_an_authorizer_that_does_not_allow_refuses(
    lambda_context: FakeLambdaContext, authorizer: Stubber, reply: dict[str, Any] | None
) -> None:
    # Given an authorizer answering anything but allow (or failing)
    add_connection("a-1", "alice")
    if reply is None:
        authorizer.add_client_error("invoke", "ServiceException", http_status_code=500)
    else:
        authorizer.add_response("invoke", reply)
    # When alice subscribes to a restricted channel
    # Then she is refused: the authorizer fails closed
    assert subscribe("a-1", "secret:plans", lambda_context)["data"]["code"] == "forbidden"
    assert store.channels_of("a-1") == []


def raw_answer(payload: bytes) -> dict[str, Any]:
    return {"StatusCode": 200, "Payload": StreamingBody(io.BytesIO(payload), len(payload))}


REFUSED = "the channel authorizer refused the subscription"
FAILED = "the channel authorizer failed"
SILENT = "the channel authorizer did not answer"


@pytest.mark.parametrize(
    ("reply", "message", "log"),
    [
        (answer({"allow": False}), REFUSED, None),
        (answer({"allow": "yes"}), REFUSED, None),
        (
            answer({"errorType": "Exception"}, function_error="Unhandled"),
            FAILED,
            {"message": "channel authorizer failed", "function_error": "Unhandled"},
        ),
        (
            answer(["allow"]),
            FAILED,
            {"message": "channel authorizer failed"},
        ),
        (raw_answer(b""), FAILED, {"message": "channel authorizer failed"}),
        (
            raw_answer(b"{"),
            SILENT,
            {"message": "channel authorizer unavailable", "error": "JSONDecodeError"},
        ),
        (None, SILENT, {"message": "channel authorizer unavailable", "error": "ServiceException"}),
    ],
    ids=["deny", "not-true", "function-error", "not-an-object", "empty", "not-json", "service"],
)
def test_an_authorizer_refusal_says_which_and_only_failures_are_logged_and_counted(
    lambda_context: FakeLambdaContext,
    authorizer: Stubber,
    emitted_metrics: Any,
    log_output: io.StringIO,
    reply: dict[str, Any] | None,
    message: str,
    log: dict[str, Any] | None,
) -> None:
    # Given an authorizer that refuses, fails or cannot be reached
    add_connection("a-1", "alice")
    if reply is None:
        authorizer.add_client_error("invoke", "ServiceException", http_status_code=500)
    else:
        authorizer.add_response("invoke", reply)
    # When alice subscribes to a restricted channel
    answered = subscribe("a-1", "secret:plans", lambda_context)
    # Then the refusal names the channel and says which it was
    assert answered["data"] == {"code": "forbidden", "message": message, "channel": "secret:plans"}
    # And a failure (not a refusal) is logged as a warning and counted
    warnings = [
        {k: v for k, v in line.items() if k != "level"}
        for line in logged(log_output)
        if line["level"] == "WARNING"
    ]
    assert warnings == ([log] if log else [])
    emitted = emitted_metrics()
    if log:
        assert emitted["AuthorizerErrors"] == ("Count", [1.0])
    else:
        assert "AuthorizerErrors" not in emitted


@pytest.mark.parametrize(("length", "shown"), [(1_024, True), (1_025, False)])
def test_member_info_of_up_to_a_kibibyte_of_compact_json_shows_in_presence(
    lambda_context: FakeLambdaContext,
    authorizer: Stubber,
    log_output: io.StringIO,
    length: int,
    shown: bool,
) -> None:
    # Given an authorizer allowing alice with info of ``length`` bytes as compact JSON
    info = {"name": "n" * (length - len('{"name":""}'))}
    add_connection("a-1", "alice")
    authorizer.add_response("invoke", answer({"allow": True, "info": info}))
    # When she subscribes
    assert subscribe("a-1", "secret:plans", lambda_context)["type"] == "subscribed"
    # Then presence shows the info only if it is within the limit; a larger one is dropped,
    # saying so, and she is still a member
    data = request("a-1", lambda_context, action="presence", channel="secret:plans")["data"]
    (member,) = data["members"]
    assert member.get("info") == (info if shown else None)
    dropped = {"level": "WARNING", "message": "channel authorizer's member info dropped: too large"}
    assert (dropped in logged(log_output)) is not shown


def test_the_authorizer_is_asked_once_within_the_routes_time() -> None:
    # When wspush makes its client for an authorizer timeout of 1.5 s
    client = access._lambda("eu-west-1", 1_500)
    # Then the client connects and reads within that time, and tries once
    config = client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (1.5, 1.5)
    assert config.retries == {"mode": "standard", "total_max_attempts": 1}
    assert client.meta.region_name == "eu-west-1"
    assert access._lambda("eu-west-1", 1_500) is client  # made once per process


def test_a_channel_the_token_does_not_grant_is_forbidden_naming_it(
    lambda_context: FakeLambdaContext,
) -> None:
    # Given a connection whose token grants nothing, and no authorizer to ask
    add_connection("c-1", "alice")
    # When it subscribes to a channel of a namespace open only to grants
    reply = subscribe("c-1", "secret:plans", lambda_context)
    # Then it is forbidden, saying so and naming the channel
    assert reply["data"] == {
        "code": "forbidden",
        "message": "this connection may not subscribe to the channel",
        "channel": "secret:plans",
    }
