"""A stub API Gateway Management API for benchmarks: ``POST /@connections/{id}`` answers 200.

It runs in its own process on loopback, on asyncio with HTTP/1.1 keep-alive, so it is never
what limits a benchmark: an answer waits its latency on a timer, not in a thread, and the
stub reports the CPU time it used. Like API Gateway it answers 410 GoneException (a gone
connection stays gone) and 429 LimitExceededException, for given connection ids or at a rate.

Control routes (not part of the Management API), answered at once in JSON:
``GET /_stub/stats`` (counters since the last reset), ``POST /_stub/reset``, and
``POST /_stub/config`` with ``latency_ms``, ``gone_ids``, ``gone_rate`` (a fixed fraction of
all connection ids, see ``selected``), ``throttle_ids`` ({id: 429s before it gets a 200}),
``throttle_rate`` (each post, at random) and ``seed``; a config also resets the counters.

With ``--tls-dir`` (a directory ``local.tls.make_authority`` wrote), it also serves the same
routes over HTTPS on a second port, as API Gateway's endpoint is served, presenting the server
certificate and its intermediate: clients must trust the directory's ``ca.pem``.

    python -m bench.stub_gateway --latency-ms 20    # prints "listening http://127.0.0.1:PORT"
    python -m bench.stub_gateway --tls-dir DIR      # "listening http://... https://..."
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from local.tls import Authority, make_authority

CONNECTIONS_PATH = "/@connections/"
CONTROL_PATH = "/_stub/"
DEFAULT_LATENCY_MS = 20.0
MAX_HEAD_BYTES = 65_536
START_TIMEOUT_SECONDS = 10

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 410: "Gone", 429: "Too Many Requests"}
_ERROR_TYPES = {
    400: "BadRequestException",
    404: "NotFoundException",
    410: "GoneException",
    429: "LimitExceededException",
}
_SELECTION_SCALE = 1_000_000


def selected(connection_id: str, rate: float) -> bool:
    """Whether ``connection_id`` is in the fraction ``rate`` of all ids. Fixed per id, so a
    benchmark knows in advance which connections the stub treats as gone."""
    return zlib.crc32(connection_id.encode()) % _SELECTION_SCALE < rate * _SELECTION_SCALE


@dataclass(frozen=True)
class Faults:
    gone_ids: frozenset[str] = frozenset()
    gone_rate: float = 0.0
    throttle_ids: Mapping[str, int] = field(default_factory=dict)
    throttle_rate: float = 0.0
    seed: int = 0

    def is_gone(self, connection_id: str) -> bool:
        return connection_id in self.gone_ids or (
            self.gone_rate > 0 and selected(connection_id, self.gone_rate)
        )


@dataclass
class Stats:
    """What the stub saw since its last reset, including its own CPU time."""

    wall_start: float = field(default_factory=time.perf_counter)
    cpu_start: float = field(default_factory=time.process_time)
    posts: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    delivered: set[str] = field(default_factory=set)
    duplicates: int = 0
    bytes_received: int = 0
    connections_opened: int = 0
    max_in_flight: int = 0

    def as_dict(self, latency_ms: float, in_flight: int) -> dict[str, Any]:
        return {
            "latency_ms": latency_ms,
            "posts": self.posts,
            "statuses": {str(status): count for status, count in sorted(self.statuses.items())},
            "distinct_delivered": len(self.delivered),
            "duplicate_deliveries": self.duplicates,
            "bytes_received": self.bytes_received,
            "connections_opened": self.connections_opened,
            "in_flight": in_flight,
            "max_in_flight": self.max_in_flight,
            "wall_s": time.perf_counter() - self.wall_start,
            "cpu_s": time.process_time() - self.cpu_start,
        }


class Stub:
    """Decides each post's answer and keeps the counters."""

    def __init__(self, latency_ms: float, faults: Faults) -> None:
        self.latency_ms = latency_ms
        self.faults = faults
        self.stats = Stats()
        self.in_flight = 0
        self._throttled: Counter[str] = Counter()
        self._rng = random.Random(faults.seed)  # noqa: S311 - fault injection, not security

    @property
    def latency_s(self) -> float:
        return self.latency_ms / 1000

    def reset(self) -> None:
        self.stats = Stats(max_in_flight=self.in_flight)
        self._throttled.clear()
        self._rng = random.Random(self.faults.seed)  # noqa: S311 - fault injection, not security

    def answer(self, connection_id: str, body_bytes: int) -> int:
        stats = self.stats
        stats.posts += 1
        stats.bytes_received += body_bytes
        faults = self.faults
        if faults.is_gone(connection_id):
            status = 410
        elif self._throttled[connection_id] < faults.throttle_ids.get(connection_id, 0):
            self._throttled[connection_id] += 1
            status = 429
        elif faults.throttle_rate > 0 and self._rng.random() < faults.throttle_rate:
            status = 429
        else:
            status = 200
            if connection_id in stats.delivered:
                stats.duplicates += 1
            else:
                stats.delivered.add(connection_id)
        stats.statuses[status] += 1
        return status

    def control(self, method: str, name: str, body: bytes) -> tuple[int, dict[str, Any]]:
        if method == "GET" and name == "stats":
            return 200, self.stats.as_dict(self.latency_ms, self.in_flight)
        if method == "POST" and name == "reset":
            seen = self.stats.as_dict(self.latency_ms, self.in_flight)
            self.reset()
            return 200, seen
        if method == "POST" and name == "config":
            try:
                self._configure(json.loads(body or b"{}"))
            except (ValueError, TypeError, AttributeError) as exc:
                return 400, {"message": f"bad config: {exc}"}
            return 200, self.stats.as_dict(self.latency_ms, self.in_flight)
        return 404, {"message": f"no control route {method} {name}"}

    def _configure(self, config: dict[str, Any]) -> None:
        self.latency_ms = float(config.get("latency_ms", self.latency_ms))
        self.faults = Faults(
            gone_ids=frozenset(map(str, config.get("gone_ids", ()))),
            gone_rate=float(config.get("gone_rate", 0.0)),
            throttle_ids={str(k): int(v) for k, v in config.get("throttle_ids", {}).items()},
            throttle_rate=float(config.get("throttle_rate", 0.0)),
            seed=int(config.get("seed", 0)),
        )
        self.reset()


def _response(status: int, body: bytes, *, keep_alive: bool) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    ]
    if status in _ERROR_TYPES:
        lines.append(f"x-amzn-ErrorType: {_ERROR_TYPES[status]}")
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# API Gateway answers a post with an empty 200, or an error type and a JSON message.
_POST_ANSWERS = {
    (status, keep_alive): _response(
        status, b"" if status == 200 else b'{"message":null}', keep_alive=keep_alive
    )
    for status in (200, 410, 429)
    for keep_alive in (True, False)
}


class _Http(asyncio.Protocol):
    """Minimal HTTP/1.1 server side: Content-Length bodies, keep-alive, one request at a time."""

    def __init__(self, stub: Stub, loop: asyncio.AbstractEventLoop) -> None:
        self._stub = stub
        self._loop = loop
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._stub.stats.connections_opened += 1

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while self._next_request():
            pass

    def _next_request(self) -> bool:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_HEAD_BYTES:
                self._close()
            return False
        lines = self._buffer[:end].decode("latin-1").split("\r\n")
        request_line = lines[0].split(" ")
        try:
            method, target, version = request_line
        except ValueError:
            self._close()
            return False
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            self._close()
            return False
        start = end + 4
        if len(self._buffer) < start + length:
            return False
        body = bytes(self._buffer[start : start + length])
        del self._buffer[: start + length]
        keep_alive = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        self._handle(method, unquote(target.split("?", 1)[0]), body, keep_alive)
        return True

    def _handle(self, method: str, path: str, body: bytes, keep_alive: bool) -> None:
        stub = self._stub
        if path.startswith(CONTROL_PATH):
            status, payload = stub.control(method, path[len(CONTROL_PATH) :], body)
            answer = _response(status, json.dumps(payload).encode(), keep_alive=keep_alive)
            self._write(answer, keep_alive)
            return
        marker = path.find(CONNECTIONS_PATH)
        if method != "POST" or marker < 0:
            self._write(
                _response(404, b'{"message":"Not Found"}', keep_alive=keep_alive), keep_alive
            )
            return
        connection_id = path[marker + len(CONNECTIONS_PATH) :]
        status = stub.answer(connection_id, len(body))
        stub.in_flight += 1
        stub.stats.max_in_flight = max(stub.stats.max_in_flight, stub.in_flight)
        self._loop.call_later(stub.latency_s, self._answer_post, status, keep_alive)

    def _answer_post(self, status: int, keep_alive: bool) -> None:
        self._stub.in_flight -= 1
        self._write(_POST_ANSWERS[status, keep_alive], keep_alive)

    def _write(self, response: bytes, keep_alive: bool) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        transport.write(response)
        if not keep_alive:
            transport.close()

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def serve(
    host: str,
    port: int,
    stub: Stub,
    announce: Callable[[str], None],
    tls: ssl.SSLContext | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT; ``announce`` gets the base URLs once it listens (the
    https one too, on any free port, when given a TLS context)."""
    loop = asyncio.get_running_loop()
    servers = [await loop.create_server(lambda: _Http(stub, loop), host, port, backlog=4096)]
    if tls is not None:
        servers.append(
            await loop.create_server(lambda: _Http(stub, loop), host, 0, backlog=4096, ssl=tls)
        )
    urls = [
        f"{scheme}://{host}:{server.sockets[0].getsockname()[1]}"
        for scheme, server in zip(("http", "https"), servers, strict=False)
    ]
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    announce(" ".join(urls))
    await stop.wait()
    for server in servers:
        server.close()


class StubClient:
    """The control routes, for the process that runs a benchmark (always over plain HTTP);
    ``tls_url`` is where the stub answers posts over HTTPS, if it does."""

    def __init__(self, base_url: str, tls_url: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.tls_url = tls_url

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "stats")

    def reset(self) -> dict[str, Any]:
        """Zero the counters; answers the counters as they were."""
        return self._call("POST", "reset")

    def configure(self, **config: Any) -> dict[str, Any]:
        return self._call("POST", "config", config)

    def _call(self, method: str, name: str, body: Any = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - loopback http
            f"{self.base_url}{CONTROL_PATH}{name}", data=data, method=method
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            answer: dict[str, Any] = json.loads(response.read())
            return answer


@contextmanager
def running_stub(
    latency_ms: float = DEFAULT_LATENCY_MS,
    *,
    preexec_fn: Callable[[], None] | None = None,
    tls: Authority | None = None,
) -> Iterator[StubClient]:
    """Start the stub in a child process; stop that process (and only it) on the way out.
    Given an authority, the stub serves HTTPS too, with its certificate."""
    tls_args = ("--tls-dir", str(tls.ca_bundle.parent)) if tls else ()
    process = subprocess.Popen(  # noqa: S603 - this interpreter, this module
        [sys.executable, "-m", "bench.stub_gateway", "--latency-ms", str(latency_ms), *tls_args],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=preexec_fn,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if not line.startswith("listening "):
            raise RuntimeError(f"the stub gateway did not start: {line!r}")
        urls = line.removeprefix("listening ").split()
        yield StubClient(urls[0], urls[1] if len(urls) > 1 else None)
    finally:
        process.terminate()
        try:
            process.wait(timeout=START_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stub_gateway", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--latency-ms", type=float, default=DEFAULT_LATENCY_MS)
    parser.add_argument("--gone", action="append", default=[], metavar="ID")
    parser.add_argument("--gone-rate", type=float, default=0.0)
    parser.add_argument(
        "--throttle", action="append", default=[], metavar="ID[:COUNT]", help="429 COUNT times"
    )
    parser.add_argument("--throttle-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--tls-dir",
        type=Path,
        help="also serve HTTPS with the certificates local.tls wrote here (made if missing)",
    )
    args = parser.parse_args(argv)
    throttle_ids = {}
    for spec in args.throttle:
        connection_id, _, count = spec.rpartition(":") if ":" in spec else (spec, "", "1")
        throttle_ids[connection_id] = int(count)
    faults = Faults(
        gone_ids=frozenset(args.gone),
        gone_rate=args.gone_rate,
        throttle_ids=throttle_ids,
        throttle_rate=args.throttle_rate,
        seed=args.seed,
    )
    stub = Stub(args.latency_ms, faults)
    tls = None
    if args.tls_dir is not None:
        authority = Authority.found_in(args.tls_dir) or make_authority(args.tls_dir)
        tls = authority.server_context()
    asyncio.run(
        serve(args.host, args.port, stub, lambda urls: print(f"listening {urls}", flush=True), tls)
    )


if __name__ == "__main__":
    main()
