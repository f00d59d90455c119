"""Serves the browser client and its demo page: ``client/`` is the web root."""

from __future__ import annotations

import json
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

CLIENT_DIR = Path(__file__).resolve().parents[1] / "client"


class _DemoHandler(SimpleHTTPRequestHandler):
    config: ClassVar[dict[str, Any]] = {}

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        if path in ("/", "/index.html"):
            self.send_response(302)
            self.send_header("Location", "/demo/" + (f"?{query}" if query else ""))
            self.end_headers()
            return
        if path == "/config.json":
            body = json.dumps(self.config).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


class DemoServer:
    """The demo page and client module on ``host:port``, with ``/config.json`` for the page."""

    def __init__(self, host: str, port: int, config: dict[str, Any]) -> None:
        handler = type("DemoHandler", (_DemoHandler,), {"config": config})
        serve_client = partial(handler, directory=str(CLIENT_DIR))
        self._server = ThreadingHTTPServer((host, port), serve_client)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="demo", daemon=True)

    def start(self) -> DemoServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
