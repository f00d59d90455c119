"""Big audiences are split so many sender invocations deliver them, each connection once."""

from __future__ import annotations

import io
import json
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from handlers import sender
from local import moto_as_aws
from tests.conftest import PROCESSED_TABLE, QUEUE_URL, REGION, TABLE, FakeLambdaContext, logged
from tests.fakes.management_api import FakeManagementApi, Reply
from tests.support import PAYLOAD, add_connection, attributes_of, drain, sqs_event, sqs_record
from wspush.clock import now_ms
from wspush.errors import StorageUnavailable
from wspush.fanout import delivery, queues
from wspush.settings import get_settings
from wspush.store import channels as channels_store
from wspush.store import connections

pytestmark = pytest.mark.usefixtures("aws")


@pytest.fixture(autouse=True)
def small_shares(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Pages of 10 connections, splits into at least 4 segments and chunks of 10 users, so a
    few dozen make a crowd. DynamoDB's item count is as stale as on AWS (0 for a new table)."""
    monkeypatch.setenv("WSPUSH_CONNECTIONS_PER_SEGMENT", "10")
    monkeypatch.setenv("WSPUSH_BROADCAST_SEGMENTS", "4")
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


def test_a_broadcast_within_one_page_is_delivered_at_once(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    # Given 8 connections (less than a page of 10)
    ids = crowd(8)
    # When the sender takes a broadcast
    assert (
        run([sqs_record({"broadcast": True, "id": "m-few", "payload": PAYLOAD})], lambda_context)
        == []
    )
    # Then it delivered it itself, to everyone once, and queued nothing
    assert frames_per_connection(management_api, "m-few") == Counter(dict.fromkeys(ids, 1))
    assert drain(QUEUE_URL) == []


def test_a_broadcast_is_split_into_scan_segments_each_delivered_once(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    # Given 60 connections (6 pages of 10) in a table whose item count still says 0
    ids = crowd(60)
    record = sqs_record({"broadcast": True, "id": "m-all", "payload": PAYLOAD})
    # When the sender takes the broadcast
    assert run([record], lambda_context) == []
    # Then it posted nothing itself and queued one share per segment (the configured 4), same id
    assert not management_api.calls
    shares = drain(QUEUE_URL)
    segments = sorted(attributes_of(share)[queues.SEGMENT] for share in shares)
    assert segments == sorted(f"{s}/4" for s in range(4))
    assert {json.loads(share["body"])["id"] for share in shares} == {"m-all"}
    # When the shares are delivered, each segment handing on what is past its first page
    continued = []
    while shares:
        for share in shares:
            assert run([share], lambda_context) == []
        shares = drain(QUEUE_URL)
        continued += [attributes_of(share)[queues.AFTER] for share in shares]
    # Then every connection received the broadcast exactly once, with one timestamp
    assert frames_per_connection(management_api, "m-all") == Counter(dict.fromkeys(ids, 1))
    stamps = {json.loads(b)["ts"] for bodies in management_api.received.values() for b in bodies}
    assert len(stamps) == 1
    assert continued  # 60 rows in 4 segments: some segment holds more than one page


def test_no_invocation_reads_more_than_one_page_whatever_the_table_size(
    management_api: FakeManagementApi,
    lambda_context: FakeLambdaContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given 120 connections (12 pages) and an item count that says 0, as on a new table
    ids = crowd(120)
    pages: list[int] = []
    scan_page = connections.scan_page

    def counted(**kwargs: Any) -> connections.Page:
        page = scan_page(**kwargs)
        pages.append(len(page.records))
        return page

    monkeypatch.setattr(connections, "scan_page", counted)
    # When a broadcast and every share it leads to are handled, one message per invocation
    assert (
        run([sqs_record({"broadcast": True, "id": "m-big", "payload": PAYLOAD})], lambda_context)
        == []
    )
    invocations = 1
    while records := drain(QUEUE_URL):
        for one in records:
            before = len(pages)
            assert run([one], lambda_context) == []
            # Then each invocation read one page of at most 10 rows, never the whole table
            assert len(pages) - before == 1
            invocations += 1
    assert max(pages) <= 10
    assert frames_per_connection(management_api, "m-big") == Counter(dict.fromkeys(ids, 1))


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
    # ...and every share (the first two twice, the copies skipped) is handled
    assert run_queue(lambda_context) >= 4 + 2
    # Then each connection received the broadcast once
    assert frames_per_connection(management_api, "m-half") == Counter(dict.fromkeys(ids, 1))


def test_a_split_queues_its_shares_ten_to_a_call(
    management_api: FakeManagementApi,
    lambda_context: FakeLambdaContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given 250 connections, and DynamoDB's item count refreshed since they connected: 25 pages
    ids = crowd(250)
    boto3.client("dynamodb", region_name=REGION).describe_table(TableName=TABLE)
    monkeypatch.setattr(
        moto_as_aws, "clock", lambda: time.time() + moto_as_aws.COUNT_REFRESH_SECONDS
    )
    sizes: list[int] = []
    send_batch = queues._send_batch

    def counted(queue_url: str, batch: Any, *, region: str) -> list[Any]:
        sizes.append(len(batch))
        return send_batch(queue_url, batch, region=region)

    monkeypatch.setattr(queues, "_send_batch", counted)
    # When the sender splits a broadcast
    record = sqs_record({"broadcast": True, "id": "m-batched", "payload": PAYLOAD})
    assert run([record], lambda_context) == []
    # Then the count widened the split to 25 segments, queued in three SendMessageBatch calls,
    # and each connection gets it once
    assert sizes == [10, 10, 5]
    assert run_queue(lambda_context) >= 25
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


@pytest.mark.parametrize(
    ("item_count", "segments"),
    [(0, 1), (11, 2), (20, 2), (21, 3), (10**9, 5)],
)
def test_the_item_count_widens_a_split_to_one_segment_per_page_up_to_the_limit(
    lambda_context: FakeLambdaContext,
    monkeypatch: pytest.MonkeyPatch,
    item_count: int,
    segments: int,
) -> None:
    # Given a split of at least 1 segment, at most 5, pages of 10, and 11 connections (more
    # than a page, so the broadcast is split) while DynamoDB says it holds ``item_count``
    monkeypatch.setenv("WSPUSH_BROADCAST_SEGMENTS", "1")
    get_settings.cache_clear()
    monkeypatch.setattr(queues, "MAX_SEGMENTS", 5)
    monkeypatch.setattr(connections, "approximate_count", lambda: item_count)
    crowd(11)
    # When the sender takes a broadcast
    record = sqs_record({"broadcast": True, "id": "m-count", "payload": PAYLOAD})
    assert run([record], lambda_context) == []
    # Then it is split into one segment per page the count says, within the limits
    shares = drain(QUEUE_URL)
    assert sorted(attributes_of(share)[queues.SEGMENT] for share in shares) == [
        f"{segment}/{segments}" for segment in range(segments)
    ]


def test_a_split_whose_item_count_cannot_be_read_uses_the_configured_segments(
    lambda_context: FakeLambdaContext, monkeypatch: pytest.MonkeyPatch, log_output: io.StringIO
) -> None:
    def unavailable() -> int:
        raise StorageUnavailable("describe failed")

    monkeypatch.setattr(connections, "approximate_count", unavailable)
    crowd(11)
    record = sqs_record({"broadcast": True, "id": "m-blind", "payload": PAYLOAD})
    assert run([record], lambda_context) == []
    assert len(drain(QUEUE_URL)) == 4
    assert {
        "level": "WARNING",
        "message": "could not read the table's item count",
        "message_id": "m-blind",
    } in logged(log_output)


def test_a_segment_with_more_than_a_page_hands_on_the_rest_and_says_so(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext, log_output: io.StringIO
) -> None:
    # Given 25 connections, and the share of segment 0 of 1 (one segment: the whole table)
    ids = crowd(25)
    share = sqs_record(
        {"broadcast": True, "id": "m-seg", "payload": PAYLOAD}, {queues.SEGMENT: "0/1"}
    )
    # When the sender delivers it, it posts one page and queues the rest of its segment
    assert run([share], lambda_context) == []
    [rest] = drain(QUEUE_URL)
    assert attributes_of(rest)[queues.SEGMENT] == "0/1"
    assert attributes_of(rest)[queues.AFTER] in ids
    assert len(management_api.calls) == 10
    assert {
        "level": "INFO",
        "message": "broadcast segment continues",
        "message_id": "m-seg",
        "segment": 0,
        "total_segments": 1,
    } in logged(log_output)


def test_a_channel_with_more_than_a_page_hands_on_the_rest_and_says_so(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext, log_output: io.StringIO
) -> None:
    # Given 25 subscribers of a channel (pages of 10)
    expires = datetime.now(UTC) + timedelta(hours=1)
    for cid in crowd(25):
        record = connections.get(cid)
        assert record is not None
        channels_store.subscribe(record, "room:big", expires=expires, max_channels=5, presence=None)
    # When the sender takes a message to the channel
    message = sqs_record({"channel": "room:big", "id": "m-chan", "payload": PAYLOAD})
    assert run([message], lambda_context) == []
    # Then it posts one page and queues the rest of the channel, from where that page ended,
    # keeping the message's place in the channel's stream, and says so
    [rest] = drain(QUEUE_URL)
    assert json.loads(rest["body"])["channel"] == "room:big"
    attributes = attributes_of(rest)
    assert attributes[queues.SEQ] == "1"
    assert attributes[queues.AFTER] in {f"c-{index:03d}" for index in range(25)}
    assert len(management_api.calls) == 10
    assert {
        "level": "INFO",
        "message": "channel continues",
        "message_id": "m-chan",
        "after_page": 10,
    } in logged(log_output)


@pytest.mark.parametrize(
    ("envelope", "reader", "read"),
    [
        ({"channel": "room:big"}, channels_store, "subscriber_page"),
        ({"broadcast": True}, connections, "scan_page"),
    ],
    ids=["channel", "broadcast"],
)
def test_a_page_that_cannot_be_read_leaves_the_message_to_sqs_and_names_it(
    lambda_context: FakeLambdaContext,
    monkeypatch: pytest.MonkeyPatch,
    log_output: io.StringIO,
    envelope: dict[str, Any],
    reader: Any,
    read: str,
) -> None:
    # Given a page of recipients that cannot be read
    def unavailable(*args: Any, **kwargs: Any) -> Any:
        raise StorageUnavailable("throttled")

    monkeypatch.setattr(reader, read, unavailable)
    record = sqs_record({**envelope, "id": "m-unread", "payload": PAYLOAD})
    # When the sender takes the message, SQS is asked to deliver it again
    assert run([record], lambda_context) == [record["messageId"]]
    # And the failed read is logged with the message's id
    [line] = [line for line in logged(log_output) if line["message"] == "could not resolve targets"]
    assert (line["level"], line["message_id"]) == ("ERROR", "m-unread")


def test_a_queued_message_is_remembered_by_its_counts_never_its_recipients(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    # Given 11 connections (more than a page), one of which refuses every post
    ids = crowd(11)
    management_api.script(ids[0], Reply.aws(403))
    # When a broadcast is split, and its shares delivered
    record = sqs_record({"broadcast": True, "id": "m-kept", "payload": PAYLOAD})
    assert run([record], lambda_context) == []
    assert run_queue(lambda_context) == 4
    # Then the split is remembered as its number of shares, each share by its counts alone
    table = boto3.resource("dynamodb", region_name=REGION).Table(PROCESSED_TABLE)
    answers = [json.loads(item["data"]) for item in table.scan()["Items"]]
    shares = [answer for answer in answers if "shares" not in answer]
    assert [answer for answer in answers if "shares" in answer] == [{"id": "m-kept", "shares": 4}]
    assert len(shares) == 4
    assert {(answer["id"], tuple(answer["errors"])) for answer in shares} == {("m-kept", ())}
    assert sum(answer["delivered"] for answer in shares) == 10
    failed = sorted((answer["failed"], answer.get("errorsTruncated", 0)) for answer in shares)
    assert failed == [(0, 0), (0, 0), (0, 0), (1, 1)]


def test_a_queued_message_leaves_gone_rows_to_their_ttl_when_it_has_no_time_to_delete_them(
    management_api: FakeManagementApi,
    lambda_context: FakeLambdaContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given an invocation with 30 s left, all of it kept back from deleting gone rows, and one
    # of three connections dead without $disconnect
    lambda_context.remaining_ms = 30_000
    monkeypatch.setattr(delivery, "FORGET_RESERVE_SECONDS", 30.0)
    ids = crowd(3)
    management_api.script(ids[0], Reply.aws(410))
    # When the sender delivers a broadcast
    record = sqs_record({"broadcast": True, "id": "m-late", "payload": PAYLOAD})
    assert run([record], lambda_context) == []
    # Then the dead connection's row is kept (it expires through its TTL)
    assert {row.connection_id for row in connections.all_connections(now_ms=now_ms())} == set(ids)


def test_a_queued_message_s_claim_lasts_only_as_long_as_its_invocation(
    management_api: FakeManagementApi,
    lambda_context: FakeLambdaContext,
) -> None:
    # Given an invocation with 30 s left
    lambda_context.remaining_ms = 30_000
    crowd(1)
    started = time.time()
    # When the sender delivers a broadcast
    assert run([sqs_record({"broadcast": True, "payload": PAYLOAD})], lambda_context) == []
    # Then its processed record's claim ended with the invocation
    table = boto3.client("dynamodb", region_name=REGION)
    [item] = table.scan(TableName=PROCESSED_TABLE)["Items"]
    claim_ends = int(item["in_progress_expiration"]["N"]) / 1000
    assert started + 29 <= claim_ends <= time.time() + 31


def test_a_user_list_s_failed_recipient_is_requeued_with_its_own_user_s_seq(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    # Given alice and bob, bob's stream already holding one message, and bob's connection
    # throttled for a whole round
    add_connection("a-pc", "alice")
    add_connection("b-pc", "bob")
    assert (
        run([sqs_record({"userId": "bob", "id": "m-0", "payload": PAYLOAD})], lambda_context) == []
    )
    management_api.script("b-pc", *[Reply.aws(429)] * 3)
    # When a message to both is delivered from the queue
    record = sqs_record({"userIds": ["alice", "bob"], "id": "m-1", "payload": PAYLOAD})
    assert run([record], lambda_context) == []
    # Then bob's connection is re-queued with its place in bob's stream (2), not alice's (1)
    [requeued] = drain(QUEUE_URL)
    assert json.loads(requeued["body"])["connectionIds"] == ["b-pc"]
    assert attributes_of(requeued)[queues.SEQ] == "2"
