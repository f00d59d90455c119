"""A local stand-in for the API Gateway Management API (``POST /@connections/{id}``).

moto accepts any connection id, never answers 410 and has no size limit, so tests
point the real boto3 client at this server instead. It answers the way API Gateway
does: 200 with an empty body, or an error status with ``x-amzn-ErrorType`` (or, like
serverless-offline, a bare status with no error type at all).

It can also misbehave the way a network does, so the client's real error path runs:
answer late (past the client's read timeout), or close the connection without answering.

Given a locally made certificate authority (``local.tls``), it serves HTTPS, as API
Gateway's endpoint does: a client must trust that authority (``AWS_CA_BUNDLE``) and pay
for a TLS handshake on each of its connections.
"""

from __future__ import annotations

import json
import socket
import ssl
import struct
import sys
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from local.tls import Authority
from tests.fakes import SHUTDOWN_POLL_SECONDS

MAX_FRAME_BYTES = 131_072

ERROR_TYPES = {
    403: "ForbiddenException",
    410: "GoneException",
    413: "PayloadTooLargeException",
    429: "LimitExceededException",
    500: "InternalServerErrorException",
    504: "GatewayTimeoutException",
}

# SO_LINGER on, 0 s: close() sends a TCP RST instead of a FIN.
_ABORT_ON_CLOSE = struct.pack("ii", 1, 0)


@dataclass(frozen=True)
class Reply:
    """How the fake answers one post. Only a 200 that is answered (not reset) delivers."""

    status: int
    error_type: str | None = None
    # Seconds to wait before answering: past the client's read timeout, the client gives up.
    delay: float = 0.0
    # Close the connection without any HTTP answer.
    reset: bool = False

    @classmethod
    def aws(cls, status: int) -> Reply:
        return cls(status, ERROR_TYPES.get(status))

    @classmethod
    def bare(cls, status: int) -> Reply:
        return cls(status, None)

    @classmethod
    def timeout(cls, seconds: float) -> Reply:
        """Hold the post for ``seconds`` (longer than the client waits); nothing is delivered."""
        return cls(504, ERROR_TYPES[504], delay=seconds)

    @classmethod
    def late(cls, seconds: float) -> Reply:
        """Deliver the frame, but answer 200 only after ``seconds``: the client may time out."""
        return cls(200, None, delay=seconds)

    @classmethod
    def connection_reset(cls) -> Reply:
        """Read the request, then reset the connection without answering; nothing is delivered."""
        return cls(0, None, reset=True)

    @property
    def delivers(self) -> bool:
        return self.status == 200 and not self.reset

    @property
    def label(self) -> str:
        """A short name for tables: the status, or what went wrong on the wire."""
        if self.reset:
            return "reset"
        if self.status == 504 and self.delay:
            return "timeout"
        if self.status == 200 and self.delay:
            return "late 200"
        return str(self.status)


@dataclass(frozen=True)
class Post:
    """One post the fake received, and how it answered."""

    connection_id: str
    message_id: str | None
    reply: Reply
    at: float  # time.monotonic() when it arrived


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a connection kept alive holds its thread until the client closes
    # A cold pool opens dozens of connections at once, more than the default backlog of 5,
    # and the overflow would time out connecting.
    request_queue_size = 256
    tls: ssl.SSLContext | None = None

    def get_request(self) -> tuple[Any, Any]:
        request, address = super().get_request()
        if self.tls is not None:
            # The handshake runs on the request's own thread, at its first read.
            request = self.tls.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
        return request, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up, or did not trust the certificate: nothing to report."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


# (connection id, message id, earlier posts of that message to that connection) -> reply
Plan = Callable[[str, str | None, int], Reply]


class FakeManagementApi:
    """Records what each connection received; answers from scripts, storms, or a plan.

    Precedence for each post: a gone connection (410), that connection's script, a
    storm (the next N posts to anyone), the plan, then 200. A 410 from the plan makes
    that connection gone for good, as a closed socket stays closed.
    """

    def __init__(self, tls: Authority | None = None) -> None:
        self._lock = threading.Lock()
        self._scripts: dict[str, deque[Reply]] = defaultdict(deque)
        self._gone: set[str] = set()
        self._delay = 0.0
        self._storm: deque[Reply] = deque()
        self._plan: Plan | None = None
        self._tries: dict[tuple[str, str | None], int] = defaultdict(int)
        self.received: dict[str, list[bytes]] = defaultdict(list)
        self.calls: dict[str, int] = defaultdict(int)
        self.posts: list[Post] = []
        self._server = _Server(("127.0.0.1", 0), self._handler_class())
        self._server.tls = tls.server_context() if tls else None
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(SHUTDOWN_POLL_SECONDS,), daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        scheme = "https" if self._server.tls else "http"
        return f"{scheme}://{host}:{port}/test"

    def start(self) -> FakeManagementApi:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> None:
        with self._lock:
            self._scripts.clear()
            self._gone.clear()
            self._delay = 0.0
            self._storm.clear()
            self._plan = None
            self._tries.clear()
            self.received.clear()
            self.calls.clear()
            self.posts = []

    def script(self, connection_id: str, *replies: Reply) -> None:
        """Answer the next posts to ``connection_id`` with ``replies``, then 200."""
        with self._lock:
            self._scripts[connection_id].extend(replies)

    def connecting(self, connection_id: str, *, posts: int) -> None:
        """The connection's ``$connect`` has not returned yet: like API Gateway, answer its
        next ``posts`` posts 410 GoneException, then deliver (the socket is open by then)."""
        self.script(connection_id, *[Reply.aws(410)] * posts)

    def gone(self, *connection_ids: str) -> None:
        """These connections answer 410 GoneException to every post."""
        with self._lock:
            self._gone.update(connection_ids)

    def slow(self, seconds: float) -> None:
        """Every post takes this long to answer, like a congested gateway."""
        self._delay = seconds

    def storm(self, reply: Reply, *, posts: int) -> None:
        """The next ``posts`` posts, to any connection, get ``reply`` (e.g. a 429 storm)."""
        with self._lock:
            self._storm.extend([reply] * posts)

    def plan(self, plan: Plan | None) -> None:
        """Answer every post not otherwise scripted with ``plan(connection, message, tries)``."""
        with self._lock:
            self._plan = plan
            self._tries.clear()

    def is_gone(self, connection_id: str) -> bool:
        with self._lock:
            return connection_id in self._gone

    def frames_of(self, connection_id: str, message_id: str) -> int:
        """How many frames carrying ``message_id`` this connection received."""
        with self._lock:
            bodies = list(self.received.get(connection_id, []))
        return sum(1 for body in bodies if _message_id(body) == message_id)

    def _answer(self, connection_id: str, body: bytes) -> Reply:
        if self._delay:
            time.sleep(self._delay)
        message_id = _message_id(body)
        with self._lock:
            self.calls[connection_id] += 1
            reply = self._choose(connection_id, message_id)
            if reply.delivers and len(body) > MAX_FRAME_BYTES:
                reply = Reply.aws(413)
            if reply.status == 200:  # a late 200 was delivered too: only its answer is slow
                self.received[connection_id].append(body)
            self.posts.append(Post(connection_id, message_id, reply, time.monotonic()))
            return reply

    def _choose(self, connection_id: str, message_id: str | None) -> Reply:
        if connection_id in self._gone:
            return Reply.aws(410)
        script = self._scripts.get(connection_id)
        if script:
            return script.popleft()
        if self._storm:
            return self._storm.popleft()
        if self._plan is None:
            return Reply(200)
        key = (connection_id, message_id)
        reply = self._plan(connection_id, message_id, self._tries[key])
        self._tries[key] += 1
        if reply.status == 410:
            self._gone.add(connection_id)
        return reply

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            # Connections are kept alive between posts, as API Gateway keeps them: the
            # gateway's pool reuses them (HTTP/1.0 would close each after one answer).
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                marker = "/@connections/"
                if marker not in self.path:
                    self._respond(Reply(404, "NotFoundException"))
                    return
                connection_id = unquote(self.path.split(marker, 1)[1])
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                self._respond(fake._answer(connection_id, body))

            def _respond(self, reply: Reply) -> None:
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.reset:
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _ABORT_ON_CLOSE)
                    self.close_connection = True
                    return
                payload = b"" if reply.status == 200 else b'{"message":null}'
                try:
                    self.send_response(reply.status)
                    if reply.error_type:
                        self.send_header("x-amzn-ErrorType", reply.error_type)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    # The client gave up waiting (a timeout): nobody is listening any more.
                    self.close_connection = True

            def log_message(self, format: str, *args: object) -> None:
                return

        return Handler


def _message_id(body: bytes) -> str | None:
    """The ``id`` of a frame wspush posted, if the body is one."""
    try:
        frame = json.loads(body)
    except ValueError:
        return None
    value = frame.get("id") if isinstance(frame, dict) else None
    return value if isinstance(value, str) else None
