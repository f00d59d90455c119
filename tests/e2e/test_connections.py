"""Connection life cycle and client frames through the local gateway."""

from __future__ import annotations

import uuid

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.e2e.clients import (
    PAYLOAD,
    connected,
    eventually,
    queue_message,
    stored_connection,
    unique,
)
from tests.e2e.conftest import RunningStack


def test_ping_gets_a_json_pong_and_bad_frames_get_json_errors(local_stack: RunningStack) -> None:
    with connected(local_stack, unique("u")) as app:
        # The seed's ping frame gets a pong naming the connection
        pong = app.ping()
        assert pong["data"] == {"connectionId": app.connection_id}
        assert {"id", "ts"} <= pong.keys()
        # An unknown action and a frame that is not JSON each get an error saying why
        app.send_json({"action": "subscribe", "topic": "x"})
        unknown = app.receive()
        app.ws.send("hello?")
        bad = app.receive()
    assert (unknown["type"], unknown["data"]["code"]) == ("error", "unknown_action")
    assert (bad["type"], bad["data"]["code"]) == ("error", "bad_frame")


@pytest.mark.parametrize("query", ["", "?platform=pc", "?userId="])
def test_a_handshake_without_user_id_is_refused(local_stack: RunningStack, query: str) -> None:
    with pytest.raises(InvalidStatus) as refused:
        connect(f"{local_stack.local.websocket_url}{query}", open_timeout=15)
    assert refused.value.response.status_code == 400


def test_a_closed_connection_leaves_no_row(local_stack: RunningStack) -> None:
    with connected(local_stack, unique("leaver")) as app:
        connection_id = app.connection_id
        assert stored_connection(local_stack, connection_id) is not None
    eventually(lambda: stored_connection(local_stack, connection_id) is None)


def test_a_dead_connection_is_removed_on_410_and_the_others_still_receive(
    local_stack: RunningStack,
) -> None:
    user = unique("carol")
    with connected(local_stack, user, "pc") as survivor:
        with connected(local_stack, user, "mobile") as doomed:
            # Given one of carol's sockets is killed without a close frame
            doomed_id = doomed.connection_id
            doomed.ws.socket.close()
        # And a row of hers outlived its socket ($disconnect is best effort in API Gateway)
        stale = {
            "connectionId": {"S": f"stale-{uuid.uuid4().hex[:8]}="},
            "userId": {"S": user},
            "platform": {"S": "web"},
            "connectedAt": {"N": "1"},
            "lastSeenAt": {"N": "1"},
            "ttl": {"N": "4102444800"},
        }
        local_stack.client("dynamodb").put_item(TableName=local_stack.local.table_name, Item=stale)
        stale_id = stale["connectionId"]["S"]
        # When a message goes to carol
        queue_message(local_stack, {"userId": user, "id": "m-410", "payload": PAYLOAD})
        # Then the live connection receives it, and the gateway's 410 removed the stale row
        assert survivor.receive()["id"] == "m-410"
        eventually(lambda: stored_connection(local_stack, stale_id) is None)
        # And the killed socket's row is gone too (by $disconnect or by its own 410)
        eventually(lambda: stored_connection(local_stack, doomed_id) is None)
        assert stored_connection(local_stack, survivor.connection_id) is not None
