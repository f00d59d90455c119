"""The API Gateway Management API: the only module that posts to connections.

Each post ends in one ``PostOutcome``. Status codes decide, not error codes: a
dead connection is HTTP 410 whether the error says ``GoneException`` (AWS) or just
``410`` (serverless-offline).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Coroutine
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

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

    @property
    def retryable(self) -> bool:
        return self.outcome in _RETRYABLE

    @property
    def reason(self) -> str:
        """A short, log-safe description: status and error code, never the payload."""
        parts = [str(self.status)] if self.status is not None else []
        if self.code and self.code != str(self.status):
            parts.append(self.code)
        if self.outcome is PostOutcome.CONNECTING:
            parts.append("(still connecting)")
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


# One post answers in milliseconds; these bound how long a stuck one can hold a worker.
CONNECT_TIMEOUT_SECONDS = 1
READ_TIMEOUT_SECONDS = 3


class Gateway:
    """Posts to connections over a pool of keep-alive connections, on one event loop.

    boto3's client spends ~0.45 ms of CPU per post (request building, event hooks, urllib3);
    a fan-out is nothing but posts, so here each one is a single HTTP/1.1 request signed
    with botocore's own SigV4 signer, many in flight at once on asyncio.
    """

    def __init__(self, endpoint_url: str, *, region: str, max_connections: int) -> None:
        parts = urlsplit(endpoint_url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._https else 80)
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._netloc = parts.netloc
        self._base_path = parts.path.rstrip("/")
        self._region = region
        self._max_idle = max_connections
        self._connect_timeout = CONNECT_TIMEOUT_SECONDS
        self._read_timeout = READ_TIMEOUT_SECONDS
        self._credentials = boto3.session.Session().get_credentials()
        self._ssl = ssl.create_default_context() if self._https else None
        self._loop = asyncio.new_event_loop()
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work`` on this gateway's loop, where its connections live between calls."""

        async def on_a_fresh_pool() -> T:
            # Let closes that arrived since the last call (idle timeouts, a frozen Lambda)
            # reach the pooled connections first, so none is reused dead.
            await asyncio.sleep(0)
            return await work

        return self._loop.run_until_complete(on_a_fresh_pool())

    def close(self) -> None:
        """Close the pooled connections and the loop (a container keeps its gateway for life)."""
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()
        self._loop.run_until_complete(asyncio.sleep(0))
        self._loop.close()

    async def post(self, connection_id: str, data: bytes) -> PostResult:
        path = f"{self._base_path}/@connections/{quote(connection_id, safe='-._~')}"
        request = self._request(path, data)
        try:
            reader, writer = await self._connection()
        except TimeoutError:
            return PostResult(PostOutcome.ERROR, None, "ConnectTimeoutError")
        except OSError:
            return PostResult(PostOutcome.ERROR, None, "EndpointConnectionError")
        try:
            writer.write(request)
            status, headers, keep_alive = await asyncio.wait_for(
                _read_response(reader), self._read_timeout
            )
        except TimeoutError:
            writer.close()
            return PostResult(PostOutcome.ERROR, None, "ReadTimeoutError")
        except (OSError, EOFError, ValueError, asyncio.IncompleteReadError):
            writer.close()
            return PostResult(PostOutcome.ERROR, None, "ConnectionClosedError")
        except asyncio.CancelledError:
            writer.close()  # abandoned mid-answer: never reused
            raise
        if keep_alive and len(self._idle) < self._max_idle:
            self._idle.append((reader, writer))
        else:
            writer.close()
        if 200 <= status < 300:
            return PostResult(PostOutcome.DELIVERED, status)
        code = headers.get("x-amzn-errortype", "").split(":", 1)[0] or None
        return PostResult(classify(status, code), status, code)

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        while self._idle:
            reader, writer = self._idle.pop()
            if not writer.is_closing() and not reader.at_eof():
                return reader, writer
            writer.close()
        return await asyncio.wait_for(
            asyncio.open_connection(
                self._host,
                self._port,
                ssl=self._ssl,
                server_hostname=self._host if self._ssl else None,
            ),
            self._connect_timeout,
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
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        return (
            f"POST {path} HTTP/1.1\r\n{head}Content-Length: {len(data)}\r\n\r\n".encode("latin-1")
            + data
        )


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bool]:
    """Status, headers (lower-case names) and whether the connection can be reused."""
    status_line = await reader.readline()
    if not status_line:
        raise EOFError("connection closed before a response")
    version, status_text = status_line.split(b" ", 2)[:2]
    status = int(status_text)
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b"\n"):
        if not line:
            raise EOFError("connection closed in the headers")
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    keep_alive = version == b"HTTP/1.1" and headers.get("connection", "").lower() != "close"
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while size := int((await reader.readline()).split(b";")[0], 16):
            await reader.readexactly(size + 2)
        await reader.readline()
    elif status >= 200 and status not in (204, 304):
        await reader.read()  # the body runs to the end of the connection
        keep_alive = False
    return status, headers, keep_alive
