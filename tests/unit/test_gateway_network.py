"""How the gateway reads its network settings (CA bundle, proxies) and HTTP answers."""

from __future__ import annotations

import pytest

from wspush.gateway import parse_response
from wspush.settings import Settings, SettingsError


def settings_from(env: dict[str, str]) -> Settings:
    return Settings.from_env({"WSPUSH_TABLE_NAME": "t", **env})


def test_the_ca_bundle_is_aws_ca_bundle_else_requests_ca_bundle() -> None:
    both = {"AWS_CA_BUNDLE": "/opt/aws.pem", "REQUESTS_CA_BUNDLE": "/opt/requests.pem"}
    assert settings_from(both).ca_bundle == "/opt/aws.pem"
    assert settings_from({"REQUESTS_CA_BUNDLE": "/opt/requests.pem"}).ca_bundle == (
        "/opt/requests.pem"
    )
    assert settings_from({}).ca_bundle == ""


def test_handshakes_in_progress_at_once_are_configurable_and_at_least_one() -> None:
    assert settings_from({}).max_handshakes == 8
    assert settings_from({"WSPUSH_MAX_HANDSHAKES": "2"}).max_handshakes == 2
    with pytest.raises(SettingsError, match="WSPUSH_MAX_HANDSHAKES"):
        settings_from({"WSPUSH_MAX_HANDSHAKES": "0"})


OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
CHUNKED = (
    b"HTTP/1.1 429 Too Many\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"2;ext=1\r\n{}\r\n0\r\nx-trailer: 1\r\n\r\n"
)


@pytest.mark.parametrize("cut", range(len(CHUNKED)))
def test_an_answer_is_complete_only_when_all_of_it_arrived(cut: int) -> None:
    assert parse_response(bytearray(CHUNKED[:cut]), eof=False) is None


def test_a_chunked_answer_ends_after_its_trailers() -> None:
    parsed = parse_response(bytearray(CHUNKED + b"more"), eof=False)
    assert parsed is not None
    response, end = parsed
    assert (response.status, response.keep_alive, end) == (429, True, len(CHUNKED))


def test_an_answer_without_length_runs_to_the_end_of_the_connection() -> None:
    answer = bytearray(b"HTTP/1.1 500 Oops\r\n\r\nbody")
    assert parse_response(answer, eof=False) is None
    parsed = parse_response(answer, eof=True)
    assert parsed is not None
    response, end = parsed
    assert (response.status, response.keep_alive, end) == (500, False, len(answer))


@pytest.mark.parametrize(
    ("answer", "keep_alive"),
    [
        (OK_HEAD + b"{}", True),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}", False),
    ],
)
def test_keep_alive_is_http_1_1_without_connection_close(answer: bytes, keep_alive: bool) -> None:
    parsed = parse_response(bytearray(answer), eof=False)
    assert parsed is not None
    assert parsed[0].keep_alive is keep_alive


def test_a_connect_answer_has_no_body() -> None:
    answer = b"HTTP/1.0 200 Connection established\r\n\r\n"
    parsed = parse_response(bytearray(answer), eof=False, head_only=True)
    assert parsed is not None
    assert (parsed[0].status, parsed[1]) == (200, len(answer))


@pytest.mark.parametrize(
    "answer",
    [b"SSH-2.0-OpenSSH\r\n\r\n", b"HTTP/1.1 abc\r\n\r\n", b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n"],
)
def test_what_is_not_http_is_an_error(answer: bytes) -> None:
    with pytest.raises(ValueError, match=r"HTTP|header"):
        parse_response(bytearray(answer), eof=False)
