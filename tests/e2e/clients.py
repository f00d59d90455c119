"""Real WebSocket clients for the end-to-end tests, and a few probes of the local stack."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any
from urllib.parse import urlencode

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.e2e.conftest import RunningStack

WAIT_SECONDS = 15
PAYLOAD = {"type": "order.updated", "data": {"orderId": 7}}


def unique(name: str) -> str:
    """A user id no other test uses."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


class Client:
    """One connected app: knows its connection id (learned from a pong)."""

    def __init__(self, connection: ClientConnection) -> None:
        self.ws = connection
        self.connection_id = ""

    def send_json(self, frame: Any) -> None:
        self.ws.send(json.dumps(frame))

    def receive(self, timeout: float = WAIT_SECONDS) -> dict[str, Any]:
        frame: dict[str, Any] = json.loads(self.ws.recv(timeout=timeout))
        return frame

    def ping(self) -> dict[str, Any]:
        self.send_json({"action": "ping", "content": "ping"})
        pong = self.receive()
        assert pong["type"] == "pong", pong
        self.connection_id = pong["data"]["connectionId"]
        return pong

    def nothing_within(self, seconds: float) -> bool:
        try:
            frame = self.ws.recv(timeout=seconds)
        except TimeoutError:
            return True
        raise AssertionError(f"unexpected frame: {frame!r}")


@contextmanager
def connected(stack: RunningStack, user: str, platform: str = "pc") -> Iterator[Client]:
    url = f"{stack.local.websocket_url}?{urlencode({'userId': user, 'platform': platform})}"
    with connect(url, open_timeout=WAIT_SECONDS) as connection:
        client = Client(connection)
        client.ping()
        yield client
        with suppress(ConnectionClosed):
            connection.close()


def queue_message(stack: RunningStack, envelope: dict[str, Any] | str) -> None:
    body = envelope if isinstance(envelope, str) else json.dumps(envelope)
    stack.client("sqs").send_message(QueueUrl=stack.local.messages_queue_url, MessageBody=body)


def stored_connection(stack: RunningStack, connection_id: str) -> dict[str, Any] | None:
    item: dict[str, Any] | None = (
        stack.client("dynamodb")
        .get_item(TableName=stack.local.table_name, Key={"connectionId": {"S": connection_id}})
        .get("Item")
    )
    return item


def eventually(check: Any, timeout: float = WAIT_SECONDS, interval: float = 0.1) -> Any:
    """Poll ``check`` until it returns something truthy, or fail."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)
