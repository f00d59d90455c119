"""Token verification, with keys in memory: every way a token must be refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import subprocess
import sys
import time
import urllib.error
from email.message import Message
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from tests.conftest import logged
from tests.fakes.jwks import AUDIENCE, ISSUER, SigningKey, sign
from wspush.auth import secrets
from wspush.auth import tokens as auth
from wspush.auth.tokens import (
    JWKS_MAX_AGE_SECONDS,
    JWKS_MIN_REFETCH_SECONDS,
    Jwks,
    JwtVerifier,
    SecretKey,
    mint,
)
from wspush.errors import AuthUnavailable, Unauthenticated
from wspush.settings import AuthMode, AuthSettings, SettingsError

SECRET = "s" * 40
RSA_KEY = SigningKey.rsa("rsa-1")
EC_KEY = SigningKey.ec("ec-1")


def jwks_settings(**overrides: Any) -> AuthSettings:
    base = {
        "mode": AuthMode.JWT,
        "algorithms": frozenset({"RS256", "ES256"}),
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "jwks_url": "https://issuer.example.test/jwks.json",
    }
    return AuthSettings(**{**base, **overrides})


class FakeFetch:
    """Answers JWKS fetches from a list of keys; counts them; can fail."""

    def __init__(self, *keys: SigningKey) -> None:
        self.keys = list(keys)
        self.calls = 0
        self.error: Exception | None = None

    def __call__(self, url: str, timeout: float) -> bytes:
        self.calls += 1
        if self.error:
            raise self.error
        return json.dumps({"keys": [k.jwk() for k in self.keys]}).encode()


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def verifier(fetch: FakeFetch, clock: Clock | None = None, **settings: Any) -> JwtVerifier:
    keys = Jwks(settings.pop("jwks_url", "https://issuer.example.test/jwks.json"),
                timeout_seconds=1, fetch=fetch, clock=clock or Clock())  # fmt: skip
    return JwtVerifier(jwks_settings(**settings), keys)


def refused(check: JwtVerifier, token: str | None) -> str:
    with pytest.raises(Unauthenticated) as caught:
        check.user_id(token)
    return caught.value.reason


@pytest.mark.parametrize("key", [RSA_KEY, EC_KEY], ids=["RS256", "ES256"])
def test_a_valid_token_yields_its_subject(key: SigningKey) -> None:
    check = verifier(FakeFetch(RSA_KEY, EC_KEY))
    assert check.user_id(key.token(sub="alice")) == "alice"


def test_the_user_claim_is_configurable_and_audience_may_be_a_list() -> None:
    check = verifier(FakeFetch(RSA_KEY), user_claim="email")
    token = RSA_KEY.token(email="a@example.test", aud=["other", AUDIENCE])
    assert check.user_id(token) == "a@example.test"


@pytest.mark.parametrize(
    ("key", "impostor"),
    [(RSA_KEY, SigningKey.rsa("rsa-1")), (EC_KEY, SigningKey.ec("ec-1"))],
    ids=["RS256", "ES256"],
)
def test_a_forged_signature_is_refused(key: SigningKey, impostor: SigningKey) -> None:
    # Given a token signed by a key that claims the issuer's kid
    # Then it is refused: its signature (of the right length) does not verify
    check = verifier(FakeFetch(key))
    assert refused(check, impostor.token()) == "the token's signature does not verify"


@pytest.mark.parametrize("key", [RSA_KEY, EC_KEY], ids=["RS256", "ES256"])
def test_a_token_whose_claims_were_changed_after_signing_is_refused(key: SigningKey) -> None:
    # Given a token of the issuer's, its subject changed after it was signed
    header, _, signature = key.token(sub="alice").split(".")
    other = key.token(sub="mallory").split(".")[1]
    # Then it is refused
    check = verifier(FakeFetch(key))
    assert (
        refused(check, f"{header}.{other}.{signature}") == "the token's signature does not verify"
    )


def test_alg_none_is_refused() -> None:
    unsigned = jwt.encode({"sub": "u-1", "iss": ISSUER, "aud": AUDIENCE, "exp": time.time() + 60},
                          None, algorithm="none")  # fmt: skip
    assert refused(verifier(FakeFetch(RSA_KEY)), unsigned) == "the token's algorithm is not allowed"


def test_an_hs256_token_signed_with_the_rsa_public_key_is_refused() -> None:
    # Given the classic confusion attack: HMAC keyed with the issuer's public key (PEM)
    public_pem = RSA_KEY.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    forged = _hmac_token(public_pem, kid="rsa-1")
    # Then the algorithm is not even considered: only RS256/ES256 are configured
    assert refused(verifier(FakeFetch(RSA_KEY)), forged) == "the token's algorithm is not allowed"


def test_a_key_of_another_family_cannot_verify() -> None:
    # Given an ES256 token whose header names the RSA key
    token = sign(EC_KEY.private, "ES256", kid="rsa-1")
    assert "does not match" in refused(verifier(FakeFetch(RSA_KEY, EC_KEY)), token)


NOW = "now"  # stands for the time the test runs (parametrize runs at import)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"exp": (NOW, -120)}, "the token has expired"),
        ({"nbf": (NOW, +120)}, "the token is not valid yet"),
        ({"iss": "https://evil.example.test/"}, "the token has the wrong issuer"),
        ({"aud": "someone-else"}, "the token is not meant for this audience"),
        ({"sub": None}, "the token has no sub claim"),
        ({"sub": ""}, "the token has no sub claim"),
        ({"exp": None}, "the token has no exp claim"),
        ({"exp": "tomorrow"}, "the token's exp claim is not a number"),
    ],
)
def test_claims_are_checked(overrides: dict[str, Any], reason: str) -> None:
    now = int(time.time())
    claims = {
        name: now + value[1] if isinstance(value, tuple) and value[0] == NOW else value
        for name, value in overrides.items()
    }
    assert refused(verifier(FakeFetch(RSA_KEY)), RSA_KEY.token(**claims)) == reason


def test_a_small_clock_skew_is_allowed() -> None:
    check = verifier(FakeFetch(RSA_KEY))
    assert check.user_id(RSA_KEY.token(exp=int(time.time()) - 10, nbf=int(time.time()) + 10))


@pytest.mark.parametrize("token", [None, "", "a.b", "not-a-token", "e30.e30.e30"])
def test_a_missing_or_malformed_token_is_refused(token: str | None) -> None:
    refused(verifier(FakeFetch(RSA_KEY)), token)


def test_an_oversized_token_is_refused_before_any_parsing() -> None:
    fetch = FakeFetch(RSA_KEY)
    assert refused(verifier(fetch), "x" * 5_000) == "the token is too large"
    assert fetch.calls == 0


def test_an_unknown_kid_fetches_the_keys_once_more_and_finds_a_rotated_key() -> None:
    # Given keys fetched before the issuer rotated in a new key
    fetch, clock = FakeFetch(RSA_KEY), Clock()
    check = verifier(fetch, clock)
    check.user_id(RSA_KEY.token())
    rotated = SigningKey.rsa("rsa-2")
    fetch.keys.append(rotated)
    clock.now += JWKS_MIN_REFETCH_SECONDS
    # When a token signed with the new key arrives, then one more fetch finds it
    assert check.user_id(rotated.token(sub="bob")) == "bob"
    assert fetch.calls == 2


def test_unknown_kids_cannot_make_it_fetch_again_and_again() -> None:
    fetch, clock = FakeFetch(RSA_KEY), Clock()
    check = verifier(fetch, clock)
    check.user_id(RSA_KEY.token())
    stranger = SigningKey.rsa("nobody")
    for _ in range(5):
        refused(check, stranger.token())
    assert fetch.calls == 1


def test_an_unreachable_jwks_fails_closed() -> None:
    fetch = FakeFetch(RSA_KEY)
    fetch.error = TimeoutError("timed out")
    with pytest.raises(AuthUnavailable):
        verifier(fetch).user_id(RSA_KEY.token())


def test_an_http_jwks_url_is_refused_unless_on_loopback() -> None:
    with pytest.raises(ValueError, match="https"):
        Jwks("http://issuer.example.test/jwks.json", timeout_seconds=1)
    Jwks("http://127.0.0.1:9/jwks.json", timeout_seconds=1)


def _b64(raw: bytes) -> bytes:
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


def _hmac_token(secret: bytes | str, *, kid: str | None = None, **overrides: Any) -> str:
    """An HS256 token built by hand: PyJWT itself refuses to use a PEM key as an HMAC secret."""
    header = {"alg": "HS256", "typ": "JWT", **({"kid": kid} if kid else {})}
    now = int(time.time())
    payload = {"sub": "u-1", "iss": ISSUER, "aud": AUDIENCE, "exp": now + 600, **overrides}
    signing_input = _b64(json.dumps(header).encode()) + b"." + _b64(json.dumps(payload).encode())
    key = secret if isinstance(secret, bytes) else secret.encode()
    signature = hmac.new(key, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + _b64(signature)).decode()


def hmac_verifier(secret: str = SECRET) -> JwtVerifier:
    settings = AuthSettings(mode=AuthMode.JWT, algorithms=frozenset({"HS256"}), issuer=ISSUER,
                            audience=AUDIENCE, secret_parameter="/p")  # fmt: skip
    return JwtVerifier(settings, SecretKey(lambda: secret))


def test_an_hmac_token_verifies_with_the_shared_secret() -> None:
    assert hmac_verifier().user_id(_hmac_token(SECRET, sub="carol")) == "carol"
    assert "signature" in refused(hmac_verifier(), _hmac_token("t" * 40))


def test_a_short_secret_is_not_used() -> None:
    with pytest.raises(AuthUnavailable, match="shorter"):
        hmac_verifier("short").user_id(_hmac_token("short"))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WSPUSH_AUTH_MODE": "none", "WSPUSH_STAGE": "prod"}, "allowed only on stages"),
        ({}, "exactly one key source"),
        ({"WSPUSH_JWKS_URL": "https://x/j", "WSPUSH_JWT_SECRET_PARAMETER": "/p"}, "exactly one"),
        ({"WSPUSH_JWKS_URL": "https://x/j"}, "WSPUSH_JWT_ISSUER"),
        ({"WSPUSH_JWKS_URL": "https://x/j", "WSPUSH_JWT_ISSUER": "i", "WSPUSH_JWT_AUDIENCE": "a",
          "WSPUSH_JWT_ALGORITHMS": "HS256"}, "subset"),
        ({"WSPUSH_JWT_SECRET_PARAMETER": "/p", "WSPUSH_JWT_ISSUER": "i",
          "WSPUSH_JWT_AUDIENCE": "a", "WSPUSH_JWT_ALGORITHMS": "RS256"}, "subset"),
        ({"WSPUSH_JWT_SECRET_PARAMETER": "/p", "WSPUSH_JWT_ISSUER": "i",
          "WSPUSH_JWT_AUDIENCE": "a", "WSPUSH_JWT_ALGORITHMS": "none"}, "subset"),
        ({"WSPUSH_AUTH_MODE": "maybe"}, "must be 'jwt' or 'none'"),
    ],
)  # fmt: skip
def test_settings_refuse_every_unsafe_combination(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        AuthSettings.from_env(env)


def test_jwt_is_the_default_mode() -> None:
    settings = AuthSettings.from_env({"WSPUSH_JWKS_URL": "https://x/j", "WSPUSH_JWT_ISSUER": "i",
                                      "WSPUSH_JWT_AUDIENCE": "a"})  # fmt: skip
    assert (settings.mode, settings.algorithms) == (AuthMode.JWT, frozenset({"RS256"}))


def test_an_alg_that_is_not_a_string_is_refused_not_crashed_on() -> None:
    header = _b64(json.dumps({"alg": ["RS256"], "kid": "rsa-1"}).encode())
    token = (header + b"." + _b64(b'{"sub":"u"}') + b"." + _b64(b"sig")).decode()
    assert refused(verifier(FakeFetch(RSA_KEY)), token) == "the token's algorithm is not allowed"


@pytest.mark.parametrize("value", [10**400, float("nan"), True])
def test_an_exp_that_is_no_usable_number_is_refused(value: Any) -> None:
    # A signed token whose exp overflows a float, is NaN, or is a boolean
    token = (
        jwt.encode(
            {"sub": "u-1", "iss": ISSUER, "aud": AUDIENCE, "exp": value},
            RSA_KEY.private,
            algorithm="RS256",
            headers={"kid": "rsa-1"},
        )
        if not isinstance(value, float)
        else RSA_KEY.token(exp=value)
    )
    assert refused(verifier(FakeFetch(RSA_KEY)), token) in {
        "the token's exp claim is not a number",
        "the token is malformed",
    }


def test_while_the_issuer_is_down_keys_are_asked_for_once_per_interval() -> None:
    # Given an issuer whose JWKS endpoint fails
    fetch, clock = FakeFetch(RSA_KEY), Clock()
    fetch.error = TimeoutError("down")
    check = verifier(fetch, clock)
    # When twenty handshakes arrive within the interval, they all fail closed after one fetch
    for _ in range(20):
        with pytest.raises(AuthUnavailable):
            check.user_id(RSA_KEY.token())
    assert fetch.calls == 1
    # And once the interval has passed and the issuer is back, the keys are fetched again
    fetch.error = None
    clock.now += JWKS_MIN_REFETCH_SECONDS
    assert check.user_id(RSA_KEY.token(sub="back")) == "back"
    assert fetch.calls == 2


# A fresh interpreter: which signature libraries does a verifier for these algorithms load?
LOADED_FOR = """
import sys
from wspush.auth.tokens import Jwks, JwtVerifier
from wspush.settings import AuthMode, AuthSettings
settings = AuthSettings(mode=AuthMode.JWT, algorithms=frozenset(sys.argv[1].split(",")),
    issuer="i", audience="a", jwks_url="https://issuer.example.test/jwks.json")
JwtVerifier(settings, Jwks(settings.jwks_url, timeout_seconds=1))
print(",".join(name for name in ("ecdsa", "rsa") if name in sys.modules))
"""


@pytest.mark.parametrize(
    ("algorithms", "loaded"),
    [("RS256", "rsa"), ("RS256,ES256", "ecdsa,rsa"), ("ES384", "ecdsa,rsa")],
)
def test_ecdsa_is_loaded_only_where_an_es_algorithm_is_configured(
    algorithms: str, loaded: str
) -> None:
    # Given a stage that verifies these algorithms
    # When its $connect function starts and builds its verifier
    result = subprocess.run(
        [sys.executable, "-c", LOADED_FOR, algorithms],
        capture_output=True,
        text=True,
        check=True,
    )
    # Then ecdsa (the costliest import of $connect) is loaded only if an ES algorithm is used
    assert result.stdout.strip() == loaded


def test_an_ec_key_whose_point_is_off_its_curve_is_not_usable() -> None:
    # Given a JWKS whose EC key has a y coordinate that is not on P-256
    class OffCurve(FakeFetch):
        def __call__(self, url: str, timeout: float) -> bytes:
            jwk = EC_KEY.jwk()
            y = int.from_bytes(base64.urlsafe_b64decode(jwk["y"] + "=="), "big")
            jwk["y"] = base64.urlsafe_b64encode((y ^ 1).to_bytes(32, "big")).decode().rstrip("=")
            return json.dumps({"keys": [jwk]}).encode()

    # Then a token naming it is refused for its key, not with an error of the library
    assert refused(verifier(OffCurve()), EC_KEY.token()) == "the token's key is not usable"


# --- edges: the leeway, the keys' age, which key a token may use ------------------------------


class StaticKeys:
    def __init__(self, key: Any) -> None:
        self.key = key
        self.asked: list[tuple[str, str | None]] = []

    def key_for(self, alg: str, kid: str | None) -> Any:
        self.asked.append((alg, kid))
        return self.key


def hmac_verifier_at(now: float, **settings: Any) -> JwtVerifier:
    auth = AuthSettings(
        mode=AuthMode.JWT,
        algorithms=frozenset({"HS256"}),
        issuer=ISSUER,
        audience=AUDIENCE,
        secret_parameter="/wspush/secret",
        **settings,
    )
    return JwtVerifier(auth, StaticKeys(SECRET.encode()), clock=lambda: now)


@pytest.mark.parametrize(
    ("claim", "offset", "accepted"),
    [("exp", -30, True), ("exp", -31, False), ("nbf", 30, True), ("nbf", 31, False)],
)
def test_the_leeway_is_exactly_the_configured_seconds(
    claim: str, offset: int, accepted: bool
) -> None:
    now = 2_000_000_000.0
    token = _hmac_token(SECRET.encode(), **{"exp": int(now) + 600, claim: int(now) + offset})
    check = hmac_verifier_at(now, leeway_seconds=30)
    if accepted:
        assert check.user_id(token) == "u-1"
    else:
        assert refused(check, token).startswith("the token")


def test_a_token_of_exactly_the_largest_length_is_read() -> None:
    token = _hmac_token(SECRET.encode())
    assert hmac_verifier_at(time.time(), max_token_length=len(token)).user_id(token) == "u-1"
    assert refused(hmac_verifier_at(time.time(), max_token_length=len(token) - 1), token) == (
        "the token is too large"
    )


def test_the_key_is_asked_for_by_the_token_s_algorithm_and_kid() -> None:
    keys = StaticKeys(SECRET.encode())
    auth = AuthSettings(mode=AuthMode.JWT, algorithms=frozenset({"HS256"}), issuer=ISSUER,
                        audience=AUDIENCE, secret_parameter="/p")  # fmt: skip
    JwtVerifier(auth, keys).user_id(_hmac_token(SECRET.encode(), kid="k-7"))
    JwtVerifier(auth, keys).user_id(_hmac_token(SECRET.encode(), kid=None))
    assert keys.asked == [("HS256", "k-7"), ("HS256", None)]


def test_keys_older_than_an_hour_are_fetched_again() -> None:
    fetch, clock = FakeFetch(RSA_KEY), Clock()
    check = verifier(fetch, clock)
    check.user_id(RSA_KEY.token())
    clock.now += JWKS_MAX_AGE_SECONDS
    check.user_id(RSA_KEY.token())
    assert fetch.calls == 1
    clock.now += 1
    check.user_id(RSA_KEY.token())
    assert fetch.calls == 2


def test_a_token_without_kid_uses_the_only_signing_key_and_never_an_encryption_key() -> None:
    encryption = {**SigningKey.rsa("enc-1").jwk(), "use": "enc"}

    class Fetch(FakeFetch):
        def __call__(self, url: str, timeout: float) -> bytes:
            self.calls += 1
            return json.dumps({"keys": [k.jwk() for k in self.keys] + [encryption]}).encode()

    token = sign(RSA_KEY.private, "RS256")  # no kid
    assert verifier(Fetch(RSA_KEY)).user_id(token) == "u-1"
    assert "key the issuer does not publish" in refused(verifier(Fetch(RSA_KEY, EC_KEY)), token)
    enc_token = sign(RSA_KEY.private, "RS256", kid="enc-1")
    assert "key the issuer does not publish" in refused(verifier(Fetch(RSA_KEY)), enc_token)


def test_a_minted_token_carries_the_channels_it_grants() -> None:
    token = mint(SECRET, "u-9", issuer=ISSUER, audience=AUDIENCE, channels=["room:1", "ops:*"])
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["channels"] == ["room:1", "ops:*"]


def test_a_minted_token_carries_exactly_its_claims() -> None:
    token = mint(SECRET, "u-9", issuer=ISSUER, audience=AUDIENCE, ttl_seconds=60, now=1_000.5)
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    assert jwt.decode(token, options={"verify_signature": False}) == {
        "sub": "u-9",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": 1_000,
        "nbf": 1_000,
        "exp": 1_060,
    }
    with pytest.raises(ValueError, match="only HMAC"):
        mint(SECRET, "u-9", issuer=ISSUER, audience=AUDIENCE, algorithm="RS256")


def test_an_es256_signature_of_the_wrong_length_is_refused() -> None:
    # Given a valid ES256 token whose signature lost its last byte, or gained one
    header, payload, signature = EC_KEY.token().split(".")
    raw = base64.urlsafe_b64decode(signature + "==")
    check = verifier(FakeFetch(EC_KEY))
    for forged in (raw[:-1], raw + b"\0", b""):
        token = f"{header}.{payload}.{base64.urlsafe_b64encode(forged).decode().rstrip('=')}"
        # Then it does not verify
        assert refused(check, token) in (
            "the token's signature does not verify",
            "the token is malformed",
        )


def test_why_a_key_is_not_usable_is_kept_as_the_cause() -> None:
    short = SigningKey.rsa("short", bits=1024)
    p384 = {**EC_KEY.jwk(), "crv": "P-384"}

    def cause(jwk: dict[str, Any], alg: str) -> str:
        with pytest.raises(Unauthenticated) as caught:
            auth._public_key(jwk, alg)
        assert caught.value.reason == "the token's key is not usable"
        return str(caught.value.__cause__)

    assert cause(short.jwk(), "RS256") == "RSA key too short"
    assert cause({**p384, "alg": "ES256"}, "ES256") == (
        "the key's curve does not match the algorithm"
    )
    off = {**EC_KEY.jwk(), "y": EC_KEY.jwk()["x"]}
    assert cause(off, "ES256") == "the key is not a point of its curve"
    assert cause({**EC_KEY.jwk(), "x": 7}, "ES256") == "JWK member is not a string"


def test_the_verifying_algorithms_take_only_their_own_keys_and_never_sign() -> None:
    es256 = auth._ALGORITHMS["ES256"]()
    rs256 = auth._ALGORITHMS["RS256"]()
    p384_key = auth._ec_key(
        {"crv": "P-384", **{k: v for k, v in p384_jwk().items() if k in ("x", "y")}}, "ES384"
    )
    with pytest.raises(jwt.InvalidKeyError, match=r"^an EC public key on NIST256p is required$"):
        es256.prepare_key(p384_key)
    with pytest.raises(jwt.InvalidKeyError, match=r"^an EC public key on NIST256p is required$"):
        es256.prepare_key("not a key")
    with pytest.raises(jwt.InvalidKeyError, match=r"^an RSA public key is required$"):
        rs256.prepare_key(p384_key)
    with pytest.raises(NotImplementedError, match=r"^wspush only verifies tokens$"):
        rs256.sign(b"msg", None)


def p384_jwk() -> dict[str, str]:
    from cryptography.hazmat.primitives.asymmetric import ec

    numbers = ec.generate_private_key(ec.SECP384R1()).public_key().public_numbers()
    return {
        "kty": "EC",
        "crv": "P-384",
        "x": base64.urlsafe_b64encode(numbers.x.to_bytes(48)).decode().rstrip("="),
        "y": base64.urlsafe_b64encode(numbers.y.to_bytes(48)).decode().rstrip("="),
    }


def test_a_secret_that_cannot_be_read_or_is_short_says_so() -> None:
    def unreadable() -> str:
        raise secrets.SecretUnavailable("denied")

    with pytest.raises(AuthUnavailable, match=r"^the token secret could not be read$"):
        SecretKey(unreadable).key_for("HS256", None)
    with pytest.raises(AuthUnavailable, match=r"^the token secret is shorter than 32 bytes$"):
        SecretKey(lambda: "é" * 15).key_for("HS256", None)  # 30 bytes in UTF-8
    assert SecretKey(lambda: "é" * 16).key_for("HS256", None) == ("é" * 16).encode()


def test_a_minted_token_lasts_15_minutes_and_uses_the_algorithm_asked_for() -> None:
    token = mint("s" * 64, "u-9", issuer=ISSUER, audience=AUDIENCE, algorithm="HS512", now=50)
    assert jwt.get_unverified_header(token)["alg"] == "HS512"
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 900
    with pytest.raises(ValueError, match=r"^only HMAC tokens can be minted from a shared secret$"):
        mint(SECRET, "u", issuer=ISSUER, audience=AUDIENCE, algorithm="ES256")


def jwks_of(*jwks: dict[str, Any]) -> FakeFetch:
    class Fetch(FakeFetch):
        def __call__(self, url: str, timeout: float) -> bytes:
            self.calls += 1
            return json.dumps({"keys": list(jwks)}).encode()

    return Fetch()


def test_a_key_that_says_nothing_of_its_use_or_algorithm_may_sign() -> None:
    bare = {k: v for k, v in RSA_KEY.jwk().items() if k not in ("use", "alg")}
    assert verifier(jwks_of(bare)).user_id(RSA_KEY.token()) == "u-1"


def test_a_key_made_for_another_algorithm_or_family_does_not_match() -> None:
    rs384 = {**RSA_KEY.jwk(), "alg": "RS384"}
    assert refused(verifier(jwks_of(rs384)), RSA_KEY.token()) == (
        "the token's algorithm does not match its key"
    )
    # Keys that do not name their algorithm: an RSA key for an ES256 token, and the reverse
    rsa_bare = {k: v for k, v in RSA_KEY.jwk().items() if k != "alg"}
    ec_bare = {k: v for k, v in EC_KEY.jwk().items() if k != "alg"}
    es_token = sign(EC_KEY.private, "ES256", kid="rsa-1")
    rs_token = sign(RSA_KEY.private, "RS256", kid="ec-1")
    for jwk, token in ((rsa_bare, es_token), (ec_bare, rs_token)):
        assert refused(verifier(jwks_of(jwk)), token) == (
            "the token's algorithm does not match its key"
        )


def test_a_jwks_whose_keys_are_not_objects_is_unavailable_not_a_crash() -> None:
    for keys in ([1], "abc", {"kid": "x"}):

        class Fetch(FakeFetch):
            def __call__(self, url: str, timeout: float, keys: Any = keys) -> bytes:
                return json.dumps({"keys": keys}).encode()

        with pytest.raises(AuthUnavailable):
            verifier(Fetch()).user_id(RSA_KEY.token())


@pytest.mark.parametrize(
    ("error", "logged_as"),
    [
        (
            urllib.error.HTTPError("https://i/jwks", 500, "Internal Server Error", Message(), None),
            {"error": "HTTPError", "reason": "Internal Server Error"},
        ),
        (
            urllib.error.URLError(ConnectionRefusedError(111, "Connection refused")),
            {"error": "URLError", "reason": "[Errno 111] Connection refused"},
        ),
        (TimeoutError("JWKS fetch took too long"), {"error": "TimeoutError"}),
        (
            b"<html>",
            {"error": "JSONDecodeError", "reason": "Expecting value: line 1 column 1 (char 0)"},
        ),
        (b'{"key": []}', {"error": "KeyError", "reason": "'keys'"}),
        (b'{"keys": {}}', {"error": "TypeError", "reason": "keys is not a list of objects"}),
        (b'{"keys": [1]}', {"error": "TypeError", "reason": "keys is not a list of objects"}),
    ],
    ids=["http-error", "unreachable", "timeout", "not-json", "no-keys", "keys-object", "key-int"],
)
def test_a_failed_jwks_fetch_is_logged_with_its_kind_and_reason(
    error: Exception | bytes, logged_as: dict[str, str], log_output: io.StringIO
) -> None:
    # Given a JWKS endpoint failing this way, or answering a document that is not a JWKS
    class Fetch(FakeFetch):
        def __call__(self, url: str, timeout: float) -> bytes:
            if isinstance(error, bytes):
                return error
            raise error

    fetch = Fetch(RSA_KEY)
    # When a token is checked
    with pytest.raises(AuthUnavailable):
        verifier(fetch).user_id(RSA_KEY.token())
    # Then the warning names the kind of failure and its reason (never the document)
    reason = {"reason": "JWKS fetch took too long"} if isinstance(error, TimeoutError) else {}
    warning = {"level": "WARNING", "message": "could not fetch the JWKS", **reason, **logged_as}
    assert warning in logged(log_output)


def test_a_redirect_keeps_its_origin_only_with_the_same_scheme_host_and_port() -> None:
    origin = auth._origin("https://Issuer.example.test/jwks")
    assert origin == ("https", "issuer.example.test", None)
    assert auth._origin("HTTPS://issuer.EXAMPLE.test/other") == origin
    for other in (
        "https://evil.example.test/jwks",
        "http://issuer.example.test/jwks",
        "https://issuer.example.test:8443/jwks",
    ):
        assert auth._origin(other) != origin


def test_an_audience_that_only_contains_ours_is_not_ours() -> None:
    check = verifier(FakeFetch(RSA_KEY))
    for audience in (f"x{AUDIENCE}x", AUDIENCE[:-1]):
        assert refused(check, RSA_KEY.token(aud=audience)) == (
            "the token is not meant for this audience"
        )


def test_claims_that_are_not_an_object_are_refused() -> None:
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = _b64(b"[1, 2]")
    signature = hmac.new(SECRET.encode(), header + b"." + payload, hashlib.sha256).digest()
    token = (header + b"." + payload + b"." + _b64(signature)).decode()
    assert refused(hmac_verifier(), token) == "the token's claims are not an object"


@pytest.mark.parametrize("name", ["RS256", "ES256"])
def test_the_verifying_algorithms_handle_no_jwk_documents(name: str) -> None:
    algorithm = auth._ALGORITHMS[name]()
    with pytest.raises(NotImplementedError):
        algorithm.to_jwk(None)
    with pytest.raises(NotImplementedError):
        algorithm.from_jwk("{}")


GRANTS_REFUSED = (
    "the token's channels claim must be a list of at most 128 channel names or ns:* patterns"
)


def test_a_tokens_channels_claim_grants_each_channel_once() -> None:
    check = verifier(FakeFetch(RSA_KEY))
    granted = check.identity(RSA_KEY.token(channels=["room:1", "ops:*", "room:1"]))
    assert granted == auth.Identity("u-1", ("room:1", "ops:*"))
    assert check.identity(RSA_KEY.token()) == auth.Identity("u-1", ())


@pytest.mark.parametrize(
    "claim",
    [[f"room:{n}" for n in range(128)], ["r:" + "x" * 159], ["x"]],
    ids=["128-grants", "a-grant-of-161-characters", "a-grant-of-one-character"],
)
def test_a_channels_claim_at_its_limits_is_taken(claim: list[str]) -> None:
    check = verifier(FakeFetch(RSA_KEY))
    assert check.identity(RSA_KEY.token(channels=claim)).grants == tuple(claim)


@pytest.mark.parametrize(
    "claim",
    [
        "room:1",
        {"room:1": True},
        [f"room:{n}" for n in range(129)],
        [""],
        [7],
        ["room:1", "r:" + "x" * 160],
    ],
    ids=["a-string", "an-object", "129-grants", "empty", "not-a-string", "162-characters"],
)
def test_a_malformed_channels_claim_refuses_the_token(claim: Any) -> None:
    assert refused(verifier(FakeFetch(RSA_KEY)), RSA_KEY.token(channels=claim)) == GRANTS_REFUSED


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (None, "a token query parameter is required"),
        ("", "a token query parameter is required"),
        ("not.a.token", "the token is malformed"),
        ("e30.e30.e30", "the token's algorithm is not allowed"),  # no alg
        ("!!.e30.e30", "the token is malformed"),  # a header that is not base64url
    ],
)
def test_a_missing_or_malformed_token_says_so(token: str | None, reason: str) -> None:
    assert refused(verifier(FakeFetch(RSA_KEY)), token) == reason


def test_a_token_whose_kid_is_not_a_string_is_malformed() -> None:
    header = base64.urlsafe_b64encode(b'{"alg":"RS256","kid":7}').rstrip(b"=").decode()
    _, payload, signature = RSA_KEY.token().split(".")
    token = f"{header}.{payload}.{signature}"
    assert refused(verifier(FakeFetch(RSA_KEY)), token) == "the token is malformed"


def test_keys_fetched_before_are_kept_when_a_refresh_fails() -> None:
    # Given keys fetched an hour and more ago, and a JWKS endpoint now failing
    clock = Clock()
    fetch = FakeFetch(RSA_KEY)
    check = verifier(fetch, clock)
    assert check.user_id(RSA_KEY.token(sub="alice")) == "alice"
    clock.now += JWKS_MAX_AGE_SECONDS + 1
    fetch.error = TimeoutError("down")
    # When a token is checked, the refresh is tried and fails
    # Then the keys held are used
    assert check.user_id(RSA_KEY.token(sub="bob")) == "bob"
    assert fetch.calls == 2


def test_a_token_naming_an_unknown_key_while_the_issuer_is_down_names_the_key() -> None:
    # Given keys fetched, then a token naming a key they do not hold while the JWKS
    # endpoint fails
    clock = Clock()
    fetch = FakeFetch(RSA_KEY)
    check = verifier(fetch, clock)
    check.user_id(RSA_KEY.token())
    clock.now += JWKS_MIN_REFETCH_SECONDS
    fetch.error = TimeoutError("down")
    # Then the one refetch fails and the token is refused for its key, not as an outage
    assert refused(check, SigningKey.rsa("other").token()) == (
        "the token names a key the issuer does not publish"
    )
    assert fetch.calls == 2


def test_keys_never_fetched_are_unavailable_until_the_next_try() -> None:
    # Given a JWKS endpoint that failed the first fetch
    clock = Clock()
    fetch = FakeFetch(RSA_KEY)
    fetch.error = TimeoutError("down")
    check = verifier(fetch, clock)
    with pytest.raises(AuthUnavailable, match=r"^the token issuer's keys could not be fetched$"):
        check.user_id(RSA_KEY.token())
    # When another token comes within the retry interval
    # Then it is refused as unavailable without a fetch
    with pytest.raises(
        AuthUnavailable, match=r"^the token issuer's keys are unavailable; retrying soon$"
    ):
        check.user_id(RSA_KEY.token())
    assert fetch.calls == 1


@pytest.mark.parametrize(
    ("url", "taken"),
    [
        ("https://issuer.example.test/jwks", True),
        ("http://localhost:8080/jwks", True),
        ("http://LocalHost/jwks", True),
        ("http://127.0.0.1/jwks", True),
        ("http://[::1]/jwks", True),
        ("http://issuer.example.test/jwks", False),
        ("http://localhost.example.test/jwks", False),
        ("http://10.0.0.1/jwks", False),
        ("ftp://localhost/jwks", False),
    ],
)
def test_a_jwks_url_is_https_or_plain_http_on_loopback(url: str, taken: bool) -> None:
    if taken:
        Jwks(url, timeout_seconds=1)
        return
    with pytest.raises(ValueError, match=r"^WSPUSH_JWKS_URL must be an https URL$"):
        Jwks(url, timeout_seconds=1)
