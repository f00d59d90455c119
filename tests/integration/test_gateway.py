"""The lean Management API client against a raw HTTP/1.1 server on loopback."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from wspush.gateway import Gateway, PostOutcome


@dataclass
class RawServer:
    """Answers every request with the next canned response, keeping connections alive."""

    responses: list[bytes] = field(default_factory=list)
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0
    port: int = 0
    open_writers: list[asyncio.StreamWriter] = field(default_factory=list)

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
                writer.write(self.responses.pop(0) if self.responses else OK)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client closed its connection
        finally:
            writer.close()


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


@pytest.fixture
def server() -> Iterator[RawServer]:
    raw = RawServer()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop = asyncio.Event()

    async def serve() -> None:
        listener = await asyncio.start_server(raw.handle, "127.0.0.1", 0)
        raw.port = listener.sockets[0].getsockname()[1]
        started.set()
        async with listener:
            await stop.wait()
            for writer in raw.open_writers:
                writer.close()

    thread = threading.Thread(target=lambda: loop.run_until_complete(serve()), daemon=True)
    thread.start()
    started.wait(5)
    yield raw
    loop.call_soon_threadsafe(stop.set)
    thread.join(5)


@pytest.fixture(autouse=True)
def closed_gateways() -> Iterator[list[Gateway]]:
    made: list[Gateway] = []
    yield made
    for gateway in made:
        gateway.close()


def gateway_for(server: RawServer, made: list[Gateway]) -> Gateway:
    gateway = Gateway(f"http://127.0.0.1:{server.port}/prod", region="eu-west-1", max_connections=4)
    made.append(gateway)
    return gateway


def test_posts_are_signed_for_execute_api_and_share_a_kept_alive_connection(
    server: RawServer, closed_gateways: list[Gateway]
) -> None:
    # Given a gateway client
    gateway = gateway_for(server, closed_gateways)
    # When it posts twice, to an id that needs escaping
    first = gateway.run(gateway.post("Xk1a=b/c", b'{"type":"t"}'))
    second = gateway.run(gateway.post("other", b"{}"))
    # Then both were delivered over one connection
    assert (first.outcome, second.outcome) == (PostOutcome.DELIVERED, PostOutcome.DELIVERED)
    assert server.connections == 1
    # And the request is what API Gateway expects: path, SigV4 for execute-api, the body
    request = server.requests[0]
    head, _, body = request.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /prod/@connections/Xk1a%3Db%2Fc HTTP/1.1\r\n")
    assert b"Authorization: AWS4-HMAC-SHA256 Credential=testing/" in head
    assert b"/eu-west-1/execute-api/aws4_request" in head
    assert b"X-Amz-Date: " in head
    assert b"X-Amz-Security-Token: testing" in head
    assert body == b'{"type":"t"}'


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
    ],
)  # fmt: skip
def test_answers_are_classified_and_the_connection_is_kept(
    server: RawServer,
    closed_gateways: list[Gateway],
    response: bytes,
    outcome: PostOutcome,
    reason: str,
) -> None:
    server.responses = [response]
    gateway = gateway_for(server, closed_gateways)
    result = gateway.run(gateway.post("c-1", b"{}"))
    assert (result.outcome, result.reason) == (outcome, reason)
    # The body was read to its end: the next post reuses the connection
    assert gateway.run(gateway.post("c-2", b"{}")).outcome is PostOutcome.DELIVERED
    assert server.connections == 1


def test_a_refused_connection_is_a_retryable_error(closed_gateways: list[Gateway]) -> None:
    gateway = Gateway("http://127.0.0.1:9/prod", region="eu-west-1", max_connections=1)
    closed_gateways.append(gateway)
    result = gateway.run(gateway.post("c-1", b"{}"))
    assert (result.outcome, result.reason, result.retryable) == (
        PostOutcome.ERROR,
        "EndpointConnectionError",
        True,
    )
