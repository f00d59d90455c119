"""Recovery under moto: streams' positions, seq allocation through the send and sender
Lambdas, hello / recover, subscribe with since, and replay bounds."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import boto3
import pytest
from pynamodb.exceptions import TransactWriteError

from handlers import channel, send, sender, welcome
from tests.conftest import (
    HISTORY_TABLE,
    QUEUE_URL,
    REGION,
    Emitted,
    FakeLambdaContext,
    load_event,
    logged,
)
from tests.contract import assert_valid
from tests.fakes.management_api import FakeManagementApi, Reply
from tests.support import (
    PAYLOAD,
    add_connection,
    attributes_of,
    drain,
    frames,
    sqs_event,
    sqs_record,
)
from wspush.clock import now_ms
from wspush.fanout import queues
from wspush.history import recovery
from wspush.history.streams import Since, Stream
from wspush.settings import History, get_settings
from wspush.store import history
from wspush.store.history import Span

pytestmark = pytest.mark.usefixtures("aws")

KEEP = History(size=100, ttl_seconds=3600)


def route(
    handler: Any, connection_id: str, context: FakeLambdaContext, **frame: Any
) -> dict[str, Any]:
    """Send one frame to a route as API Gateway would; the reply frame the client receives."""
    event = load_event("ws_message.json")
    event["requestContext"]["connectionId"] = connection_id
    event["requestContext"]["routeKey"] = frame["action"]
    event["body"] = json.dumps(frame)
    response = handler.handler(event, context)
    assert response["statusCode"] == 200
    reply: dict[str, Any] = json.loads(response["body"])
    assert_valid("frame", reply)
    return reply


def to_user(user: str, message_id: str, context: FakeLambdaContext) -> dict[str, Any]:
    """A message to ``user`` through the send Lambda."""
    answer: dict[str, Any] = send.handler(
        {"userId": user, "id": message_id, "payload": PAYLOAD}, context
    )
    return answer


def append(stream: str, message_id: str) -> int:
    return history.append(
        stream, message_id, lambda seq: b'{"id":"%s","seq":%d}' % (message_id.encode(), seq),
        KEEP, now_ms=now_ms(),
    ).seq  # fmt: skip


@pytest.fixture(autouse=True)
def no_requeue_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    """Re-queued messages become visible at once so tests can drain them."""
    monkeypatch.setattr(queues, "MAX_DELAY_SECONDS", 0)


@pytest.fixture
def configure(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Set wspush variables for one test (settings are read once per process)."""

    def set_variables(**variables: str) -> None:
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()

    yield set_variables
    get_settings.cache_clear()


@pytest.fixture
def alice(management_api: FakeManagementApi) -> FakeManagementApi:
    add_connection("a-pc", "alice")
    return management_api


# --- the store --------------------------------------------------------------------------


def test_a_stream_gets_its_epoch_once_and_seqs_one_by_one() -> None:
    # Given a stream never written to: its position starts it at seq 0
    start = history.position("u:alice", now_ms=now_ms())
    assert start.seq == 0
    # When three messages are appended
    seqs = [append("u:alice", f"m-{n}") for n in range(3)]
    # Then they get 1, 2, 3 in the same epoch, and the position says 3
    assert seqs == [1, 2, 3]
    assert history.position("u:alice", now_ms=now_ms()) == replace(start, seq=3)


def test_a_message_appended_again_keeps_its_seq() -> None:
    # Given two messages appended
    assert [append("u:alice", "m-1"), append("u:alice", "m-2")] == [1, 2]
    # When the first is appended again (SQS redelivered it, a send was retried)
    # Then it keeps its place and the stream does not move
    assert append("u:alice", "m-1") == 1
    assert history.position("u:alice", now_ms=now_ms()).seq == 2


def test_a_failed_append_leaves_no_hole(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a stream at seq 1, and a transaction DynamoDB refuses (throttled) once
    append("u:alice", "m-1")
    real = history.TransactWrite

    class Refused(real):  # type: ignore[misc, valid-type]
        def __exit__(self, *exc: Any) -> None:
            raise TransactWriteError("throttled")

    monkeypatch.setattr(history, "TransactWrite", Refused)
    with pytest.raises(history.StorageUnavailable, match=r"^could not append to the stream$"):
        append("u:alice", "m-2")
    monkeypatch.setattr(history, "TransactWrite", real)
    # When it is tried again
    # Then it takes seq 2: nothing of the failed write is left
    assert append("u:alice", "m-2") == 2
    epoch = history.position("u:alice", now_ms=now_ms()).epoch
    kept = history.read(Span("u:alice", epoch, 0, 2), now_ms=now_ms(), max_bytes=10_000)
    assert [k.seq for k in kept or []] == [1, 2]


def test_concurrent_publishers_never_share_a_seq() -> None:
    # Given 6 publishers appending 5 messages each to one stream at the same moment
    # (DynamoDB serializes each item's writes; the fixture makes each moto call atomic)
    start = threading.Barrier(6)
    given: dict[str, int] = {}
    lock = threading.Lock()

    def publish(writer: int) -> None:
        start.wait()
        for n in range(5):
            seq = append("c:room:42", f"w{writer}-{n}")
            with lock:
                given[f"w{writer}-{n}"] = seq

    threads = [threading.Thread(target=publish, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then the 30 messages hold seqs 1..30, each once, and the history has every one of them
    assert sorted(given.values()) == list(range(1, 31))
    epoch = history.position("c:room:42", now_ms=now_ms()).epoch
    kept = history.read(Span("c:room:42", epoch, 0, 30), now_ms=now_ms(), max_bytes=10**6)
    assert kept is not None
    assert {json.loads(k.frame)["id"]: k.seq for k in kept} == given


def test_a_read_refuses_a_span_it_does_not_hold_whole() -> None:
    # Given a stream of 5 messages
    for n in range(5):
        append("u:alice", f"m-{n}")
    epoch = history.position("u:alice", now_ms=now_ms()).epoch
    now = now_ms()
    # Then a span it holds is read in order, and only that span
    assert [
        k.seq for k in history.read(Span("u:alice", epoch, 2, 5), now_ms=now, max_bytes=999) or []
    ] == [3, 4, 5]
    # And another epoch, a span past its age, or over the byte bound is refused
    assert history.read(Span("u:alice", "other", 2, 5), now_ms=now, max_bytes=999) is None
    assert history.read(Span("u:alice", epoch, 2, 5), now_ms=now + 3_601_000, max_bytes=999) is None
    assert history.read(Span("u:alice", epoch, 0, 5), now_ms=now, max_bytes=50) is None
    # And a hole (a message gone before the others) is never read as "nothing missed"
    boto3.client("dynamodb", region_name=REGION).delete_item(
        TableName=HISTORY_TABLE,
        Key={"stream": {"S": "u:alice"}, "key": {"S": history.message_key(4)}},
    )
    assert history.read(Span("u:alice", epoch, 2, 5), now_ms=now, max_bytes=999) is None
    # And so is a span reaching past the last message kept, or holding an item without its frame
    assert history.read(Span("u:alice", epoch, 4, 6), now_ms=now, max_bytes=999) is None
    boto3.client("dynamodb", region_name=REGION).update_item(
        TableName=HISTORY_TABLE,
        Key={"stream": {"S": "u:alice"}, "key": {"S": history.message_key(2)}},
        UpdateExpression="REMOVE frame",
    )
    assert history.read(Span("u:alice", epoch, 1, 2), now_ms=now, max_bytes=999) is None
    assert [
        k.seq for k in history.read(Span("u:alice", epoch, 0, 1), now_ms=now, max_bytes=999) or []
    ] == [1]


def test_a_kept_message_is_served_until_the_moment_its_age_passes() -> None:
    # Given a stream of one message, and the moment its age passes (its TTL)
    append("u:alice", "m-1")
    epoch = history.position("u:alice", now_ms=now_ms()).epoch
    expires_ms = int(stored("u:alice", history.message_key(1))["ttl"]) * 1000
    span = Span("u:alice", epoch, 0, 1)
    # Then it is read a millisecond before, and not at that moment
    assert [k.seq for k in history.read(span, now_ms=expires_ms - 1, max_bytes=999) or []] == [1]
    assert history.read(span, now_ms=expires_ms, max_bytes=999) is None


NOW = 1_796_000_000_000  # ms


def stored(stream: str, key: str) -> dict[str, Any]:
    """One history item as DynamoDB holds it (attribute -> plain value)."""
    item = boto3.client("dynamodb", region_name=REGION).get_item(
        TableName=HISTORY_TABLE, Key={"stream": {"S": stream}, "key": {"S": key}}
    )["Item"]
    return {name: next(iter(value.values())) for name, value in item.items()}


@pytest.mark.parametrize(
    ("ttl_seconds", "head_days"),
    [(3_600, 30), (40 * 86_400, 41)],
    ids=["head-kept-a-month", "head-outlives-a-longer-history-by-a-day"],
)
def test_an_append_writes_the_head_the_message_and_its_id_with_their_ages(
    ttl_seconds: int, head_days: int
) -> None:
    # When a message is appended to a stream keeping messages for ``ttl_seconds``
    placed = history.append(
        "u:alice", "m-1", lambda seq: b'{"seq":%d}' % seq,
        History(size=10, ttl_seconds=ttl_seconds), now_ms=NOW,
    )  # fmt: skip
    # Then the message keeps its frame, id, epoch and seq until its age passes
    epoch = placed.position.epoch
    kept_until = str(NOW // 1000 + ttl_seconds)
    assert stored("u:alice", "s#00000000000000000001") == {
        "stream": "u:alice", "key": "s#00000000000000000001", "epoch": epoch, "seq": "1",
        "id": "m-1", "frame": '{"seq":1}', "ttl": kept_until,
    }  # fmt: skip
    # And its id says where it went, as long as the message is kept
    assert stored("u:alice", "i#m-1") == {
        "stream": "u:alice", "key": "i#m-1", "epoch": epoch, "seq": "1", "ttl": kept_until,
    }  # fmt: skip
    # And the head outlives them: a month, or a day past the messages' age if that is longer
    assert stored("u:alice", "#head") == {
        "stream": "u:alice", "key": "#head", "epoch": epoch, "seq": "1",
        "ttl": str(NOW // 1000 + head_days * 86_400),
    }  # fmt: skip
    assert placed == history.Placed(history.Position(epoch, 1), b'{"seq":1}')
    assert len(epoch) == 16
    assert int(epoch, 16) >= 0


def test_a_stream_started_by_reading_its_position_has_a_head_for_a_month() -> None:
    start = history.position("c:room:1", now_ms=NOW)
    assert stored("c:room:1", "#head") == {
        "stream": "c:room:1", "key": "#head", "epoch": start.epoch, "seq": "0",
        "ttl": str(NOW // 1000 + 30 * 86_400),
    }  # fmt: skip
    assert start.seq == 0
    assert len(start.epoch) == 16


def test_a_message_handled_again_after_its_frame_expired_gets_it_made_again() -> None:
    # Given a message appended, whose kept frame DynamoDB has since deleted (its age passed)
    append("u:alice", "m-1")
    boto3.client("dynamodb", region_name=REGION).delete_item(
        TableName=HISTORY_TABLE,
        Key={"stream": {"S": "u:alice"}, "key": {"S": history.message_key(1)}},
    )
    # When it is appended again
    placed = history.append("u:alice", "m-1", lambda seq: b"again %d" % seq, KEEP, now_ms=now_ms())
    # Then it keeps its place, with the frame made again for it
    epoch = history.position("u:alice", now_ms=now_ms()).epoch
    assert placed == history.Placed(history.Position(epoch, 1), b"again 1")


def test_a_message_whose_id_is_found_only_on_a_second_look_keeps_its_seq(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a message appended, and a first read of its id that misses it (as if its marker
    # were not there yet when read)
    append("u:alice", "m-1")
    real_read = history._read
    missed = [True]

    def read(stream: str, key: str) -> history.HistoryItem | None:
        if key == "i#m-1" and missed:
            missed.pop()
            return None
        return real_read(stream, key)

    monkeypatch.setattr(history, "_read", read)
    # When it is appended again
    placed = history.append("u:alice", "m-1", lambda seq: b"x", KEEP, now_ms=now_ms())
    # Then the refused transaction is tried again, and the second look finds its place
    assert (placed.seq, json.loads(placed.frame)["id"]) == (1, "m-1")
    assert history.position("u:alice", now_ms=now_ms()).seq == 1


def test_a_position_read_while_another_starts_the_stream_is_theirs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a stream another caller started just after this one found no head
    theirs = history.position("u:alice", now_ms=NOW)
    real_head = history._head
    missed = [True]

    def head(stream: str) -> history.Position | None:
        return None if missed and missed.pop() else real_head(stream)

    monkeypatch.setattr(history, "_head", head)
    # When this one starts it too
    # Then its conditional write fails, and it reads and returns their head
    assert history.position("u:alice", now_ms=NOW) == theirs


def test_a_head_that_cannot_be_read_or_written_is_storage_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a head that exists but every read misses it
    history.position("u:alice", now_ms=NOW)
    monkeypatch.setattr(history, "_head", lambda stream: None)
    with pytest.raises(history.StorageUnavailable, match=r"^the stream's head could not be read$"):
        history.position("u:alice", now_ms=NOW)


def test_an_append_that_keeps_losing_the_race_gives_up_after_twelve_tries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a stream whose head every append reads as it was before it moved
    append("u:alice", "m-1")
    stale = history._head("u:alice")
    append("u:alice", "m-2")
    monkeypatch.setattr(history, "_head", lambda stream: stale)
    pauses: list[tuple[int, float, float]] = []

    def pause(attempt: int, *, base_seconds: float, cap_seconds: float) -> None:
        pauses.append((attempt, base_seconds, cap_seconds))

    monkeypatch.setattr(history, "pause_before_retry", pause)
    # When a third message is appended
    with pytest.raises(history.StorageUnavailable, match=r"^the stream kept moving; try again$"):
        append("u:alice", "m-3")
    # Then it tried 12 times, pausing (jittered, 5 ms doubling to 200 ms) before each retry
    assert pauses == [(attempt, 0.005, 0.2) for attempt in range(12)]
    monkeypatch.undo()
    assert history.position("u:alice", now_ms=now_ms()).seq == 2


@pytest.mark.parametrize(
    ("operations", "call", "message"),
    [
        (("GetItem",), "position", "could not read the stream"),
        (("PutItem",), "position", "could not start the stream"),
        (("GetItem",), "append", "could not read the stream"),
        (("Query",), "read", "could not read the stream's history"),
    ],
)
def test_history_storage_failures_say_what_failed(
    monkeypatch: pytest.MonkeyPatch, operations: tuple[str, ...], call: str, message: str
) -> None:
    from tests.fakes.dynamodb import DynamoDBFaults, without_retry_backoff

    # Given the history table failing these operations (after botocore's retries)
    epoch = history.position("u:bob", now_ms=NOW).epoch
    without_retry_backoff(monkeypatch)
    DynamoDBFaults().install(monkeypatch).fail(*operations, table=HISTORY_TABLE)
    calls: dict[str, Callable[[], object]] = {
        "position": lambda: history.position("u:alice", now_ms=NOW),
        "append": lambda: append("u:alice", "m-1"),
        "read": lambda: history.read(Span("u:bob", epoch, 0, 1), now_ms=NOW, max_bytes=99),
    }
    # Then the call raises StorageUnavailable saying what could not be done
    with pytest.raises(history.StorageUnavailable, match=f"^{message}$"):
        calls[call]()


def test_a_replay_of_exactly_its_byte_bound_is_read() -> None:
    # Given a stream of 3 messages
    for n in range(3):
        append("u:alice", f"m-{n}")
    epoch = history.position("u:alice", now_ms=now_ms()).epoch
    span = Span("u:alice", epoch, 0, 3)
    size = sum(len(k.frame) for k in history.read(span, now_ms=now_ms(), max_bytes=10**6) or [])
    # Then a bound of exactly their size reads them, one byte less does not
    assert len(history.read(span, now_ms=now_ms(), max_bytes=size) or []) == 3
    assert history.read(span, now_ms=now_ms(), max_bytes=size - 1) is None


def test_an_empty_span_is_not_asked_of_dynamodb(monkeypatch: pytest.MonkeyPatch) -> None:
    # (DynamoDB refuses a BETWEEN whose lower bound is above its upper one; moto answers it)
    from tests.fakes.dynamodb import DynamoDBFaults

    append("u:alice", "m-1")
    epoch = history.position("u:alice", now_ms=now_ms()).epoch
    dynamodb = DynamoDBFaults().install(monkeypatch)
    assert history.read(Span("u:alice", epoch, 1, 1), now_ms=now_ms(), max_bytes=0) == []
    assert dynamodb.calls["Query"] == 0


# --- seq through the send and sender Lambdas ---------------------------------------------


def test_a_message_to_a_user_is_kept_even_with_nobody_connected(
    lambda_context: FakeLambdaContext,
) -> None:
    # When a message goes to bob, who has no connection
    answer = to_user("bob", "m-1", lambda_context)
    # Then nobody received it, but bob's stream holds it at seq 1
    assert answer["targets"] == 0
    position = history.position("u:bob", now_ms=now_ms())
    [kept] = (
        history.read(Span("u:bob", position.epoch, 0, 1), now_ms=now_ms(), max_bytes=10**6) or []
    )
    assert json.loads(kept.frame) == {
        **PAYLOAD,
        "id": "m-1",
        "ts": json.loads(kept.frame)["ts"],
        "seq": 1,
    }


def test_a_requeued_recipient_gets_the_same_seq(
    alice: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    # Given alice's pc throttled for a whole round
    add_connection("a-mobile", "alice", "mobile")
    alice.script("a-pc", *[Reply.aws(429)] * 3)
    # When a message to alice is delivered from the queue, and the re-queued copy too
    record = sqs_record({"userId": "alice", "id": "m-7", "payload": PAYLOAD})
    assert sender.handler(sqs_event(record), lambda_context)["batchItemFailures"] == []
    [requeued] = drain(QUEUE_URL)
    assert attributes_of(requeued)[queues.SEQ] == "1"
    assert sender.handler(sqs_event(requeued), lambda_context)["batchItemFailures"] == []
    # Then both connections got the same frame, seq 1, and the stream holds it once
    assert frames(alice, "a-pc") == frames(alice, "a-mobile")
    assert [f["seq"] for f in frames(alice, "a-pc")] == [1]
    assert history.position("u:alice", now_ms=now_ms()).seq == 1


def test_a_message_delivered_again_by_sqs_keeps_its_seq(
    alice: FakeManagementApi, lambda_context: FakeLambdaContext, configure: Any
) -> None:
    # Given a message delivered, and a record of it that was lost (no idempotency table)
    record = sqs_record({"userId": "alice", "id": "m-8", "payload": PAYLOAD})
    sender.handler(sqs_event(record), lambda_context)
    configure(WSPUSH_PROCESSED_TABLE_NAME="")
    # When SQS delivers it again
    sender.handler(sqs_event(record), lambda_context)
    # Then alice's pc got it twice with the same id and seq (her client drops the second), the
    # very bytes her stream keeps (ts included: when SQS took it, not when it was handled)
    assert [(f["id"], f["seq"]) for f in frames(alice, "a-pc")] == [("m-8", 1), ("m-8", 1)]
    first, again = alice.received["a-pc"]
    epoch = history.position("u:alice", now_ms=now_ms()).epoch
    [kept] = history.read(Span("u:alice", epoch, 0, 1), now_ms=now_ms(), max_bytes=10**6) or []
    assert first == again == kept.frame


def test_a_user_list_gives_each_user_their_own_seq(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    # Given alice with one message already, and bob with none, each with two connections
    for user in ("alice", "bob"):
        add_connection(f"{user[0]}-pc", user)
        add_connection(f"{user[0]}-web", user, "web")
    to_user("alice", "m-0", lambda_context)
    management_api.reset()
    # When one message goes to both
    record = sqs_record({"userIds": ["alice", "bob"], "id": "m-1", "payload": PAYLOAD})
    sender.handler(sqs_event(record), lambda_context)
    # Then each user's connections got the frame with that user's seq
    assert [f["seq"] for f in frames(management_api, "a-pc") + frames(management_api, "a-web")] == [
        2,
        2,
    ]
    assert [f["seq"] for f in frames(management_api, "b-pc") + frames(management_api, "b-web")] == [
        1,
        1,
    ]


def test_a_message_to_a_channel_with_history_carries_channel_and_seq(
    alice: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    # Given alice subscribed to room:42 (history) and lobby... (no history in these tests)
    route(channel, "a-pc", lambda_context, action="subscribe", channel="room:42")
    # When two messages go to the channel
    for n in (1, 2):
        send.handler({"channel": "room:42", "id": f"c-{n}", "payload": PAYLOAD}, lambda_context)
    # Then her frames carry the channel and seq 1, 2; a user message is in another stream
    assert [(f["channel"], f["seq"]) for f in frames(alice, "a-pc")] == [
        ("room:42", 1),
        ("room:42", 2),
    ]
    assert history.position("u:alice", now_ms=now_ms()).seq == 0


def test_the_rest_of_a_big_channel_carries_the_seq_on(
    lambda_context: FakeLambdaContext,
    management_api: FakeManagementApi,
    configure: Any,
) -> None:
    # Given a channel of 5 subscribers read 2 at a time
    configure(WSPUSH_CONNECTIONS_PER_SEGMENT="2")
    for n in range(5):
        add_connection(f"c-{n}", f"u-{n}")
        route(channel, f"c-{n}", lambda_context, action="subscribe", channel="room:big")
    # When a message to it is delivered through the chain of invocations
    records = [sqs_record({"channel": "room:big", "id": "m-big", "payload": PAYLOAD})]
    while records:
        assert sender.handler(sqs_event(*records), lambda_context)["batchItemFailures"] == []
        records = drain(QUEUE_URL)
    # Then all 5 got seq 1, and the stream holds one message
    assert sorted(f["seq"] for n in range(5) for f in frames(management_api, f"c-{n}")) == [1] * 5
    assert history.position("c:room:big", now_ms=now_ms()).seq == 1


def payload_short_of_the_limit_by(room: int) -> dict[str, Any]:
    """A payload whose frame (id ``m-room``) is ``room`` bytes short of the frame limit."""
    from wspush.contract.messages import MAX_CLIENT_FRAME_BYTES

    frame_without_data = len('{"type":"t","data":"","id":"m-room","ts":1796000000000}')
    return {"type": "t", "data": "x" * (MAX_CLIENT_FRAME_BYTES - frame_without_data - room)}


def test_a_message_kept_for_recovery_must_leave_room_for_its_seq(
    lambda_context: FakeLambdaContext,
) -> None:
    # Given a payload whose frame is 10 bytes short of the limit: too little room for a seq
    from wspush.contract.messages import MAX_CLIENT_FRAME_BYTES, SEQ_ROOM

    payload = payload_short_of_the_limit_by(10)
    # When it goes to a user (kept) and to a connection (not kept)
    kept = send.handler({"userId": "bob", "id": "m-room", "payload": payload}, lambda_context)
    direct = send.handler({"connectionId": "b", "id": "m-room", "payload": payload}, lambda_context)
    # Then the kept one is refused, saying why and by how much; the other is sent
    assert kept["error"] == {
        "code": "payload_too_large",
        "message": f"payload is {MAX_CLIENT_FRAME_BYTES - 10} bytes once serialized; a message"
        f" kept for recovery may be at most {MAX_CLIENT_FRAME_BYTES - SEQ_ROOM} bytes (its"
        " frame also carries its seq)",
        "field": "payload",
    }
    assert "error" not in direct


def test_a_kept_message_with_exactly_room_for_its_seq_is_sent(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    # Given bob connected, and a payload whose frame leaves exactly room for the longest seq
    from wspush.contract.messages import MAX_CLIENT_FRAME_BYTES, SEQ_ROOM

    add_connection("b-pc", "bob")
    payload = payload_short_of_the_limit_by(SEQ_ROOM)
    # When it goes to bob
    answer = send.handler({"userId": "bob", "id": "m-room", "payload": payload}, lambda_context)
    # Then it is kept and delivered, its frame within the limit
    assert "error" not in answer
    (frame,) = management_api.received["b-pc"]
    assert json.loads(frame)["seq"] == 1
    assert len(frame) <= MAX_CLIENT_FRAME_BYTES


# --- hello, recover, subscribe with since ------------------------------------------------


def test_hello_tells_the_connection_who_it_is_and_its_stream_position(
    alice: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    # Given two messages to alice
    for n in (1, 2):
        to_user("alice", f"m-{n}", lambda_context)
    # When her connection says hello
    reply = route(welcome, "a-pc", lambda_context, action="hello", ref="h")
    # Then the welcome names the connection, its user, its times and the stream's position
    data = reply["data"]
    assert reply["type"] == "welcome"
    assert reply["ref"] == "h"
    assert data["connectionId"] == "a-pc"
    assert data["userId"] == "alice"
    assert data["expiresAt"] - data["connectedAt"] == 7_200_000
    assert data["stream"] == {"epoch": data["stream"]["epoch"], "seq": 2}


def test_recover_posts_what_was_missed_in_order_then_replies(
    alice: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    # Given alice's position after one message, and three more sent while she was away
    to_user("alice", "m-1", lambda_context)
    since = route(welcome, "a-pc", lambda_context, action="hello")["data"]["stream"]
    alice.gone("a-pc")
    for n in (2, 3, 4):
        to_user("alice", f"m-{n}", lambda_context)
    alice.reset()
    add_connection("a-new", "alice")
    # When her new connection recovers from that position
    reply = route(welcome, "a-new", lambda_context, action="recover", since=since, ref="r")
    # Then the three were posted to it in order, with their ids, ts and seq, then the reply
    assert [(f["id"], f["seq"]) for f in frames(alice, "a-new")] == [
        ("m-2", 2),
        ("m-3", 3),
        ("m-4", 4),
    ]
    assert reply["type"] == "recovered"
    assert reply["data"] == {"epoch": since["epoch"], "seq": 4, "recovered": True}
    assert reply["ref"] == "r"


@pytest.mark.parametrize(
    ("since", "why"),
    [
        ({"epoch": "another", "seq": 1}, "another epoch"),
        ({"epoch": None, "seq": 9}, "ahead of the stream"),
        ({"epoch": None, "seq": 0}, "older than the 3 kept"),
        ({"epoch": None, "seq": 1}, "the oldest it missed (2) is no longer kept"),
    ],
)
def test_recover_says_false_and_posts_nothing_when_history_does_not_reach(
    alice: FakeManagementApi,
    lambda_context: FakeLambdaContext,
    configure: Any,
    since: dict[str, Any],
    why: str,
) -> None:
    # Given a user stream that keeps 3 messages, holding 5
    configure(WSPUSH_USER_HISTORY='{"size": 3, "ttlSeconds": 3600}')
    for n in range(5):
        to_user("alice", f"m-{n}", lambda_context)
    epoch = history.position("u:alice", now_ms=now_ms()).epoch
    alice.reset()
    # When alice recovers from a position it cannot serve
    asked = {**since, "epoch": since["epoch"] or epoch}
    reply = route(welcome, "a-pc", lambda_context, action="recover", since=asked)
    # Then nothing is posted, and the reply says false with the stream's position
    assert frames(alice, "a-pc") == [], why
    assert reply["data"] == {"epoch": epoch, "seq": 5, "recovered": False}


def test_recover_from_the_oldest_position_kept_replays_all_it_keeps(
    alice: FakeManagementApi, lambda_context: FakeLambdaContext, configure: Any
) -> None:
    # Given a user stream that keeps 3 messages, holding 5 (seqs 3-5 kept)
    configure(WSPUSH_USER_HISTORY='{"size": 3, "ttlSeconds": 3600}')
    for n in range(5):
        to_user("alice", f"m-{n}", lambda_context)
    epoch = history.position("u:alice", now_ms=now_ms()).epoch
    alice.reset()
    # When alice recovers from seq 2: she missed exactly the 3 kept
    since = {"epoch": epoch, "seq": 2}
    reply = route(welcome, "a-pc", lambda_context, action="recover", since=since)
    # Then all 3 are posted, and she is whole
    assert [f["seq"] for f in frames(alice, "a-pc")] == [3, 4, 5]
    assert reply["data"] == {"epoch": epoch, "seq": 5, "recovered": True}


@pytest.mark.parametrize(("missed", "whole"), [(5, True), (6, False)])
def test_a_replay_up_to_its_bound_is_whole_and_past_it_is_not_started(
    alice: FakeManagementApi,
    lambda_context: FakeLambdaContext,
    configure: Any,
    missed: int,
    whole: bool,
) -> None:
    # Given alice at seq 3, then ``missed`` messages, and a replay bound of 5
    for n in range(3):
        to_user("alice", f"seen-{n}", lambda_context)
    since = route(welcome, "a-pc", lambda_context, action="hello")["data"]["stream"]
    for n in range(missed):
        to_user("alice", f"m-{n}", lambda_context)
    alice.reset()
    configure(WSPUSH_MAX_REPLAY_MESSAGES="5")
    # When alice recovers
    reply = route(welcome, "a-pc", lambda_context, action="recover", since=since)
    # Then up to the bound (which counts what was missed, not the position) all is replayed;
    # past it she is told to reload instead of replaying part of it
    assert reply["data"]["recovered"] is whole
    assert [f["seq"] for f in frames(alice, "a-pc")] == ([4, 5, 6, 7, 8] if whole else [])


@pytest.mark.parametrize(
    "since",
    [None, "5", {"epoch": "e"}, {"epoch": "", "seq": 1}, {"epoch": "e", "seq": -1},
     {"epoch": "e", "seq": 1.5}, {"epoch": "e", "seq": True}, {"epoch": "e" * 65, "seq": 1},
     {"epoch": "e", "seq": 1, "x": 2}],
)  # fmt: skip
def test_a_malformed_since_gets_invalid_since(
    alice: FakeManagementApi, lambda_context: FakeLambdaContext, since: Any
) -> None:
    # When alice recovers from something that is not a position
    reply = route(welcome, "a-pc", lambda_context, action="recover", since=since, ref="x")
    # Then she is told what is wrong, and nothing is posted
    assert reply["type"] == "error"
    assert reply["data"]["code"] == "invalid_since"
    assert reply["ref"] == "x"
    assert frames(alice, "a-pc") == []


def test_recover_without_user_history_says_so(
    alice: FakeManagementApi,
    lambda_context: FakeLambdaContext,
    configure: Any,
    emitted_metrics: Callable[[], Emitted],
    log_output: io.StringIO,
) -> None:
    # Given user history off
    configure(WSPUSH_USER_HISTORY="off")
    # Then hello shows no stream, and recover is refused with no_history, saying why
    assert route(welcome, "a-pc", lambda_context, action="hello")["data"]["stream"] is None
    reply = route(
        welcome, "a-pc", lambda_context, action="recover", since={"epoch": "e", "seq": 0}, ref="r"
    )
    assert reply["data"] == {
        "code": "no_history",
        "message": "user history is off: there is nothing to recover",
    }
    assert reply["ref"] == "r"
    # And the refusal is logged with its code and counted
    assert {
        "level": "INFO",
        "message": "stream request refused",
        "connection_id": "a-pc",
        "code": "no_history",
    } in logged(log_output)
    assert emitted_metrics()["StreamRequestsRefused"] == ("Count", [1.0])


@pytest.mark.parametrize("action", ["hello", "recover"])
def test_a_request_from_an_unknown_connection_is_refused(
    lambda_context: FakeLambdaContext, action: str
) -> None:
    reply = route(welcome, "nobody", lambda_context, action=action, since={"epoch": "e", "seq": 0})
    assert reply["data"] == {"code": "unknown_connection", "message": "this connection is not open"}


def test_a_history_that_cannot_be_read_answers_unavailable(
    alice: FakeManagementApi,
    lambda_context: FakeLambdaContext,
    monkeypatch: pytest.MonkeyPatch,
    emitted_metrics: Callable[[], Emitted],
    log_output: io.StringIO,
) -> None:
    # Given a history table that fails every read
    from tests.fakes.dynamodb import DynamoDBFaults, without_retry_backoff

    without_retry_backoff(monkeypatch)
    DynamoDBFaults().install(monkeypatch).fail("GetItem", table=HISTORY_TABLE)
    # When alice says hello
    reply = route(welcome, "a-pc", lambda_context, action="hello", ref="h")
    # Then she is told to try again later, the failure logged and counted
    assert reply["type"] == "error"
    assert reply["data"] == {
        "code": "unavailable",
        "message": "history is unavailable, try again later",
    }
    assert reply["ref"] == "h"
    failed = [line for line in logged(log_output) if line["message"] == "stream request failed"]
    assert [(line["level"], line["connection_id"]) for line in failed] == [("ERROR", "a-pc")]
    assert emitted_metrics()["StorageErrors"] == ("Count", [1.0])


def test_a_replay_stops_short_of_the_functions_time_limit(
    alice: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    # Given a missed message, and an invocation with less time left than a reply needs
    since = route(welcome, "a-pc", lambda_context, action="hello")["data"]["stream"]
    to_user("alice", "m-0", lambda_context)
    alice.reset()
    lambda_context.remaining_ms = 999
    # When alice recovers
    reply = route(welcome, "a-pc", lambda_context, action="recover", since=since)
    # Then nothing is posted and the reply says so, in time
    assert reply["data"]["recovered"] is False
    assert frames(alice, "a-pc") == []


def test_hello_says_when_the_connection_will_be_cut(
    alice: FakeManagementApi, lambda_context: FakeLambdaContext, configure: Any
) -> None:
    configure(WSPUSH_MAX_CONNECTION_SECONDS="900")
    data = route(welcome, "a-pc", lambda_context, action="hello")["data"]
    assert data["expiresAt"] - data["connectedAt"] == 900_000


def test_subscribe_with_since_replays_the_channel_then_answers(
    alice: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    # Given alice subscribed to room:42 at its position, then away while 2 messages went
    first = route(channel, "a-pc", lambda_context, action="subscribe", channel="room:42")
    since = {"epoch": first["data"]["epoch"], "seq": first["data"]["seq"]}
    route(channel, "a-pc", lambda_context, action="unsubscribe", channel="room:42")
    for n in (1, 2):
        send.handler({"channel": "room:42", "id": f"c-{n}", "payload": PAYLOAD}, lambda_context)
    assert frames(alice, "a-pc") == []
    # When she subscribes again from that position
    reply = route(
        channel, "a-pc", lambda_context, action="subscribe", channel="room:42", since=since
    )
    # Then the two are posted in order, then subscribed with recovered true
    assert [(f["id"], f["channel"], f["seq"]) for f in frames(alice, "a-pc")] == [
        ("c-1", "room:42", 1),
        ("c-2", "room:42", 2),
    ]
    assert reply["data"] == {
        "channel": "room:42",
        "epoch": since["epoch"],
        "seq": 2,
        "recovered": True,
    }


def test_subscribe_with_since_where_no_history_is_kept_says_false(
    alice: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    since = {"epoch": "e", "seq": 3}
    reply = route(
        channel, "a-pc", lambda_context, action="subscribe", channel="tiny:1", since=since
    )
    assert reply["data"] == {"channel": "tiny:1", "recovered": False}


def test_presence_events_are_kept_in_no_stream(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    # Given alice in lobby:1 (presence and history), and one message to the channel
    add_connection("a-pc", "alice")
    add_connection("b-pc", "bob")
    route(channel, "a-pc", lambda_context, action="subscribe", channel="lobby:1")
    drain_into_sender(lambda_context)
    send.handler({"channel": "lobby:1", "id": "c-1", "payload": PAYLOAD}, lambda_context)
    # When bob joins and leaves (presence.join / presence.leave to alice, through the queue)
    route(channel, "b-pc", lambda_context, action="subscribe", channel="lobby:1")
    drain_into_sender(lambda_context)
    route(channel, "b-pc", lambda_context, action="unsubscribe", channel="lobby:1")
    drain_into_sender(lambda_context)
    # Then alice got both events without a seq, and the stream holds only the message
    received = frames(management_api, "a-pc")
    assert [(f["type"], f.get("seq")) for f in received] == [
        ("order.updated", 1),
        ("presence.join", None),
        ("presence.leave", None),
    ]
    assert history.position("c:lobby:1", now_ms=now_ms()).seq == 1


def drain_into_sender(context: FakeLambdaContext) -> None:
    while records := drain(QUEUE_URL):
        assert sender.handler(sqs_event(*records), context)["batchItemFailures"] == []


@pytest.mark.parametrize("since", [3, {"epoch": 1, "seq": 1}, {"epoch": "e", "seq": -1}])
def test_subscribe_with_a_malformed_since_is_refused_naming_the_channel(
    alice: FakeManagementApi, lambda_context: FakeLambdaContext, since: Any
) -> None:
    reply = route(
        channel, "a-pc", lambda_context, action="subscribe", channel="room:1", since=since
    )
    assert reply["data"]["code"] == "invalid_since"
    assert reply["data"]["channel"] == "room:1"


def test_recovery_reads_only_what_was_missed(
    alice: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    # Given a stream of 40 messages, recovered from seq 37
    stream = Stream("u:alice", KEEP)
    for n in range(40):
        append(stream.key, f"m-{n}")
    head = history.position(stream.key, now_ms=now_ms())
    # When the missed messages are read
    missed = recovery.missed(stream, Since(head.epoch, 37), head, get_settings(), now_ms=now_ms())
    # Then they are exactly 38..40
    assert [k.seq for k in missed or []] == [38, 39, 40]


def test_a_send_retried_after_a_failure_delivers_the_frame_its_stream_kept(
    alice: FakeManagementApi, lambda_context: FakeLambdaContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a send whose message was kept, then failed reading its recipients
    from wspush.errors import StorageUnavailable
    from wspush.fanout import delivery

    real = delivery.resolve_targets

    def unreadable(*args: Any, **kwargs: Any) -> Any:
        raise StorageUnavailable("the table is throttled")

    monkeypatch.setattr(delivery, "resolve_targets", unreadable)
    failed = to_user("alice", "m-9", lambda_context)
    assert failed["error"]["code"] == "storage_unavailable"
    assert "same id" in failed["error"]["message"]
    monkeypatch.setattr(delivery, "resolve_targets", real)
    # When the service sends it again, later, with the same id
    time.sleep(0.01)
    assert to_user("alice", "m-9", lambda_context)["delivered"] == 1
    # Then alice got the frame her stream kept the first time (its seq and its ts)
    epoch = history.position("u:alice", now_ms=now_ms()).epoch
    [kept] = history.read(Span("u:alice", epoch, 0, 1), now_ms=now_ms(), max_bytes=10**6) or []
    assert alice.received["a-pc"] == [kept.frame]


def test_a_message_narrowed_by_platform_or_exclusion_is_kept_in_no_stream(
    alice: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    # Given alice on pc and mobile, her pc's position
    add_connection("a-mobile", "alice", "mobile")
    since = route(welcome, "a-pc", lambda_context, action="hello")["data"]["stream"]
    # When one message goes to her mobile only and one to all but her pc
    for narrowed in ({"platform": "mobile"}, {"excludeConnectionIds": ["a-pc"]}):
        envelope = {"userId": "alice", "payload": PAYLOAD, **narrowed}
        assert send.handler(envelope, lambda_context)["delivered"] == 1
    # Then the mobile got both without a seq, and her pc recovers nothing it was kept from
    assert [f.get("seq") for f in frames(alice, "a-mobile")] == [None, None]
    alice.reset()
    reply = route(welcome, "a-pc", lambda_context, action="recover", since=since)
    assert reply["data"] == {**since, "recovered": True}
    assert frames(alice, "a-pc") == []


def test_a_channel_is_read_for_fan_out_with_a_consistent_read(
    alice: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    # Given fan-out's reads of a channel watched
    from wspush.store import channels

    asked: list[dict[str, Any]] = []

    def watch(params: dict[str, Any], **_: Any) -> None:
        asked.append(params)

    client = channels._raw_reads(REGION)
    client.meta.events.register("provide-client-params.dynamodb.Query", watch)
    try:
        route(channel, "a-pc", lambda_context, action="subscribe", channel="room:7")
        # When a message goes to the channel
        send.handler({"channel": "room:7", "payload": PAYLOAD}, lambda_context)
    finally:
        client.meta.events.unregister("provide-client-params.dynamodb.Query", watch)
    # Then its subscribers were read consistently: a subscription written a moment ago (a
    # subscribe with since read the position right after) is seen
    assert [params["ConsistentRead"] for params in asked] == [True]
    assert [f["seq"] for f in frames(alice, "a-pc")] == [1]


def test_a_subscription_whose_position_cannot_be_read_still_stands(
    alice: FakeManagementApi, lambda_context: FakeLambdaContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the history table unreadable
    from wspush.errors import StorageUnavailable

    def unreadable(*args: Any, **kwargs: Any) -> Any:
        raise StorageUnavailable("throttled")

    monkeypatch.setattr(history, "position", unreadable)
    # When alice subscribes, and subscribes with since
    plain = route(channel, "a-pc", lambda_context, action="subscribe", channel="room:8")
    since = {"epoch": "e", "seq": 1}
    recovering = route(
        channel, "a-pc", lambda_context, action="subscribe", channel="room:8", since=since
    )
    # Then she is subscribed (the subscription was written), without a position, and told that
    # nothing was recovered
    assert plain["data"] == {"channel": "room:8"}
    assert recovering["data"] == {"channel": "room:8", "recovered": False}


# --- what recovery logs and counts, its retries and its deadline ------------------------


def recover_alice(
    alice: FakeManagementApi, context: FakeLambdaContext, missed: int
) -> dict[str, Any]:
    """Alice's position, ``missed`` messages to her, then her recovery's reply data."""
    since = route(welcome, "a-pc", context, action="hello")["data"]["stream"]
    for n in range(missed):
        to_user("alice", f"m-{n}", context)
    alice.reset()
    data: dict[str, Any] = route(welcome, "a-pc", context, action="recover", since=since)["data"]
    return data


@pytest.mark.parametrize("missed", [2, 0], ids=["two-missed", "nothing-missed"])
def test_a_whole_recovery_is_logged_and_counted(
    alice: FakeManagementApi,
    lambda_context: FakeLambdaContext,
    emitted_metrics: Callable[[], Emitted],
    log_output: io.StringIO,
    missed: int,
) -> None:
    data = recover_alice(alice, lambda_context, missed=missed)
    assert data["recovered"] is True
    assert len(frames(alice, "a-pc")) == missed
    assert {
        "level": "INFO",
        "message": "recovered",
        "connection_id": "a-pc",
        "replayed": missed,
    } in logged(log_output)
    emitted = emitted_metrics()
    assert emitted["RecoveredMessages"] == ("Count", [float(missed)])
    assert emitted["Recoveries"] == ("Count", [1.0])
    assert "RecoveriesCut" not in emitted
    assert "RecoveriesMissed" not in emitted


def test_a_recovery_the_history_cannot_serve_is_logged_and_counted(
    alice: FakeManagementApi,
    lambda_context: FakeLambdaContext,
    emitted_metrics: Callable[[], Emitted],
    log_output: io.StringIO,
) -> None:
    reply = route(welcome, "a-pc", lambda_context, action="recover", since={"epoch": "x", "seq": 0})
    assert reply["data"]["recovered"] is False
    assert {
        "level": "INFO",
        "message": "history does not reach back",
        "connection_id": "a-pc",
        "missed": True,
    } in logged(log_output)
    emitted = emitted_metrics()
    assert emitted["RecoveriesMissed"] == ("Count", [1.0])
    assert "Recoveries" not in emitted
    assert "RecoveredMessages" not in emitted


def test_a_replay_cut_short_is_logged_and_counted(
    alice: FakeManagementApi,
    lambda_context: FakeLambdaContext,
    emitted_metrics: Callable[[], Emitted],
    log_output: io.StringIO,
) -> None:
    # Given 3 missed messages and a connection that refuses the second post for good
    since = route(welcome, "a-pc", lambda_context, action="hello")["data"]["stream"]
    for n in range(3):
        to_user("alice", f"m-{n}", lambda_context)
    alice.reset()
    alice.script("a-pc", Reply.aws(200), Reply.aws(403))
    emitted_metrics()  # (the sends' own metrics)
    log_output.truncate(0)
    log_output.seek(0)
    reply = route(welcome, "a-pc", lambda_context, action="recover", since=since)
    assert reply["data"]["recovered"] is False
    assert {
        "level": "WARNING",
        "message": "replay cut short",
        "connection_id": "a-pc",
        "posted": 1,
        "missed": 3,
    } in logged(log_output)
    emitted = emitted_metrics()
    assert emitted["RecoveredMessages"] == ("Count", [1.0])
    assert emitted["RecoveriesCut"] == ("Count", [1.0])
    assert "Recoveries" not in emitted


def test_a_throttled_replay_post_is_retried_in_place(
    alice: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    # Given two missed messages, the first post of each throttled once
    since = route(welcome, "a-pc", lambda_context, action="hello")["data"]["stream"]
    for n in range(2):
        to_user("alice", f"m-{n}", lambda_context)
    alice.reset()
    alice.script("a-pc", Reply.aws(429), Reply.aws(200), Reply.aws(429))
    # When alice recovers
    reply = route(welcome, "a-pc", lambda_context, action="recover", since=since)
    # Then each was retried until it went, in order, and the recovery is whole
    assert reply["data"]["recovered"] is True
    assert [f["id"] for f in frames(alice, "a-pc")] == ["m-0", "m-1"]
    assert alice.calls["a-pc"] == 4


def test_replay_retries_wait_longer_each_time_then_give_up(
    alice: FakeManagementApi,
    lambda_context: FakeLambdaContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given one missed message whose every post is throttled, and the waits between them seen
    since = route(welcome, "a-pc", lambda_context, action="hello")["data"]["stream"]
    to_user("alice", "m-0", lambda_context)
    alice.reset()
    attempts = get_settings().max_post_attempts
    alice.script("a-pc", *[Reply.aws(429)] * attempts)
    waits: list[int] = []

    def backoff(attempt: int, *_: Any) -> float:
        waits.append(attempt)
        return 0.0

    monkeypatch.setattr(recovery, "backoff_seconds", backoff)
    # When alice recovers
    reply = route(welcome, "a-pc", lambda_context, action="recover", since=since)
    # Then it was tried as often as posts are, each wait the next of the backoff, then given up
    assert alice.calls["a-pc"] == attempts
    assert waits == list(range(attempts - 1))
    assert reply["data"]["recovered"] is False


def test_a_replay_stops_at_the_deadline_and_says_false(
    alice: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    # Given missed messages, and an invocation with no time left
    from wspush.clock import Deadline

    since_data = route(welcome, "a-pc", lambda_context, action="hello")["data"]["stream"]
    to_user("alice", "m-0", lambda_context)
    alice.reset()
    stream = Stream("u:alice", get_settings().user_history or KEEP)
    since = Since(since_data["epoch"], since_data["seq"])
    # When the replay runs past its deadline
    outcome = recovery.recover(
        stream, since, "a-pc", get_settings(), now_ms=now_ms(), deadline=Deadline(0.0)
    )
    # Then nothing was posted, and it does not claim a whole recovery
    assert outcome.recovered is False
    assert frames(alice, "a-pc") == []


def test_an_epoch_of_the_longest_length_is_a_position(
    alice: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    # When alice recovers from a position in an epoch of 64 characters (not this stream's)
    reply = route(
        welcome, "a-pc", lambda_context, action="recover", since={"epoch": "e" * 64, "seq": 0}
    )
    # Then it is read as a position: another epoch, so not recovered, but not refused
    assert reply["type"] == "recovered"
    assert reply["data"]["recovered"] is False


@pytest.mark.parametrize(
    ("since", "message"),
    [
        (3, 'since must be {"epoch": "...", "seq": n}'),
        ({"epoch": 1, "seq": 1}, "since.epoch must be a string of 1-64 characters"),
        ({"epoch": "e", "seq": -1}, "since.seq must be a whole number, 0 or more"),
    ],
)
def test_invalid_since_says_what_is_wrong(
    alice: FakeManagementApi, lambda_context: FakeLambdaContext, since: Any, message: str
) -> None:
    reply = route(welcome, "a-pc", lambda_context, action="recover", since=since)
    assert reply["data"] == {"code": "invalid_since", "message": message}


def test_a_message_placed_again_takes_the_ts_its_stream_kept() -> None:
    # Given a message to alice kept at ts 1,000, then handled again with a new ts
    from wspush.contract.messages import parse_message
    from wspush.history import stamping

    envelope = {"userId": "alice", "id": "m-1", "payload": PAYLOAD}
    first = parse_message(envelope, now_ms=now_ms(), ts=1_796_000_000_000)
    again = parse_message(envelope, now_ms=now_ms(), ts=1_796_000_000_500)
    kept = stamping.stamp(first, get_settings(), now_ms=now_ms()).message
    # When it is placed again
    placed = stamping.stamp(again, get_settings(), now_ms=now_ms()).message
    # Then it is the message as first kept: its frame, seq and ts
    assert (placed.frame, placed.seq, placed.ts) == (kept.frame, 1, 1_796_000_000_000)
