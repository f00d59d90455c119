"""A small HTTP proxy on loopback, as a Lambda in a VPC may have to go through.

It opens ``CONNECT`` tunnels (what a client does for an https endpoint: TLS then runs end to
end, the proxy sees only ciphertext) and forwards absolute-form requests (what a client does
for an http endpoint), and counts both. Given credentials, it answers 407 to a request
without the matching ``Proxy-Authorization``, as an authenticating proxy does.
"""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

DENIED = b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n"
ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"


@dataclass
class ProxyRequest:
    """What a client asked the proxy: its request line and headers (lower-case names)."""

    line: str
    headers: dict[str, str]


@dataclass
class FakeProxy:
    credentials: tuple[str, str] | None = None
    port: int = 0
    tunnels: int = 0  # CONNECT tunnels opened
    forwarded: int = 0  # absolute-form requests forwarded
    refused: int = 0  # requests answered 407
    requests: list[ProxyRequest] = field(default_factory=list)
    # Every byte the client sent through a tunnel: with TLS in it, nothing readable.
    tunnelled: bytearray = field(default_factory=bytearray)
    open_writers: list[asyncio.StreamWriter] = field(default_factory=list)

    @property
    def url(self) -> str:
        if self.credentials:
            user, password = (quote(part, safe="") for part in self.credentials)
            return f"http://{user}:{password}@127.0.0.1:{self.port}"
        return f"http://127.0.0.1:{self.port}"

    def _allowed(self, headers: dict[str, str]) -> bool:
        if self.credentials is None:
            return True
        pair = ":".join(self.credentials).encode()
        return headers.get("proxy-authorization") == "Basic " + base64.b64encode(pair).decode()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.open_writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line, headers = _head(head)
                self.requests.append(ProxyRequest(line, headers))
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if not self._allowed(headers):
                    self.refused += 1
                    writer.write(DENIED)
                    await writer.drain()
                    continue
                method, target, _ = line.split(" ")
                if method == "CONNECT":
                    await self._tunnel(target, reader, writer)
                    return
                target_parts = urlsplit(target)
                if upstream is None:
                    upstream = await asyncio.open_connection(
                        target_parts.hostname, target_parts.port or 80
                    )
                    self.open_writers.append(upstream[1])
                self.forwarded += 1
                await self._forward(head, body, target_parts.path, upstream, writer)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()
            if upstream is not None:
                upstream[1].close()

    async def _forward(
        self,
        head: bytes,
        body: bytes,
        path: str,
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        writer: asyncio.StreamWriter,
    ) -> None:
        """The request in origin form, without the proxy's own header; the answer back."""
        first, _, rest = head.partition(b"\r\n")
        method, _, version = first.split(b" ")
        kept = [h for h in rest.split(b"\r\n") if not h.lower().startswith(b"proxy-")]
        up_reader, up_writer = upstream
        up_writer.write(b" ".join((method, path.encode(), version)) + b"\r\n")
        up_writer.write(b"\r\n".join(kept) + body)
        await up_writer.drain()
        answer = await up_reader.readuntil(b"\r\n\r\n")
        _, answer_headers = _head(answer)
        length = int(answer_headers.get("content-length", "0"))
        writer.write(answer + await up_reader.readexactly(length))
        await writer.drain()

    async def _tunnel(
        self, target: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        host, _, port = target.rpartition(":")
        up_reader, up_writer = await asyncio.open_connection(host.strip("[]"), int(port))
        self.open_writers.append(up_writer)
        self.tunnels += 1
        writer.write(ESTABLISHED)
        await writer.drain()

        async def pipe(
            source: asyncio.StreamReader, sink: asyncio.StreamWriter, record: bool
        ) -> None:
            with suppress(ConnectionError):
                while data := await source.read(65_536):
                    if record:
                        self.tunnelled += data
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))


def _head(head: bytes) -> tuple[str, dict[str, str]]:
    line, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
    headers = {}
    for header in lines:
        name, _, value = header.partition(":")
        headers[name.strip().lower()] = value.strip()
    return line, headers


@contextmanager
def running_proxy(credentials: tuple[str, str] | None = None) -> Iterator[FakeProxy]:
    """The proxy on its own thread and event loop, for the length of the block."""
    proxy = FakeProxy(credentials)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop = asyncio.Event()

    async def serve() -> None:
        listener = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
        proxy.port = listener.sockets[0].getsockname()[1]
        started.set()
        async with listener:
            await stop.wait()
            for writer in proxy.open_writers:
                writer.transport.abort()

    thread = threading.Thread(target=lambda: loop.run_until_complete(serve()), daemon=True)
    thread.start()
    started.wait(5)
    try:
        yield proxy
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(5)
