"""Big audiences are split so many sender invocations deliver them, each connection once."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from handlers import sender
from tests.conftest import QUEUE_URL, FakeLambdaContext
from tests.fakes.management_api import FakeManagementApi
from tests.support import PAYLOAD, add_connection, attributes_of, drain, sqs_event, sqs_record
from wspush import queues
from wspush.settings import get_settings

pytestmark = pytest.mark.usefixtures("aws")


@pytest.fixture(autouse=True)
def small_shares(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Segments of about 10 connections and chunks of 10 users, so a few dozen make a crowd."""
    monkeypatch.setenv("WSPUSH_CONNECTIONS_PER_SEGMENT", "10")
    monkeypatch.setenv("WSPUSH_USERS_PER_CHUNK", "10")
    monkeypatch.setattr(queues, "MAX_DELAY_SECONDS", 0)
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


def crowd(count: int) -> list[str]:
    """``count`` connections, each of its own user; their ids."""
    ids = [f"c-{index:03d}" for index in range(count)]
    for connection_id in ids:
        add_connection(connection_id, f"user-{connection_id}")
    return ids


def run(records: list[dict[str, Any]], context: FakeLambdaContext) -> list[str]:
    response = sender.handler(sqs_event(*records), context)
    return [item["itemIdentifier"] for item in response["batchItemFailures"]]


def run_queue(context: FakeLambdaContext) -> int:
    """Invoke the sender on whatever is queued until the queue is empty; messages handled."""
    handled = 0
    while records := drain(QUEUE_URL):
        for start in range(0, len(records), 10):
            assert run(records[start : start + 10], context) == []
        handled += len(records)
    return handled


def frames_per_connection(api: FakeManagementApi, message_id: str) -> Counter[str]:
    return Counter(
        {
            cid: sum(1 for body in bodies if json.loads(body)["id"] == message_id)
            for cid, bodies in api.received.items()
        }
    )


def test_a_broadcast_is_split_into_scan_segments_each_delivered_once(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    # Given 60 connections (about 6 segments of 10)
    ids = crowd(60)
    record = sqs_record({"broadcast": True, "id": "m-all", "payload": PAYLOAD})
    # When the sender takes the broadcast
    assert run([record], lambda_context) == []
    # Then it posted nothing itself and queued one share per segment, same id
    assert not management_api.calls
    shares = drain(QUEUE_URL)
    segments = sorted(attributes_of(share)[queues.SEGMENT] for share in shares)
    assert segments == sorted(f"{s}/6" for s in range(6))
    assert {json.loads(share["body"])["id"] for share in shares} == {"m-all"}
    # When the shares are delivered (by as many invocations)
    for share in shares:
        assert run([share], lambda_context) == []
    # Then every connection received the broadcast exactly once, with one timestamp
    assert frames_per_connection(management_api, "m-all") == Counter(dict.fromkeys(ids, 1))
    stamps = {json.loads(b)["ts"] for bodies in management_api.received.values() for b in bodies}
    assert len(stamps) == 1


def test_splitting_again_after_a_redelivery_adds_nothing(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    # Given a broadcast that was split and fully delivered
    for index in range(30):
        add_connection(f"c-{index:02d}", f"user-{index}")
    record = sqs_record({"broadcast": True, "id": "m-again", "payload": PAYLOAD})
    assert run([record], lambda_context) == []
    run_queue(lambda_context)
    # When SQS hands the original over again, then no share is queued a second time
    assert run([record], lambda_context) == []
    assert drain(QUEUE_URL) == []
    assert set(frames_per_connection(management_api, "m-again").values()) == {1}


def test_a_split_that_failed_half_way_is_redone_without_double_delivery(
    management_api: FakeManagementApi,
    lambda_context: FakeLambdaContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given 50 connections, and a queue that takes only the first two shares of the first split
    # and keeps failing the others (SendMessageBatch answering them as Failed, as when SQS is
    # throttling) for as long as they are sent again
    ids = crowd(50)
    monkeypatch.setattr(queues, "_BATCH_RETRY_BASE_SECONDS", 0)
    send_batch = queues._send_batch
    calls = {"n": 0}

    def partly(queue_url: str, batch: Any, *, region: str) -> list[Any]:
        calls["n"] += 1
        if calls["n"] > queues.BATCH_ENTRY_ATTEMPTS:
            return send_batch(queue_url, batch, region=region)
        taken = 2 if calls["n"] == 1 else 0
        if taken:
            send_batch(queue_url, batch[:taken], region=region)
        return [
            queues._BatchFailure(index, "ThrottlingException", sender_fault=False)
            for index in range(taken, len(batch))
        ]

    monkeypatch.setattr(queues, "_send_batch", partly)
    record = sqs_record({"broadcast": True, "id": "m-half", "payload": PAYLOAD})
    # When the split fails, the record goes back to SQS; when SQS delivers it again...
    assert run([record], lambda_context) == [record["messageId"]]
    assert calls["n"] == queues.BATCH_ENTRY_ATTEMPTS
    assert run([record], lambda_context) == []
    # ...and every share (the first two twice) is handled
    assert run_queue(lambda_context) == 5 + 2
    # Then each connection received the broadcast once
    assert frames_per_connection(management_api, "m-half") == Counter(dict.fromkeys(ids, 1))


def test_a_split_queues_its_shares_ten_to_a_call(
    management_api: FakeManagementApi,
    lambda_context: FakeLambdaContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given 250 connections: 25 segments of 10
    ids = crowd(250)
    sizes: list[int] = []
    send_batch = queues._send_batch

    def counted(queue_url: str, batch: Any, *, region: str) -> list[Any]:
        sizes.append(len(batch))
        return send_batch(queue_url, batch, region=region)

    monkeypatch.setattr(queues, "_send_batch", counted)
    # When the sender splits a broadcast
    record = sqs_record({"broadcast": True, "id": "m-batched", "payload": PAYLOAD})
    assert run([record], lambda_context) == []
    # Then the 25 shares took three SendMessageBatch calls, and each connection gets it once
    assert sizes == [10, 10, 5]
    assert run_queue(lambda_context) == 25
    assert frames_per_connection(management_api, "m-batched") == Counter(dict.fromkeys(ids, 1))


def test_a_long_user_list_is_split_into_chunks_keeping_its_filters(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    # Given 25 users on pc and mobile, and a message to all of them, on pc, but not u-03
    users = [f"u-{index:02d}" for index in range(25)]
    for user in users:
        add_connection(f"{user}-pc", user, "pc")
        add_connection(f"{user}-mobile", user, "mobile")
    envelope = {
        "userIds": users,
        "platform": "pc",
        "excludeConnectionIds": ["u-03-pc"],
        "id": "m-users",
        "payload": PAYLOAD,
    }
    # When the sender takes it, it queues 3 chunks of at most 10 users
    assert run([sqs_record(envelope)], lambda_context) == []
    chunks = drain(QUEUE_URL)
    assert sorted(len(json.loads(c["body"])["userIds"]) for c in chunks) == [5, 10, 10]
    for chunk in chunks:
        assert run([chunk], lambda_context) == []
    # Then every pc connection but u-03's received it once, and no mobile one
    expected = {f"{user}-pc": 1 for user in users if user != "u-03"}
    assert frames_per_connection(management_api, "m-users") == Counter(expected)
