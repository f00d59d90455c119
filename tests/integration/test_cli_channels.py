"""``wspush presence`` and ``wspush events`` against moto: members stored by the Lambdas' own
store, read back from outside; events put by the lifecycle's own code, read back from the queue
the local stack's rule sends them to."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from local.events import create_event_feed
from tests.conftest import CHANNELS_TABLE, REGION
from tests.integration.test_publisher import free_port, stack_template
from tests.support import add_connection
from wspush import eventbus
from wspush.clock import now_ms
from wspush.store import channels, presence
from wspush.store.connections import ConnectionRecord
from wspush.tools import cli
from wspush.tools.local import LocalStack

LOBBY = "lobby:main"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = cli.main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def join(connection_id: str, user_id: str, info: Any = None, channel: str = LOBBY) -> None:
    """A connection subscribed to a presence channel, as the subscribe route stores it."""
    add_connection(connection_id, user_id)
    record = ConnectionRecord(connection_id, user_id, "pc", now_ms(), now_ms())
    channels.subscribe(
        record,
        channel,
        expires=datetime.now(UTC) + timedelta(hours=2),
        max_channels=5,
        presence=channels.Presence(info=info, max_members=100),
    )


# --- presence -----------------------------------------------------------------------------


@pytest.mark.usefixtures("aws")
def test_presence_prints_the_count_and_every_member_with_info_and_connections(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given alice in the lobby on two connections (with info), bob on one, carol elsewhere
    join("a-pc", "alice", {"name": "Alice"})
    join("a-mobile", "alice", {"name": "Alice"})
    join("b-pc", "bob")
    join("c-pc", "carol", channel="lobby:other")
    # When the command reads the lobby from the channels table by its name
    argv = ["presence", LOBBY, "--table", CHANNELS_TABLE, "--region", REGION]
    status, out, err = run(argv, capsys)
    # Then one JSON line holds the count and the members, as the presence reply has them
    assert (status, err) == (0, "")
    assert json.loads(out) == {
        "channel": LOBBY,
        "count": 2,
        "members": [
            {"userId": "alice", "info": {"name": "Alice"}, "connections": 2},
            {"userId": "bob", "info": None, "connections": 1},
        ],
    }
    assert out.count("\n") == 1
    # And reading joined nothing: the lobby still has exactly those subscriptions
    assert [r.connection_id for r in channels.subscribers(LOBBY, now_ms=now_ms())] == [
        "a-mobile",
        "a-pc",
        "b-pc",
    ]


@pytest.mark.usefixtures("aws")
def test_every_member_follows_the_pages_to_the_end() -> None:
    # Given five members
    for n in range(5):
        join(f"c-{n}", f"user-{n}")
    # When they are read two to a page
    model = presence.table(CHANNELS_TABLE, region=REGION)
    count, members = presence.every_member(model, LOBBY, page_size=2)
    # Then all five come back once, in user id order, with the count
    assert count == 5
    assert [member.user_id for member in members] == [f"user-{n}" for n in range(5)]


@pytest.mark.usefixtures("aws")
def test_an_empty_channel_has_no_members() -> None:
    model = presence.table(CHANNELS_TABLE, region=REGION)
    assert presence.every_member(model, "lobby:nobody") == (0, [])


@pytest.mark.usefixtures("aws")
def test_presence_of_a_stage_reads_the_table_its_stack_names(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given stack wspush-prod naming the channels table, and stack wspush-old that does not
    cloudformation = boto3.client("cloudformation", region_name=REGION)
    cloudformation.create_stack(
        StackName="wspush-prod", TemplateBody=stack_template({"ChannelsTableName": CHANNELS_TABLE})
    )
    cloudformation.create_stack(StackName="wspush-old", TemplateBody=stack_template({}))
    join("b-pc", "bob")
    # When the command reads the lobby of each stage
    status, out, _ = run(["presence", LOBBY, "--stage", "prod", "--region", REGION], capsys)
    # Then prod's table answers, and the old stack's missing output is named
    assert status == 0
    assert json.loads(out)["members"] == [{"userId": "bob", "info": None, "connections": 1}]
    status, out, err = run(["presence", LOBBY, "--stage", "old", "--region", REGION], capsys)
    assert (status, out) == (1, "")
    assert err == "wspush: error: stack wspush-old has no output ChannelsTableName\n"


@pytest.mark.usefixtures("aws")
def test_a_table_that_does_not_exist_is_an_error_with_awss_reason(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, err = run(["presence", LOBBY, "--table", "nope", "--region", REGION], capsys)
    assert (status, out) == (1, "")
    assert err == (
        "wspush: error: could not read the channel's members: ResourceNotFoundException\n"
    )


def test_presence_on_a_local_stack_that_is_not_running_says_to_start_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given nothing listening where the local stack's moto should be
    port = free_port()
    monkeypatch.setenv("WSPUSH_LOCAL_AWS_PORT", str(port))
    # When the command reads a lobby there
    status, out, err = run(["presence", LOBBY], capsys)
    # Then it says how to fix it
    assert (status, out) == (1, "")
    assert err.startswith("wspush: error: could not reach the channels table: ")
    assert err.endswith(f"— is `make dev` running? (port from WSPUSH_LOCAL_AWS_PORT={port})\n")


# --- events -------------------------------------------------------------------------------


@pytest.fixture
def local_events(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalStack]:
    """moto's server on a free port with the local stack's events rule and queue, and the
    lifecycle's event code pointed at it, as `make dev` points it."""
    port = free_port()
    monkeypatch.setenv("WSPUSH_LOCAL_EVENTS_PORT", str(port))
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    local = LocalStack.from_env()
    client = {"region_name": REGION, "endpoint_url": local.events_endpoint}
    url = create_event_feed(boto3.client("sqs", **client), boto3.client("events", **client), local)
    assert url == local.events_queue_url
    monkeypatch.setenv("AWS_ENDPOINT_URL_EVENTBRIDGE", local.events_endpoint)
    eventbus._client.cache_clear()
    yield local
    eventbus._client.cache_clear()
    server.stop()


def lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines()]


def test_events_prints_each_online_and_offline_event_once(
    local_events: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given alice came online and went offline, as the lifecycle function reports it
    online = {"userId": "alice", "connectionId": "c-1", "platform": "pc", "at": 1}
    offline = {**online, "at": 2}
    assert eventbus.put("default", "user.online", online, region=REGION)
    assert eventbus.put("default", "user.offline", offline, region=REGION)
    # When the command prints the events
    status, out, err = run(["events"], capsys)
    # Then each is one JSON line: EventBridge's envelope with wspush's detail
    assert (status, err) == (0, "")
    events = lines(out)
    assert [(e["source"], e["detail-type"], e["detail"]) for e in events] == [
        ("wspush", "user.online", online),
        ("wspush", "user.offline", offline),
    ]
    # And they are gone from the queue: a second run prints nothing
    assert run(["events"], capsys)[:2] == (0, "")


def test_events_ignores_what_other_sources_put_on_the_bus(
    local_events: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    events = boto3.client("events", region_name=REGION, endpoint_url=local_events.events_endpoint)
    events.put_events(Entries=[{"Source": "billing", "DetailType": "invoice.paid", "Detail": "{}"}])
    eventbus.put("default", "user.online", {"userId": "bob"}, region=REGION)
    status, out, _ = run(["events"], capsys)
    assert status == 0
    assert [e["detail-type"] for e in lines(out)] == ["user.online"]


def test_follow_prints_events_as_they_come_until_ctrl_c(
    local_events: LocalStack,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given one event on the bus
    eventbus.put("default", "user.online", {"userId": "carol"}, region=REGION)
    printed: list[str] = []

    def then_ctrl_c(line: str) -> None:
        printed.append(line)
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_print_line", then_ctrl_c)
    # When the command follows the feed and is stopped after the first event
    status, _, err = run(["events", "--follow"], capsys)
    # Then it printed that event, said where it was following, and exited 0
    assert status == 0
    assert [json.loads(line)["detail"] for line in printed] == [{"userId": "carol"}]
    assert err == f"wspush: following {local_events.events_queue_url}; Ctrl-C stops\n"


def test_events_on_a_local_stack_that_is_not_running_says_to_start_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    monkeypatch.setenv("WSPUSH_LOCAL_EVENTS_PORT", str(port))
    status, out, err = run(["events"], capsys)
    assert (status, out) == (1, "")
    assert err == (
        f"wspush: error: cannot reach the local stack at http://127.0.0.1:{port} — is "
        f"`make dev` running? (port from WSPUSH_LOCAL_EVENTS_PORT={port})\n"
    )


def test_events_from_a_queue_that_does_not_exist_names_sqss_reason(
    local_events: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = local_events.events_queue_url.rsplit("/", 1)[0] + "/nope"
    argv = ["events", "--queue-url", missing, "--endpoint-url", local_events.events_endpoint]
    status, out, err = run([*argv, "--region", REGION], capsys)
    assert (status, out) == (1, "")
    assert err.startswith("wspush: error: SQS refused the call: ")
