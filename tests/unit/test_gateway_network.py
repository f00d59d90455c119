"""How the gateway reads its network settings (CA bundle, proxies) and HTTP answers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.utils import get_environ_proxies

from wspush.fanout.gateway import Connection, Network, Proxy, Response, parse_response, proxy_for
from wspush.settings import Settings, SettingsError

PROXY_VARIABLES = (
    "https_proxy",
    "http_proxy",
    "no_proxy",
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "NO_PROXY",
)
ENDPOINTS = (
    "https://abc123.execute-api.eu-west-1.amazonaws.com/prod",
    "https://abc123.execute-api.eu-west-1.amazonaws.com:443/prod",
    "http://127.0.0.1:3001",
    "https://localhost:8443/local",
)


def settings_from(env: dict[str, str]) -> Settings:
    return Settings.from_env({"WSPUSH_TABLE_NAME": "t", **env})


@pytest.mark.parametrize(
    "env",
    [
        {"HTTPS_PROXY": "http://upper:3128"},
        {"https_proxy": "http://lower:3128"},
        {"HTTPS_PROXY": "http://upper:3128", "https_proxy": "http://lower:3128"},
        {"HTTPS_PROXY": "http://upper:3128", "https_proxy": ""},  # an empty lower-case wins
        {"HTTP_PROXY": "proxy.internal:8080"},
        {"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "amazonaws.com"},
        {"HTTPS_PROXY": "http://p:3128", "no_proxy": ".amazonaws.com", "NO_PROXY": ""},
        {"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "execute-api.eu-west-1.amazonaws.com"},
        {"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "other.com, localhost"},
        {"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "*"},
        {"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "localhost:8443"},
        {"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "localhost:9999"},
        {"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "0.0.1"},  # a suffix, even of an address
        {"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "127.0.0.0/8"},  # no ranges
        {"HTTP_PROXY": "http://p:3128", "NO_PROXY": "127.0.0.1"},
        {"HTTP_PROXY": "http://p:3128", "NO_PROXY": "ABC123.Execute-Api.EU-WEST-1.amazonaws.com"},
    ],
)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_the_proxy_a_post_takes_is_the_one_boto3_would_take(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], endpoint: str
) -> None:
    # Given the same environment for botocore (which reads os.environ) and for Settings
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    parts = urlsplit(endpoint)
    boto3_proxy = get_environ_proxies(endpoint).get(parts.scheme)
    # When the gateway decides
    ours = proxy_for(parts, Network.from_settings(settings_from(env)))
    # Then it goes through the same proxy, or none when boto3 goes direct
    if boto3_proxy is None:
        assert ours is None
    else:
        assert ours is not None
        expected = Proxy.parse(boto3_proxy, "")
        assert (ours.host, ours.port) == (expected.host, expected.port)


@pytest.mark.parametrize(
    ("url", "host", "port"),
    [
        ("http://proxy.internal:3128", "proxy.internal", 3128),
        ("proxy.internal:3128", "proxy.internal", 3128),  # no scheme: http://, as botocore
        ("//proxy.internal:3128", "proxy.internal", 3128),
        ("http://proxy.internal", "proxy.internal", 80),
        ("HTTP://[fd00::1]:3128", "fd00::1", 3128),
        ("http://proxy.internal:3128/?via=https://elsewhere", "proxy.internal", 3128),
    ],
)
def test_proxy_urls_are_read_as_botocore_reads_them(url: str, host: str, port: int) -> None:
    proxy = Proxy.parse(url, "HTTPS_PROXY")
    assert (proxy.host, proxy.port, proxy.authorization) == (host, port, None)


@pytest.mark.parametrize(
    ("url", "authorization"),
    [
        ("http://user:secret@p:3128", "Basic dXNlcjpzZWNyZXQ="),
        ("http://us%40er:p%3Ass@p:3128", "Basic dXNAZXI6cDpzcw=="),  # unquoted before encoding
        ("http://user@p:3128", None),  # boto3 sends credentials only with a password
        ("http://:secret@p:3128", None),
    ],
)
def test_proxy_credentials_become_basic_authorization(url: str, authorization: str) -> None:
    assert Proxy.parse(url, "HTTPS_PROXY").authorization == authorization


def test_every_network_setting_reaches_the_gateway() -> None:
    # Given settings naming a CA bundle, both proxies, NO_PROXY and a handshake limit
    env = {
        "AWS_CA_BUNDLE": "/opt/ca.pem",
        "HTTPS_PROXY": "http://secure:3128",
        "HTTP_PROXY": "http://plain:3128",
        "NO_PROXY": "internal.test",
        "WSPUSH_MAX_HANDSHAKES": "3",
    }
    # When the gateway's network is read from them
    network = Network.from_settings(settings_from(env))
    # Then it holds each of them
    assert network == Network(
        ca_bundle="/opt/ca.pem",
        https_proxy="http://secure:3128",
        http_proxy="http://plain:3128",
        no_proxy="internal.test",
        max_handshakes=3,
    )


def test_the_ca_bundle_is_aws_ca_bundle_else_requests_ca_bundle() -> None:
    both = {"AWS_CA_BUNDLE": "/opt/aws.pem", "REQUESTS_CA_BUNDLE": "/opt/requests.pem"}
    assert settings_from(both).ca_bundle == "/opt/aws.pem"
    assert settings_from({"REQUESTS_CA_BUNDLE": "/opt/requests.pem"}).ca_bundle == (
        "/opt/requests.pem"
    )
    assert settings_from({}).ca_bundle == ""


def test_handshakes_in_progress_at_once_are_configurable_and_at_least_one() -> None:
    assert settings_from({}).max_handshakes == 8
    assert settings_from({"WSPUSH_MAX_HANDSHAKES": "2"}).max_handshakes == 2
    with pytest.raises(SettingsError, match="WSPUSH_MAX_HANDSHAKES"):
        settings_from({"WSPUSH_MAX_HANDSHAKES": "0"})


OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
CHUNKED = (
    b"HTTP/1.1 429 Too Many\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"2;ext=1\r\n{}\r\n0\r\nx-trailer: 1\r\n\r\n"
)


@pytest.mark.parametrize("cut", range(len(CHUNKED)))
def test_an_answer_is_complete_only_when_all_of_it_arrived(cut: int) -> None:
    assert parse_response(bytearray(CHUNKED[:cut]), eof=False) is None


def test_a_chunked_answer_ends_after_its_trailers() -> None:
    parsed = parse_response(bytearray(CHUNKED + b"more"), eof=False)
    assert parsed is not None
    response, end = parsed
    assert (response.status, response.keep_alive, end) == (429, True, len(CHUNKED))


def test_a_chunked_body_is_measured_by_its_sizes_not_by_blank_lines_in_it() -> None:
    # Given chunks whose data holds blank lines, one of 26 bytes (size 1a) and one of 16 (10)
    body = (
        b"4\r\n\r\n\r\n\r\n"
        + b"1a\r\n"
        + b"\r\n" * 13
        + b"\r\n10;x=y\r\n"
        + b"a" * 16
        + b"\r\n0\r\n\r\n"
    )
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    # Then the answer ends after the last chunk and the empty line, and not before
    parsed = parse_response(bytearray(answer + b"HTTP/1.1"), eof=False)
    assert parsed is not None
    assert parsed[1] == len(answer)
    assert parse_response(bytearray(answer[:-2]), eof=False) is None


def test_an_answer_without_length_runs_to_the_end_of_the_connection() -> None:
    answer = bytearray(b"HTTP/1.1 500 Oops\r\n\r\nbody")
    assert parse_response(answer, eof=False) is None
    parsed = parse_response(answer, eof=True)
    assert parsed is not None
    response, end = parsed
    assert (response.status, response.keep_alive, end) == (500, False, len(answer))


@pytest.mark.parametrize(
    ("answer", "keep_alive"),
    [
        (OK_HEAD + b"{}", True),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}", False),
    ],
)
def test_keep_alive_is_http_1_1_without_connection_close(answer: bytes, keep_alive: bool) -> None:
    parsed = parse_response(bytearray(answer), eof=False)
    assert parsed is not None
    assert parsed[0].keep_alive is keep_alive


def test_a_connect_answer_has_no_body() -> None:
    answer = b"HTTP/1.0 200 Connection established\r\n\r\n"
    parsed = parse_response(bytearray(answer), eof=False, head_only=True)
    assert parsed is not None
    assert (parsed[0].status, parsed[1]) == (200, len(answer))


@pytest.mark.parametrize(
    "answer",
    [
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 abc\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
        b"\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",  # an empty head first
        b"HTTP/1.1 2000 OK\r\n\r\n",  # a status of four digits
        b"HTTP/1.1 20 OK\r\n\r\n",
    ],
)
def test_what_is_not_http_is_an_error(answer: bytes) -> None:
    with pytest.raises(ValueError, match=r"HTTP|header"):
        parse_response(bytearray(answer), eof=False)


def parsed(answer: bytes, *, eof: bool = False) -> tuple[int, dict[str, str], bool, int]:
    result = parse_response(bytearray(answer), eof=eof)
    assert result is not None
    response, end = result
    return response.status, response.headers, response.keep_alive, end


def test_header_names_are_lowercased_and_values_trimmed() -> None:
    answer = b"HTTP/1.1 410 Gone\r\nX-Amzn-ErrorType :  GoneException \r\nContent-Length: 0\r\n\r\n"
    assert parsed(answer) == (
        410,
        {"x-amzn-errortype": "GoneException", "content-length": "0"},
        True,
        len(answer),
    )


@pytest.mark.parametrize("status", [100, 199, 204, 304])
def test_answers_that_never_have_a_body_end_with_their_head(status: int) -> None:
    head = f"HTTP/1.1 {status} X\r\nContent-Length: 5\r\n\r\n".encode()
    assert parsed(head + b"hello")[3] == len(head)


@pytest.mark.parametrize("status", [200, 205, 303, 400])
def test_other_answers_end_after_their_content_length(status: int) -> None:
    head = f"HTTP/1.1 {status} X\r\nContent-Length: 5\r\n\r\n".encode()
    assert parse_response(bytearray(head + b"hell"), eof=False) is None
    assert parsed(head + b"hello!")[3] == len(head) + 5


def test_a_head_is_awaited_up_to_64_kib_and_refused_beyond() -> None:
    assert parse_response(bytearray(b"H" * 65_536), eof=False) is None
    with pytest.raises(ValueError, match="answer head too long"):
        parse_response(bytearray(b"H" * 65_537), eof=False)


def test_a_status_line_needs_http_1_and_three_digits() -> None:
    assert parsed(b"HTTP/1.0 204 No Content\r\n\r\n")[0] == 204
    for line in (b"HTTP/2 200 OK", b"HTTP/1.1 20 OK", b"HTTP/1.1"):
        with pytest.raises(ValueError, match=r"not an HTTP/1\.x answer"):
            parse_response(bytearray(line + b"\r\n\r\n"), eof=False)


def test_chunks_are_counted_in_hex_and_each_is_read_whole() -> None:
    body = b"a\r\n0123456789\r\n10\r\n" + b"x" * 16 + b"\r\n0\r\n\r\n"
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n"
    assert parsed(head + body + b"next")[3] == len(head + body)
    assert parse_response(bytearray(head + body[:-1]), eof=False) is None
    assert parse_response(bytearray(head + b"a\r\n0123"), eof=False) is None


def test_connection_close_is_read_whatever_its_case() -> None:
    assert parsed(b"HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 0\r\n\r\n")[2] is False


class FakeTransport(asyncio.Transport):
    """What a connection writes, and whether it closed its transport."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


REQUEST = b"POST /prod/@connections/c HTTP/1.1\r\nContent-Length: 0\r\n\r\n"


def made_connection() -> tuple[Connection, FakeTransport]:
    connection, transport = Connection(), FakeTransport()
    connection.connection_made(transport)
    return connection, transport


def answered(
    connection: Connection, *events: Callable[[], object], head_only: bool = False
) -> Coroutine[Any, Any, Response]:
    """Send a request on ``connection``, then let ``events`` (bytes or an end) happen."""

    async def exchange() -> Response:
        pending = asyncio.ensure_future(connection.exchange(REQUEST, 5, head_only=head_only))
        await asyncio.sleep(0)
        for event in events:
            event()
        return await pending

    return exchange()


def ending(connection: Connection, end: str) -> Callable[[], object]:
    """The endpoint ending the connection: an EOF, or the connection lost outright."""
    if end == "eof_received":
        return connection.eof_received
    return lambda: connection.connection_lost(None)


def test_a_connection_not_yet_made_is_not_reusable() -> None:
    connection = Connection()
    assert connection.reusable is False
    connection.close()
    assert connection.reusable is False


def test_an_answer_that_arrives_in_pieces_is_read_whole() -> None:
    # Given a request sent on a connection
    connection, transport = made_connection()
    pieces = (b"HTTP/1.1 200 OK\r\nContent-Le", b"ngth: 2\r\n\r\n{", b"}")
    # When its answer arrives in three pieces
    response = asyncio.run(
        answered(
            connection, *(lambda piece=piece: connection.data_received(piece) for piece in pieces)
        )
    )
    # Then it is one answer, the request went out as it was, and the connection stays usable
    assert response == Response(200, {"content-length": "2"}, keep_alive=True)
    assert transport.written == REQUEST
    assert connection.reusable
    assert not transport.closed


@pytest.mark.parametrize("when", ["before-any-request", "after-an-answer"])
def test_bytes_nobody_asked_for_spoil_the_connection(when: str) -> None:
    # Given a connection that is idle, new or after an answer
    connection, transport = made_connection()
    if when == "after-an-answer":
        asyncio.run(answered(connection, lambda: connection.data_received(OK_HEAD + b"{}")))
    # When bytes arrive on it
    connection.data_received(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
    # Then it is closed and never used again
    assert transport.closed
    assert not connection.reusable


def test_a_closed_connection_refuses_a_request() -> None:
    connection, transport = made_connection()
    connection.close()
    with pytest.raises(ConnectionResetError) as refused:
        asyncio.run(connection.exchange(REQUEST, 5))
    assert str(refused.value) == "the connection is closed"
    assert transport.written == b""


@pytest.mark.parametrize("end", ["eof_received", "connection_lost"])
def test_an_answer_without_length_ends_with_the_connection(end: str) -> None:
    # Given an answer without a length, its body still arriving
    connection, _ = made_connection()
    closing = ending(connection, end)
    # When the endpoint ends the connection
    response = asyncio.run(
        answered(
            connection, lambda: connection.data_received(b"HTTP/1.1 500 Oops\r\n\r\nbo"), closing
        )
    )
    # Then the answer is whole, and the connection is not used again
    assert (response.status, response.keep_alive) == (500, False)
    assert not connection.reusable


@pytest.mark.parametrize("end", ["eof_received", "connection_lost"])
def test_a_connection_that_ends_before_a_whole_answer_is_an_error(end: str) -> None:
    connection, _ = made_connection()
    closing = ending(connection, end)
    with pytest.raises(EOFError) as cut:
        asyncio.run(answered(connection, lambda: connection.data_received(OK_HEAD + b"{"), closing))
    assert str(cut.value) == "the connection closed before a whole answer"
    assert not connection.reusable


@pytest.mark.parametrize("end", ["eof_received", "connection_lost"])
def test_an_idle_connection_the_endpoint_ends_is_not_used_again(end: str) -> None:
    # Given an idle connection whose transport has not closed yet
    connection, transport = made_connection()
    # When the endpoint ends it
    if end == "eof_received":
        assert connection.eof_received() is None  # asyncio then closes the transport
    else:
        connection.connection_lost(None)
    # Then it is not reusable, even before the transport says it is closing
    assert not transport.closed
    assert connection.reusable is False


def test_an_answer_with_connection_close_closes_the_connection() -> None:
    connection, transport = made_connection()
    answer = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    response = asyncio.run(answered(connection, lambda: connection.data_received(answer)))
    assert (response.status, response.keep_alive) == (200, False)
    assert transport.closed


def test_a_proxy_s_http_1_0_answer_to_connect_keeps_the_tunnel_open() -> None:
    # Given a CONNECT sent to a proxy that answers in HTTP/1.0 (not keep-alive, no body)
    connection, transport = made_connection()
    answer = b"HTTP/1.0 200 Connection established\r\n\r\n"
    # When its answer arrives
    response = asyncio.run(
        answered(connection, lambda: connection.data_received(answer), head_only=True)
    )
    # Then the tunnel stays open for TLS to run in it
    assert response.status == 200
    assert not transport.closed
    assert connection.reusable


def test_bytes_after_an_answer_in_the_same_read_spoil_the_connection() -> None:
    connection, transport = made_connection()
    response = asyncio.run(
        answered(connection, lambda: connection.data_received(OK_HEAD + b"{}HTTP/1.1"))
    )
    assert response.status == 200
    assert transport.closed
    assert not connection.reusable


def test_an_answer_that_is_not_http_is_an_error_and_closes_the_connection() -> None:
    connection, transport = made_connection()
    with pytest.raises(ValueError, match=r"not an HTTP/1\.x answer"):
        asyncio.run(answered(connection, lambda: connection.data_received(b"SSH-2.0\r\n\r\n")))
    assert transport.closed
