"""`make dev`'s rotation: the local lifetime, lead and bucket, and the ticker that runs the
sweeper as its EventBridge schedule does."""

from __future__ import annotations

from typing import Any

import pytest

from local.rotation import LocalRotation, RotationTicker, scheduled_event
from local.run import examples, offline_environment
from wspush.contract.events import ScheduledEvent
from wspush.settings import SettingsError
from wspush.tools.local import LocalStack

SHORT = {
    "WSPUSH_LOCAL_MAX_CONNECTION_SECONDS": "60",
    "WSPUSH_LOCAL_ROTATION_LEAD_SECONDS": "30",
    "WSPUSH_LOCAL_ROTATION_BUCKET_SECONDS": "5",
}


def test_by_default_the_local_stack_cuts_and_rotates_as_aws_does() -> None:
    rotation = LocalRotation.from_env({})
    assert rotation == LocalRotation(7_200, 600, 60)
    env = offline_environment(LocalStack(), "none")
    assert env["LOCAL_MAX_CONNECTION_SECONDS"] == "7200"
    assert env["LOCAL_ROTATION_LEAD_SECONDS"] == "600"
    assert env["LOCAL_ROTATION_BUCKET_SECONDS"] == "60"


def test_short_lifetimes_reach_the_functions_and_serverless_offline() -> None:
    # Given make dev run with a 60 s lifetime, a 30 s lead and 5 s buckets
    rotation = LocalRotation.from_env(SHORT)
    # When it prepares serverless-offline's environment
    env = offline_environment(LocalStack(), "none", rotation)
    # Then the functions' settings and serverless-offline's cut (webSocketHardTimeout, from
    # LOCAL_MAX_CONNECTION_SECONDS in serverless.yml) get them, and offline's own scheduler is
    # off (the ticker runs the sweeper every bucket instead)
    assert env["LOCAL_MAX_CONNECTION_SECONDS"] == "60"
    assert env["LOCAL_ROTATION_LEAD_SECONDS"] == "30"
    assert env["LOCAL_ROTATION_BUCKET_SECONDS"] == "5"
    assert env["LOCAL_ROTATION_SCHEDULE"] == "false"
    assert "rotation    reconnect asked 30 s before the cut at 60 s, swept every 5 s" in (
        examples(LocalStack(), "none", rotation)
    )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"WSPUSH_LOCAL_MAX_CONNECTION_SECONDS": "60"}, "WSPUSH_LOCAL_MAX_CONNECTION_SECONDS=60"),
        ({**SHORT, "WSPUSH_LOCAL_ROTATION_LEAD_SECONDS": "soon"}, "soon"),
        ({**SHORT, "WSPUSH_LOCAL_ROTATION_BUCKET_SECONDS": "0"}, "BUCKET_SECONDS"),
    ],
)
def test_settings_the_functions_would_refuse_stop_make_dev_at_once(
    env: dict[str, str], named: str
) -> None:
    # Given a lifetime shorter than the default lead, a lead that is no number, no bucket
    # Then make dev stops before starting anything, naming what it was given
    with pytest.raises(SettingsError, match=named):
        LocalRotation.from_env(env)


def test_rotation_off_locally() -> None:
    rotation = LocalRotation.from_env({"WSPUSH_LOCAL_ROTATION_LEAD_SECONDS": "0"})
    assert rotation.describe() == "off; connections cut after 7200 s"


def test_a_tick_is_eventbridges_scheduled_event_for_its_time() -> None:
    # Given the event of a tick due at 2026-11-28T12:00:05Z
    event = scheduled_event(1_795_867_205)
    # Then it has EventBridge's shape, and the sweeper reads the tick's time from it
    assert event["detail-type"] == "Scheduled Event"
    assert event["source"] == "aws.events"
    assert event["time"] == "2026-11-28T12:00:05Z"
    assert event["resources"] == [
        "arn:aws:events:us-east-1:123456789012:rule/wspush-local-rotation"
    ]
    assert ScheduledEvent.of(event, now_ms=0) == ScheduledEvent(event["id"], 1_795_867_205_000)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_a_failed_tick_is_tried_again_with_the_same_event_as_lambda_retries() -> None:
    # Given a sweeper that fails every time
    calls: list[dict[str, Any]] = []

    def fails(event: dict[str, Any]) -> dict[str, Any]:
        calls.append(event)
        raise RuntimeError("Unhandled: RotationIncomplete")

    clock = FakeClock()
    ticker = RotationTicker(fails, 5, clock=clock)
    # When a tick fails, and the clock passes a minute, then two more
    ticker.tick(1_795_867_200)
    clock.now += 59
    ticker.retry_due()
    assert len(calls) == 1
    clock.now += 1
    ticker.retry_due()
    clock.now += 120
    ticker.retry_due()
    clock.now += 3_600
    ticker.retry_due()
    # Then the same event was delivered three times in all (Lambda's two retries), and each
    # failure was reported
    assert len(calls) == 3
    assert all(call == calls[0] for call in calls)
    assert len(ticker.errors) == 3


def test_a_tick_that_succeeds_is_not_tried_again() -> None:
    calls: list[dict[str, Any]] = []
    clock = FakeClock()
    ticker = RotationTicker(lambda event: calls.append(event) or {}, 5, clock=clock)
    ticker.tick(1_795_867_200)
    clock.now += 600
    ticker.retry_due()
    assert len(calls) == 1
    assert ticker.errors == []
