"""The lean Management API client against raw HTTP/1.1 servers on loopback, over plain HTTP
and over TLS (as API Gateway's endpoint is), with a certificate authority made for the run."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from cryptography import x509
from cryptography.x509.name import _ASN1Type

from local.tls import Authority
from wspush.fanout import gateway as gateway_module
from wspush.fanout.gateway import Gateway, Network, PostOutcome, PostResult
from wspush.settings import SettingsError

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
GONE = b"HTTP/1.1 410 Gone\r\nx-amzn-ErrorType: GoneException\r\nContent-Length: 0\r\n\r\n"
REGION = "eu-west-1"


@dataclass
class RawServer:
    """Answers every request with the next canned response (then 200), keeping connections
    alive. ``stray`` misbehaves once, after the first answer: (seconds later, these bytes,
    then close the connection or not)."""

    scheme: str = "http"
    host: str = "127.0.0.1"
    responses: list[bytes] = field(default_factory=list)
    latency: float = 0.0
    stray: tuple[float, bytes, bool] | None = None
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0
    closed: int = 0  # connections the client closed
    in_flight: int = 0
    max_in_flight: int = 0
    port: int = 0
    open_writers: list[asyncio.StreamWriter] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}/prod"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_writers.append(writer)
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                self.requests.append(head + await reader.readexactly(length))
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                await asyncio.sleep(self.latency)
                self.in_flight -= 1
                writer.write(self.responses.pop(0) if self.responses else OK)
                await writer.drain()
                if self.stray is not None:
                    (delay, data, close), self.stray = self.stray, None
                    await asyncio.sleep(delay)
                    writer.write(data)
                    await writer.drain()
                    if close:
                        break
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            self.closed += 1  # the client closed its connection
        finally:
            writer.close()


def serve_in_thread(raw: RawServer, tls: ssl.SSLContext | None) -> Iterator[RawServer]:
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop = asyncio.Event()

    async def serve() -> None:
        listener = await asyncio.start_server(raw.handle, raw.host, 0, ssl=tls)
        raw.port = listener.sockets[0].getsockname()[1]
        started.set()
        async with listener:
            await stop.wait()
            for writer in raw.open_writers:
                writer.transport.abort()  # no TLS goodbye to wait for: the client is gone

    thread = threading.Thread(target=lambda: loop.run_until_complete(serve()), daemon=True)
    thread.start()
    started.wait(5)
    yield raw
    loop.call_soon_threadsafe(stop.set)
    thread.join(5)


@pytest.fixture(params=["http", "https"])
def server(request: pytest.FixtureRequest, tls_authority: Authority) -> Iterator[RawServer]:
    """The same server over plain HTTP and over TLS."""
    scheme = request.param
    tls = tls_authority.server_context() if scheme == "https" else None
    yield from serve_in_thread(RawServer(scheme), tls)


@pytest.fixture(autouse=True)
def closed_gateways() -> Iterator[list[Gateway]]:
    made: list[Gateway] = []
    yield made
    for gateway in made:
        gateway.close()


@pytest.fixture
def trusted(tls_authority: Authority) -> Network:
    """What a deployment with AWS_CA_BUNDLE pointing at the authority's root gets."""
    return Network(ca_bundle=str(tls_authority.ca_bundle))


def gateway_for(
    server: RawServer,
    made: list[Gateway],
    network: Network,
    *,
    max_connections: int = 4,
    url: str | None = None,
) -> Gateway:
    gateway = Gateway(
        url or server.url, region=REGION, max_connections=max_connections, network=network
    )
    made.append(gateway)
    return gateway


def post_all(gateway: Gateway, ids: list[str]) -> list[PostResult]:
    async def all_at_once() -> list[PostResult]:
        return await asyncio.gather(*(gateway.post(cid, b"{}") for cid in ids))

    return gateway.run(all_at_once())


def parse_request(raw: bytes) -> tuple[str, list[tuple[str, str]], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    line, *lines = head.decode("latin-1").split("\r\n")
    headers = [(name, value.strip()) for name, _, value in (h.partition(":") for h in lines)]
    return line, headers, body


def sigv4_signature_holds(scheme: str, raw: bytes) -> bool:
    """Check the signature as API Gateway does: recompute it over the headers the request
    says it signed, with the secret of the test credentials."""
    line, headers, body = parse_request(raw)
    _, path, _ = line.split(" ")
    values = {name.lower(): value for name, value in headers}
    fields = dict(part.strip().split("=", 1) for part in values["authorization"][17:].split(","))
    signed = fields["SignedHeaders"].split(";")
    request = AWSRequest(
        method="POST",
        url=f"{scheme}://{values['host']}{path}",
        data=body,
        headers={name: values[name] for name in signed},
    )
    request.context["timestamp"] = values["x-amz-date"]
    signer = SigV4Auth(Credentials("testing", "testing", "testing"), "execute-api", REGION)
    expected = signer.signature(
        signer.string_to_sign(request, signer.canonical_request(request)), request
    )
    return bool(fields["Signature"] == expected)


def test_a_post_is_exactly_the_request_api_gateway_expects(
    server: RawServer, closed_gateways: list[Gateway], trusted: Network
) -> None:
    # Given a gateway client
    gateway = gateway_for(server, closed_gateways, trusted)
    # When it posts to an id that needs escaping
    result = gateway.run(gateway.post("Xk1a=b/c", b'{"type":"t"}'))
    # Then the request is what API Gateway expects
    assert result.outcome is PostOutcome.DELIVERED
    line, headers, body = parse_request(server.requests[0])
    assert line == "POST /prod/@connections/Xk1a%3Db%2Fc HTTP/1.1"
    values = dict(headers)
    assert len(values) == len(headers)  # no header twice
    assert values["Host"] == f"127.0.0.1:{server.port}"
    assert values["Content-Type"] == "application/json"
    assert values["Content-Length"] == str(len(b'{"type":"t"}'))
    assert body == b'{"type":"t"}'
    # And it is signed with SigV4 for execute-api, over Host and Content-Type among others
    authorization = values["Authorization"]
    assert authorization.startswith("AWS4-HMAC-SHA256 Credential=testing/")
    assert f"/{REGION}/execute-api/aws4_request, " in authorization
    assert "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, " in authorization
    assert values["X-Amz-Security-Token"] == "testing"
    assert sigv4_signature_holds(server.scheme, server.requests[0])


def test_a_new_gateway_has_opened_nothing_and_waited_for_nothing(
    server: RawServer, closed_gateways: list[Gateway], trusted: Network
) -> None:
    gateway = gateway_for(server, closed_gateways, trusted)
    assert (gateway.opened, gateway.peak_handshakes) == (0, 0)
    assert (gateway.slowest_handshake, gateway.longest_wait) == (0.0, 0.0)
    assert server.connections == 0


def test_posts_share_a_kept_alive_connection(
    server: RawServer, closed_gateways: list[Gateway], trusted: Network
) -> None:
    gateway = gateway_for(server, closed_gateways, trusted)
    first = gateway.run(gateway.post("one", b"{}"))
    second = gateway.run(gateway.post("two", b"{}"))
    assert (first.outcome, second.outcome) == (PostOutcome.DELIVERED, PostOutcome.DELIVERED)
    assert server.connections == 1
    assert gateway.opened == 1


@pytest.mark.parametrize(
    ("response", "outcome", "reason"),
    [
        (b"HTTP/1.1 410 Gone\r\nx-amzn-ErrorType: GoneException:http://internal\r\n"
         b"Content-Length: 2\r\n\r\n{}", PostOutcome.GONE, "410 GoneException"),
        (b"HTTP/1.1 410 Gone\r\nContent-Length: 0\r\n\r\n", PostOutcome.GONE, "410"),
        (b"HTTP/1.1 429 Too Many\r\nx-amzn-ErrorType: LimitExceededException\r\n"
         b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", PostOutcome.THROTTLED,
         "429 LimitExceededException"),
        (b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n", PostOutcome.TOO_LARGE, "413"),
        (b"HTTP/1.1 400 Bad Request\r\nx-amzn-ErrorType: TooManyRequestsException:a:b\r\n"
         b"Content-Length: 0\r\n\r\n", PostOutcome.THROTTLED, "400 TooManyRequestsException"),
    ],
)  # fmt: skip
def test_answers_are_classified_and_the_connection_is_kept(
    server: RawServer,
    closed_gateways: list[Gateway],
    trusted: Network,
    response: bytes,
    outcome: PostOutcome,
    reason: str,
) -> None:
    server.responses = [response]
    gateway = gateway_for(server, closed_gateways, trusted)
    result = gateway.run(gateway.post("c-1", b"{}"))
    assert (result.outcome, result.reason) == (outcome, reason)
    # The body was read to its end: the next post reuses the connection
    assert gateway.run(gateway.post("c-2", b"{}")).outcome is PostOutcome.DELIVERED
    assert server.connections == 1


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 301 Moved Permanently\r\nLocation: https://x/\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\n\r\n",
        b"HTTP/1.1 300 Multiple Choices\r\nContent-Length: 0\r\n\r\n",
    ],
)
def test_a_3xx_answer_is_a_retryable_error_never_a_delivery(
    server: RawServer, closed_gateways: list[Gateway], trusted: Network, response: bytes
) -> None:
    # Given an endpoint (or something in front of it) that answers a redirect
    server.responses = [response]
    gateway = gateway_for(server, closed_gateways, trusted)
    # When a post is made
    result = gateway.run(gateway.post("c-1", b"{}"))
    # Then it is not delivered: an error that a retry may fix, named by its status
    assert result == PostResult(PostOutcome.ERROR, int(response[9:12]))
    assert result.retryable
    # And the answer was read whole: the next post reuses the connection
    assert gateway.run(gateway.post("c-2", b"{}")).outcome is PostOutcome.DELIVERED
    assert server.connections == 1


def test_the_pool_keeps_at_most_max_connections_idle(
    server: RawServer, closed_gateways: list[Gateway], trusted: Network
) -> None:
    # Given a gateway that keeps 2 connections, and posts slow enough to need 4 at once
    server.latency = 0.05
    gateway = gateway_for(server, closed_gateways, trusted, max_connections=2)
    ids = ["c-1", "c-2", "c-3", "c-4"]
    # When 4 posts are made at once, twice
    first = post_all(gateway, ids)
    opened_first = gateway.opened
    second = post_all(gateway, ids)
    # Then the first round opened 4 connections and kept 2: the second opened only 2 more
    assert {r.outcome for r in first + second} == {PostOutcome.DELIVERED}
    assert opened_first == 4
    assert gateway.opened == 6


def test_an_answer_later_than_the_read_timeout_is_a_retryable_error_on_a_closed_connection(
    server: RawServer, closed_gateways: list[Gateway], trusted: Network
) -> None:
    # Given an endpoint that answers after 0.5 s, and a client that waits 0.1 s
    server.latency = 0.5
    gateway = Gateway(
        server.url, region=REGION, max_connections=2, network=trusted, read_timeout=0.1
    )
    closed_gateways.append(gateway)
    # When a post is made
    result = gateway.run(gateway.post("c-1", b"{}"))
    # Then it is a read timeout, which a retry may fix, and the connection is not reused
    assert result == PostResult(PostOutcome.ERROR, None, "ReadTimeoutError")
    assert result.retryable
    server.latency = 0.0
    assert gateway.run(gateway.post("c-2", b"{}")).outcome is PostOutcome.DELIVERED
    assert server.connections == 2


def test_an_answer_that_is_not_http_closes_the_connection(
    server: RawServer, closed_gateways: list[Gateway], trusted: Network
) -> None:
    server.responses = [b"SSH-2.0-OpenSSH\r\n\r\n"]
    gateway = gateway_for(server, closed_gateways, trusted)
    result = gateway.run(gateway.post("c-1", b"{}"))
    assert result == PostResult(PostOutcome.ERROR, None, "ConnectionClosedError")
    assert result.retryable
    assert gateway.run(gateway.post("c-2", b"{}")).outcome is PostOutcome.DELIVERED
    assert server.connections == 2


def test_the_stage_path_is_kept_with_or_without_a_trailing_slash(
    server: RawServer, closed_gateways: list[Gateway], trusted: Network
) -> None:
    origin = f"{server.scheme}://127.0.0.1:{server.port}"
    for url in (server.url + "/", origin, origin + "/betaX/"):
        gateway = gateway_for(server, closed_gateways, trusted, url=url)
        assert gateway.run(gateway.post("c", b"{}")).outcome is PostOutcome.DELIVERED
    lines = [parse_request(raw)[0] for raw in server.requests]
    assert lines == [
        "POST /prod/@connections/c HTTP/1.1",
        "POST /@connections/c HTTP/1.1",
        "POST /betaX/@connections/c HTTP/1.1",
    ]


@pytest.mark.parametrize("url", ["ftp://example.test/prod", "http:///prod", "example.test"])
def test_an_endpoint_that_is_not_an_http_url_is_refused(url: str) -> None:
    with pytest.raises(SettingsError, match="must be an http"):
        Gateway(url, region=REGION, max_connections=1)


def test_bytes_after_an_answer_are_never_read_as_the_next_answer(
    server: RawServer, closed_gateways: list[Gateway], trusted: Network
) -> None:
    # Given a server that writes a second, unasked-for answer right after the first
    server.responses = [OK + GONE]
    gateway = gateway_for(server, closed_gateways, trusted)
    assert gateway.run(gateway.post("c-1", b"{}")).outcome is PostOutcome.DELIVERED
    # When the next post is made
    second = gateway.run(gateway.post("c-2", b"{}"))
    # Then it gets its own answer, on a new connection: the spoilt one was not pooled
    assert second.outcome is PostOutcome.DELIVERED
    assert server.connections == 2
    assert len(server.requests) == 2


@pytest.mark.parametrize("then_close", [False, True], ids=["stays-open", "then-closes"])
def test_an_answer_nobody_asked_for_on_an_idle_connection_is_not_taken_for_the_next_post(
    server: RawServer, closed_gateways: list[Gateway], trusted: Network, then_close: bool
) -> None:
    # Given a pooled connection on which the server, later, sends an answer unasked
    # (as a server that times an idle connection out with a 408 before closing it)
    stray = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    server.stray = (0.05, stray, then_close)
    gateway = gateway_for(server, closed_gateways, trusted)
    assert gateway.run(gateway.post("c-1", b"{}")).outcome is PostOutcome.DELIVERED
    time.sleep(0.2)
    # When the next post is made
    second = gateway.run(gateway.post("c-2", b"{}"))
    # Then it is answered by the server, on a new connection
    assert (second.outcome, second.status) == (PostOutcome.DELIVERED, 200)
    assert server.connections == 2
    assert len(server.requests) == 2


def test_the_late_answer_of_an_abandoned_post_is_never_read_as_the_next_one(
    server: RawServer, closed_gateways: list[Gateway], trusted: Network
) -> None:
    # Given a post its caller gives up on before the answer comes (the invocation's cut)
    server.latency = 0.3
    gateway = gateway_for(server, closed_gateways, trusted)
    with pytest.raises(TimeoutError):
        gateway.run(asyncio.wait_for(gateway.post("c-1", b"{}"), 0.05))
    # When the next post is made after the late answer has arrived
    gateway.run(asyncio.sleep(0.4))
    server.latency = 0.0
    second = gateway.run(gateway.post("c-2", b"{}"))
    # Then it went out on a new connection: the abandoned one was closed, never pooled
    assert second.outcome is PostOutcome.DELIVERED
    assert (server.connections, server.closed) == (2, 1)


def test_a_refused_connection_is_a_retryable_error(closed_gateways: list[Gateway]) -> None:
    gateway = Gateway("http://127.0.0.1:9/prod", region=REGION, max_connections=1)
    closed_gateways.append(gateway)
    result = gateway.run(gateway.post("c-1", b"{}"))
    assert result == PostResult(PostOutcome.ERROR, None, "EndpointConnectionError")
    assert result.retryable


@pytest.fixture
def never_accepting() -> Iterator[int]:
    """A port whose listener never accepts and whose backlog is full: connecting to it hangs
    (the kernel drops the SYN), as an endpoint behind a black hole does."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port))  # takes the only place in the queue
    yield port
    filler.close()
    listener.close()


def test_an_endpoint_that_never_accepts_is_a_connect_timeout(
    never_accepting: int, closed_gateways: list[Gateway], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gateway_module, "CONNECT_TIMEOUT_SECONDS", 0.2)
    gateway = Gateway(f"http://127.0.0.1:{never_accepting}/prod", region=REGION, max_connections=1)
    closed_gateways.append(gateway)
    started = time.monotonic()
    result = gateway.run(gateway.post("c-1", b"{}"))
    elapsed = time.monotonic() - started
    assert result == PostResult(PostOutcome.ERROR, None, "ConnectTimeoutError")
    assert result.retryable
    assert 0.2 <= elapsed < 1.0


@pytest.fixture
def tls_server(tls_authority: Authority) -> Iterator[RawServer]:
    yield from serve_in_thread(RawServer("https"), tls_authority.server_context())


def test_tls_fails_against_an_authority_the_client_does_not_trust(
    tls_server: RawServer, closed_gateways: list[Gateway]
) -> None:
    # Given an https endpoint whose certificate the system's trust store does not know
    gateway = gateway_for(tls_server, closed_gateways, Network())
    # When a post is made without the CA bundle
    result = gateway.run(gateway.post("c-1", b"{}"))
    # Then it fails as it would on AWS with a wrong trust store, before any request is sent
    assert result == PostResult(PostOutcome.ERROR, None, "SSLError")
    assert tls_server.requests == []


@pytest.fixture
def elsewhere_server(tls_authority: Authority) -> Iterator[RawServer]:
    """The same certificate, served at an address it does not name."""
    yield from serve_in_thread(RawServer("https", "127.0.0.2"), tls_authority.server_context())


def test_tls_checks_the_endpoint_name_against_the_certificate(
    elsewhere_server: RawServer, closed_gateways: list[Gateway], trusted: Network
) -> None:
    # Given a trusted certificate for 127.0.0.1 and localhost only, presented at 127.0.0.2
    gateway = gateway_for(elsewhere_server, closed_gateways, trusted)
    # When a post goes there
    result = gateway.run(gateway.post("c-1", b"{}"))
    # Then the certificate does not match it
    assert result == PostResult(PostOutcome.ERROR, None, "SSLError")
    assert elsewhere_server.requests == []


def test_a_missing_ca_bundle_is_refused_when_the_gateway_is_made(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="AWS_CA_BUNDLE"):
        Gateway(
            "https://127.0.0.1:1/prod",
            region=REGION,
            max_connections=1,
            network=Network(ca_bundle=str(tmp_path / "missing.pem")),
        )


class SerialHandshakeServer:
    """A TLS server that completes one handshake at a time, each taking ``seconds``.

    A scaled-down model of a cold container at Lambda's smallest memory: there, handshakes
    queue for the little CPU the container has (0.145 vCPU at 256 MB), so a handshake ends
    only after every one started before it. Here they queue for this server's one thread.
    """

    def __init__(self, tls: ssl.SSLContext, seconds: float, latency: float = 0.0) -> None:
        self.tls = tls
        self.seconds = seconds
        self.latency = latency
        self.handshakes = 0
        self.requests = 0
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.port = self.listener.getsockname()[1]
        self.url = f"https://127.0.0.1:{self.port}/prod"
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            time.sleep(self.seconds)
            try:
                client.settimeout(5)
                tls = self.tls.wrap_socket(client, server_side=True)
            except OSError:
                client.close()  # the client gave up waiting
                continue
            self.handshakes += 1
            self._open.append(tls)
            threading.Thread(target=self._serve, args=(tls,), daemon=True).start()

    def _serve(self, connection: ssl.SSLSocket) -> None:
        reader = connection.makefile("rb")
        try:
            while head := reader.readline():
                while (line := reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length"):
                        head = line
                reader.read(int(head.split(b":")[1]))
                self.requests += 1
                time.sleep(self.latency)
                connection.sendall(OK)
        except (OSError, ValueError, IndexError):
            pass
        finally:
            connection.close()

    def close(self) -> None:
        self.listener.close()
        for connection in self._open:
            with suppress(OSError):
                connection.close()


@pytest.fixture
def slow_handshakes(tls_authority: Authority) -> Iterator[SerialHandshakeServer]:
    server = SerialHandshakeServer(tls_authority.server_context(), seconds=0.02)
    yield server
    server.close()


def test_a_cold_pool_opens_few_connections_at_once_and_none_times_out(
    slow_handshakes: SerialHandshakeServer,
    closed_gateways: list[Gateway],
    trusted: Network,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given handshakes that complete one at a time, 20 ms each, and a 0.5 s connect timeout:
    # of 32 handshakes started at once, the last would end after 0.64 s
    monkeypatch.setattr(gateway_module, "CONNECT_TIMEOUT_SECONDS", 0.5)
    gateway = Gateway(slow_handshakes.url, region=REGION, max_connections=32, network=trusted)
    closed_gateways.append(gateway)
    # When a cold gateway makes 32 posts at once
    results = post_all(gateway, [f"c-{i}" for i in range(32)])
    # Then every post is delivered: no handshake waited behind more than a few others
    assert [r.reason for r in results if r.outcome is not PostOutcome.DELIVERED] == []
    assert gateway.peak_handshakes <= trusted.max_handshakes
    assert gateway.slowest_handshake < 0.5
    assert slow_handshakes.requests == 32


def test_a_post_waits_past_the_connect_timeout_while_the_pool_keeps_moving(
    tls_authority: Authority,
    closed_gateways: list[Gateway],
    trusted: Network,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given handshakes of 150 ms one at a time and answers in 100 ms (a starved CPU makes
    # both slow), and a 0.3 s connect timeout
    server = SerialHandshakeServer(tls_authority.server_context(), seconds=0.15, latency=0.1)
    monkeypatch.setattr(gateway_module, "CONNECT_TIMEOUT_SECONDS", 0.3)
    network = Network(ca_bundle=trusted.ca_bundle, max_handshakes=1)
    gateway = Gateway(server.url, region=REGION, max_connections=8, network=network)
    closed_gateways.append(gateway)
    try:
        # When a cold gateway makes 8 posts at once
        started = time.monotonic()
        results = post_all(gateway, [f"c-{i}" for i in range(8)])
        elapsed = time.monotonic() - started
    finally:
        server.close()
    # Then some waited longer than the connect timeout for a connection, and none gave up:
    # a connection came back or was opened at least every 150 ms
    assert [r.reason for r in results if r.outcome is not PostOutcome.DELIVERED] == []
    assert 0.3 < gateway.longest_wait < elapsed


def test_posts_waiting_on_a_pool_where_nothing_moves_give_up_after_the_connect_timeout(
    never_accepting: int, closed_gateways: list[Gateway], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an endpoint that never accepts, and one handshake at a time
    monkeypatch.setattr(gateway_module, "CONNECT_TIMEOUT_SECONDS", 0.2)
    gateway = Gateway(
        f"http://127.0.0.1:{never_accepting}/prod",
        region=REGION,
        max_connections=4,
        network=Network(max_handshakes=1),
    )
    closed_gateways.append(gateway)
    # When four posts are made at once
    started = time.monotonic()
    results = post_all(gateway, [f"c-{i}" for i in range(4)])
    elapsed = time.monotonic() - started
    # Then the one handshake times out and the posts waiting behind it give up with it,
    # instead of trying one after another
    reasons = [r.reason for r in results]
    assert set(results) == {
        PostResult(PostOutcome.ERROR, None, "ConnectTimeoutError"),
        PostResult(PostOutcome.ERROR, None, "PoolTimeoutError"),
    }
    assert reasons.count("PoolTimeoutError") >= 2
    assert all(r.retryable for r in results)
    assert elapsed < 0.6


async def one_handshake_three_posts(
    gateway: Gateway,
) -> tuple[asyncio.Task[PostResult], asyncio.Task[PostResult], asyncio.Task[PostResult]]:
    """Posts A, B, C at once on a pool that makes one handshake at a time: A's handshake is
    in progress, B and then C wait for their turn."""
    a, b, c = (asyncio.ensure_future(gateway.post(cid, b"{}")) for cid in "ABC")
    await asyncio.sleep(0)
    assert len(gateway._waiting) == 2
    return a, b, c


@pytest.mark.parametrize("server", ["http"], indirect=True)
def test_a_post_abandoned_as_a_connection_is_handed_to_it_passes_it_on(
    server: RawServer, closed_gateways: list[Gateway]
) -> None:
    # Given an open connection no post holds, and posts B and C waiting behind A's handshake
    gateway = Gateway(
        server.url, region=REGION, max_connections=4, network=Network(max_handshakes=1)
    )
    closed_gateways.append(gateway)

    async def scenario() -> list[PostResult | BaseException]:
        spare = await gateway._open()
        a, b, c = await one_handshake_three_posts(gateway)
        # When the connection is handed to B, and B is abandoned (its caller's deadline)
        # before it could take it
        gateway._give_back(spare)
        b.cancel()
        return await asyncio.gather(a, b, c, return_exceptions=True)

    a, b, c = gateway.run(scenario())
    # Then C, next in line, posts on that connection instead of opening one more
    assert isinstance(b, asyncio.CancelledError)
    assert (a, c) == (PostResult(PostOutcome.DELIVERED, 200),) * 2
    assert (gateway.opened, server.connections) == (2, 2)


@pytest.mark.parametrize("server", ["http"], indirect=True)
def test_a_post_abandoned_as_it_is_woken_for_a_free_handshake_wakes_the_next(
    server: RawServer, closed_gateways: list[Gateway], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given posts B and C waiting behind A's handshake, and an endpoint slow to answer A
    server.latency = 0.3
    gateway = Gateway(
        server.url, region=REGION, max_connections=4, network=Network(max_handshakes=1)
    )
    closed_gateways.append(gateway)
    b_task: list[asyncio.Task[PostResult]] = []
    wake_one = gateway._wake_one

    def wake_one_and_abandon_b() -> None:
        # B is woken for the slot A's handshake frees, and abandoned at that very moment
        wake_one()
        if b_task and not b_task[0].done():
            b_task.pop().cancel()

    monkeypatch.setattr(gateway, "_wake_one", wake_one_and_abandon_b)

    async def scenario() -> list[PostResult | BaseException]:
        a, b, c = await one_handshake_three_posts(gateway)
        b_task.append(b)
        # When A's handshake ends
        return await asyncio.gather(a, b, c, return_exceptions=True)

    a, b, c = gateway.run(scenario())
    # Then C takes the free slot at once and opens its own connection, instead of waiting
    # for A's answer to hand it A's
    assert isinstance(b, asyncio.CancelledError)
    assert (a, c) == (PostResult(PostOutcome.DELIVERED, 200),) * 2
    assert (gateway.opened, server.connections) == (2, 2)
    assert server.max_in_flight == 2


def test_a_warm_pool_keeps_every_post_in_flight(
    server: RawServer, closed_gateways: list[Gateway], trusted: Network
) -> None:
    # Given a gateway that opens two connections at a time, and posts that take 100 ms
    server.latency = 0.1
    network = Network(ca_bundle=trusted.ca_bundle, max_handshakes=2)
    gateway = gateway_for(server, closed_gateways, network, max_connections=16)
    ids = [f"c-{i}" for i in range(16)]
    # When it makes 16 posts at once, twice
    cold = post_all(gateway, ids)
    server.max_in_flight = 0
    warm = post_all(gateway, ids)
    # Then all are delivered, the pool grew two handshakes at a time to one connection per
    # post, and once warm all 16 posts were in flight together
    assert {r.outcome for r in cold + warm} == {PostOutcome.DELIVERED}
    assert gateway.peak_handshakes == 2
    assert gateway.opened == server.connections == 16
    assert server.max_in_flight == 16


@pytest.mark.parametrize(
    ("endpoint", "port", "tls"),
    [
        ("https://abc123.execute-api.eu-west-1.amazonaws.com/prod", 443, True),
        ("http://abc123.execute-api.eu-west-1.amazonaws.com/prod", 80, False),
    ],
)
def test_an_endpoint_without_a_port_is_reached_on_its_scheme_s_port(
    monkeypatch: pytest.MonkeyPatch,
    closed_gateways: list[Gateway],
    endpoint: str,
    port: int,
    tls: bool,
) -> None:
    # Given an endpoint URL without a port, and a network that records where posts connect
    dialled: list[tuple[str, int, bool, str | None]] = []

    async def refused(
        self: asyncio.AbstractEventLoop, factory: object, host: str, port: int, **kwargs: object
    ) -> None:
        ssl_context = kwargs.get("ssl")
        dialled.append((host, port, ssl_context is not None, kwargs.get("server_hostname")))
        raise ConnectionRefusedError

    monkeypatch.setattr(asyncio.BaseEventLoop, "create_connection", refused)
    gateway = Gateway(endpoint, region=REGION, max_connections=1)
    closed_gateways.append(gateway)
    # When a post is made
    result = gateway.run(gateway.post("c-1", b"{}"))
    # Then it connected to the scheme's port, with TLS for https
    assert dialled == [("abc123.execute-api.eu-west-1.amazonaws.com", port, tls, None)]
    assert result == PostResult(PostOutcome.ERROR, None, "EndpointConnectionError")


def hashed_directory(ca_bundle: Path, directory: Path) -> Path:
    """The root certificate in a directory as ``openssl rehash`` writes it: named by the
    hash of its subject (SHA-1 of the name's canonical encoding, lower-cased UTF8Strings)."""
    root = x509.load_pem_x509_certificate(ca_bundle.read_bytes())
    canonical = x509.Name(
        [
            x509.RelativeDistinguishedName(
                [
                    x509.NameAttribute(
                        attribute.oid,
                        " ".join(str(attribute.value).lower().split()),
                        _ASN1Type.UTF8String,
                    )
                    for attribute in rdn
                ]
            )
            for rdn in root.subject.rdns
        ]
    ).public_bytes()
    header = 2 + (canonical[1] & 0x7F if canonical[1] & 0x80 else 0)  # the outer SEQUENCE
    digest = hashlib.sha1(canonical[header:], usedforsecurity=False).digest()
    directory.mkdir()
    (directory / f"{int.from_bytes(digest[:4], 'little'):08x}.0").write_bytes(
        ca_bundle.read_bytes()
    )
    return directory


def test_a_ca_bundle_may_be_a_directory_of_hashed_certificates(
    tls_server: RawServer, closed_gateways: list[Gateway], tls_authority: Authority, tmp_path: Path
) -> None:
    # Given AWS_CA_BUNDLE naming a directory that holds the endpoint's root, as rehash names it
    directory = hashed_directory(tls_authority.ca_bundle, tmp_path / "certs")
    gateway = gateway_for(tls_server, closed_gateways, Network(ca_bundle=str(directory)))
    # When a post is made
    result = gateway.run(gateway.post("c-1", b"{}"))
    # Then the endpoint is trusted
    assert result == PostResult(PostOutcome.DELIVERED, 200)
