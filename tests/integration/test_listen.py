"""``wspush listen`` against a real WebSocket server on loopback that answers like wspush's."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from websockets.http11 import Request, Response
from websockets.sync.server import Server, ServerConnection, serve

from tests.e2e.conftest import free_port
from wspush.tools import cli


@dataclass
class FakeGateway:
    """Answers pings with pongs, pushes ``pushes`` after the first pong, then waits for
    ``pings_before_close`` more pings and closes with 1000 (or never, when 0). Answers a
    subscribe with ``subscribed`` (or ``forbidden``), then sends ``channel_pushes``."""

    pushes: list[dict[str, Any]] = field(default_factory=list)
    pings_before_close: int = 0
    refuse: int | None = None  # answer the handshake with this status instead
    channel_pushes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    forbidden: frozenset[str] = frozenset()  # channels whose subscribe is refused
    paths: list[str] = field(default_factory=list)
    received: list[str] = field(default_factory=list)
    close_codes: list[int | None] = field(default_factory=list)
    ended: threading.Event = field(default_factory=threading.Event)

    def handler(self, connection: ServerConnection) -> None:
        assert connection.request is not None
        self.paths.append(connection.request.path)
        pings = 0
        try:
            for frame in connection:
                self.received.append(str(frame))
                request = json.loads(frame)
                if request.get("action") == "subscribe":
                    self.subscribed(connection, request)
                    continue
                pings += 1
                connection.send(json.dumps({"type": "pong", "data": {"connectionId": "c-1"}}))
                if pings == 1:
                    for push in self.pushes:
                        connection.send(json.dumps(push))
                if self.pings_before_close and pings > self.pings_before_close:
                    connection.close(1000, "bye")
                    return
        finally:
            self.close_codes.append(connection.close_code)
            self.ended.set()

    def subscribed(self, connection: ServerConnection, request: dict[str, Any]) -> None:
        """Answers a subscribe as wspush does, then sends what the channel has to say."""
        channel = request["channel"]
        if channel in self.forbidden:
            data = {"code": "forbidden", "message": "not allowed", "channel": channel}
            reply = {"type": "error", "data": data, "ref": request["ref"]}
        else:
            reply = {"type": "subscribed", "data": {"channel": channel}, "ref": request["ref"]}
        connection.send(json.dumps(reply))
        for push in self.channel_pushes.get(channel, []):
            connection.send(json.dumps(push))

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if self.refuse is None:
            return None
        return connection.respond(self.refuse, "the token does not verify\n")


@pytest.fixture
def gateway() -> Iterator[Callable[..., tuple[FakeGateway, str]]]:
    servers: list[Server] = []

    def start(**options: Any) -> tuple[FakeGateway, str]:
        fake = FakeGateway(**options)
        server = serve(fake.handler, "127.0.0.1", 0, process_request=fake.process_request)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return fake, f"ws://127.0.0.1:{server.socket.getsockname()[1]}"

    yield start
    for server in servers:
        server.shutdown()


def listen(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[Any], str]:
    status = cli.main(["listen", *argv])
    out, err = capsys.readouterr()
    return status, [json.loads(line) for line in out.splitlines()], err


def test_it_prints_each_frame_as_one_json_line_and_pings_on_its_heartbeat(
    gateway: Callable[..., tuple[FakeGateway, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a gateway that pushes one message after the first pong, and closes after 2 pings
    push = {"type": "order.updated", "data": {"orderId": 7, "note": "line\nbreak"}, "id": "m-1"}
    fake, url = gateway(pushes=[push], pings_before_close=2)
    # When listening as u1 on mobile with a token, pinging every 0.2 s
    status, lines, err = listen(
        ["--user", "u1", "--platform", "mobile", "--token", "t.k.n", "--url", url,
         "--heartbeat", "0.2"],
        capsys,
    )  # fmt: skip
    # Then it connected with the handshake's query and pinged at once, then on the heartbeat
    query = parse_qs(urlsplit(fake.paths[0]).query)
    assert query == {"userId": ["u1"], "platform": ["mobile"], "token": ["t.k.n"]}
    assert [json.loads(frame) for frame in fake.received] == [{"action": "ping"}] * 3
    # And printed every frame, one JSON line each (the message's newline stays inside it)
    assert [line["type"] for line in lines] == ["pong", "order.updated", "pong", "pong"]
    assert lines[1] == push
    # And when the gateway closed the connection, it said so and exited 1
    assert status == 1
    assert "the connection closed (1000 bye)" in err
    assert "t.k.n" not in err


def test_it_subscribes_to_each_channel_and_prints_replies_messages_and_presence(
    gateway: Callable[..., tuple[FakeGateway, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a gateway where lobby:main has a member and room:42 a message, and secret:x is
    # forbidden; it closes after the second ping
    join = {"type": "presence.join", "data": {"channel": "lobby:main", "userId": "u2"}}
    message = {"type": "chat.message", "data": {"text": "hi"}, "channel": "room:42", "seq": 3}
    fake, url = gateway(
        channel_pushes={"lobby:main": [join], "room:42": [message]},
        forbidden=frozenset({"secret:x"}),
        pings_before_close=1,
    )
    # When listening on three channels
    argv = ["--user", "u1", "--url", url, "--heartbeat", "0.3"]
    argv += ["--channel", "room:42", "--channel", "lobby:main", "--channel", "secret:x"]
    status, lines, err = listen(argv, capsys)
    # Then it pinged, then subscribed to each, in order, with a ref of its own
    sent = [json.loads(frame) for frame in fake.received]
    assert sent == [
        {"action": "ping"},
        {"action": "subscribe", "channel": "room:42", "ref": "subscribe-1"},
        {"action": "subscribe", "channel": "lobby:main", "ref": "subscribe-2"},
        {"action": "subscribe", "channel": "secret:x", "ref": "subscribe-3"},
        {"action": "ping"},
    ]
    # And printed every frame: the replies, the refusal, the message and the presence event
    assert [(line["type"], line.get("ref")) for line in lines] == [
        ("pong", None),
        ("subscribed", "subscribe-1"),
        ("chat.message", None),
        ("subscribed", "subscribe-2"),
        ("presence.join", None),
        ("error", "subscribe-3"),
        ("pong", None),
    ]
    assert lines[2] == message
    assert lines[5]["data"]["code"] == "forbidden"
    assert status == 1
    assert "the connection closed (1000 bye)" in err


def test_ctrl_c_closes_the_connection_cleanly_and_exits_0(
    gateway: Callable[..., tuple[FakeGateway, str]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, url = gateway()

    def interrupted(line: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_print_line", interrupted)
    status = cli.main(["listen", "--user", "u1", "--url", url])
    assert status == 0
    assert fake.ended.wait(5)
    assert fake.close_codes == [1000]


def test_a_refused_handshake_says_why(
    gateway: Callable[..., tuple[FakeGateway, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    _, url = gateway(refuse=401)
    status, lines, err = listen(["--user", "u1", "--url", url], capsys)
    assert (status, lines) == (1, [])
    assert err.endswith("the handshake was refused: 401 the token does not verify\n")


def test_a_local_stack_that_is_not_running_is_named_with_its_port(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given nothing listening where the local stack's gateway (and moto) should be
    port, aws = free_port(), free_port()
    monkeypatch.setenv("WSPUSH_LOCAL_WEBSOCKET_PORT", str(port))
    monkeypatch.setenv("WSPUSH_LOCAL_AWS_PORT", str(aws))
    status, lines, err = listen(["--user", "u1"], capsys)
    assert (status, lines) == (1, [])
    assert f"cannot connect to ws://127.0.0.1:{port}" in err
    assert f"is `make dev` running? (port from WSPUSH_LOCAL_WEBSOCKET_PORT={port})" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--heartbeat", "0"], "--heartbeat must be more than 0 seconds"),
        ([], "--user is required"),
        (["--channel", "room"], "a channel is named namespace:name, e.g. room:42: 'room'"),
        (["--channel", "room:a/b"], "a channel's name is 1-128 of A-Z, a-z, 0-9 and . _ ~ -"),
    ],
)
def test_bad_arguments_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status = cli.main(["listen", *(["--user", "u1"] if argv else []), *argv])
    assert status == 2
    assert message in capsys.readouterr().err
