"""The demo page in a real browser (headless Chromium, driven by playwright-core)."""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.clients import Client, connected, queue_message, unique
from tests.e2e.conftest import REPO, RunningStack

SCRIPT = Path(__file__).parent / "browser" / "demo_page.mjs"
CHANNEL_SCRIPT = Path(__file__).parent / "browser" / "demo_channel.mjs"
RECOVERY_SCRIPT = Path(__file__).parent / "browser" / "recovery.mjs"
STEP_SECONDS = 60


@pytest.mark.parametrize("stack", ["local_stack", "jwt_stack"], ids=["auth-none", "auth-jwt"])
def test_the_demo_page_receives_reconnects_and_receives_again(
    request: pytest.FixtureRequest, stack: str, tmp_path: Path
) -> None:
    # Given Chromium (make test installs Debian's package) and the running local stack; with
    # jwt, the page's token provider asks the dev server for a fresh token on each connect
    local_stack: RunningStack = request.getfixturevalue(stack)
    chromium = shutil.which("chromium")
    assert chromium, "Chromium is missing: `make test` installs Debian's chromium package"
    env = {
        **local_stack.env,
        "DEMO_URL": local_stack.local.demo_url,
        "MANAGEMENT_ENDPOINT": local_stack.local.management_endpoint,
        "WSPUSH_CLI": str(Path(sys.executable).parent / "wspush"),
        "CHROMIUM": chromium,
        "SCREENSHOT": str(tmp_path / "demo.png"),
        "AUTH_MODE": "none" if stack == "local_stack" else "jwt",
    }
    # When the browser script runs its scenario
    result = subprocess.run(
        ["node", str(SCRIPT)], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    # Then every step passed, and the page was on two different connections in turn
    assert result.returncode == 0, result.stdout + result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["first"] != outcome["second"]
    assert (tmp_path / "demo.png").stat().st_size > 0


def test_the_demo_page_joins_a_channel_and_shows_members_and_messages(
    local_stack: RunningStack, tmp_path: Path
) -> None:
    # Given Chromium and the local stack with make dev's namespaces (lobby: presence on)
    chromium = shutil.which("chromium")
    assert chromium, "Chromium is missing: `make test` installs Debian's chromium package"
    channel = f"lobby:{unique('demo')}"
    page_user, other_user, message_id = unique("page"), unique("other"), unique("m")
    env = {
        **local_stack.env,
        "DEMO_URL": local_stack.local.demo_url,
        "CHANNEL": channel,
        "PAGE_USER": page_user,
        "OTHER_USER": other_user,
        "MESSAGE_ID": message_id,
        "CHROMIUM": chromium,
        "SCREENSHOT": str(tmp_path / "channel.png"),
    }
    browser = subprocess.Popen(
        ["node", str(CHANNEL_SCRIPT)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    steps = _lines(browser)
    try:
        # When the page has joined the channel (and shows its own user)
        assert _next_step(steps, browser)["step"] == "joined"
        with connected(local_stack, other_user) as other:
            # and another user subscribes to it, and a message is published to the channel
            reply = _ask(other, action="subscribe", channel=channel, ref="o1")
            assert reply["type"] == "subscribed", reply
            payload = {"type": "chat.message", "data": {"text": "hello channel"}}
            queue_message(local_stack, {"channel": channel, "id": message_id, "payload": payload})
            # Then the page shows that member and the message
            seen = _next_step(steps, browser)
            assert seen["step"] == "seen"
            assert "hello channel" in seen["text"]
            # When that user leaves, then the page shows it gone
            assert _ask(other, action="unsubscribe", channel=channel, ref="o2")["type"] == (
                "unsubscribed"
            )
            assert _next_step(steps, browser)["step"] == "done"
        assert browser.wait(timeout=STEP_SECONDS) == 0
    finally:
        if browser.poll() is None:
            browser.kill()
            browser.wait()
    assert (tmp_path / "channel.png").stat().st_size > 0


def _ask(client: Client, **frame: Any) -> dict[str, Any]:
    """Send a channel request and return its reply (frames that arrive first are skipped)."""
    client.send_json(frame)
    while True:
        reply = client.receive()
        if reply.get("ref") == frame["ref"]:
            return reply


def _lines(process: subprocess.Popen[str]) -> queue.Queue[str | None]:
    """The process's output, line by line (None once it ends)."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _next_step(lines: queue.Queue[str | None], process: subprocess.Popen[str]) -> Any:
    """The next step the browser script reports; its whole output when it fails instead."""
    seen: list[str] = []
    while True:
        try:
            line = lines.get(timeout=STEP_SECONDS)
        except queue.Empty:
            raise AssertionError(f"no step within {STEP_SECONDS} s: {''.join(seen)}") from None
        if line is None:
            raise AssertionError(f"the browser script ended ({process.poll()}): {''.join(seen)}")
        seen.append(line)
        if line.startswith('{"step"'):
            return json.loads(line)


def test_the_client_module_recovers_what_a_dropped_connection_missed(
    local_stack: RunningStack,
) -> None:
    # Given Chromium, the local stack (room keeps 100 messages), and a page using the client
    # module through a relay the script cuts and restores
    chromium = shutil.which("chromium")
    assert chromium, "Chromium is missing: `make test` installs Debian's chromium package"
    env = {
        **local_stack.env,
        "DEMO_URL": local_stack.local.demo_url,
        "WS_PORT": str(local_stack.local.websocket_port),
        "LAMBDA_ENDPOINT": local_stack.local.lambda_endpoint,
        "SEND_FUNCTION": local_stack.local.send_function_name,
        "USER": unique("rita"),
        "CHANNEL": f"room:{unique('r')}",
        "CHROMIUM": chromium,
    }
    # When the script drops the connection while 20 messages go to the user and 20 to a
    # channel, then again while more go to the channel than it keeps
    result = subprocess.run(
        ["node", str(RECOVERY_SCRIPT)], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=240,
    )  # fmt: skip
    # Then all 40 reached the app once and in order with both recoveries whole, and the
    # second gap reached the app as a resync of that channel
    assert result.returncode == 0, result.stdout + result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["seen"] == 42
    assert outcome["resync"]["stream"] == env["CHANNEL"]
