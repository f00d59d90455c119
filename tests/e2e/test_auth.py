"""Authenticated connections through the local stack in jwt mode (`make dev AUTH=jwt`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from urllib.parse import urlencode

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.e2e.clients import PAYLOAD, Client, queue_message, unique
from tests.e2e.conftest import RunningStack

CLI = str(Path(sys.executable).parent / "wspush")


def token_for(stack: RunningStack, user: str) -> str:
    """What `wspush token --user U` prints against this stack."""
    result = subprocess.run(
        [CLI, "token", "--user", user], env=stack.env, capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def handshake_status(stack: RunningStack, **query: str) -> int:
    with pytest.raises(InvalidStatus) as refused:
        connect(f"{stack.local.websocket_url}?{urlencode(query)}", open_timeout=15)
    return refused.value.response.status_code


def test_without_a_valid_token_the_handshake_is_refused_with_401(jwt_stack: RunningStack) -> None:
    assert handshake_status(jwt_stack, userId="u1") == 401
    assert handshake_status(jwt_stack, token="not.a.token") == 401


def test_a_token_for_one_user_cannot_connect_as_another(jwt_stack: RunningStack) -> None:
    assert handshake_status(jwt_stack, token=token_for(jwt_stack, "u1"), userId="u2") == 403


def test_a_minted_token_connects_as_its_user_who_then_receives(jwt_stack: RunningStack) -> None:
    # Given a token minted with `wspush token`, and no userId in the query
    user = unique("tina")
    query = urlencode({"token": token_for(jwt_stack, user), "platform": "pc"})
    with connect(f"{jwt_stack.local.websocket_url}?{query}", open_timeout=15) as ws:
        app = Client(ws)
        app.ping()
        # When a message is sent to that user
        queue_message(jwt_stack, {"userId": user, "id": "m-auth", "payload": PAYLOAD})
        # Then the connection, known by the token's subject, receives it
        assert app.receive()["id"] == "m-auth"
