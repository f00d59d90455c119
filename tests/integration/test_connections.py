"""The connections table under moto: what each read and write asks DynamoDB, and what it
answers for unknown, expired and duplicate rows."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from tests.conftest import REGION, TABLE
from tests.integration.conftest import operations
from tests.support import add_connection
from wspush.clock import now_ms
from wspush.errors import StorageUnavailable
from wspush.store import connections
from wspush.store.connections import ConnectionRecord

pytestmark = pytest.mark.usefixtures("aws")


def row(connection_id: str) -> dict[str, Any] | None:
    table = boto3.resource("dynamodb", region_name=REGION).Table(TABLE)
    item: dict[str, Any] | None = table.get_item(Key={"connectionId": connection_id}).get("Item")
    return item


def test_get_many_reads_a_hundred_ids_a_call_each_id_once(
    calls: list[tuple[str, dict[str, Any]]],
) -> None:
    # Given 150 stored connections
    known = [f"c-{index:03d}" for index in range(150)]
    for connection_id in known:
        add_connection(connection_id, "crowd")
    calls.clear()
    # When 250 ids are asked for, every known one twice and 100 unknown ones among them
    asked = known + [f"x-{index:03d}" for index in range(100)] + known
    found = list(connections.get_many(asked, now_ms=now_ms()))
    # Then DynamoDB was asked 100 distinct keys a call (250 distinct ids: 3 calls)
    assert operations(calls) == ["BatchGetItem"] * 3
    sizes = [len(arguments["RequestItems"][TABLE]["Keys"]) for _, arguments in calls]
    assert sizes == [100, 100, 50]
    # And each known connection came back once, no unknown one
    assert sorted(record.connection_id for record in found) == known


def test_reads_skip_rows_whose_ttl_has_passed_before_dynamodb_removes_them() -> None:
    # Given a row that expires at a known instant (TTLs are whole seconds)
    opened = now_ms() // 1000 * 1000
    connections.save(ConnectionRecord("c-old", "dora", "pc", opened, opened), ttl_seconds=60)
    expiry_ms = opened + 60_000
    # Then every read sees it until that instant, and none from then on
    for at, live in ((expiry_ms - 1, True), (expiry_ms, False)):
        assert [r.connection_id for r in connections.get_many(["c-old"], now_ms=at)] == (
            ["c-old"] if live else []
        )
        assert bool(list(connections.for_user("dora", now_ms=at))) is live
        assert bool(list(connections.all_connections(now_ms=at))) is live
        assert bool(connections.scan_page(now_ms=at, limit=10).records) is live


def test_a_stored_row_holds_the_connection_and_expires_its_ttl_after_it_opened() -> None:
    opened = 1_800_000_000_000
    connections.save(ConnectionRecord("c-1", "u-1", "web", opened, opened + 5), ttl_seconds=7_800)
    assert row("c-1") == {
        "connectionId": "c-1",
        "userId": "u-1",
        "platform": "web",
        "connectedAt": opened,
        "lastSeenAt": opened + 5,
        "ttl": opened // 1000 + 7_800,
    }
    assert datetime.fromtimestamp(opened // 1000 + 7_800, tz=UTC).year == 2027


def test_page_size_reaches_dynamodb_as_the_limit_of_each_query_and_scan(
    calls: list[tuple[str, dict[str, Any]]],
) -> None:
    # Given a user with 5 connections
    for index in range(5):
        add_connection(f"c-{index}", "erin")
    calls.clear()
    # When they are read 2 to a page
    by_user = list(connections.for_user("erin", now_ms=now_ms(), page_size=2))
    scanned = list(connections.all_connections(now_ms=now_ms(), page_size=2))
    # Then every call asked for 2 rows, and the reads followed the pages to the end
    assert len(by_user) == len(scanned) == 5
    assert {operation for operation, _ in calls} == {"Query", "Scan"}
    assert {arguments.get("Limit") for _, arguments in calls} == {2}
    assert operations(calls).count("Query") == operations(calls).count("Scan") == 3


def test_a_scan_page_reads_at_most_its_limit_in_one_call_and_says_where_to_go_on(
    calls: list[tuple[str, dict[str, Any]]],
) -> None:
    # Given 5 connections
    ids = [f"c-{index}" for index in range(5)]
    for connection_id in ids:
        add_connection(connection_id, "finn")
    calls.clear()
    # When they are read 3 a page, from where each page says the next starts
    first = connections.scan_page(now_ms=now_ms(), limit=3)
    second = connections.scan_page(now_ms=now_ms(), limit=3, after=first.after)
    # Then one Scan call each, limited to 3, the second starting after the first's last row
    assert operations(calls) == ["Scan", "Scan"]
    assert [arguments["Limit"] for _, arguments in calls] == [3, 3]
    assert "ExclusiveStartKey" not in calls[0][1]
    assert calls[1][1]["ExclusiveStartKey"] == {"connectionId": {"S": first.after}}
    assert first.after == first.records[-1].connection_id
    assert second.after is None
    assert sorted(r.connection_id for r in first.records + second.records) == ids


def test_a_segment_of_a_parallel_scan_is_asked_for_as_such(
    calls: list[tuple[str, dict[str, Any]]],
) -> None:
    connections.scan_page(now_ms=now_ms(), limit=5, segment=1, total_segments=4)
    list(connections.all_connections(now_ms=now_ms(), segment=2, total_segments=4))
    assert [(a["Segment"], a["TotalSegments"]) for _, a in calls] == [(1, 4), (2, 4)]


def test_touch_refreshes_a_known_connection_and_never_creates_an_unknown_one() -> None:
    # Given one stored connection
    add_connection("c-1", "gus")
    before = row("c-1")
    assert before is not None
    # When both it and an unknown one are touched
    later = int(before["lastSeenAt"]) + 1_000
    known = connections.touch("c-1", now_ms=later)
    unknown = connections.touch("c-ghost", now_ms=1)
    # Then only the known one is refreshed (its TTL where it was), and no row is created
    assert (known, unknown) == (True, False)
    assert row("c-1") == {**before, "lastSeenAt": later}
    assert row("c-ghost") is None


def test_delete_says_whether_this_call_removed_the_row() -> None:
    add_connection("c-1", "hana")
    assert connections.delete("c-1") is True
    assert connections.delete("c-1") is False
    assert row("c-1") is None


def test_connected_at_is_read_consistently_and_none_for_an_unknown_connection(
    calls: list[tuple[str, dict[str, Any]]],
) -> None:
    # Given a connection stored a moment ago
    opened = now_ms() - 5_000
    connections.save(ConnectionRecord("c-1", "ivy", "pc", opened, opened), ttl_seconds=60)
    calls.clear()
    # When its age and an unknown one's are read
    assert connections.connected_at("c-1") == opened
    assert connections.connected_at("c-ghost") is None
    # Then both reads were consistent (the row may have been written just now)
    assert [(op, arguments.get("ConsistentRead")) for op, arguments in calls] == [
        ("GetItem", True),
        ("GetItem", True),
    ]


def test_delete_many_removes_exactly_those_rows() -> None:
    for index in range(30):
        add_connection(f"c-{index}", "jay")
    connections.delete_many([f"c-{index}" for index in range(27)])
    left = sorted(r.connection_id for r in connections.all_connections(now_ms=now_ms()))
    assert left == ["c-27", "c-28", "c-29"]


def test_the_approximate_count_is_dynamodb_s_item_count() -> None:
    assert connections.approximate_count() == 0


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: connections.save(ConnectionRecord("c", "u", "p", 1, 1), ttl_seconds=60),
         "could not store the connection"),
        (lambda: connections.delete("c"), "could not delete the connection"),
        (lambda: connections.delete_many(["c"]), "could not delete the connections"),
        (lambda: connections.connected_at("c"), "could not read the connection"),
        (lambda: connections.touch("c", now_ms=1), "could not refresh the connection"),
        (lambda: list(connections.for_user("u", now_ms=1)),
         "could not query the user's connections"),
        (lambda: list(connections.all_connections(now_ms=1)), "could not scan the connections"),
        (lambda: connections.scan_page(now_ms=1, limit=1), "could not scan the connections"),
        (lambda: connections.approximate_count(),
         "could not describe the connections table"),
        (lambda: list(connections.get_many(["c"], now_ms=1)), "could not read the connections"),
        (lambda: connections.due_for_rotation("b#1"),
         "could not query the connections due to rotate"),
    ],
)  # fmt: skip
def test_every_call_on_a_missing_table_is_storage_unavailable_saying_what_failed(
    call: Any, error: str
) -> None:
    boto3.client("dynamodb", region_name=REGION).delete_table(TableName=TABLE)
    with pytest.raises(StorageUnavailable) as caught:
        call()
    assert str(caught.value) == error


def test_every_read_answers_the_whole_stored_record() -> None:
    # Given one stored connection
    stored = ConnectionRecord("c-1", "kim", "mobile", now_ms() - 3_000, now_ms() - 1_000)
    connections.save(stored, ttl_seconds=600)
    at = now_ms()
    # When it is read by id, by user, by a scan and by a page of one, then each read is it
    assert list(connections.get_many(["c-1"], now_ms=at)) == [stored]
    assert list(connections.for_user("kim", now_ms=at)) == [stored]
    assert list(connections.all_connections(now_ms=at)) == [stored]
    assert connections.scan_page(now_ms=at, limit=5).records == [stored]


def test_a_retry_pauses_a_random_time_within_a_window_that_doubles_up_to_its_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the jitter's windows recorded, each pause taken as its window's top
    windows: list[tuple[float, float]] = []

    def top(low: float, high: float) -> float:
        windows.append((low, high))
        return high

    slept: list[float] = []
    monkeypatch.setattr(random, "uniform", top)
    monkeypatch.setattr(time, "sleep", slept.append)
    # When attempts 0 to 5 pause, from 10 ms doubling, capped at 100 ms
    for attempt in range(6):
        connections.pause_before_retry(attempt, base_seconds=0.01, cap_seconds=0.1)
    # Then the first attempt did not pause, and each retry drew from [0, its window]
    assert windows == [(0, 0.02), (0, 0.04), (0, 0.08), (0, 0.1), (0, 0.1)]
    assert slept == [0.02, 0.04, 0.08, 0.1, 0.1]
