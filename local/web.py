"""Serves the browser client and its demo page: ``client/`` is the web root.

``/config.json`` tells the page where the WebSocket gateway is, the auth mode, and the
``export`` line a terminal needs when ports were moved; with ``make dev AUTH=jwt``
it also names ``/token``, which mints a short-lived token for a user id (the page's token
provider asks it before every connect, as an app would ask its own backend).

An app of one's own on this machine (a Vite dev server, the React app the end-to-end tests
build) runs on another origin: ``/token`` answers pages from ``http://127.0.0.1:<port>`` and
``http://localhost:<port>`` with CORS headers, and refuses a page from anywhere else, so a
web site open in the same browser cannot log in as anyone on the developer's stack.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs

CLIENT_DIR = Path(__file__).resolve().parents[1] / "client"
# Pages allowed to call /token from another origin: plain http on this machine, any port.
LOOPBACK_ORIGIN = re.compile(r"http://(127\.0\.0\.1|localhost)(:[0-9]{1,5})?")


def allowed_origin(origin: str | None) -> bool:
    """No Origin (curl, a same-origin GET), or a page served from this machine over http."""
    return origin is None or LOOPBACK_ORIGIN.fullmatch(origin) is not None


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
            origin = self.headers.get("Origin")
            if not allowed_origin(origin):
                self._json(403, {"error": "only pages on 127.0.0.1 or localhost may ask"})
                return
            user_id = parse_qs(query).get("userId", [""])[0]
            if user_id:
                self._json(200, {"token": server.mint_token(user_id)}, origin)
            else:
                self._json(400, {"error": "userId is required"}, origin)
        else:
            super().do_GET()

    def do_OPTIONS(self) -> None:
        """The preflight a page sends before a /token request with headers of its own."""
        server = cast(_DemoHTTPServer, self.server)
        origin = self.headers.get("Origin")
        if self.path.partition("?")[0] != "/token" or server.mint_token is None:
            self.send_error(404)
        elif origin is None or not allowed_origin(origin):
            self._json(403, {"error": "only pages on 127.0.0.1 or localhost may ask"})
        else:
            self.send_response(204)
            self._allow(origin)
            self.send_header("Access-Control-Allow-Methods", "GET")
            requested = self.headers.get("Access-Control-Request-Headers")
            if requested:
                self.send_header("Access-Control-Allow-Headers", requested)
            self.send_header("Access-Control-Max-Age", "600")
            self.send_header("Content-Length", "0")
            self.end_headers()

    def _allow(self, origin: str) -> None:
        self.send_header("Access-Control-Allow-Origin", origin)
        self.send_header("Vary", "Origin")

    def _json(self, status: int, value: Any, origin: str | None = None) -> None:
        """``origin``: the (allowed) page that asked from another origin, which may read it."""
        body = json.dumps(value).encode()
        self.send_response(status)
        if origin is not None:
            self._allow(origin)
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
