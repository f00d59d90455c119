"""Rotation under moto: $connect files each connection under its cut's bucket, and a tick of
the sweeper queues reconnect messages for the buckets due, once, for the sender to post."""

from __future__ import annotations

import io
import json
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from handlers import connect, ping, rotation, sender
from tests.conftest import (
    PROCESSED_TABLE,
    QUEUE_URL,
    REGION,
    TABLE,
    Emitted,
    FakeLambdaContext,
    load_event,
    logged,
)
from tests.fakes.management_api import FakeManagementApi
from tests.support import drain, frames, sqs_event, sqs_record
from wspush.clock import Deadline
from wspush.contract.events import QueryParameters
from wspush.errors import QueueUnavailable, RotationIncomplete
from wspush.fanout import idempotency, queues
from wspush.fanout.idempotency import AlreadyInProgress
from wspush.rotation import buckets, sweeper
from wspush.routes import handshake
from wspush.settings import Settings, get_auth_settings, get_settings
from wspush.store import connections

pytestmark = pytest.mark.usefixtures("aws")

NOON = 1_795_867_200  # 2026-11-28T12:00:00Z (s): the tick
TICK = NOON * 1000
DUE = NOON + 600  # the tick's own bucket: cuts from noon + 10 min
CUT = 7_200_000  # API Gateway's cut, after the connection opened (ms)


def opened_for(bucket: int, offset_ms: int = 0) -> int:
    """When a connection opened whose cut is ``offset_ms`` into ``bucket``."""
    return bucket * 1000 - CUT + offset_ms


def open_connection(
    connection_id: str, opened_ms: int, settings: Settings | None = None, user: str = "u1"
) -> None:
    """$connect's work for a connection that opened at ``opened_ms``."""
    handshake.open_connection(
        connection_id,
        QueryParameters({"userId": user}),
        settings or get_settings(),
        get_auth_settings(),
        now_ms=opened_ms,
        connected_at=opened_ms,
    )


def tick(
    settings: Settings | None = None, *, at: int = TICK, now: int | None = None
) -> sweeper.SweepReport:
    """One tick of the sweeper, due at ``at`` and handled at ``now`` (default: on time)."""
    return sweeper.sweep(
        at,
        settings or get_settings(),
        now_ms=at if now is None else now,
        deadline=Deadline.never(),
        context=FakeLambdaContext(),
    )


def queued() -> list[dict[str, Any]]:
    """The bodies of the messages on the queue (taken off it)."""
    return [json.loads(record["body"]) for record in drain(QUEUE_URL)]


def raw_items() -> list[dict[str, Any]]:
    table = boto3.resource("dynamodb", region_name=REGION).Table(TABLE)
    items: list[dict[str, Any]] = table.scan()["Items"]
    return sorted(items, key=lambda item: str(item["connectionId"]))


def ids_in_shard(shard: int, count: int) -> list[str]:
    """``count`` connection ids of API Gateway's shape that fall in ``shard``."""
    found = (f"{n:011d}A0=" for n in range(100_000))
    return [cid for cid in found if buckets.shard_of(cid) == shard][:count]


@pytest.fixture
def off() -> Settings:
    """Settings with rotation off (lead 0)."""
    return replace(get_settings(), rotation_lead_seconds=0)


def test_a_tick_queues_a_reconnect_for_each_connection_due_and_nothing_else() -> None:
    # Given three connections cut in the tick's own bucket (its first, middle and last ms),
    # one cut a minute later, one cut already (at noon), and one that closed
    for name, offset in (("due-a", 0), ("due-b", 30_000), ("due-c", 59_999)):
        open_connection(name, opened_for(DUE, offset))
    open_connection("later", opened_for(DUE + 60))
    open_connection("cut-already", opened_for(NOON))
    open_connection("closed", opened_for(DUE, 10_000))
    assert connections.delete("closed")
    rows = raw_items()
    # When the tick runs
    report = tick()
    # Then one message per shard holding due connections is queued, naming exactly those
    # connections, with the reconnect frame: `before` is the bucket's start, no later than
    # any of their cuts
    messages = queued()
    recipients = sorted(cid for message in messages for cid in message["connectionIds"])
    assert recipients == ["due-a", "due-b", "due-c"]
    for message in messages:
        (shard,) = {buckets.shard_of(cid) for cid in message["connectionIds"]}
        assert message["id"] == f"reconnect-{DUE}-{shard:02d}"
        assert message["payload"] == {
            "type": "reconnect",
            "data": {"reason": "max_duration", "before": DUE * 1000},
        }
        for cid in message["connectionIds"]:
            assert message["payload"]["data"]["before"] <= connections.connected_at(cid) + CUT
    assert report.queued[-1] == DUE
    assert (report.connections, report.messages) == (3, len(messages))
    # And the connections table is as it was: the sweeper writes nothing there (its stream
    # drives the lifecycle function)
    assert raw_items() == rows


def test_connect_files_the_row_under_its_cut_and_a_ping_leaves_it(
    lambda_context: FakeLambdaContext,
) -> None:
    # Given a real $connect event
    event = load_event("ws_connect.json")
    event["requestContext"]["connectionId"] = "conn-1"
    connected_at = event["requestContext"]["connectedAt"]
    # When $connect runs, then the client pings
    assert connect.handler(event, lambda_context)["statusCode"] == 200
    message = load_event("ws_message.json")
    message["requestContext"]["connectionId"] = "conn-1"
    assert ping.handler(message, lambda_context)["statusCode"] == 200
    # Then the row names its cut's bucket and shard, and the index finds it under that key
    (item,) = raw_items()
    key = buckets.index_key("conn-1", int(connected_at), get_settings())
    assert item["rotation"] == key
    assert key is not None
    assert key.startswith(f"{(int(connected_at) + CUT) // 60_000 * 60}#")
    assert connections.due_for_rotation(key) == ["conn-1"]


def test_a_second_run_of_a_tick_queues_nothing() -> None:
    # Given a due connection and a tick that queued its message
    open_connection("due-a", opened_for(DUE))
    tick()
    assert len(queued()) == 1
    # When the same tick runs again (EventBridge or Lambda delivered it twice)
    report = tick()
    # Then the buckets are found queued already: nothing more goes on the queue
    assert queued() == []
    assert report.queued == []
    assert DUE in report.earlier


def test_a_bucket_queued_again_is_delivered_once(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext
) -> None:
    # Given due connections, and a tick run twice with nothing remembered between the runs
    # (the first run's record lost, or written by a run that failed after queueing)
    for name in ("due-a", "due-b", "due-c"):
        open_connection(name, opened_for(DUE, 5_000))
    forgetful = replace(get_settings(), processed_table_name="")
    tick(forgetful)
    first = queued()
    tick(forgetful)
    second = queued()
    # Then both runs queued the same messages: same ids, same recipients
    assert sorted(map(json.dumps, first)) == sorted(map(json.dumps, second))
    # And when the sender handles both copies, each connection gets the reconnect once
    for body in first + second:
        response = sender.handler(sqs_event(sqs_record(body)), lambda_context)
        assert response["batchItemFailures"] == []
    for cid in ("due-a", "due-b", "due-c"):
        received = frames(management_api, cid)
        assert [frame["type"] for frame in received] == ["reconnect"]
        assert received[0]["data"] == {"reason": "max_duration", "before": DUE * 1000}
        assert received[0]["id"] == f"reconnect-{DUE}-{buckets.shard_of(cid):02d}"


def test_a_tick_catches_up_on_an_earlier_bucket_a_missed_tick_left() -> None:
    # Given connections cut in the tick's bucket and in the one before, whose tick never ran
    open_connection("due", opened_for(DUE))
    open_connection("missed", opened_for(DUE - 60))
    # When this tick runs
    report = tick()
    # Then both are asked to reconnect, each with its own bucket's `before`
    before = {
        cid: message["payload"]["data"]["before"]
        for message in queued()
        for cid in message["connectionIds"]
    }
    assert before == {"due": DUE * 1000, "missed": (DUE - 60) * 1000}
    assert report.queued[-2:] == [DUE - 60, DUE]
    assert (report.connections, report.messages) == (2, 2)


def test_a_tick_after_a_missed_one_queues_both_buckets_and_says_so(
    log_output: io.StringIO,
) -> None:
    # Given connections cut in this tick's bucket and the previous one's, whose tick was missed
    # (the tick before that ran)
    open_connection("missed", opened_for(DUE - 60))
    open_connection("due", opened_for(DUE))
    tick(at=TICK - 120_000)
    assert queued() == []
    # When this tick runs
    report = tick()
    # Then it queues both, and logs that it caught up
    assert report.queued == [DUE - 60, DUE]
    assert sorted(cid for m in queued() for cid in m["connectionIds"]) == ["due", "missed"]
    assert {
        "level": "INFO",
        "message": "rotation caught up",
        "buckets": [DUE - 60, DUE],
    } in logged(log_output)


def test_a_bucket_the_previous_tick_queued_is_not_queued_again(log_output: io.StringIO) -> None:
    # Given the previous tick queued its bucket
    open_connection("previous", opened_for(DUE - 60))
    tick(at=TICK - 60_000)
    assert [m["connectionIds"] for m in queued()] == [["previous"]]
    # When this tick runs
    open_connection("due", opened_for(DUE))
    log_output.seek(0)
    log_output.truncate()
    report = tick()
    # Then only this tick's bucket is queued, with nothing to catch up
    assert [m["connectionIds"] for m in queued()] == [["due"]]
    assert DUE - 60 in report.earlier
    assert report.queued == [DUE]
    assert "rotation caught up" not in [line["message"] for line in logged(log_output)]


def test_a_shard_bigger_than_a_message_is_split_into_messages_of_the_same_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given five due connections in one shard, and messages of at most two connections
    monkeypatch.setattr(sweeper, "CHUNK", 2)
    ids = ids_in_shard(3, 5)
    for cid in ids:
        open_connection(cid, opened_for(DUE, 1_000))
    # When the tick runs
    tick()
    # Then three messages carry them, each connection once, in a stable (sorted) order
    messages = queued()
    assert [len(m["connectionIds"]) for m in messages] == [2, 2, 1]
    assert sorted(cid for m in messages for cid in m["connectionIds"]) == sorted(ids)
    assert {m["id"] for m in messages} == {f"reconnect-{DUE}-03"}


def test_with_rotation_off_no_row_enters_the_index_and_a_tick_queues_nothing(
    off: Settings,
) -> None:
    # Given connections opened while rotation is off
    open_connection("plain", opened_for(DUE), settings=off)
    # Then their rows carry no rotation key, and a tick queues nothing
    (item,) = raw_items()
    assert "rotation" not in item
    report = tick(off)
    assert queued() == []
    assert report.as_dict() == sweeper.SweepReport().as_dict()


def test_a_bucket_that_could_not_be_queued_is_tried_again(
    monkeypatch: pytest.MonkeyPatch, log_output: io.StringIO, emitted_metrics: Any
) -> None:
    # Given connections due in two buckets, and a queue that refuses the first bucket's send
    open_connection("missed", opened_for(DUE - 60))
    open_connection("due", opened_for(DUE))
    real_send_all = queues.send_all
    refusals = [QueueUnavailable("could not send to the queue")]

    def send_all(queue_url: str, messages: Any, *, region: str) -> None:
        if messages and refusals:
            raise refusals.pop()
        real_send_all(queue_url, messages, region=region)

    monkeypatch.setattr(queues, "send_all", send_all)
    # When the tick runs, it reports the bucket it could not queue, after queueing the other
    with pytest.raises(RotationIncomplete, match=str(DUE - 60)):
        tick()
    assert [m["connectionIds"] for m in queued()] == [["due"]]
    assert {
        "level": "WARNING",
        "message": "rotation bucket not queued",
        "bucket": DUE - 60,
        "error": "QueueUnavailable",
    } in logged(log_output)
    failures: Emitted = emitted_metrics()
    assert failures["RotationBucketsFailed"] == ("Count", [1.0])
    # Then its retry (the same event) queues that bucket, which was not remembered as queued
    report = tick()
    assert report.queued == [DUE - 60]
    assert [m["connectionIds"] for m in queued()] == [["missed"]]


def test_the_handler_sweeps_the_buckets_due_at_its_events_time(
    lambda_context: FakeLambdaContext,
    emitted_metrics: Any,
    monkeypatch: pytest.MonkeyPatch,
    log_output: io.StringIO,
) -> None:
    # Given the schedule's event for noon, handled at noon + 2 s, and a connection cut in the
    # bucket due then (10 minutes ahead)
    monkeypatch.setattr(rotation, "now_ms", lambda: TICK + 2_000)
    event = load_event("scheduled.json")
    event["time"] = datetime.fromtimestamp(NOON, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    open_connection("due", opened_for(DUE, 1))
    # When the function is invoked with it
    answer = rotation.handler(event, lambda_context)
    # Then it queued its own bucket and the earlier ones still ahead (none remembered yet:
    # empty), and answers what it did
    assert answer == {
        "queued": [NOON + 60 * minute for minute in range(1, 11)],
        "earlier": [],
        "busy": [],
        "failed": [],
        "left": [],
        "connections": 1,
        "messages": 1,
    }
    assert [m["connectionIds"] for m in queued()] == [["due"]]
    # And counts the connections asked, and logs each bucket it queued
    metrics: Emitted = emitted_metrics()
    assert metrics["ReconnectsQueued"] == ("Count", [1.0])
    assert {
        "level": "INFO",
        "message": "rotation bucket queued",
        "bucket": DUE,
        "before": DUE * 1000,
        "connections": 1,
        "messages": 1,
    } in logged(log_output)


def test_each_queued_bucket_is_remembered_until_ticks_stop_catching_up_on_it() -> None:
    # Given a processed-messages TTL shorter than a bucket stays due (lead and a bucket)
    settings = replace(get_settings(), idempotency_ttl_seconds=60)
    open_connection("due", opened_for(DUE))
    # When a tick queues its buckets
    started = time.time()
    tick(settings)
    # Then each is recorded completed, for the lead and two buckets (720 s), and its claim
    # while it was being queued lasted only as long as the invocation had left (30 s), so an
    # invocation that dies leaves the bucket to the next tick, not for an hour
    table = boto3.client("dynamodb", region_name=REGION)
    items = table.scan(TableName=PROCESSED_TABLE)["Items"]
    assert len(items) == len(buckets.due(TICK, now_ms=TICK, settings=settings))
    for item in items:
        assert item["status"]["S"] == "COMPLETED"
        assert started + 719 <= int(item["expiration"]["N"]) <= time.time() + 721
        claim_ends = int(item["in_progress_expiration"]["N"]) / 1000
        assert started + 29 <= claim_ends <= time.time() + 31


def test_buckets_left_when_the_time_ran_out_are_queued_by_the_next_tick(
    emitted_metrics: Any,
) -> None:
    # Given a due connection, and an invocation with no time left
    open_connection("due", opened_for(DUE))
    spent = Deadline(time.monotonic() - 1)
    # When the tick runs, it starts no bucket, and says so without failing
    report = sweeper.sweep(TICK, get_settings(), now_ms=TICK, deadline=spent)
    assert report.queued == []
    assert report.left[-1] == DUE
    assert queued() == []
    left: Emitted = emitted_metrics()
    assert left["RotationBucketsLeft"] == ("Count", [float(len(report.left))])
    # Then the next tick catches up on it
    assert DUE in tick(at=TICK + 60_000).queued
    assert [m["connectionIds"] for m in queued()] == [["due"]]


def test_a_bucket_another_invocation_is_queueing_is_left_to_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given every bucket claimed by another invocation (an overlapping tick)
    open_connection("due", opened_for(DUE))

    def claimed(*args: Any, **kwargs: Any) -> Any:
        raise AlreadyInProgress("the message is being handled by another invocation")

    monkeypatch.setattr(idempotency, "run_once", claimed)
    # When this tick runs, it queues nothing and does not fail
    report = tick()
    assert report.busy[-1] == DUE
    assert report.queued == []
    assert queued() == []
