"""A local stand-in for the API Gateway Management API (``POST /@connections/{id}``).

moto accepts any connection id, never answers 410 and has no size limit, so tests
point the real boto3 client at this server instead. It answers the way API Gateway
does: 200 with an empty body, or an error status with ``x-amzn-ErrorType`` (or, like
serverless-offline, a bare status with no error type at all).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

MAX_FRAME_BYTES = 131_072

ERROR_TYPES = {
    403: "ForbiddenException",
    410: "GoneException",
    413: "PayloadTooLargeException",
    429: "LimitExceededException",
    500: "InternalServerErrorException",
}


@dataclass(frozen=True)
class Reply:
    status: int
    error_type: str | None = None

    @classmethod
    def aws(cls, status: int) -> Reply:
        return cls(status, ERROR_TYPES.get(status))

    @classmethod
    def bare(cls, status: int) -> Reply:
        return cls(status, None)


class FakeManagementApi:
    """Records what each connection received; answers from per-connection scripts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scripts: dict[str, deque[Reply]] = defaultdict(deque)
        self._gone: set[str] = set()
        self._delay = 0.0
        self.received: dict[str, list[bytes]] = defaultdict(list)
        self.calls: dict[str, int] = defaultdict(int)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/test"

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
            self.received.clear()
            self.calls.clear()

    def script(self, connection_id: str, *replies: Reply) -> None:
        """Answer the next posts to ``connection_id`` with ``replies``, then 200."""
        with self._lock:
            self._scripts[connection_id].extend(replies)

    def gone(self, *connection_ids: str) -> None:
        """These connections answer 410 GoneException to every post."""
        with self._lock:
            self._gone.update(connection_ids)

    def slow(self, seconds: float) -> None:
        """Every post takes this long to answer, like a congested gateway."""
        self._delay = seconds

    def _answer(self, connection_id: str, body: bytes) -> Reply:
        if self._delay:
            time.sleep(self._delay)
        with self._lock:
            self.calls[connection_id] += 1
            if connection_id in self._gone:
                return Reply.aws(410)
            script = self._scripts.get(connection_id)
            reply = script.popleft() if script else Reply(200)
            if reply.status == 200 and len(body) > MAX_FRAME_BYTES:
                reply = Reply.aws(413)
            if reply.status == 200:
                self.received[connection_id].append(body)
            return reply

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
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
                payload = b"" if reply.status == 200 else b'{"message":null}'
                self.send_response(reply.status)
                if reply.error_type:
                    self.send_header("x-amzn-ErrorType", reply.error_type)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:
                return

        return Handler
