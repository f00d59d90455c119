"""Channels and presence through the local stack, with real WebSocket clients."""

from __future__ import annotations

import socket
from typing import Any

from tests.e2e.clients import PAYLOAD, Client, connected, queue_message, unique
from tests.e2e.conftest import RunningStack


def ask(client: Client, **frame: Any) -> dict[str, Any]:
    """Send a channel request; its reply (presence events that arrive first are skipped)."""
    client.send_json(frame)
    while True:
        reply = client.receive()
        if reply.get("ref") == frame.get("ref"):
            return reply


def next_of_type(client: Client, frame_type: str) -> dict[str, Any]:
    while True:
        frame = client.receive()
        if frame["type"] == frame_type:
            return frame


def test_two_clients_see_each_other_a_channel_message_and_an_unclean_leave(
    local_stack: RunningStack,
) -> None:
    channel = f"lobby:{unique('room')}"
    alice, bob, carol = unique("alice"), unique("bob"), unique("carol")
    with (
        connected(local_stack, alice) as alice_app,
        connected(local_stack, carol) as carol_app,
    ):
        # Given alice in a presence channel
        reply = ask(alice_app, action="subscribe", channel=channel, ref="a1")
        assert reply["type"] == "subscribed"
        assert reply["data"]["channel"] == channel
        with connected(local_stack, bob) as bob_app:
            # When bob joins
            assert ask(bob_app, action="subscribe", channel=channel, ref="b1")["type"] == (
                "subscribed"
            )
            # Then alice is told, and both see two members
            joined = next_of_type(alice_app, "presence.join")
            assert joined["data"]["userId"] == bob
            assert joined["channel"] == channel
            members = ask(bob_app, action="presence", channel=channel, ref="p")["data"]
            assert members["count"] == 2
            assert {m["userId"] for m in members["members"]} == {alice, bob}
            # And a message published to the channel reaches both, not carol
            queue_message(local_stack, {"channel": channel, "id": "m-ch", "payload": PAYLOAD})
            for app in (alice_app, bob_app):
                frame = next_of_type(app, PAYLOAD["type"])
                assert (frame["id"], frame["channel"]) == ("m-ch", channel)
            assert carol_app.nothing_within(1.0)
            # When bob's connection drops without a close frame
            bob_app.ws.socket.shutdown(socket.SHUT_RDWR)
        # Then, once the stack has cleaned up after it, alice sees bob leave
        left = next_of_type(alice_app, "presence.leave")
        assert left["data"] == {"channel": channel, "userId": bob}


def test_a_restricted_channel_is_forbidden_without_a_grant(local_stack: RunningStack) -> None:
    with connected(local_stack, unique("mallory")) as app:
        reply = ask(app, action="subscribe", channel="secret:plans", ref="s")
        assert reply["type"] == "error"
        assert reply["data"]["code"] == "forbidden"
        assert reply["data"]["channel"] == "secret:plans"
