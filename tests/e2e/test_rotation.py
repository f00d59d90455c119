"""Rotation on the local stack, with connections cut after 45 s instead of 2 hours: a real
WebSocket client is asked to reconnect, with a ``before`` no later than its cut, before the
gateway cuts it (1001) as API Gateway does; a row whose socket is gone is asked too, and
deleted as gone."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from local.rotation import LocalRotation
from tests.e2e.clients import WAIT_SECONDS, Client, stored_connection, unique
from tests.e2e.conftest import REPO, RunningStack, running_stack
from wspush.clock import now_ms
from wspush.rotation import buckets

LIFETIME = 45
LEAD = 20
BUCKET = 5
ROTATION = LocalRotation(LIFETIME, LEAD, BUCKET)


@pytest.fixture(scope="module")
def short_lived() -> Iterator[RunningStack]:
    """Given `make dev` with WSPUSH_LOCAL_MAX_CONNECTION_SECONDS=45, a 20 s lead, 5 s buckets."""
    extra = {
        "WSPUSH_LOCAL_MAX_CONNECTION_SECONDS": str(LIFETIME),
        "WSPUSH_LOCAL_ROTATION_LEAD_SECONDS": str(LEAD),
        "WSPUSH_LOCAL_ROTATION_BUCKET_SECONDS": str(BUCKET),
    }
    with running_stack("none", extra) as stack:
        yield stack


def test_a_client_is_asked_to_reconnect_before_its_cut_then_cut(short_lived: RunningStack) -> None:
    # Given a client connected (its row tells when API Gateway would cut it)
    query = urlencode({"userId": unique("rot"), "platform": "pc"})
    url = f"{short_lived.local.websocket_url}?{query}"
    with connect(url, open_timeout=WAIT_SECONDS) as connection:
        client = Client(connection)
        client.ping()
        row = stored_connection(short_lived, client.connection_id)
        assert row is not None
        cut = int(row["connectedAt"]["N"]) + LIFETIME * 1000
        # When the sweeper's tick reaches its bucket
        frame = client.receive(timeout=LIFETIME + WAIT_SECONDS)
        received = now_ms()
        # Then it receives the reconnect frame: `before` is no later than its cut (and within a
        # bucket of it), and it came about the lead ahead of it
        assert frame["type"] == "reconnect", frame
        assert frame["data"]["reason"] == "max_duration"
        before = frame["data"]["before"]
        assert cut - BUCKET * 1000 < before <= cut
        assert before - received > LEAD * 1000 / 2, (before, received)
        assert frame["id"].startswith(f"reconnect-{before // 1000}-")
        # And then the gateway cuts it at its lifetime, with 1001, as API Gateway does
        with pytest.raises(ConnectionClosed) as closed:
            client.receive(timeout=LIFETIME)
        closed_at = now_ms()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1001
        assert cut - 1_000 <= closed_at < cut + 10_000, (cut, closed_at)
    # And serverless-offline's own scheduler stayed off (the ticker drives the sweeper)
    assert "Scheduling [rotation] cron: disabled" in short_lived.log()


def test_a_row_whose_socket_is_gone_is_asked_too_and_deleted(short_lived: RunningStack) -> None:
    # Given a row whose $disconnect never came, cut by the gateway 30 s from now
    connection_id = f"stale{unique('r')}="
    connected_at = now_ms() - (LIFETIME - LEAD - 2 * BUCKET) * 1000
    key = buckets.index_key(connection_id, connected_at, ROTATION.settings())
    assert key is not None
    short_lived.client("dynamodb").put_item(
        TableName=short_lived.local.table_name,
        Item={
            "connectionId": {"S": connection_id},
            "userId": {"S": "stale-user"},
            "platform": {"S": "pc"},
            "connectedAt": {"N": str(connected_at)},
            "lastSeenAt": {"N": str(connected_at)},
            "ttl": {"N": str(connected_at // 1000 + 7_800)},
            "rotation": {"S": key},
        },
    )
    # When its bucket is swept, the sender posts the reconnect and the gateway answers 410
    deadline = time.monotonic() + LEAD + 4 * BUCKET + WAIT_SECONDS
    while stored_connection(short_lived, connection_id) is not None:
        assert time.monotonic() < deadline, short_lived.log()[-4_000:]
        time.sleep(1)
    # Then its row is deleted as gone
    assert stored_connection(short_lived, connection_id) is None


SWITCH_SCRIPT = Path(__file__).parent / "browser" / "rotation.mjs"


def test_the_client_module_switches_connections_without_a_gap_or_a_duplicate(
    short_lived: RunningStack,
) -> None:
    # Given Chromium and a page using the client module on the short-lived stack
    chromium = shutil.which("chromium")
    assert chromium, "Chromium is missing: `make test` installs Debian's chromium package"
    env = {
        **short_lived.env,
        "DEMO_URL": short_lived.local.demo_url,
        "WS_URL": short_lived.local.websocket_url,
        "LAMBDA_ENDPOINT": short_lived.local.lambda_endpoint,
        "SEND_FUNCTION": short_lived.local.send_function_name,
        "USER": unique("sam"),
        "CHANNEL": f"room:{unique('rot')}",
        "LIFETIME_SECONDS": str(LIFETIME),
        "CHROMIUM": chromium,
    }
    # When messages go to the user and to a channel all along, while the server asks the
    # page's connection to reconnect
    result = subprocess.run(
        ["node", str(SWITCH_SCRIPT)], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=180,
    )  # fmt: skip
    # Then the page switched to a second connection and every message reached it once, in
    # order, with the app open throughout (the script checks each of these)
    assert result.returncode == 0, result.stdout + result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(set(outcome["connections"])) == 2
    assert outcome["messages"] > 10
