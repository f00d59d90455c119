"""Who is connecting: verifying the JWT a client presents on ``$connect``.

Browsers cannot set headers on a WebSocket, so the token travels in the ``token`` query
parameter. The user id comes from one of its claims, never from the client. The JWS
layer (structure, header, algorithm allow-list) is PyJWT's; signatures are checked with
small pure-Python libraries (``rsa``, ``ecdsa``), so the Lambda zip carries no compiled
cryptography. Keys come from exactly one source: an HMAC secret (SSM Parameter Store or
Secrets Manager, read once per container) or a JWKS URL (fetched with a timeout, cached,
fetched again once when a token names an unknown ``kid``).

``ecdsa`` is imported only where an ES algorithm is configured: it is the costliest import
of ``$connect``'s token libraries, and most stages verify RS256.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import math
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from functools import cache
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol
from urllib.parse import urlsplit

import jwt
import rsa
from jwt.algorithms import Algorithm, HMACAlgorithm

from wspush.auth import secrets
from wspush.errors import AuthUnavailable, Unauthenticated
from wspush.observability import logger
from wspush.settings import HMAC_ALGORITHMS, AuthSettings

CHANNELS_CLAIM = "channels"
MAX_GRANTS = 128
MAX_GRANT_LENGTH = 161  # namespace:name at its longest

if TYPE_CHECKING:
    import ecdsa

MIN_SECRET_BYTES = 32
MIN_RSA_BITS = 2048
MAX_JWKS_BYTES = 512 * 1024
JWKS_MAX_AGE_SECONDS = 3_600
JWKS_MIN_REFETCH_SECONDS = 10


class _VerifyOnly(Algorithm):
    """An algorithm wspush uses only to verify: it never signs or handles JWK documents."""

    def sign(self, msg: bytes, key: Any) -> bytes:
        raise NotImplementedError("wspush only verifies tokens")

    @staticmethod
    def to_jwk(key_obj: Any, as_dict: bool = False) -> Any:
        raise NotImplementedError

    @staticmethod
    def from_jwk(jwk: Any) -> Any:
        raise NotImplementedError


class _RsaPkcs1(_VerifyOnly):
    """RSASSA-PKCS1-v1_5 (RS256/384/512) verification with the pure-Python ``rsa`` package."""

    def __init__(self, hash_name: str) -> None:
        self.hash_name = hash_name

    def prepare_key(self, key: Any) -> rsa.PublicKey:
        if not isinstance(key, rsa.PublicKey):
            raise jwt.InvalidKeyError("an RSA public key is required")
        return key

    def verify(self, msg: bytes, key: Any, sig: bytes) -> bool:
        try:
            return bool(rsa.verify(msg, sig, key) == self.hash_name)
        except (rsa.VerificationError, ValueError, OverflowError):
            return False


def _ecdsa() -> Any:
    """The ``ecdsa`` package, imported on first use (see the module's docstring)."""
    import ecdsa

    return ecdsa


# JWK curve name: (the algorithm it serves, the ``ecdsa`` curve's name).
_EC_CURVES = {"P-256": ("ES256", "NIST256p"), "P-384": ("ES384", "NIST384p")}


class _Ecdsa(_VerifyOnly):
    """ECDSA (ES256/384) verification with the pure-Python ``ecdsa`` package."""

    def __init__(self, jwk_curve: str, hashfunc: Callable[..., Any]) -> None:
        self._ecdsa = _ecdsa()
        self.curve = getattr(self._ecdsa, _EC_CURVES[jwk_curve][1])
        self.hashfunc = hashfunc

    def prepare_key(self, key: Any) -> ecdsa.VerifyingKey:
        if not isinstance(key, self._ecdsa.VerifyingKey) or key.curve != self.curve:
            raise jwt.InvalidKeyError(f"an EC public key on {self.curve.name} is required")
        return key

    def verify(self, msg: bytes, key: Any, sig: bytes) -> bool:
        if len(sig) != 2 * self.curve.baselen:
            return False
        try:  # ``ecdsa`` reads a signature as r || s (JWS's form) unless told otherwise
            return bool(key.verify(sig, msg, hashfunc=self.hashfunc))
        except (self._ecdsa.BadSignatureError, ValueError):
            return False


_ALGORITHMS: dict[str, Callable[[], Algorithm]] = {
    "HS256": lambda: HMACAlgorithm(HMACAlgorithm.SHA256),
    "HS384": lambda: HMACAlgorithm(HMACAlgorithm.SHA384),
    "HS512": lambda: HMACAlgorithm(HMACAlgorithm.SHA512),
    "RS256": lambda: _RsaPkcs1("SHA-256"),
    "RS384": lambda: _RsaPkcs1("SHA-384"),
    "RS512": lambda: _RsaPkcs1("SHA-512"),
    "ES256": lambda: _Ecdsa("P-256", hashlib.sha256),
    "ES384": lambda: _Ecdsa("P-384", hashlib.sha384),
}


class KeySource(Protocol):
    def key_for(self, alg: str, kid: str | None) -> Any:
        """The key that must have signed a token with this ``alg`` and ``kid``."""


class SecretKey:
    """An HMAC secret, loaded on first use and kept for the container's life."""

    def __init__(self, load: Callable[[], str]) -> None:
        self._load = load
        self._secret: bytes | None = None
        self._lock = threading.Lock()

    def key_for(self, alg: str, kid: str | None) -> bytes:
        with self._lock:
            if self._secret is None:
                try:
                    value = self._load().encode()  # UTF-8
                except secrets.SecretUnavailable as exc:
                    raise AuthUnavailable("the token secret could not be read") from exc
                if len(value) < MIN_SECRET_BYTES:
                    raise AuthUnavailable(
                        f"the token secret is shorter than {MIN_SECRET_BYTES} bytes"
                    )
                self._secret = value
            return self._secret


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to the same scheme, host and port: a JWKS document fetched from
    anywhere else (or over http after https) could hand an attacker the keys tokens are
    checked with."""

    max_redirections = 3

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        if _origin(newurl) != _origin(req.full_url):
            raise urllib.error.URLError("redirect to another origin refused")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _origin(url: str) -> tuple[str, str | None, int | None]:
    """Scheme, host and port (``urlsplit`` gives scheme and host in lower case)."""
    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port


_opener = urllib.request.build_opener(_SameOriginRedirects)


def _http_get(url: str, timeout: float) -> bytes:
    """The document at ``url``, read within ``timeout`` in all (not per socket read: a server
    that drips bytes slowly must not hold the handshake). Redirects stay on ``url``'s origin."""
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
    chunks: list[bytes] = []
    size = 0
    with _opener.open(request, timeout=timeout) as response:
        while chunk := response.read1(16_384):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_JWKS_BYTES:
                raise ValueError("JWKS document too large")
            if time.monotonic() > deadline:
                raise TimeoutError("JWKS fetch took too long")
    return b"".join(chunks)


class Jwks:
    """Public keys from a JWKS URL (Cognito, Auth0, Keycloak...), cached per container."""

    def __init__(
        self,
        url: str,
        *,
        timeout_seconds: float,
        fetch: Callable[[str, float], bytes] = _http_get,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        _require_safe_url(url)
        self._url = url
        self._timeout = timeout_seconds
        self._fetch = fetch
        self._clock = clock
        self._keys: list[Mapping[str, Any]] | None = None
        self._fetched_at = -math.inf
        self._last_attempt = -math.inf
        self._lock = threading.Lock()

    def key_for(self, alg: str, kid: str | None) -> Any:
        with self._lock:
            stale = self._clock() - self._fetched_at > JWKS_MAX_AGE_SECONDS
            if self._keys is None or stale:
                if self._may_fetch():
                    self._refresh(keep_on_failure=self._keys is not None)
                elif self._keys is None:
                    raise AuthUnavailable("the token issuer's keys are unavailable; retrying soon")
            jwk = self._pick(kid)
            if jwk is None and self._may_fetch():
                # A key rotated in since the last fetch: fetch once more.
                self._refresh(keep_on_failure=True)
                jwk = self._pick(kid)
        if jwk is None:
            raise Unauthenticated("the token names a key the issuer does not publish")
        return _public_key(jwk, alg)

    def _may_fetch(self) -> bool:
        """At most one fetch per interval, failed or not: no storm against a struggling issuer."""
        return self._clock() - self._last_attempt >= JWKS_MIN_REFETCH_SECONDS

    def _pick(self, kid: str | None) -> Mapping[str, Any] | None:
        keys = [k for k in self._keys or [] if k.get("use", "sig") == "sig"]
        if kid is None:
            return keys[0] if len(keys) == 1 else None
        return next((k for k in keys if k.get("kid") == kid), None)

    def _refresh(self, *, keep_on_failure: bool) -> None:
        self._last_attempt = self._clock()
        try:
            keys = _parse_jwks(self._fetch(self._url, self._timeout))
        except (OSError, urllib.error.URLError, ValueError, KeyError, TypeError) as exc:
            # An HTTP error's, a refused redirect's or a socket error's reason, or what was
            # wrong with the document (never its content).
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            logger.warning("could not fetch the JWKS", error=type(exc).__name__, reason=str(reason))
            if keep_on_failure:
                return
            raise AuthUnavailable("the token issuer's keys could not be fetched") from exc
        self._keys = keys
        self._fetched_at = self._clock()


def _parse_jwks(body: bytes) -> list[Mapping[str, Any]]:
    keys = json.loads(body)["keys"]
    if not isinstance(keys, list) or not all(isinstance(k, dict) for k in keys):
        raise TypeError("keys is not a list of objects")
    return keys


def _require_safe_url(url: str) -> None:
    parts = urlsplit(url)
    host = parts.hostname or ""
    loopback = host == "localhost" or (_is_ip(host) and ipaddress.ip_address(host).is_loopback)
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise ValueError("WSPUSH_JWKS_URL must be an https URL")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _b64int(value: Any) -> int:
    if not isinstance(value, str):
        raise TypeError("JWK member is not a string")
    # base64url without padding: two "=" are all any length needs, and the decoder stops at
    # the first one it does not need. (Big-endian is ``from_bytes``' default.)
    return int.from_bytes(base64.urlsafe_b64decode(value + "=="))


def _public_key(jwk: Mapping[str, Any], alg: str) -> Any:
    """The verification key of a JWK, only if it may verify ``alg`` (no key confusion)."""
    if jwk.get("alg") not in (None, alg):
        raise Unauthenticated("the token's algorithm does not match its key")
    try:
        if alg.startswith("RS") and jwk.get("kty") == "RSA":
            return _rsa_key(jwk)
        if alg.startswith("ES") and jwk.get("kty") == "EC":
            return _ec_key(jwk, alg)
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise Unauthenticated("the token's key is not usable") from exc
    raise Unauthenticated("the token's algorithm does not match its key")


def _rsa_key(jwk: Mapping[str, Any]) -> rsa.PublicKey:
    key = rsa.PublicKey(_b64int(jwk["n"]), _b64int(jwk["e"]))
    if key.n.bit_length() < MIN_RSA_BITS:
        raise ValueError("RSA key too short")
    return key


def _ec_key(jwk: Mapping[str, Any], alg: str) -> ecdsa.VerifyingKey:
    curve_alg, curve_name = _EC_CURVES[jwk["crv"]]
    if curve_alg != alg:
        raise ValueError("the key's curve does not match the algorithm")
    ec = _ecdsa()
    curve = getattr(ec, curve_name)
    size = curve.baselen
    point = _b64int(jwk["x"]).to_bytes(size) + _b64int(jwk["y"]).to_bytes(size)  # big-endian
    try:
        return ec.VerifyingKey.from_string(point, curve=curve)
    except ec.MalformedPointError as exc:
        raise ValueError("the key is not a point of its curve") from exc


class JwtVerifier:
    """Checks a token's signature and claims; answers the user id it vouches for."""

    def __init__(
        self, settings: AuthSettings, keys: KeySource, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._settings = settings
        self._keys = keys
        self._clock = clock
        self._jws = jwt.PyJWS(algorithms=[])  # nothing but the configured algorithms
        for name in sorted(settings.algorithms):
            self._jws.register_algorithm(name, _ALGORITHMS[name]())

    def user_id(self, token: str | None) -> str:
        return self.identity(token).user_id

    def identity(self, token: str | None) -> Identity:
        """Who the token vouches for, and the channels its ``channels`` claim grants."""
        if not token:
            raise Unauthenticated("a token query parameter is required")
        if len(token) > self._settings.max_token_length:
            raise Unauthenticated("the token is too large")
        try:
            header = self._jws.get_unverified_header(token)
            alg = header.get("alg")
            kid = header.get("kid")
            if not isinstance(alg, str) or alg not in self._settings.algorithms:
                raise Unauthenticated("the token's algorithm is not allowed")
            key = self._keys.key_for(alg, kid)  # (PyJWT refuses a kid that is not a string)
            decoded = self._jws.decode_complete(
                token, key=key, algorithms=sorted(self._settings.algorithms)
            )
            claims = json.loads(decoded["payload"])
        except jwt.InvalidSignatureError as exc:
            raise Unauthenticated("the token's signature does not verify") from exc
        except (jwt.InvalidTokenError, jwt.InvalidKeyError, ValueError) as exc:
            raise Unauthenticated("the token is malformed") from exc
        return self._check_claims(claims)

    def _check_claims(self, claims: Any) -> Identity:
        if not isinstance(claims, dict):
            raise Unauthenticated("the token's claims are not an object")
        now = self._clock()
        leeway = self._settings.leeway_seconds
        expires = _time_claim(claims, "exp")
        if expires is None:
            raise Unauthenticated("the token has no exp claim")
        if now > expires + leeway:
            raise Unauthenticated("the token has expired")
        not_before = _time_claim(claims, "nbf")
        if not_before is not None and now < not_before - leeway:
            raise Unauthenticated("the token is not valid yet")
        if claims.get("iss") != self._settings.issuer:
            raise Unauthenticated("the token has the wrong issuer")
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if self._settings.audience not in audiences:
            raise Unauthenticated("the token is not meant for this audience")
        user_id = claims.get(self._settings.user_claim)
        if not isinstance(user_id, str) or not user_id:
            raise Unauthenticated(f"the token has no {self._settings.user_claim} claim")
        return Identity(user_id, _grants(claims.get(CHANNELS_CLAIM)))


class Identity(NamedTuple):
    user_id: str
    grants: tuple[str, ...] = ()  # channel names and ns:* patterns


def _grants(claim: Any) -> tuple[str, ...]:
    """The ``channels`` claim: a list of channel names or ``ns:*`` patterns (absent: none)."""
    if claim is None:
        return ()
    if (
        not isinstance(claim, list)
        or len(claim) > MAX_GRANTS
        or not all(isinstance(g, str) and 0 < len(g) <= MAX_GRANT_LENGTH for g in claim)
    ):
        raise Unauthenticated(
            f"the token's {CHANNELS_CLAIM} claim must be a list of at most {MAX_GRANTS} "
            "channel names or ns:* patterns"
        )
    return tuple(dict.fromkeys(claim))


def _time_claim(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    try:
        number = (
            float(value)
            if isinstance(value, int | float) and not isinstance(value, bool)
            else math.nan
        )
    except OverflowError:  # an integer too large for a float
        number = math.nan
    if not math.isfinite(number):
        raise Unauthenticated(f"the token's {name} claim is not a number")
    return number


@cache
def verifier_for(settings: AuthSettings, region: str) -> JwtVerifier:
    """One verifier per container: its secret or JWKS is fetched once and kept."""
    keys: KeySource
    if settings.jwks_url:
        keys = Jwks(settings.jwks_url, timeout_seconds=settings.jwks_timeout_ms / 1000)
    elif settings.secret_parameter:
        keys = SecretKey(lambda: secrets.parameter(settings.secret_parameter, region=region))
    else:
        keys = SecretKey(lambda: secrets.secret(settings.secret_arn, region=region))
    return JwtVerifier(settings, keys)


def mint(
    secret: str,
    user_id: str,
    *,
    issuer: str,
    audience: str,
    ttl_seconds: int = 900,
    algorithm: str = "HS256",
    now: float | None = None,
    channels: list[str] | None = None,
) -> str:
    """A short-lived HMAC token for ``user_id`` (the local stack and tests use it)."""
    if algorithm not in HMAC_ALGORITHMS:
        raise ValueError("only HMAC tokens can be minted from a shared secret")
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "sub": user_id,
        "iss": issuer,
        "aud": audience,
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl_seconds,
    }
    if channels:
        claims[CHANNELS_CLAIM] = channels
    return jwt.encode(claims, secret, algorithm=algorithm)
