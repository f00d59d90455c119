"""The ``wspush`` command on the local stack's channels, presence and online/offline events, run
as a developer runs it beside `make dev`."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.e2e.clients import connected, unique
from tests.e2e.conftest import RunningStack
from tests.e2e.test_channels import ask

CLI = str(Path(sys.executable).parent / "wspush")
WAIT_SECONDS = 30  # the stream poller looks for new shards every 10 s


def ctrl_c_as_a_terminal_sends_it() -> None:
    """In a child before it runs: SIGINT stops it, even when this test run itself ignores
    SIGINT (a shell starts a background job so, and its children inherit that)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Running:
    """A ``wspush`` command that keeps running; its stdout, one parsed JSON line at a time."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: queue.Queue[Any] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(json.loads(line))

    def next_where(self, matches: Callable[[Any], bool]) -> Any:
        """The next line ``matches`` accepts (the ones before it are skipped)."""
        deadline = time.monotonic() + WAIT_SECONDS
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                break
            if matches(line):
                return line
        raise AssertionError(f"no such line within {WAIT_SECONDS} s")


@contextmanager
def running(stack: RunningStack, *argv: str) -> Iterator[Running]:
    """``wspush ARGV`` until the block ends, then Ctrl-C: it must exit 0."""
    process = subprocess.Popen(
        [CLI, *argv],
        env=stack.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=ctrl_c_as_a_terminal_sends_it,
    )
    try:
        yield Running(process)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            status = process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.stderr is not None
    assert status == 0, process.stderr.read()


def wspush(stack: RunningStack, *argv: str) -> str:
    result = subprocess.run(
        [CLI, *argv], env=stack.env, capture_output=True, text=True, check=True, timeout=60
    )
    return result.stdout


def test_listen_on_a_channel_prints_the_reply_and_a_message_sent_to_the_channel(
    local_stack: RunningStack,
) -> None:
    user, channel = unique("lena"), f"room:{unique('r')}"
    # Given `wspush listen` subscribed to a channel
    with running(local_stack, "listen", "--user", user, "--channel", channel) as listen:
        pong = listen.next_where(lambda line: line["type"] == "pong")
        subscribed = listen.next_where(lambda line: line["type"] != "pong")
        assert subscribed["type"] == "subscribed"
        assert (subscribed["data"]["channel"], subscribed["ref"]) == (channel, "subscribe-1")
        # When `wspush send --channel` sends a message to the channel
        send = ["send", "--channel", channel, "--type", "chat.message", "--data", '{"text": "hi"}']
        sent = wspush(local_stack, *send)
        message_id = json.loads(sent)["queued"]["id"]
        # Then the listener prints it, with the channel it came through
        message = listen.next_where(lambda line: line["type"] == "chat.message")
        assert (message["id"], message["channel"], message["data"]) == (
            message_id,
            channel,
            {"text": "hi"},
        )
    assert pong["data"]["connectionId"]


def test_presence_lists_a_subscribed_client_without_joining(local_stack: RunningStack) -> None:
    user, channel = unique("pia"), f"lobby:{unique('p')}"
    with connected(local_stack, user) as app:
        # Given a client subscribed to a presence channel
        assert ask(app, action="subscribe", channel=channel, ref="s")["type"] == "subscribed"
        # When `wspush presence` reads the channel
        shown = json.loads(wspush(local_stack, "presence", channel))
        # Then it lists that client's user, on one connection
        assert shown["channel"] == channel
        assert shown["count"] == 1
        assert [(m["userId"], m["connections"]) for m in shown["members"]] == [(user, 1)]
        # And reading it joined nothing: the client is still the only member
        members = ask(app, action="presence", channel=channel, ref="p")["data"]
        assert (members["count"], [m["userId"] for m in members["members"]]) == (1, [user])


def test_events_follow_shows_a_user_coming_online_and_going_offline(
    local_stack: RunningStack,
) -> None:
    user = unique("otto")

    def about(detail_type: str) -> Callable[[Any], bool]:
        return lambda event: (
            (event["detail-type"], event["detail"]["userId"])
            == (
                detail_type,
                user,
            )
        )

    # Given `wspush events --follow`
    with running(local_stack, "events", "--follow") as events:
        # When a client connects, then closes
        with connected(local_stack, user) as app:
            online = events.next_where(about("user.online"))
            connection_id = app.connection_id
        offline = events.next_where(about("user.offline"))
    # Then both events were printed, as EventBridge carries them
    assert online["source"] == offline["source"] == "wspush"
    assert online["detail"]["connectionId"] == offline["detail"]["connectionId"] == connection_id
    assert online["detail"]["platform"] == "pc"


def test_events_without_follow_prints_what_is_there_and_exits(local_stack: RunningStack) -> None:
    user = unique("ida")
    # Given a client that connected
    with connected(local_stack, user):
        seen: list[Any] = []

        def came_online() -> bool:
            out = wspush(local_stack, "events")
            seen.extend(json.loads(line) for line in out.splitlines())
            return any(
                (e["detail-type"], e["detail"]["userId"]) == ("user.online", user) for e in seen
            )

        # When `wspush events` runs (again, until the stream has been read)
        deadline = time.monotonic() + WAIT_SECONDS
        while not came_online():
            assert time.monotonic() < deadline, f"no user.online for {user}: {seen}"
            time.sleep(0.5)
