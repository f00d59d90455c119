"""The local stand-ins for Lambda's DynamoDB stream event source and DynamoDB's TTL, under moto."""

from __future__ import annotations

import time
from typing import Any

import boto3
import pytest

from local.streams import StreamPoller
from tests.conftest import REGION, TABLE
from tests.support import add_connection
from wspush.store import connections

pytestmark = pytest.mark.usefixtures("aws")


class Lifecycle:
    """Records each event; fails the records of the connection ids in ``failing``, once each."""

    def __init__(self, *failing: str) -> None:
        self.events: list[dict[str, Any]] = []
        self.failing = set(failing)

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        self.events.append(event)
        failures = []
        for record in event["Records"]:
            cid = record["dynamodb"]["Keys"]["connectionId"]["S"]
            if cid in self.failing:
                self.failing.discard(cid)
                failures.append({"itemIdentifier": record["dynamodb"]["SequenceNumber"]})
        return {"batchItemFailures": failures}

    def seen(self) -> list[tuple[str, str]]:
        return [
            (r["eventName"], r["dynamodb"]["Keys"]["connectionId"]["S"])
            for event in self.events
            for r in event["Records"]
        ]


def poller(lifecycle: Lifecycle, parallel: int = 1) -> StreamPoller:
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    # botocore's account-based endpoint for streams is one moto does not route.
    streams = boto3.client(
        "dynamodbstreams",
        region_name=REGION,
        endpoint_url=f"https://streams.dynamodb.{REGION}.amazonaws.com",
    )
    return StreamPoller(dynamodb, streams, TABLE, lifecycle, parallel=parallel)


def test_records_reach_the_function_in_order_with_lambdas_event_shape() -> None:
    # Given the poller started (reading from the stream's end) and then two rows written
    lifecycle = Lifecycle()
    stream = poller(lifecycle)
    add_connection("c-1", "alice")
    connections.delete("c-1")
    # When it polls
    stream.poll_once()
    # Then the function got both, in order, as Lambda hands stream records to a function
    assert lifecycle.seen() == [("INSERT", "c-1"), ("REMOVE", "c-1")]
    record = lifecycle.events[0]["Records"][1]
    assert f":table/{TABLE}/stream/" in record["eventSourceARN"]
    assert isinstance(record["dynamodb"]["ApproximateCreationDateTime"], int)
    assert record["dynamodb"]["OldImage"]["userId"] == {"S": "alice"}


def test_a_failed_record_comes_again_with_those_after_it_and_not_those_before() -> None:
    # Given three connections opened, the function failing c-2's record once
    lifecycle = Lifecycle("c-2")
    stream = poller(lifecycle)
    for cid in ("c-1", "c-2", "c-3"):
        add_connection(cid, "alice")
    # When it polls twice
    stream.poll_once()
    stream.poll_once()
    # Then the second batch starts at c-2 (c-1 was checkpointed)
    first, second = lifecycle.events
    ids = [
        [r["dynamodb"]["Keys"]["connectionId"]["S"] for r in e["Records"]] for e in (first, second)
    ]
    assert ids == [["c-1", "c-2", "c-3"], ["c-2", "c-3"]]


def test_the_sweeper_deletes_expired_rows_late_as_dynamodbs_ttl_does() -> None:
    # Given a live connection and one whose TTL (7,800 s after it opened) has passed
    lifecycle = Lifecycle()
    stream = poller(lifecycle)
    add_connection("live", "alice")
    add_connection("expired", "bob", opened_ago_ms=8_000_000)
    # When the sweeper runs
    deleted = stream.sweep()
    # Then only the expired row is gone, and the function hears of it like any REMOVE
    assert deleted == 1
    assert connections.get("live") is not None
    stream.poll_once()
    assert [e for e in lifecycle.seen() if e[0] == "REMOVE"] == [("REMOVE", "expired")]
    # And the live one goes once its own TTL has passed
    assert stream.sweep(now_s=time.time() + 7_800) == 1


def test_in_parallel_each_rows_records_go_to_one_invocation_in_order() -> None:
    # Given 12 connections opened and closed, and up to 4 invocations at once
    lifecycle = Lifecycle("c-05")
    stream = poller(lifecycle, parallel=4)
    ids = [f"c-{index:02d}" for index in range(12)]
    for cid in ids:
        add_connection(cid, "alice")
    for cid in ids:
        connections.delete(cid)
    # When it polls until nothing is left (c-05's INSERT fails once)
    while stream.poll_once():
        pass
    # Then the work was spread over several invocations, each row's INSERT before its
    # REMOVE in the same invocation, and every record was handled
    assert len(lifecycle.events[0:4]) > 1
    for event in lifecycle.events:
        names = [
            (r["eventName"], r["dynamodb"]["Keys"]["connectionId"]["S"]) for r in event["Records"]
        ]
        for cid in {c for _, c in names}:
            mine = [n for n, c in names if c == cid]
            assert mine in (["INSERT", "REMOVE"], ["REMOVE"], ["INSERT"]), (cid, mine)
    handled = lifecycle.seen()
    assert {c for n, c in handled if n == "REMOVE"} == set(ids)
    assert handled.count(("INSERT", "c-05")) == 2  # failed once, then again with its REMOVE
