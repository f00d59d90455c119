"""Connection life cycle and client frames through the local gateway."""

from __future__ import annotations

import json
import uuid

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.contract import assert_valid
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
        app.send_json({"action": "publish", "topic": "x"})
        unknown = app.receive()
        app.ws.send("hello?")
        bad = app.receive()
    assert (unknown["type"], unknown["data"]["code"]) == ("error", "unknown_action")
    assert (bad["type"], bad["data"]["code"]) == ("error", "bad_frame")
    # And each is what its schema in schemas/ describes
    assert_valid("pong-frame", pong)
    assert_valid("error-frame", unknown)
    assert_valid("error-frame", bad)


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


def test_a_socket_killed_without_a_close_frame_is_forgotten(local_stack: RunningStack) -> None:
    user = unique("dan")
    with connected(local_stack, user, "pc") as survivor:
        with connected(local_stack, user, "mobile") as doomed:
            # Given one of dan's sockets dies without a close frame
            doomed_id = doomed.connection_id
            doomed.ws.socket.close()
        # Then the gateway notices the closed TCP connection and $disconnect removes its row
        eventually(lambda: stored_connection(local_stack, doomed_id) is None)
        # And the other connection still receives
        queue_message(local_stack, {"userId": user, "id": "m-after", "payload": PAYLOAD})
        assert survivor.receive()["id"] == "m-after"


def test_a_row_that_outlived_its_socket_is_removed_on_410_and_the_others_still_receive(
    local_stack: RunningStack,
) -> None:
    user = unique("carol")
    with connected(local_stack, user, "pc") as survivor:
        # Given a row of carol's whose $disconnect never ran (API Gateway runs it best effort):
        # a connection id the gateway does not know
        stale_id = f"stale-{uuid.uuid4().hex[:8]}="
        local_stack.client("dynamodb").put_item(
            TableName=local_stack.local.table_name,
            Item={
                "connectionId": {"S": stale_id},
                "userId": {"S": user},
                "platform": {"S": "web"},
                "connectedAt": {"N": "1"},
                "lastSeenAt": {"N": "1"},
                "ttl": {"N": "4102444800"},
            },
        )
        # When a message goes to carol through the send Lambda
        answer = local_stack.client("lambda").invoke(
            FunctionName=local_stack.local.send_function_name,
            Payload=json.dumps({"userId": user, "id": "m-410", "payload": PAYLOAD}),
        )
        result = json.loads(answer["Payload"].read())
        # Then the gateway answered 410 for the stale connection, and its row is gone
        assert (result["targets"], result["delivered"], result["gone"]) == (2, 1, 1)
        assert stored_connection(local_stack, stale_id) is None
        # And the live connection received the message and keeps its row
        assert survivor.receive()["id"] == "m-410"
        assert stored_connection(local_stack, survivor.connection_id) is not None
