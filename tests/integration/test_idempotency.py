"""Processed-message records under moto: what makes two deliveries the same work, how long a
record is kept, and what a duplicate costs."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any

import boto3
import pytest

from tests.conftest import PROCESSED_TABLE, REGION, Emitted, FakeLambdaContext, logged
from tests.support import PAYLOAD
from wspush.contract.messages import Message, parse_message
from wspush.errors import StorageUnavailable
from wspush.fanout import idempotency

pytestmark = pytest.mark.usefixtures("aws")


def message(**target: Any) -> Message:
    return parse_message({"id": "m-1", **target, "payload": PAYLOAD}, now_ms=1)


def records() -> list[dict[str, Any]]:
    table = boto3.resource("dynamodb", region_name=REGION).Table(PROCESSED_TABLE)
    items: list[dict[str, Any]] = table.scan()["Items"]
    return items


def once(key: dict[str, Any], answer: dict[str, Any], *, ttl_seconds: int = 3_600) -> Any:
    calls: list[int] = []

    def work() -> dict[str, Any]:
        calls.append(1)
        return answer

    handled = idempotency.run_once(
        key,
        work,
        table_name=PROCESSED_TABLE,
        ttl_seconds=ttl_seconds,
        context=FakeLambdaContext(),
    )
    return handled, len(calls)


def test_each_record_is_kept_for_the_ttl_it_was_written_with() -> None:
    # Given a record written with a 60 s TTL
    once({"id": "short"}, {"id": "short"}, ttl_seconds=60)
    # When another is written, in the same container, with a 2-hour TTL
    once({"id": "long"}, {"id": "long"}, ttl_seconds=7_200)
    # Then each expires after its own TTL (the first one's is not kept for the second)
    now = time.time()
    expirations = sorted(int(item["expiration"]) - now for item in records())
    assert len(expirations) == 2
    assert 55 <= expirations[0] <= 60
    assert 7_195 <= expirations[1] <= 7_200


def test_a_duplicate_is_answered_from_the_first_run_without_doing_the_work(
    emitted_metrics: Callable[[], Emitted], log_output: io.StringIO
) -> None:
    # Given a message handled once
    first, first_calls = once({"id": "m-1"}, {"id": "m-1", "delivered": 2})
    # When the same key comes again
    again, again_calls = once({"id": "m-1"}, {"id": "m-1", "delivered": 0})
    # Then the work ran once, and the second answer is the first
    assert (first_calls, again_calls) == (1, 0)
    assert again.answer == first.answer == {"id": "m-1", "delivered": 2}
    assert again.kept
    assert first.kept
    # And the duplicate is logged with its message id, and counted
    assert logged(log_output) == [
        {"level": "INFO", "message": "duplicate message skipped", "message_id": "m-1"}
    ]
    assert emitted_metrics() == {"DuplicatesSkipped": ("Count", [1.0])}


def test_without_a_table_the_work_runs_every_time() -> None:
    calls = []
    for _ in range(2):
        handled = idempotency.run_once(
            {"id": "m-1"},
            lambda: calls.append(1) or {"id": "m-1"},
            table_name="",
            ttl_seconds=60,
            context=None,
        )
        assert handled == idempotency.Handled({"id": "m-1"}, kept=True)
    assert len(calls) == 2
    assert records() == []


def test_work_that_failed_is_not_remembered_and_its_error_comes_through() -> None:
    # Given work that fails the first time
    def fails() -> dict[str, Any]:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        idempotency.run_once(
            {"id": "m-1"},
            fails,
            table_name=PROCESSED_TABLE,
            ttl_seconds=60,
            context=FakeLambdaContext(),
        )
    # When the same key comes again, then the work runs again
    _, calls = once({"id": "m-1"}, {"id": "m-1"})
    assert calls == 1


def test_a_table_that_cannot_be_used_before_the_work_is_storage_unavailable() -> None:
    calls = []
    unusable = r"^the processed-messages table could not be used$"
    with pytest.raises(StorageUnavailable, match=unusable):
        idempotency.run_once(
            {"id": "m-1"},
            lambda: calls.append(1) or {},
            table_name="wspush-test-missing",
            ttl_seconds=60,
            context=FakeLambdaContext(),
        )
    assert calls == []


def test_work_done_whose_record_cannot_be_written_is_answered_as_not_kept() -> None:
    # Given work that runs while the processed-messages table goes away
    def work() -> dict[str, Any]:
        boto3.client("dynamodb", region_name=REGION).delete_table(TableName=PROCESSED_TABLE)
        return {"id": "m-1"}

    # When it runs once
    handled = idempotency.run_once(
        {"id": "m-1"}, work, table_name=PROCESSED_TABLE, ttl_seconds=60, context=None
    )
    # Then its answer comes back, marked as not remembered
    assert handled == idempotency.Handled({"id": "m-1"}, kept=False)
    assert handled.kept is False


def test_the_key_is_the_id_the_canonical_target_and_the_round() -> None:
    # Given a message to users and connections listed in some order, with filters
    sent = parse_message(
        {
            "id": "m-7",
            "userIds": ["u-2", "u-1"],
            "platform": ["web", "pc"],
            "excludeConnectionIds": ["c-9", "c-3"],
            "payload": PAYLOAD,
        },
        now_ms=1,
    )
    # When its key is made for round 2
    key = idempotency.key_of(sent, 2)
    # Then every list is sorted, absent selectors are empty, and the round is in it
    assert key == {
        "id": "m-7",
        "connectionIds": [],
        "userIds": ["u-1", "u-2"],
        "broadcast": False,
        "platforms": ["pc", "web"],
        "exclude": ["c-3", "c-9"],
        "segment": None,
        "round": 2,
    }


def test_a_broadcast_share_s_key_names_its_segment_and_where_its_scan_starts() -> None:
    from dataclasses import replace

    broadcast = message(broadcast=True)
    share = replace(broadcast, target=replace(broadcast.target, segment=(3, 8), after="c-41"))
    key = idempotency.key_of(share, 0)
    assert (key["broadcast"], key["segment"], key["after"], key["platforms"]) == (
        True,
        [3, 8],
        "c-41",
        None,
    )
    assert "after" not in idempotency.key_of(broadcast, 0)
    assert idempotency.key_of(broadcast, 0)["segment"] is None


def test_the_same_id_to_two_channels_is_two_keys() -> None:
    # Given one id sent to two channels
    one, other = (
        parse_message({"id": "m-8", "channel": name, "payload": PAYLOAD}, now_ms=1)
        for name in ("room:1", "room:2")
    )
    # Then their keys name their channels, and differ
    assert (idempotency.key_of(one, 0)["channel"], idempotency.key_of(other, 0)["channel"]) == (
        "room:1",
        "room:2",
    )
    assert "channel" not in idempotency.key_of(message(broadcast=True), 0)


def test_the_processed_table_is_given_up_on_quickly_and_retried_in_standard_mode() -> None:
    store = idempotency._store(PROCESSED_TABLE, 60)
    config = store.client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (2, 3)
    assert config.retries["mode"] == "standard"
    assert store.table_name == PROCESSED_TABLE
    assert idempotency._store(PROCESSED_TABLE, 60) is store
    assert idempotency._store(PROCESSED_TABLE, 61) is not store
