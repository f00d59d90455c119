"""Serves the browser client and its demo page: ``client/`` is the web root.

``/config.json`` tells the page where the WebSocket gateway is, the auth mode, and the
``export`` line a terminal needs when ports were moved; with ``make dev AUTH=jwt``
it also names ``/token``, which mints a short-lived token for a user id (the page's token
provider asks it before every connect, as an app would ask its own backend).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs

CLIENT_DIR = Path(__file__).resolve().parents[1] / "client"


class _DemoHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    config: dict[str, Any]
    mint_token: Callable[[str], str] | None


class _DemoHandler(SimpleHTTPRequestHandler):
    def do_GET(self) -> None:
        server = cast(_DemoHTTPServer, self.server)
        path, _, query = self.path.partition("?")
        if path in ("/", "/index.html"):
            self.send_response(302)
            self.send_header("Location", "/demo/" + (f"?{query}" if query else ""))
            self.end_headers()
        elif path == "/config.json":
            self._json(200, server.config)
        elif path == "/token" and server.mint_token is not None:
            user_id = parse_qs(query).get("userId", [""])[0]
            if user_id:
                self._json(200, {"token": server.mint_token(user_id)})
            else:
                self._json(400, {"error": "userId is required"})
        else:
            super().do_GET()

    def _json(self, status: int, value: Any) -> None:
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


class DemoServer:
    """The demo page and client module on ``host:port``."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        websocket_url: str,
        mint_token: Callable[[str], str] | None = None,
        exports: str = "",
    ) -> None:
        self._server = _DemoHTTPServer(
            (host, port), partial(_DemoHandler, directory=str(CLIENT_DIR))
        )
        # What the page shows: the auth mode, and the line a terminal needs for moved ports.
        self._server.config = {
            "websocketUrl": websocket_url,
            "authMode": "jwt" if mint_token is not None else "none",
            "exports": exports,
        }
        if mint_token is not None:
            self._server.config["tokenUrl"] = "/token"
        self._server.mint_token = mint_token
        self._thread = threading.Thread(target=self._server.serve_forever, name="demo", daemon=True)

    def start(self) -> DemoServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
