"""Recovery through the local stack, with real WebSocket clients: what a client missed while
it was away is posted to its new connection, in order, before the reply says it is whole."""

from __future__ import annotations

import json
from typing import Any

from tests.e2e.clients import PAYLOAD, Client, connected, queue_message, unique
from tests.e2e.conftest import RunningStack


def ask(client: Client, **frame: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Send a request; the frames that came before its reply, and the reply."""
    client.send_json(frame)
    before = []
    while True:
        received = client.receive()
        if received.get("ref") == frame["ref"]:
            return before, received
        before.append(received)


def send_direct(stack: RunningStack, envelope: dict[str, Any]) -> dict[str, Any]:
    """Through the send Lambda: delivered (and kept) by the time it answers."""
    answer = stack.client("lambda").invoke(
        FunctionName=stack.local.send_function_name, Payload=json.dumps(envelope)
    )
    result: dict[str, Any] = json.loads(answer["Payload"].read())
    assert "error" not in result, result
    return result


def test_a_reconnected_client_recovers_its_user_stream_and_a_channel(
    local_stack: RunningStack,
) -> None:
    user, channel = unique("alice"), f"room:{unique('r')}"
    with connected(local_stack, user) as first:
        # Given alice's positions: her user stream (hello) and a channel with history
        _, welcome = ask(first, action="hello", ref="h")
        assert welcome["type"] == "welcome"
        assert welcome["data"]["userId"] == user
        user_since = welcome["data"]["stream"]
        _, subscribed = ask(first, action="subscribe", channel=channel, ref="s")
        channel_since = {k: subscribed["data"][k] for k in ("epoch", "seq")}
    # When 5 messages go to her and 5 to the channel while she is away
    for n in range(5):
        send_direct(local_stack, {"userId": user, "id": f"u-{n}", "payload": PAYLOAD})
        send_direct(local_stack, {"channel": channel, "id": f"c-{n}", "payload": PAYLOAD})
    with connected(local_stack, user) as second:
        # Then her new connection recovers each stream: the missed frames in seq order, with
        # their ids, then the reply saying nothing was lost
        missed, recovered = ask(second, action="recover", since=user_since, ref="r")
        assert [(f["id"], f["seq"]) for f in missed] == [(f"u-{n}", n + 1) for n in range(5)]
        assert recovered["type"] == "recovered"
        assert recovered["data"]["recovered"] is True
        assert recovered["data"]["seq"] == 5
        missed, resubscribed = ask(
            second, action="subscribe", channel=channel, since=channel_since, ref="s2"
        )
        assert [(f["id"], f["channel"], f["seq"]) for f in missed] == [
            (f"c-{n}", channel, n + 1) for n in range(5)
        ]
        assert resubscribed["data"]["recovered"] is True
        # And what comes next arrives live, with the next seq
        queue_message(local_stack, {"channel": channel, "id": "c-live", "payload": PAYLOAD})
        live = second.receive()
        assert (live["id"], live["seq"]) == ("c-live", 6)


def test_a_client_from_another_epoch_is_told_to_reload(local_stack: RunningStack) -> None:
    with connected(local_stack, unique("bob")) as app:
        missed, reply = ask(app, action="recover", since={"epoch": "gone", "seq": 3}, ref="r")
        assert missed == []
        assert reply["data"]["recovered"] is False
        _, refused = ask(app, action="recover", since={"seq": 3}, ref="bad")
        assert refused["data"]["code"] == "invalid_since"
