"""The local stack's events feed under moto: the rule, the trimmed queue, and moto's
EventBridge with its input paths compiled once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import jsonpath_ng.ext
import pytest

from local import moto_events
from local.events import FeedTrimmer, create_event_feed
from tests.conftest import REGION
from wspush.tools.local import LocalStack

pytestmark = pytest.mark.usefixtures("aws")


@pytest.fixture
def feed() -> tuple[Any, Any, str]:
    sqs = boto3.client("sqs", region_name=REGION)
    events = boto3.client("events", region_name=REGION)
    url = create_event_feed(sqs, events, LocalStack())
    return sqs, events, url


def put(events: Any, source: str, user_id: str) -> None:
    detail = json.dumps({"userId": user_id})
    events.put_events(Entries=[{"Source": source, "DetailType": "user.online", "Detail": detail}])


def bodies(sqs: Any, url: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages"):
        found += [json.loads(message["Body"]) for message in messages]
        entries = [{"Id": m["MessageId"], "ReceiptHandle": m["ReceiptHandle"]} for m in messages]
        sqs.delete_message_batch(QueueUrl=url, Entries=entries)
    return found


def test_the_trimmer_keeps_the_newest_events_and_leaves_a_short_queue_alone(
    feed: tuple[Any, Any, str],
) -> None:
    sqs, events, url = feed
    # Given 25 events nobody read
    for n in range(25):
        put(events, "wspush", f"u-{n:02d}")
    trimmer = FeedTrimmer(sqs, url, kept=10)
    # When the trimmer runs, twice
    dropped = [trimmer.trim_once(), trimmer.trim_once()]
    # Then the 15 oldest are gone, the newest 10 are there, and a second round drops nothing
    assert dropped == [15, 0]
    assert [b["detail"]["userId"] for b in bodies(sqs, url)] == [f"u-{n}" for n in range(15, 25)]


@pytest.fixture
def compiled_once() -> Iterator[None]:
    moto_events.install()
    yield
    moto_events.uninstall()


def test_with_paths_compiled_once_moto_delivers_the_same_events(
    feed: tuple[Any, Any, str], compiled_once: None
) -> None:
    sqs, events, url = feed
    # When wspush's events and another source's are put, with moto's parser cached
    put(events, "wspush", "alice")
    put(events, "billing", "bob")
    put(events, "wspush", "carol")
    # Then the rule's queue holds wspush's, in EventBridge's shape
    received = bodies(sqs, url)
    assert [(b["source"], b["detail"]) for b in received] == [
        ("wspush", {"userId": "alice"}),
        ("wspush", {"userId": "carol"}),
    ]
    assert {"id", "time", "region", "detail-type", "resources"} <= received[0].keys()
    # And each expression was compiled once for both events
    assert jsonpath_ng.ext.parse("$.detail") is jsonpath_ng.ext.parse("$.detail")
