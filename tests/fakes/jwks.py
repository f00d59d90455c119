"""Signing keys for test tokens, and a local JWKS endpoint that can be slow or down."""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.fakes import SHUTDOWN_POLL_SECONDS

ISSUER = "https://issuer.example.test/"
AUDIENCE = "wspush-test"


def _b64(number: int, size: int | None = None) -> str:
    raw = number.to_bytes(size or (number.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass
class SigningKey:
    """A private key of the token issuer, with its public JWK."""

    kid: str
    alg: str
    private: Any = field(repr=False)

    @classmethod
    def rsa(cls, kid: str, bits: int = 2048) -> SigningKey:
        return cls(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=bits))

    @classmethod
    def ec(cls, kid: str) -> SigningKey:
        return cls(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))

    def jwk(self) -> dict[str, str]:
        numbers = self.private.public_key().public_numbers()
        if self.alg.startswith("RS"):
            return {"kty": "RSA", "kid": self.kid, "alg": self.alg, "use": "sig",
                    "n": _b64(numbers.n), "e": _b64(numbers.e)}  # fmt: skip
        return {"kty": "EC", "kid": self.kid, "alg": self.alg, "use": "sig", "crv": "P-256",
                "x": _b64(numbers.x, 32), "y": _b64(numbers.y, 32)}  # fmt: skip

    def token(self, **overrides: Any) -> str:
        """A token for user u-1, valid now; ``overrides`` replace or (as None) drop claims."""
        return sign(self.private, self.alg, kid=self.kid, **overrides)


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": "u-1", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "nbf": now, "exp": now + 600,
    }  # fmt: skip
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(key: Any, alg: str, *, kid: str | None = None, **overrides: Any) -> str:
    headers = {"kid": kid} if kid else None
    return jwt.encode(claims(**overrides), key, algorithm=alg, headers=headers)


class JwksServer:
    """Serves ``{"keys": [...]}`` on loopback; can answer slowly, not at all, or redirect."""

    def __init__(self, *keys: SigningKey) -> None:
        self.keys = list(keys)
        self.redirect_to: str | None = None  # answer 302 to this URL instead
        self.delay = 0.0
        self.drip = 0.0  # seconds between 50-byte pieces of the answer
        self.down = False
        self.size: int | None = None  # pad the document with whitespace to this many bytes
        self.requests = 0
        self.accepted: list[str | None] = []  # each request's Accept header
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests += 1
                server.accepted.append(self.headers.get("Accept"))
                if server.redirect_to and self.path == urlsplit(server.url).path:
                    self.send_response(302)
                    self.send_header("Location", server.redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if server.delay:
                    time.sleep(server.delay)
                if server.down:
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = json.dumps({"keys": [k.jwk() for k in server.keys]}).encode()
                if server.size is not None:
                    body = body.ljust(server.size, b" ")
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not server.drip:
                    self.wfile.write(body)
                    return
                for start in range(0, len(body), 50):
                    self.wfile.write(body[start : start + 50])
                    self.wfile.flush()
                    time.sleep(server.drip)

            def log_message(self, format: str, *args: object) -> None:
                return

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        self._thread = threading.Thread(
            target=self._http.serve_forever, args=(SHUTDOWN_POLL_SECONDS,), daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}/.well-known/jwks.json"

    def start(self) -> JwksServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
