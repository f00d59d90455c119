"""Route events read from API Gateway's WebSocket event shape (tests/events)."""

from __future__ import annotations

import base64

from tests.conftest import load_event
from wspush.contract.events import QueryParameters, RouteEvent


def test_a_connect_event_gives_its_connection_time_and_query() -> None:
    # Given a real $connect event
    event = load_event("ws_connect.json")

    request = RouteEvent.of(event)

    assert request.connection_id == "Xk1aAconnA0="
    assert request.connected_at == event["requestContext"]["connectedAt"]
    assert dict(request.query) == {"userid": "u-1", "platform": "pc"}
    assert request.query["userId"] == "u-1"
    assert request.body is None


def test_a_message_event_gives_its_body() -> None:
    request = RouteEvent.of(load_event("ws_message.json"))

    assert request.body == '{"action":"ping","content":"ping"}'
    assert request.base64_encoded is False


def test_a_binary_frame_is_flagged_base64() -> None:
    event = load_event("ws_message.json")
    event.update(body=base64.b64encode(b"\x00\x01").decode(), isBase64Encoded=True)

    assert RouteEvent.of(event).base64_encoded is True


def test_a_disconnect_event_has_no_query() -> None:
    event = load_event("ws_disconnect.json")
    event.pop("queryStringParameters", None)

    request = RouteEvent.of(event)

    assert request.query == {}
    assert request.query.get("userId") is None


def test_query_names_match_whatever_their_case_and_the_last_spelling_wins() -> None:
    query = QueryParameters({"userId": "first", "USERID": "last", "Platform": "pc"})

    assert query["userid"] == query["userId"] == "last"
    assert query.get("platform") == "pc"
    assert len(query) == 2
    assert "token" not in query


def test_a_missing_connection_time_is_unknown_not_an_error() -> None:
    event = load_event("ws_connect.json")
    del event["requestContext"]["connectedAt"]
    del event["isBase64Encoded"]

    request = RouteEvent.of(event)

    assert request.connected_at is None
    assert request.base64_encoded is False
