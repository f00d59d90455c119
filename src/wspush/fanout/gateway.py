"""The API Gateway Management API: the only module that posts to connections.

Each post ends in one ``PostOutcome``. Status codes decide, not error codes: a
dead connection is HTTP 410 whether the error says ``GoneException`` (AWS) or just
``410`` (serverless-offline).
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import SplitResult, quote, unquote, urlsplit

# The NO_PROXY check botocore makes (through urllib's proxy_bypass) on Linux; not in typeshed.
from urllib.request import proxy_bypass_environment  # type: ignore[attr-defined]

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

from wspush.settings import Settings, SettingsError

T = TypeVar("T")


class PostOutcome(StrEnum):
    DELIVERED = "delivered"
    GONE = "gone"
    THROTTLED = "throttled"
    TOO_LARGE = "too_large"
    FORBIDDEN = "forbidden"
    REJECTED = "rejected"  # any other 4xx: the request itself is wrong, retrying cannot help
    ERROR = "error"
    # A 410 for a connection whose $connect may not have returned yet (API Gateway answers
    # 410 until it has). Only the caller, who knows when the connection opened, can say so.
    CONNECTING = "connecting"


_RETRYABLE = frozenset((PostOutcome.THROTTLED, PostOutcome.ERROR, PostOutcome.CONNECTING))
_REQUEST_TIMEOUT = 408
_BY_STATUS = {
    410: PostOutcome.GONE,
    429: PostOutcome.THROTTLED,
    413: PostOutcome.TOO_LARGE,
    403: PostOutcome.FORBIDDEN,
}
_BY_CODE = {
    "GoneException": PostOutcome.GONE,
    "LimitExceededException": PostOutcome.THROTTLED,
    "TooManyRequestsException": PostOutcome.THROTTLED,
    "ThrottlingException": PostOutcome.THROTTLED,
    "PayloadTooLargeException": PostOutcome.TOO_LARGE,
    "ForbiddenException": PostOutcome.FORBIDDEN,
    "AccessDeniedException": PostOutcome.FORBIDDEN,
}


@dataclass(frozen=True)
class PostResult:
    outcome: PostOutcome
    status: int | None = None
    code: str | None = None
    detail: str | None = None  # what the code alone does not say (why a proxy refused)

    @property
    def retryable(self) -> bool:
        return self.outcome in _RETRYABLE

    @property
    def reason(self) -> str:
        """A short, log-safe description: status, error code and detail, never the payload."""
        parts = [str(self.status)] if self.status is not None else []
        if self.code and self.code != str(self.status):
            parts.append(self.code)
        if self.outcome is PostOutcome.CONNECTING:
            parts.append("(still connecting)")
        if self.detail:
            parts.append(f"({self.detail})")
        return " ".join(parts) or self.outcome.value


def classify(status: int | None, code: str | None) -> PostOutcome:
    """Map a failed post's HTTP status (first) or error code to its outcome."""
    if status is not None and status in _BY_STATUS:
        return _BY_STATUS[status]
    if code is not None and code in _BY_CODE:
        return _BY_CODE[code]
    if status is not None and 400 <= status < 500 and status != _REQUEST_TIMEOUT:
        return PostOutcome.REJECTED
    return PostOutcome.ERROR


# One post answers in milliseconds; these bound how long a stuck one can hold a worker. The
# connect timeout runs from the moment a connection's own handshake starts (TCP, proxy tunnel
# and TLS). A post that finds every handshake slot taken waits for a connection while the pool
# keeps moving, and gives up after a whole connect timeout in which it did not.
CONNECT_TIMEOUT_SECONDS = 1
READ_TIMEOUT_SECONDS = 3
# TLS handshakes in progress at once. A cold container that starts 128 at once shares its
# CPU between all of them (at 256 MB, 0.145 vCPU, ~1.6 ms of CPU each): none finishes within
# the connect timeout. A few at a time finish quickly, and the pool grows as they do.
MAX_HANDSHAKES = 8
MAX_HEAD_BYTES = 65_536


@dataclass(frozen=True)
class Network:
    """How posts reach the endpoint: what boto3 would honour from the environment."""

    ca_bundle: str = ""
    https_proxy: str = ""
    http_proxy: str = ""
    no_proxy: str = ""
    max_handshakes: int = MAX_HANDSHAKES

    @classmethod
    def from_settings(cls, settings: Settings) -> Network:
        return cls(
            ca_bundle=settings.ca_bundle,
            https_proxy=settings.https_proxy,
            http_proxy=settings.http_proxy,
            no_proxy=settings.no_proxy,
            max_handshakes=settings.max_handshakes,
        )


@dataclass(frozen=True)
class Proxy:
    """An HTTP proxy: an https endpoint is reached through a ``CONNECT`` tunnel, an http one
    with absolute-form requests."""

    host: str
    port: int
    authorization: str | None  # the Proxy-Authorization value, when the URL has credentials

    @classmethod
    def parse(cls, url: str, variable: str) -> Proxy:
        """Read a proxy URL as botocore does (no scheme means http://). Only http:// proxies
        are supported: TLS to the proxy itself is refused here rather than failing later."""
        scheme, separator, _ = url.partition("://")
        if separator and scheme.lower() != "http":
            raise SettingsError(
                f"{variable}: only http:// proxies are supported (TLS to the endpoint still"
                f" runs end to end through a CONNECT tunnel), not {scheme}://"
            )
        if not separator:
            url = "//" + url.removeprefix("//")
        parts = urlsplit(url)
        try:
            port = parts.port or 80
        except ValueError as exc:
            raise SettingsError(f"{variable}: the proxy's port is not a number") from exc
        if not parts.hostname:
            raise SettingsError(f"{variable}: the proxy URL names no host")
        authorization = None
        if parts.username and parts.password:
            pair = f"{unquote(parts.username)}:{unquote(parts.password)}".encode()
            authorization = "Basic " + base64.b64encode(pair).decode()
        return cls(parts.hostname, port, authorization)


def proxy_for(endpoint: SplitResult, network: Network) -> Proxy | None:
    """The proxy a post to ``endpoint`` goes through, by botocore's rules: the proxy of the
    endpoint's scheme, unless ``NO_PROXY`` names its host (urllib's matching: ``*``, a host
    or ``host:port``, or a domain suffix, leading dot or not)."""
    if endpoint.scheme == "https":
        url, variable = network.https_proxy, "HTTPS_PROXY"
    else:
        url, variable = network.http_proxy, "HTTP_PROXY"
    if not url or proxy_bypass_environment(endpoint.netloc, {"no": network.no_proxy}):
        return None
    return Proxy.parse(url, variable)


def tls_context(ca_bundle: str) -> ssl.SSLContext:
    """Verify the endpoint as boto3 does: the system's trust store, or only the CA bundle
    (a file, or a directory of hashed certificates) when one is configured."""
    if not ca_bundle:
        return ssl.create_default_context()
    try:
        if Path(ca_bundle).is_dir():
            return ssl.create_default_context(capath=ca_bundle)
        return ssl.create_default_context(cafile=ca_bundle)
    except (OSError, ValueError) as exc:
        raise SettingsError(f"AWS_CA_BUNDLE: cannot load {ca_bundle!r}: {exc}") from exc


class ProxyRefused(OSError):
    """The proxy did not open a tunnel to the endpoint."""


class PoolTimeout(Exception):
    """A post waited a whole connect timeout while no connection was given back or opened."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    keep_alive: bool


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request at a time.

    Bytes that arrive when no request is waiting for them (a server that wrote more than
    its answer, or answered before closing) would be read as the next post's answer: such
    a connection is never used again.
    """

    def __init__(self) -> None:
        self.transport: asyncio.BaseTransport | None = None
        self._buffer = bytearray()
        self._answer: asyncio.Future[Response] | None = None
        self._head_only: bool  # set with each request
        self._usable = True

    @property
    def reusable(self) -> bool:
        transport = self.transport
        return self._usable and transport is not None and not transport.is_closing()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def exchange(
        self, request: bytes, timeout: float | None, *, head_only: bool = False
    ) -> Response:
        """Send ``request`` and read its answer (``head_only``: the answer has no body, as
        a proxy's answer to ``CONNECT``)."""
        transport = self.transport
        if not isinstance(transport, asyncio.WriteTransport) or not self.reusable:
            raise ConnectionResetError("the connection is closed")
        answer = asyncio.get_running_loop().create_future()
        self._answer, self._head_only = answer, head_only
        transport.write(request)
        try:
            return await asyncio.wait_for(answer, timeout)
        finally:
            self._answer = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        answer = self._answer
        if answer is None or answer.done():
            self.close()  # stale: nobody asked for these bytes
            return
        self._buffer += data
        self._parse(answer)

    def eof_received(self) -> bool | None:
        self._usable = False
        if self._answer is not None and not self._answer.done():
            self._parse(self._answer, eof=True)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._usable = False
        if self._answer is not None and not self._answer.done():
            self._parse(self._answer, eof=True)

    def _parse(self, answer: asyncio.Future[Response], *, eof: bool = False) -> None:
        try:
            parsed = parse_response(self._buffer, eof=eof, head_only=self._head_only)
        except ValueError as exc:
            self.close()
            answer.set_exception(exc)
            return
        if parsed is None:
            if eof:
                answer.set_exception(EOFError("the connection closed before a whole answer"))
            return
        response, end = parsed
        if end < len(self._buffer):
            self.close()  # more bytes than the answer: they must not answer the next post
        del self._buffer[:end]
        if not response.keep_alive and not self._head_only:
            self.close()
        answer.set_result(response)


def parse_response(
    buffer: bytearray, *, eof: bool, head_only: bool = False
) -> tuple[Response, int] | None:
    """A whole HTTP/1.1 answer at the start of ``buffer`` and where it ends, or None while
    it is incomplete. Raises ValueError for anything that is not HTTP."""
    head_end = buffer.find(b"\r\n\r\n")
    if head_end < 0:
        if len(buffer) > MAX_HEAD_BYTES:
            raise ValueError("answer head too long")
        return None
    status_line, *lines = bytes(buffer[:head_end]).decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    code = rest.partition(" ")[0]
    if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise ValueError("not an HTTP/1.x answer")
    status = int(code)
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon:
            raise ValueError("malformed header line")
        headers[name.strip().lower()] = value.strip()
    keep_alive = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
    start = head_end + 4
    if head_only or status in (204, 304) or 100 <= status < 200:
        end: int | None = start
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        end = _chunked_end(buffer, start)
    elif "content-length" in headers:
        length = int(headers["content-length"])
        end = start + length if len(buffer) >= start + length else None
    elif eof:
        end, keep_alive = len(buffer), False  # the body runs to the end of the connection
    else:
        end = None
    return None if end is None else (Response(status, headers, keep_alive), end)


def _chunked_end(buffer: bytearray, position: int) -> int | None:
    """Where a chunked body starting at ``position`` ends, or None while it is incomplete
    (``find`` from past the end of the buffer finds nothing)."""
    while True:
        line_end = buffer.find(b"\r\n", position)
        if line_end == -1:
            return None
        size = int(bytes(buffer[position:line_end]).split(b";")[0], 16)
        position = line_end + 2
        if size == 0:
            break
        position += size + 2
    while True:  # trailer lines, then an empty line
        line_end = buffer.find(b"\r\n", position)
        if line_end == -1:
            return None
        empty = line_end == position
        position = line_end + 2
        if empty:
            return position


class Gateway:
    """Posts to connections over a pool of keep-alive connections, on one event loop.

    boto3's client spends ~0.45 ms of CPU per post (request building, event hooks, urllib3);
    a fan-out is nothing but posts, so here each one is a single HTTP/1.1 request signed
    with botocore's own SigV4 signer, many in flight at once on asyncio.

    The pool opens at most ``max_handshakes`` connections at once, each with its own connect
    timeout from the moment its handshake starts. A post that needs a connection takes an
    idle one, or starts a handshake, or waits for the next connection a post gives back (or
    the next free handshake slot): a cold pool grows as fast as handshakes complete, and a
    warm one keeps every post in flight on its own connection. On a starved CPU (a cold
    container at 256 MB) a post may wait longer than the connect timeout, as long as
    connections keep coming back: waiting is not a sign of a dead endpoint, a pool where
    nothing moves for a whole connect timeout is.
    """

    def __init__(
        self,
        endpoint_url: str,
        *,
        region: str,
        max_connections: int,
        network: Network | None = None,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
    ) -> None:
        network = network or Network()
        parts = urlsplit(endpoint_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SettingsError(
                f"the Management API endpoint must be an http(s) URL, not {endpoint_url!r}"
            )
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._netloc = parts.netloc
        self._base_path = parts.path.rstrip("/")
        self._region = region
        self._max_idle = max_connections
        self._max_handshakes = network.max_handshakes
        self._connect_timeout = connect_timeout or CONNECT_TIMEOUT_SECONDS
        self._read_timeout = read_timeout or READ_TIMEOUT_SECONDS
        self._proxy = proxy_for(parts, network)
        self._ssl = tls_context(network.ca_bundle) if self._https else None
        self._credentials = boto3.session.Session().get_credentials()
        self._loop = asyncio.new_event_loop()
        self._idle: list[Connection] = []
        self._waiting: deque[asyncio.Future[Connection | None]] = deque()
        self._handshakes = 0
        self._progress_at = self._loop.time()  # when a connection was last given back or opened
        # For measurements and tests: connections opened, the most handshakes in progress at
        # once, the longest a successful one took from its start, and the longest a post
        # waited for its turn.
        self.opened = 0
        self.peak_handshakes = 0
        self.slowest_handshake = 0.0
        self.longest_wait = 0.0

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work`` on this gateway's loop, where its connections live between calls."""

        async def on_a_fresh_pool() -> T:
            # Let closes (idle timeouts, a frozen Lambda) and stray bytes that arrived since
            # the last call reach the pooled connections first, so none is reused spoilt.
            await asyncio.sleep(0)
            return await work

        return self._loop.run_until_complete(on_a_fresh_pool())

    def close(self) -> None:
        """Close the pooled connections and the loop (a container keeps its gateway for life)."""
        for connection in self._idle:
            connection.close()
        self._idle.clear()
        self._loop.run_until_complete(asyncio.sleep(0))
        self._loop.close()

    async def post(self, connection_id: str, data: bytes) -> PostResult:
        path = f"{self._base_path}/@connections/{quote(connection_id, safe='')}"
        request = self._request(path, data)
        try:
            connection = await self._connection()
        except PoolTimeout:
            return PostResult(PostOutcome.ERROR, None, "PoolTimeoutError")
        except TimeoutError:
            return PostResult(PostOutcome.ERROR, None, "ConnectTimeoutError")
        except ssl.SSLError:
            return PostResult(PostOutcome.ERROR, None, "SSLError")
        except ProxyRefused as exc:
            return PostResult(PostOutcome.ERROR, None, "ProxyConnectionError", str(exc))
        except OSError:
            return PostResult(PostOutcome.ERROR, None, "EndpointConnectionError")
        try:
            response = await connection.exchange(request, self._read_timeout)
        except TimeoutError:
            connection.close()
            return PostResult(PostOutcome.ERROR, None, "ReadTimeoutError")
        except (OSError, EOFError, ValueError):
            connection.close()
            return PostResult(PostOutcome.ERROR, None, "ConnectionClosedError")
        except asyncio.CancelledError:
            connection.close()  # abandoned mid-answer: never reused
            raise
        self._give_back(connection)
        if 200 <= response.status < 300:
            return PostResult(PostOutcome.DELIVERED, response.status)
        code = response.headers.get("x-amzn-errortype", "").partition(":")[0] or None
        return PostResult(classify(response.status, code), response.status, code)

    async def _connection(self) -> Connection:
        while True:
            while self._idle:
                connection = self._idle.pop()
                if connection.reusable:
                    return connection
                connection.close()
            if self._handshakes < self._max_handshakes:
                return await self._open()
            handed = await self._wait_for_turn()
            if handed is not None:
                return handed

    async def _wait_for_turn(self) -> Connection | None:
        """Wait for a connection given back by a post, or (None) a free handshake slot, for as
        long as the pool keeps moving: a whole connect timeout without a connection given back
        or opened (every handshake failing, every answer late) ends the wait."""
        turn: asyncio.Future[Connection | None] = self._loop.create_future()
        self._waiting.append(turn)
        started = self._loop.time()
        expiry: asyncio.Handle  # the next check of this wait

        def check() -> None:
            nonlocal expiry
            if turn.done():
                return
            deadline = max(started, self._progress_at) + self._connect_timeout
            if self._loop.time() >= deadline:
                turn.set_exception(PoolTimeout())
            else:
                expiry = self._loop.call_at(deadline, check)

        expiry = self._loop.call_soon(check)
        try:
            return await turn
        except asyncio.CancelledError:
            # Abandoned (the caller's deadline): a connection handed over just before goes to
            # the next post in line, and the slot this post was woken for to the next waiter.
            if turn.done() and not turn.cancelled() and turn.exception() is None:
                handed = turn.result()
                if handed is not None:
                    self._give_back(handed)
                else:
                    self._wake_one()
            raise
        finally:
            expiry.cancel()
            self.longest_wait = max(self.longest_wait, self._loop.time() - started)

    def _give_back(self, connection: Connection) -> None:
        """After an answer (the endpoint is moving): to the longest waiting post, else idle."""
        self._progress_at = self._loop.time()
        if not connection.reusable:
            connection.close()
            return
        while self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():
                turn.set_result(connection)
                return
        if len(self._idle) < self._max_idle:
            self._idle.append(connection)
        else:
            connection.close()

    async def _open(self) -> Connection:
        self._handshakes += 1
        self.peak_handshakes = max(self.peak_handshakes, self._handshakes)
        started = self._loop.time()
        try:
            connection = await asyncio.wait_for(self._handshake(), self._connect_timeout)
        finally:
            self._handshakes -= 1
            self._wake_one()  # a slot is free: the longest waiting post may take it
        self.opened += 1
        self._progress_at = self._loop.time()
        self.slowest_handshake = max(self.slowest_handshake, self._progress_at - started)
        return connection

    def _wake_one(self) -> None:
        while self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():
                turn.set_result(None)
                return

    async def _handshake(self) -> Connection:
        """TCP, then (through a proxy) a CONNECT tunnel, then TLS."""
        loop = self._loop
        proxy = self._proxy
        if proxy is None:
            _, connection = await loop.create_connection(
                Connection, self._host, self._port, ssl=self._ssl
            )
            return connection
        _, connection = await loop.create_connection(Connection, proxy.host, proxy.port)
        if self._ssl is None:
            return connection  # requests go to the proxy in absolute form
        try:
            await self._tunnel(connection, proxy, self._ssl)
        except BaseException:
            connection.close()
            raise
        return connection

    async def _tunnel(self, connection: Connection, proxy: Proxy, context: ssl.SSLContext) -> None:
        """Ask the proxy for a tunnel to the endpoint, then run TLS with the endpoint in it."""
        host, port = self._host, self._port
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
        if proxy.authorization:
            lines.append(f"Proxy-Authorization: {proxy.authorization}")
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            response = await connection.exchange(request, None, head_only=True)
        except (EOFError, ValueError) as exc:
            raise ProxyRefused(f"the proxy did not answer CONNECT: {exc}") from exc
        if not 200 <= response.status < 300:
            raise ProxyRefused(f"the proxy answered CONNECT with {response.status}")
        transport = connection.transport
        if not connection.reusable or not isinstance(transport, asyncio.Transport):
            raise ProxyRefused("the proxy closed the tunnel, or sent more than its answer")
        connection.transport = await self._loop.start_tls(
            transport, connection, context, server_hostname=host
        )

    def _request(self, path: str, data: bytes) -> bytes:
        """The request's bytes, signed like boto3 signs it (SigV4, service execute-api)."""
        headers = {"Host": self._netloc, "Content-Type": "application/json"}
        if self._credentials is not None:
            signed = AWSRequest(method="POST", url=self._origin + path, data=data, headers=headers)
            SigV4Auth(
                self._credentials.get_frozen_credentials(), "execute-api", self._region
            ).add_auth(signed)
            headers = dict(signed.headers.items())
        target = path
        if self._proxy is not None and self._ssl is None:
            target = self._origin + path  # absolute form, for the proxy to forward
            if self._proxy.authorization:
                headers["Proxy-Authorization"] = self._proxy.authorization
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        return (
            f"POST {target} HTTP/1.1\r\n{head}Content-Length: {len(data)}\r\n\r\n".encode("latin-1")
            + data
        )


@cache
def gateway_for(
    endpoint: str, region: str, max_connections: int, network: Network | None = None
) -> Gateway:
    """One Management API client per container (and per endpoint)."""
    return Gateway(endpoint, region=region, max_connections=max_connections, network=network)


def settings_gateway(settings: Settings) -> Gateway:
    """The container's gateway for these settings' endpoint and network."""
    return gateway_for(
        settings.management_endpoint,
        settings.region,
        settings.delivery_concurrency,
        Network.from_settings(settings),
    )
