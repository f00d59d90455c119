"""The WebSocket route handlers under moto: $connect, $disconnect, ping, $default."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from handlers import connect, default, disconnect, ping
from tests.conftest import REGION, TABLE, FakeLambdaContext, load_event
from tests.support import add_connection, stored_ids
from wspush.clock import now_ms
from wspush.errors import StorageUnavailable
from wspush.settings import get_settings
from wspush.store import connections

pytestmark = pytest.mark.usefixtures("aws")


def connect_event(connection_id: str = "conn-1", **query: str) -> dict[str, Any]:
    event = load_event("ws_connect.json")
    event["requestContext"]["connectionId"] = connection_id
    event["queryStringParameters"] = query or None
    event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()} or None
    return event


def frame_event(
    body: str | None, connection_id: str = "conn-1", route: str = "ping"
) -> dict[str, Any]:
    event = load_event("ws_message.json")
    event["requestContext"]["connectionId"] = connection_id
    event["requestContext"]["routeKey"] = route
    event["body"] = body
    return event


def raw_item(connection_id: str) -> dict[str, Any] | None:
    table = boto3.resource("dynamodb", region_name=REGION).Table(TABLE)
    item: dict[str, Any] | None = table.get_item(Key={"connectionId": connection_id}).get("Item")
    return item


def test_connect_stores_the_connection_with_a_ttl(lambda_context: FakeLambdaContext) -> None:
    # Given a handshake for user u-1 on pc
    before_s = now_ms() // 1000
    # When $connect runs
    event = connect_event("conn-1", userId="u-1", platform="pc")
    connected_at = event["requestContext"]["connectedAt"]
    response = connect.handler(event, lambda_context)
    # Then the handshake is accepted and the row holds user, platform, times, and a TTL of
    # API Gateway's 2-hour lifetime plus a margin, counted from connectedAt
    assert response["statusCode"] == 200
    item = raw_item("conn-1")
    assert item is not None
    assert (item["userId"], item["platform"]) == ("u-1", "pc")
    assert item["connectedAt"] == connected_at
    assert int(item["lastSeenAt"]) >= before_s * 1000
    assert int(item["ttl"]) == connected_at // 1000 + get_settings().connection_ttl_seconds
    assert 2 * 3600 < get_settings().connection_ttl_seconds <= 3 * 3600


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ({}, "userId query parameter is required"),
        ({"userId": ""}, "userId query parameter is required"),
        ({"userId": "u" * 129}, "longer than 128"),
        ({"userId": "bad\nid"}, "whitespace or control"),
        ({"userId": "u-1", "platform": "x" * 33}, "platform must be"),
    ],
)
def test_connect_refuses_a_bad_handshake_and_stores_nothing(
    lambda_context: FakeLambdaContext, query: dict[str, str], reason: str
) -> None:
    response = connect.handler(connect_event("conn-bad", **query), lambda_context)
    assert response["statusCode"] == 400
    assert reason in response["body"]
    assert raw_item("conn-bad") is None


def test_connect_refuses_a_platform_outside_the_configured_list(
    lambda_context: FakeLambdaContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a stage that allows only pc and mobile
    monkeypatch.setenv("WSPUSH_ALLOWED_PLATFORMS", "pc,mobile")
    get_settings.cache_clear()
    try:
        refused = connect.handler(connect_event("c-tv", userId="u", platform="tv"), lambda_context)
        missing = connect.handler(connect_event("c-none", userId="u"), lambda_context)
        accepted = connect.handler(
            connect_event("c-pc", userId="u", platform="mobile"), lambda_context
        )
    finally:
        monkeypatch.delenv("WSPUSH_ALLOWED_PLATFORMS")
        get_settings.cache_clear()
    # Then tv and a missing platform are refused, mobile is stored
    assert (refused["statusCode"], missing["statusCode"], accepted["statusCode"]) == (400, 400, 200)
    assert "mobile, pc" in refused["body"]
    assert stored_ids() == {"c-pc"}


def test_connect_without_platform_stores_unknown_when_any_platform_is_allowed(
    lambda_context: FakeLambdaContext,
) -> None:
    connect.handler(connect_event("conn-1", userId="u-1"), lambda_context)
    item = raw_item("conn-1")
    assert item is not None
    assert item["platform"] == "unknown"


def test_connect_fails_with_5xx_when_the_table_is_unavailable(
    lambda_context: FakeLambdaContext,
) -> None:
    # Given the table cannot be written (it does not exist)
    boto3.client("dynamodb", region_name=REGION).delete_table(TableName=TABLE)
    # When a client connects
    response = connect.handler(connect_event("conn-1", userId="u-1"), lambda_context)
    # Then the handshake fails with a server error
    assert response["statusCode"] == 500


def test_a_write_that_failed_late_leaves_no_row_behind(
    lambda_context: FakeLambdaContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a PutItem that lands but is reported failed (e.g. the response timed out)
    landed = connections.save

    def save_then_fail(
        record: connections.ConnectionRecord, *, ttl_seconds: int, rotation: str | None
    ) -> None:
        landed(record, ttl_seconds=ttl_seconds, rotation=rotation)
        raise StorageUnavailable("timed out")

    monkeypatch.setattr(connections, "save", save_then_fail)
    # When a client connects
    response = connect.handler(connect_event("conn-1", userId="u-1"), lambda_context)
    # Then the handshake fails and the row that landed was removed again
    assert response["statusCode"] == 500
    assert raw_item("conn-1") is None


def test_disconnect_deletes_exactly_that_connection_and_is_idempotent(
    lambda_context: FakeLambdaContext,
) -> None:
    # Given two connections of one user
    add_connection("conn-1", "u-1")
    add_connection("conn-2", "u-1", "mobile")
    event = load_event("ws_disconnect.json")
    event["requestContext"]["connectionId"] = "conn-1"
    # When conn-1 disconnects, twice
    first = disconnect.handler(event, lambda_context)
    second = disconnect.handler(event, lambda_context)
    # Then only conn-1 is gone and both calls succeed
    assert (first["statusCode"], second["statusCode"]) == (200, 200)
    assert stored_ids() == {"conn-2"}


def test_ping_replies_with_a_json_pong_and_refreshes_liveness(
    lambda_context: FakeLambdaContext,
) -> None:
    # Given a connection last seen long ago
    connections.save(
        connections.ConnectionRecord("conn-1", "u-1", "pc", 1_000, 1_000), ttl_seconds=60
    )
    # When the client sends the seed's ping frame
    response = ping.handler(frame_event('{"action":"ping","content":"ping"}'), lambda_context)
    # Then it gets a pong in the contract's shape, and lastSeenAt moved forward
    assert response["statusCode"] == 200
    pong = json.loads(response["body"])
    assert pong["type"] == "pong"
    assert pong["data"] == {"connectionId": "conn-1"}
    assert {"id", "ts"} <= pong.keys()
    item = raw_item("conn-1")
    assert item is not None
    assert int(item["lastSeenAt"]) >= pong["ts"] - 1_000
    # And the TTL still counts from connectedAt: API Gateway closes the socket 2 h after opening
    assert int(item["ttl"]) == 1 + 60


def test_ping_from_an_unknown_connection_still_gets_a_pong_and_stores_nothing(
    lambda_context: FakeLambdaContext,
) -> None:
    response = ping.handler(frame_event('{"action":"ping"}', "ghost"), lambda_context)
    assert json.loads(response["body"])["type"] == "pong"
    assert raw_item("ghost") is None


@pytest.mark.parametrize(
    ("body", "code"),
    [("not json at all", "bad_frame"), ('{"action":"publish"}', "unknown_action")],
)
def test_default_route_answers_with_a_json_error(
    lambda_context: FakeLambdaContext, body: str, code: str
) -> None:
    response = default.handler(frame_event(body, route="$default"), lambda_context)
    reply = json.loads(response["body"])
    assert (reply["type"], reply["data"]["code"]) == ("error", code)
