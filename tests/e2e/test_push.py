"""Pushing through the local stack: SQS → sender → serverless-offline → real WebSocket clients."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.e2e.clients import PAYLOAD, Client, connected, queue_message, unique
from tests.e2e.conftest import RunningStack


@dataclass
class Apps:
    """alice connected on pc and on mobile, bob on pc (fresh user ids per test)."""

    alice: str
    bob: str
    alice_pc: Client
    alice_mobile: Client
    bob_pc: Client


@pytest.fixture
def apps(local_stack: RunningStack) -> Iterator[Apps]:
    alice, bob = unique("alice"), unique("bob")
    with (
        connected(local_stack, alice, "pc") as alice_pc,
        connected(local_stack, alice, "mobile") as alice_mobile,
        connected(local_stack, bob, "pc") as bob_pc,
    ):
        yield Apps(alice, bob, alice_pc, alice_mobile, bob_pc)


def test_a_message_to_a_user_reaches_both_of_its_connections_and_nobody_else(
    local_stack: RunningStack, apps: Apps
) -> None:
    # When a service queues a message for alice
    queue_message(local_stack, {"userId": apps.alice, "id": "m-user", "payload": PAYLOAD})
    # Then both of alice's apps receive the same frame, and bob nothing
    first, second = apps.alice_pc.receive(), apps.alice_mobile.receive()
    assert first == second
    assert first == {**PAYLOAD, "id": "m-user", "ts": first["ts"], "seq": 1}
    assert apps.bob_pc.nothing_within(1.0)


def test_platform_filter_broadcast_and_connection_targets(
    local_stack: RunningStack, apps: Apps
) -> None:
    # A platform filter: only alice's mobile app
    queue_message(local_stack, {"userId": apps.alice, "platform": "mobile", "payload": PAYLOAD})
    assert apps.alice_mobile.receive()["type"] == "order.updated"
    assert apps.alice_pc.nothing_within(0.5)
    # A broadcast excluding alice's pc: every other connection, each once
    excluded = [apps.alice_pc.connection_id]
    queue_message(
        local_stack,
        {"broadcast": True, "id": "m-all", "excludeConnectionIds": excluded, "payload": PAYLOAD},
    )
    assert apps.alice_mobile.receive()["id"] == "m-all"
    assert apps.bob_pc.receive()["id"] == "m-all"
    assert apps.alice_pc.nothing_within(0.5)
    # One connection by id, and the seed's own {connectionId, payload} form
    bob_pc = apps.bob_pc.connection_id
    queue_message(local_stack, {"connectionIds": [bob_pc], "payload": PAYLOAD})
    queue_message(local_stack, {"connectionId": bob_pc, "payload": PAYLOAD})
    assert apps.bob_pc.receive()["type"] == apps.bob_pc.receive()["type"] == "order.updated"
    assert apps.alice_mobile.nothing_within(0.5)


def test_latency_from_send_message_to_receipt(
    local_stack: RunningStack, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given one connected app
    user = unique("timed")
    latencies_ms = []
    with connected(local_stack, user) as app:
        # When 100 messages are queued one after the other
        for index in range(100):
            started = time.perf_counter()
            queue_message(local_stack, {"userId": user, "id": f"t-{index}", "payload": PAYLOAD})
            frame = app.receive()
            latencies_ms.append((time.perf_counter() - started) * 1000)
            # Then each arrives, in order
            assert frame["id"] == f"t-{index}"
    p50 = statistics.median(latencies_ms)
    p95 = statistics.quantiles(latencies_ms, n=20)[18]
    with capsys.disabled():
        print(
            "\nlatency SendMessage -> client receipt over 100 messages: "
            f"p50 {p50:.0f} ms, p95 {p95:.0f} ms, max {max(latencies_ms):.0f} ms"
        )
