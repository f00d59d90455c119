"""``$connect`` in jwt mode under moto: JWKS (RS256/ES256) and an SSM-held HMAC secret."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from handlers import connect
from tests.conftest import REGION, FakeLambdaContext, load_event, logged
from tests.fakes.jwks import AUDIENCE, ISSUER, JwksServer, SigningKey
from tests.support import stored_ids
from wspush.auth import tokens as auth
from wspush.settings import get_auth_settings

pytestmark = pytest.mark.usefixtures("aws")
RSA_KEY = SigningKey.rsa("rsa-1")
EC_KEY = SigningKey.ec("ec-1")
SECRET_PARAMETER = "/wspush/test/jwt-secret"
SECRET = "an-hmac-secret-that-is-long-enough-0123456789"


@pytest.fixture
def jwks() -> Iterator[JwksServer]:
    server = JwksServer(RSA_KEY, EC_KEY).start()
    yield server
    server.stop()


def use_auth(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    """Switch $connect to the given auth settings (read again, verifier rebuilt)."""
    monkeypatch.setenv("WSPUSH_AUTH_MODE", "jwt")
    monkeypatch.setenv("WSPUSH_JWT_ISSUER", ISSUER)
    monkeypatch.setenv("WSPUSH_JWT_AUDIENCE", AUDIENCE)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_auth_settings.cache_clear()
    auth.verifier_for.cache_clear()


@pytest.fixture(autouse=True)
def fresh_auth_settings() -> Iterator[None]:
    yield
    get_auth_settings.cache_clear()
    auth.verifier_for.cache_clear()


@pytest.fixture
def with_jwks(monkeypatch: pytest.MonkeyPatch, jwks: JwksServer) -> JwksServer:
    use_auth(
        monkeypatch,
        WSPUSH_JWKS_URL=jwks.url,
        WSPUSH_JWT_ALGORITHMS="RS256,ES256",
        WSPUSH_JWKS_TIMEOUT_MS="300",
    )
    return jwks


def handshake(context: FakeLambdaContext, connection_id: str = "c-1", **query: str) -> Any:
    event = load_event("ws_connect.json")
    event["requestContext"]["connectionId"] = connection_id
    event["queryStringParameters"] = query or None
    event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()} or None
    return connect.handler(event, context)


@pytest.mark.usefixtures("with_jwks")
@pytest.mark.parametrize("key", [RSA_KEY, EC_KEY], ids=["RS256", "ES256"])
def test_a_valid_token_connects_as_its_subject(
    lambda_context: FakeLambdaContext, key: SigningKey
) -> None:
    # When a client connects with a token for alice (and no userId of its own)
    response = handshake(lambda_context, token=key.token(sub="alice"), platform="pc")
    # Then it is stored as alice
    assert response["statusCode"] == 200
    table = boto3.resource("dynamodb", region_name=REGION).Table("wspush-test-connections")
    assert table.get_item(Key={"connectionId": "c-1"})["Item"]["userId"] == "alice"


@pytest.mark.usefixtures("with_jwks")
def test_a_userid_that_disagrees_with_the_token_is_forbidden(
    lambda_context: FakeLambdaContext,
) -> None:
    response = handshake(lambda_context, token=RSA_KEY.token(sub="u1"), userId="u2")
    assert (response["statusCode"], stored_ids()) == (403, set())
    # A matching userId is fine
    assert (
        handshake(lambda_context, token=RSA_KEY.token(sub="u1"), userId="u1")["statusCode"] == 200
    )


@pytest.mark.usefixtures("with_jwks")
@pytest.mark.parametrize(
    "query",
    [
        {"userId": "u1"},
        {"token": SigningKey.rsa("rsa-1").token()},
        {"token": RSA_KEY.token(exp=int(time.time()) - 3_600)},
        {"token": RSA_KEY.token(aud="elsewhere")},
        {"token": "x" * 10_000},
    ],
    ids=["no-token", "forged", "expired", "wrong-audience", "oversized"],
)
def test_a_bad_token_is_refused_with_401_and_nothing_is_stored(
    lambda_context: FakeLambdaContext, query: dict[str, str]
) -> None:
    assert handshake(lambda_context, **query)["statusCode"] == 401
    assert stored_ids() == set()


@pytest.mark.parametrize(
    ("trouble", "why"),
    [
        ("down", {"error": "HTTPError", "reason": "Service Unavailable"}),
        ("slow", {"error": "TimeoutError", "reason": "timed out"}),
        ("drip", {"error": "TimeoutError", "reason": "JWKS fetch took too long"}),
    ],
)
def test_an_unavailable_jwks_fails_closed_within_the_timeout(
    lambda_context: FakeLambdaContext,
    with_jwks: JwksServer,
    log_output: io.StringIO,
    trouble: str,
    why: dict[str, str],
) -> None:
    # Given the issuer's JWKS endpoint answers 503, after 2 s, or drip by drip (timeout 300 ms)
    if trouble == "down":
        with_jwks.down = True
    elif trouble == "slow":
        with_jwks.delay = 2.0
    else:  # answers at once, then sends its body 50 bytes at a time, slowly
        with_jwks.drip = 0.1
    # When a client connects
    started = time.monotonic()
    response = handshake(lambda_context, token=RSA_KEY.token())
    # Then it is refused, quickly, and nothing is stored
    assert response["statusCode"] == 503
    assert time.monotonic() - started < 1.5
    assert stored_ids() == set()
    # And the log says what went wrong
    assert {"level": "WARNING", "message": "could not fetch the JWKS", **why} in logged(log_output)


def test_a_jwks_redirect_to_another_origin_is_refused(
    lambda_context: FakeLambdaContext, with_jwks: JwksServer, log_output: io.StringIO
) -> None:
    # Given the JWKS URL redirects to another server (another origin) that serves other keys
    elsewhere = JwksServer(SigningKey.rsa("attacker")).start()
    try:
        with_jwks.redirect_to = elsewhere.url
        # When a client connects with a token signed by the key the other server publishes
        response = handshake(lambda_context, token=elsewhere.keys[0].token())
        # Then the redirect is not followed: the keys are unavailable and the handshake fails
        assert response["statusCode"] == 503
        assert elsewhere.requests == 0
        assert stored_ids() == set()
        # And the log says why
        assert {
            "level": "WARNING",
            "message": "could not fetch the JWKS",
            "error": "URLError",
            "reason": "redirect to another origin refused",
        } in logged(log_output)
    finally:
        elsewhere.stop()


def test_a_jwks_redirect_within_its_origin_is_followed(
    lambda_context: FakeLambdaContext, with_jwks: JwksServer
) -> None:
    # Given the JWKS URL redirects to another path of the same server
    with_jwks.redirect_to = with_jwks.url.replace("/.well-known/", "/keys/")
    # When a client connects
    response = handshake(lambda_context, token=RSA_KEY.token())
    # Then the keys are fetched from there and the token is accepted
    assert response["statusCode"] == 200
    assert with_jwks.requests == 2


def test_a_rotated_key_is_picked_up(
    lambda_context: FakeLambdaContext, with_jwks: JwksServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the keys were fetched once, and the refetch cool-down has passed
    assert handshake(lambda_context, "c-1", token=RSA_KEY.token())["statusCode"] == 200
    monkeypatch.setattr(auth, "JWKS_MIN_REFETCH_SECONDS", 0)
    # When the issuer starts signing with a new key
    rotated = SigningKey.rsa("rsa-2")
    with_jwks.keys.append(rotated)
    # Then a token signed with it is accepted after one more fetch
    assert handshake(lambda_context, "c-2", token=rotated.token(sub="bob"))["statusCode"] == 200
    assert with_jwks.requests == 2


@pytest.fixture
def with_ssm_secret(aws: None, monkeypatch: pytest.MonkeyPatch) -> None:
    boto3.client("ssm", region_name=REGION).put_parameter(
        Name=SECRET_PARAMETER, Value=SECRET, Type="SecureString"
    )
    use_auth(
        monkeypatch, WSPUSH_JWT_SECRET_PARAMETER=SECRET_PARAMETER, WSPUSH_JWT_ALGORITHMS="HS256"
    )


@pytest.mark.usefixtures("with_ssm_secret")
def test_an_hmac_token_checks_against_the_secret_in_parameter_store(
    lambda_context: FakeLambdaContext,
) -> None:
    token = auth.mint(SECRET, "carol", issuer=ISSUER, audience=AUDIENCE)
    assert handshake(lambda_context, token=token)["statusCode"] == 200
    forged = auth.mint("x" * 40, "carol", issuer=ISSUER, audience=AUDIENCE)
    assert handshake(lambda_context, "c-2", token=forged)["statusCode"] == 401
    assert stored_ids() == {"c-1"}


def test_a_missing_secret_fails_closed(
    lambda_context: FakeLambdaContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_auth(monkeypatch, WSPUSH_JWT_SECRET_PARAMETER="/nowhere", WSPUSH_JWT_ALGORITHMS="HS256")
    token = auth.mint(SECRET, "carol", issuer=ISSUER, audience=AUDIENCE)
    assert handshake(lambda_context, token=token)["statusCode"] == 503


def test_auth_off_outside_local_and_dev_refuses_every_connection(
    lambda_context: FakeLambdaContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WSPUSH_STAGE", "prod")
    get_auth_settings.cache_clear()
    assert handshake(lambda_context, userId="u1")["statusCode"] == 503
    assert stored_ids() == set()


@pytest.mark.usefixtures("with_jwks")
def test_tokens_never_reach_the_logs(
    lambda_context: FakeLambdaContext, log_output: io.StringIO
) -> None:
    # Given tokens that are accepted, refused, and refused for another user
    good, forged = RSA_KEY.token(), SigningKey.rsa("rsa-1").token()
    handshake(lambda_context, "c-1", token=good)
    handshake(lambda_context, "c-2", token=forged)
    handshake(lambda_context, "c-3", token=good, userId="mallory")
    # Then the logs say what happened, without any token
    logs = log_output.getvalue()
    assert "connection refused" in logs
    for token in (good, forged):
        assert token not in logs
        assert token.split(".")[2] not in logs


@pytest.mark.parametrize(("size", "read"), [(512 * 1024, True), (512 * 1024 + 1, False)])
def test_a_jwks_document_of_up_to_512_kib_is_read(
    with_jwks: JwksServer, size: int, read: bool
) -> None:
    # Given a JWKS document of ``size`` bytes
    with_jwks.size = size
    # When it is fetched
    # Then it is read whole up to the limit, and refused past it
    if read:
        assert len(auth._http_get(with_jwks.url, 5.0)) == size
    else:
        with pytest.raises(ValueError, match=r"^JWKS document too large$"):
            auth._http_get(with_jwks.url, 5.0)
    # And the request asked for JSON
    assert with_jwks.accepted == ["application/json"]
