"""Rotation's arithmetic: each connection's cut bucket and shard, the buckets a tick sweeps,
``before``, and the schedule's event."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from tests.conftest import load_event
from wspush.contract.events import ScheduledEvent
from wspush.errors import InvalidEvent
from wspush.rotation import buckets
from wspush.rotation.sweeper import message_id, reconnect_payload
from wspush.settings import Settings, SettingsError

BASE = {"WSPUSH_TABLE_NAME": "t"}
SETTINGS = Settings.from_env(BASE)  # 7200 s lifetime, 600 s lead, 60 s buckets
OPENED = 1_795_873_954_014  # ms
NOON = 1_795_867_200  # 2026-11-28T12:00:00Z, a whole minute (s)
SHARD_OF_EXAMPLE = 2  # CRC-32 of "L0SM9cOFvHcCIhw=", modulo 16


def test_a_connections_bucket_is_the_minute_its_cut_falls_in() -> None:
    # Given a connection opened at OPENED (API Gateway cuts it 7200 s later)
    cut_ms = OPENED + 7_200_000
    # When its bucket is computed
    bucket = buckets.cut_bucket(OPENED, SETTINGS)
    # Then it is the start of the minute of its cut: no later than the cut, within a minute
    assert bucket % 60 == 0
    assert bucket * 1000 <= cut_ms < (bucket + 60) * 1000
    assert buckets.before_ms(bucket) == bucket * 1000


@pytest.mark.parametrize("offset_ms", [0, 1, 59_999, 60_000])
def test_before_is_never_later_than_any_cut_in_the_bucket(offset_ms: int) -> None:
    # Given connections opened at each edge of a minute
    opened = NOON * 1000 + offset_ms
    # Then the bucket's `before` is at or before each one's cut
    bucket = buckets.cut_bucket(opened, SETTINGS)
    assert buckets.before_ms(bucket) <= opened + 7_200_000
    assert buckets.before_ms(bucket) > opened + 7_200_000 - 60_000


def test_the_local_lifetime_and_bucket_change_the_bucket() -> None:
    # Given a local stack cutting after 60 s, in 5 s buckets
    local = replace(SETTINGS, max_connection_seconds=60, rotation_bucket_seconds=5)
    # Then a connection opened at NOON + 2.5 s is in the bucket starting at NOON + 60 s
    assert buckets.cut_bucket(NOON * 1000 + 2_500, local) == NOON + 60


def test_a_rows_index_key_names_its_bucket_and_shard() -> None:
    key = buckets.index_key("L0SM9cOFvHcCIhw=", OPENED, SETTINGS)
    bucket, shard = key.split("#") if key else ("", "")
    assert int(bucket) == buckets.cut_bucket(OPENED, SETTINGS)
    assert int(shard) == buckets.shard_of("L0SM9cOFvHcCIhw=")
    assert len(shard) == 2


def test_with_rotation_off_a_row_gets_no_index_key() -> None:
    # Given a lead of 0  /  Then no row enters the index, and no tick sweeps anything
    off = replace(SETTINGS, rotation_lead_seconds=0)
    assert buckets.index_key("L0SM9cOFvHcCIhw=", OPENED, off) is None
    assert buckets.due(NOON * 1000, now_ms=NOON * 1000, settings=off) == []


def test_shards_are_stable_and_spread_connections() -> None:
    # Given 16,000 connection ids of API Gateway's shape
    ids = [f"{n:011d}A0=" for n in range(16_000)]
    shards = [buckets.shard_of(cid) for cid in ids]
    # Then every shard gets a fair share (1,000 each, give or take a fifth)
    counts = [shards.count(shard) for shard in range(buckets.SHARDS)]
    assert min(counts) > 800
    assert max(counts) < 1_200
    # And a connection's shard is the same in every process (no per-process hash seed)
    assert buckets.shard_of("L0SM9cOFvHcCIhw=") == SHARD_OF_EXAMPLE


def test_a_tick_sweeps_the_bucket_a_lead_ahead() -> None:
    # Given a tick on time at noon (lead 600 s, 60 s buckets)
    tick = NOON * 1000
    # When the due buckets are asked for
    due = buckets.due(tick, now_ms=tick, settings=SETTINGS)
    # Then the newest is the bucket of cuts 600 s ahead; earlier ones whose cuts are still
    # ahead come first (ticks remember what they queued, so those are usually skipped)
    assert due[-1] == NOON + 600
    assert due == [NOON + 60 * minute for minute in range(1, 11)]


def test_each_connection_is_warned_at_least_the_lead_ahead() -> None:
    # Given ticks every 60 s, at any second within the minute (EventBridge runs a rate rule
    # within its minute, not on its 0th second)
    for second in (0, 1, 30, 59):
        tick_ms = (NOON + second) * 1000
        # When a tick sweeps its own bucket
        own = buckets.due(tick_ms, now_ms=tick_ms, settings=SETTINGS)[-1]
        # Then every cut in it (own .. own + 60 s) is at least the lead ahead, and less than
        # the lead and two buckets (the lead and one bucket for a tick on the minute)
        assert own * 1000 - tick_ms >= 600_000
        assert (own + 60) * 1000 - tick_ms < 720_000
        if second == 0:
            assert (own + 60) * 1000 - tick_ms == 660_000
        # And the next tick's own bucket is the next one: none skipped, none twice
        later = tick_ms + 60_000
        assert buckets.due(later, now_ms=later, settings=SETTINGS)[-1] == own + 60


def test_a_late_tick_sweeps_nothing_whose_cut_has_passed() -> None:
    # Given the tick of noon, handled 11 minutes late (a retried invocation)
    tick = NOON * 1000
    now = tick + 11 * 60_000
    # Then its own bucket (cut at noon + 10 min) is past: nothing is swept
    assert buckets.due(tick, now_ms=now, settings=SETTINGS) == []
    # And handled 3 minutes late, its own bucket and the ones whose cuts are still ahead
    now = tick + 3 * 60_000
    assert buckets.due(tick, now_ms=now, settings=SETTINGS) == [
        NOON + 240,
        NOON + 300,
        NOON + 360,
        NOON + 420,
        NOON + 480,
        NOON + 540,
        NOON + 600,
    ]


def test_buckets_narrower_than_the_schedule_are_all_reached() -> None:
    # Given 30 s buckets and a tick each minute (EventBridge's finest rate)
    narrow = replace(SETTINGS, rotation_bucket_seconds=30)
    first = NOON * 1000
    second = first + 60_000
    # Then the second tick also sweeps the bucket between its own and the first's
    assert buckets.due(first, now_ms=first, settings=narrow)[-1] == NOON + 600
    assert buckets.due(second, now_ms=second, settings=narrow)[-2:] == [NOON + 630, NOON + 660]


def test_the_reconnect_frame_and_its_id() -> None:
    assert reconnect_payload(NOON + 600) == {
        "type": "reconnect",
        "data": {"reason": "max_duration", "before": (NOON + 600) * 1000},
    }
    assert message_id(NOON + 600, 7) == f"reconnect-{NOON + 600}-07"


def test_a_scheduled_event_gives_the_time_it_was_due() -> None:
    # Given EventBridge's scheduled event
    event = load_event("scheduled.json")
    # Then its time is read as UTC milliseconds (whatever the clock says now)
    tick = ScheduledEvent.of(event, now_ms=0)
    assert tick.time_ms == int(datetime(2026, 12, 2, 11, 2, tzinfo=UTC).timestamp()) * 1000
    assert tick.id == event["id"]


def test_an_event_without_a_time_is_due_now() -> None:
    assert ScheduledEvent.of({}, now_ms=123) == ScheduledEvent("", 123)


@pytest.mark.parametrize("time", ["yesterday", "2026-12-02T11:02:00", 1795867200])
def test_a_scheduled_event_with_a_bad_time_is_refused(time: object) -> None:
    event = {**load_event("scheduled.json"), "time": time}
    with pytest.raises(InvalidEvent):
        ScheduledEvent.of(event, now_ms=0)


def test_rotation_settings_default_to_api_gateways_cut() -> None:
    assert SETTINGS.max_connection_seconds == 7_200
    assert SETTINGS.rotation_lead_seconds == 600
    assert SETTINGS.rotation_bucket_seconds == 60


@pytest.mark.parametrize(
    ("lifetime", "lead", "bucket"),
    [("60", "60", "5"), ("60", "55", "5"), ("60", "50", "20")],
)
def test_a_warning_that_would_come_before_the_connection_opened_is_refused(
    lifetime: str, lead: str, bucket: str
) -> None:
    # Given a lead (plus a bucket) as long as the lifetime: the bucket would be swept before
    # some of its connections opened
    env = {
        **BASE,
        "WSPUSH_MAX_CONNECTION_SECONDS": lifetime,
        "WSPUSH_ROTATION_LEAD_SECONDS": lead,
        "WSPUSH_ROTATION_BUCKET_SECONDS": bucket,
    }
    with pytest.raises(SettingsError, match="WSPUSH_ROTATION_LEAD_SECONDS"):
        Settings.from_env(env)


def test_short_local_lifetimes_and_rotation_off_are_accepted() -> None:
    local = Settings.from_env(
        {
            **BASE,
            "WSPUSH_MAX_CONNECTION_SECONDS": "60",
            "WSPUSH_ROTATION_LEAD_SECONDS": "30",
            "WSPUSH_ROTATION_BUCKET_SECONDS": "5",
        }
    )
    assert (local.max_connection_seconds, local.rotation_lead_seconds) == (60, 30)
    off = Settings.from_env({**BASE, "WSPUSH_ROTATION_LEAD_SECONDS": "0"})
    assert off.rotation_lead_seconds == 0
