"""A broadcast bigger than one scan page, under `make dev`: live clients have it in seconds."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from tests.e2e.clients import PAYLOAD, connected, eventually, queue_message, unique
from tests.e2e.conftest import RunningStack, running_stack

PAGE = 2_000  # WSPUSH_CONNECTIONS_PER_SEGMENT's default: rows one invocation reads
STALE_ROWS = 2_500


@pytest.fixture(scope="module")
def local_stack() -> Iterator[RunningStack]:
    """A stack of its own: the stale rows stored here go through the connections table's
    stream (a lifecycle call each, inserted and then deleted) for minutes after the test, and
    on the shared stack every later test that waits on the stream (presence.leave,
    user.online) would wait behind them."""
    with running_stack("none") as stack:
        yield stack


def store_dead_rows(stack: RunningStack, count: int) -> list[str]:
    """Rows of connections that opened an hour ago and died without $disconnect (their
    sockets do not exist: the local gateway answers 410 for them)."""
    dynamodb = stack.client("dynamodb")
    now = int(time.time())
    ids = [f"dead-{uuid.uuid4().hex}" for _ in range(count)]
    for start in range(0, count, 25):
        items = [
            {
                "PutRequest": {
                    "Item": {
                        "connectionId": {"S": cid},
                        "userId": {"S": f"ghost-{cid[-6:]}"},
                        "platform": {"S": "pc"},
                        "connectedAt": {"N": str((now - 3_600) * 1000)},
                        "lastSeenAt": {"N": str((now - 3_600) * 1000)},
                        "ttl": {"N": str(now + 3_600)},
                    }
                }
            }
            for cid in ids[start : start + 25]
        ]
        dynamodb.batch_write_item(RequestItems={stack.local.table_name: items})
    return ids


def stored(stack: RunningStack, ids: set[str]) -> set[str]:
    pages = (
        stack.client("dynamodb")
        .get_paginator("scan")
        .paginate(TableName=stack.local.table_name, ProjectionExpression="connectionId")
    )
    return {item["connectionId"]["S"] for page in pages for item in page["Items"]} & ids


def test_a_broadcast_past_one_scan_page_reaches_live_clients_within_seconds(
    local_stack: RunningStack,
) -> None:
    # Given more stored connections than one invocation reads (most of them long dead), in a
    # table whose item count still says 0, as DynamoDB's does for hours
    dead = set(store_dead_rows(local_stack, STALE_ROWS))
    assert len(dead) > PAGE
    with connected(local_stack, unique("ann")) as ann, connected(local_stack, unique("ben")) as ben:
        # When a service broadcasts through the queue
        message_id = f"wide-{uuid.uuid4().hex[:8]}"
        started = time.monotonic()
        queue_message(local_stack, {"broadcast": True, "id": message_id, "payload": PAYLOAD})
        # Then both live clients have it within seconds
        assert ann.receive(timeout=30)["id"] == message_id
        assert ben.receive(timeout=30)["id"] == message_id
        elapsed = time.monotonic() - started
        rows = STALE_ROWS + 2
        print(f"broadcast past one page ({rows} rows) reached the clients in {elapsed:.1f} s")
        assert elapsed < 15
    # And every dead connection it found was deleted
    eventually(lambda: not stored(local_stack, dead), timeout=60, interval=1)
