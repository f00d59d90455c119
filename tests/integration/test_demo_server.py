"""The local stack's web server (local/web.py): /token for pages on another origin of this
machine, and for nobody else."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from local.web import DemoServer


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Served:
    port: int
    minted: list[str] = field(default_factory=list)

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            connection.request(method, path, headers=headers or {})
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()


def _serve(mint: bool) -> Iterator[Served]:
    served = Served(free_port())

    def mint_token(user_id: str) -> str:
        served.minted.append(user_id)
        return f"token-for-{user_id}"

    server = DemoServer(
        "127.0.0.1",
        served.port,
        websocket_url="ws://127.0.0.1:3001",
        mint_token=mint_token if mint else None,
    ).start()
    try:
        yield served
    finally:
        server.stop()


@pytest.fixture
def jwt_demo() -> Iterator[Served]:
    """Given the web server of `make dev AUTH=jwt` (it mints tokens)."""
    yield from _serve(mint=True)


@pytest.fixture
def none_demo() -> Iterator[Served]:
    """Given the web server of `make dev` (no tokens)."""
    yield from _serve(mint=False)


@pytest.mark.parametrize(
    "origin", ["http://127.0.0.1:5173", "http://localhost:5173", "http://localhost"]
)
def test_a_page_on_another_loopback_origin_gets_a_token_it_may_read(
    jwt_demo: Served, origin: str
) -> None:
    # When a page on another port of this machine asks for a token
    status, headers, body = jwt_demo.request("GET", "/token?userId=u1", {"Origin": origin})
    # Then it gets one, and the answer names exactly that origin as allowed to read it
    assert status == 200
    assert json.loads(body) == {"token": "token-for-u1"}
    assert headers["Access-Control-Allow-Origin"] == origin
    assert headers["Vary"] == "Origin"
    assert headers["Cache-Control"] == "no-store"


def test_a_request_without_origin_gets_a_token_as_before(jwt_demo: Served) -> None:
    # When curl, or the demo page itself (a same-origin GET carries no Origin), asks
    status, headers, body = jwt_demo.request("GET", "/token?userId=u1")
    # Then it gets a token, with no CORS header
    assert status == 200
    assert json.loads(body) == {"token": "token-for-u1"}
    assert "Access-Control-Allow-Origin" not in headers


def test_a_loopback_page_asking_without_a_user_gets_an_error_it_can_read(jwt_demo: Served) -> None:
    status, headers, body = jwt_demo.request("GET", "/token", {"Origin": "http://localhost:5173"})
    assert status == 400
    assert json.loads(body) == {"error": "userId is required"}
    assert headers["Access-Control-Allow-Origin"] == "http://localhost:5173"


@pytest.mark.parametrize(
    "origin",
    [
        "https://example.com",
        "http://localhost.example.com",
        "http://127.0.0.1.example.com:8080",
        "http://192.168.1.20:5173",
        "https://localhost:5173",
        "null",
    ],
)
def test_a_page_from_anywhere_else_is_refused_and_nothing_is_minted(
    jwt_demo: Served, origin: str
) -> None:
    # When a page of another host (or an opaque origin) asks for a token
    status, headers, body = jwt_demo.request("GET", "/token?userId=u1", {"Origin": origin})
    # Then it is refused, no token is made, and the browser would not let it read the answer
    assert status == 403
    assert "token" not in json.loads(body)
    assert "Access-Control-Allow-Origin" not in headers
    assert jwt_demo.minted == []


def test_a_preflight_from_a_loopback_page_allows_its_headers(jwt_demo: Served) -> None:
    # When a loopback page that sends a header of its own asks first (CORS preflight)
    status, headers, _ = jwt_demo.request(
        "OPTIONS",
        "/token?userId=u1",
        {
            "Origin": "http://127.0.0.1:5173",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    # Then the GET it is about to send is allowed for that origin, and nothing is minted yet
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:5173"
    assert headers["Access-Control-Allow-Methods"] == "GET"
    assert headers["Access-Control-Allow-Headers"] == "authorization"
    assert jwt_demo.minted == []


def test_a_preflight_from_anywhere_else_is_refused(jwt_demo: Served) -> None:
    status, headers, _ = jwt_demo.request(
        "OPTIONS",
        "/token",
        {"Origin": "https://example.com", "Access-Control-Request-Method": "GET"},
    )
    assert status == 403
    assert "Access-Control-Allow-Origin" not in headers


def test_without_tokens_there_is_no_token_endpoint(none_demo: Served) -> None:
    # Given `make dev` without AUTH=jwt: /token is no route, for any origin
    origin = {"Origin": "http://localhost:5173"}
    assert none_demo.request("GET", "/token?userId=u1", origin)[0] == 404
    assert none_demo.request("OPTIONS", "/token", origin)[0] == 404
    assert none_demo.request("GET", "/config.json")[0] == 200
