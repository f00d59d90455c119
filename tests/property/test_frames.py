"""WebSocket frames through the ``$default`` and ``ping`` routes.

Whatever a client sends, the route answers 200 with one JSON object ``{"type", "data",
"id", "ts"}``: an error saying why for ``$default``, a pong for ``ping``.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from handlers import default, ping
from tests.conftest import FakeLambdaContext, load_event
from tests.contract import assert_valid
from tests.property.strategies import deep_json, json_values, odd_text

MISSING = object()  # the event has no "body" at all
CONNECTION_ID = "Xk1aAconnA0="


def frame_event(body: Any, *, route: str, base64_flagged: bool = False) -> dict[str, Any]:
    event = load_event("ws_message.json")
    event["requestContext"]["routeKey"] = route
    event["isBase64Encoded"] = base64_flagged
    if body is MISSING:
        del event["body"]
    else:
        event["body"] = body
    return event


def reply_of(response: dict[str, Any]) -> dict[str, Any]:
    """The route response's body: exactly one contract frame, sendable as UTF-8."""
    assert response["statusCode"] == 200
    body = response["body"]
    assert isinstance(body, str)
    body.encode("utf-8")
    reply = json.loads(body)
    assert isinstance(reply, dict)
    assert set(reply) == {"type", "data", "id", "ts"}
    assert isinstance(reply["id"], str)
    assert reply["id"]
    assert isinstance(reply["ts"], int)
    return reply


def bodies() -> Any:
    """What a client may send as a frame (text frames arrive as they are)."""
    return st.one_of(
        st.just(MISSING),
        st.none(),
        odd_text(max_size=200),
        json_values().map(json.dumps),
        json_values().map(lambda value: json.dumps(value, ensure_ascii=False)),
        st.fixed_dictionaries({"action": json_values(max_leaves=3)}).map(json.dumps),
        st.fixed_dictionaries(
            {"action": odd_text(max_size=100)}, optional={"content": json_values()}
        ).map(json.dumps),
        st.integers(1, 12_000).map(deep_json),
    )


@settings(max_examples=200)
@given(body=bodies())
@example(body="x" * 1_048_576)
@example(body=json.dumps({"action": "\u202e" + "a" * 1_048_576}))
@example(body='{"action": "\\ud800"}')
@example(body="[" * 100_000)
def test_default_answers_any_frame_with_an_error_frame(body: Any) -> None:
    # Given any frame no route takes
    event = frame_event(body, route="$default")
    # When $default handles it
    response = default.handler(event, FakeLambdaContext())
    # Then the client gets one error frame with a code and a short, printable message
    reply = reply_of(response)
    assert_valid("error-frame", reply)
    assert 0 < len(reply["data"]["message"]) <= 200
    assert reply["data"]["message"].isprintable()


@settings(max_examples=40)
@given(text=odd_text(max_size=200, unicode_only=True))
def test_default_decodes_base64_flagged_frames(text: str) -> None:
    # Given a frame API Gateway passed base64-encoded (valid base64 of UTF-8 text)
    encoded = base64.b64encode(text.encode("utf-8")).decode("ascii")
    event = frame_event(encoded, route="$default", base64_flagged=True)
    # When $default handles it, then the client gets an error frame
    assert reply_of(default.handler(event, FakeLambdaContext()))["type"] == "error"


@pytest.mark.parametrize(
    "body",
    ["!!!not-base64", "abcde", base64.b64encode(b"\xff\xfe\x00").decode()],
    ids=["not-base64", "bad-padding", "not-utf8"],
)
def test_default_answers_a_broken_base64_frame_with_an_error_frame(body: str) -> None:
    # Given a base64-flagged frame that does not decode to text
    event = frame_event(body, route="$default", base64_flagged=True)
    # When $default handles it, then the client gets a bad_frame error
    reply = reply_of(default.handler(event, FakeLambdaContext()))
    assert reply["data"]["code"] == "bad_frame"


@pytest.mark.usefixtures("online")
@settings(max_examples=40, deadline=None)
@given(
    body=bodies() | st.binary(max_size=50).map(lambda raw: base64.b64encode(raw).decode()),
    base64_flagged=st.booleans(),
    connection_id=st.sampled_from((CONNECTION_ID, "a-pc")),
)
def test_ping_answers_pong_whatever_the_frame_holds(
    lambda_context: FakeLambdaContext, body: Any, base64_flagged: bool, connection_id: str
) -> None:
    # Given a ping frame from a known or unknown connection, with any body
    event = frame_event(body, route="ping", base64_flagged=base64_flagged)
    event["requestContext"]["connectionId"] = connection_id
    # When the ping route handles it
    response = ping.handler(event, lambda_context)
    # Then the client gets its pong, naming its connection
    reply = reply_of(response)
    assert (reply["type"], reply["data"]) == ("pong", {"connectionId": connection_id})
    assert_valid("pong-frame", reply)
