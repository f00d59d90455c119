"""How the gateway reads its network settings (CA bundle, proxies) and HTTP answers."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from botocore.utils import get_environ_proxies

from wspush.fanout.gateway import Network, Proxy, parse_response, proxy_for
from wspush.settings import Settings, SettingsError

PROXY_VARIABLES = (
    "https_proxy",
    "http_proxy",
    "no_proxy",
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "NO_PROXY",
)
ENDPOINTS = (
    "https://abc123.execute-api.eu-west-1.amazonaws.com/prod",
    "https://abc123.execute-api.eu-west-1.amazonaws.com:443/prod",
    "http://127.0.0.1:3001",
    "https://localhost:8443/local",
)


def settings_from(env: dict[str, str]) -> Settings:
    return Settings.from_env({"WSPUSH_TABLE_NAME": "t", **env})


@pytest.mark.parametrize(
    "env",
    [
        {"HTTPS_PROXY": "http://upper:3128"},
        {"https_proxy": "http://lower:3128"},
        {"HTTPS_PROXY": "http://upper:3128", "https_proxy": "http://lower:3128"},
        {"HTTPS_PROXY": "http://upper:3128", "https_proxy": ""},  # an empty lower-case wins
        {"HTTP_PROXY": "proxy.internal:8080"},
        {"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "amazonaws.com"},
        {"HTTPS_PROXY": "http://p:3128", "no_proxy": ".amazonaws.com", "NO_PROXY": ""},
        {"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "execute-api.eu-west-1.amazonaws.com"},
        {"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "other.com, localhost"},
        {"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "*"},
        {"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "localhost:8443"},
        {"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "localhost:9999"},
        {"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "0.0.1"},  # a suffix, even of an address
        {"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "127.0.0.0/8"},  # no ranges
        {"HTTP_PROXY": "http://p:3128", "NO_PROXY": "127.0.0.1"},
        {"HTTP_PROXY": "http://p:3128", "NO_PROXY": "ABC123.Execute-Api.EU-WEST-1.amazonaws.com"},
    ],
)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_the_proxy_a_post_takes_is_the_one_boto3_would_take(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], endpoint: str
) -> None:
    # Given the same environment for botocore (which reads os.environ) and for Settings
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    parts = urlsplit(endpoint)
    boto3_proxy = get_environ_proxies(endpoint).get(parts.scheme)
    # When the gateway decides
    ours = proxy_for(parts, Network.from_settings(settings_from(env)))
    # Then it goes through the same proxy, or none when boto3 goes direct
    if boto3_proxy is None:
        assert ours is None
    else:
        assert ours is not None
        expected = Proxy.parse(boto3_proxy, "")
        assert (ours.host, ours.port) == (expected.host, expected.port)


@pytest.mark.parametrize(
    ("url", "host", "port"),
    [
        ("http://proxy.internal:3128", "proxy.internal", 3128),
        ("proxy.internal:3128", "proxy.internal", 3128),  # no scheme: http://, as botocore
        ("//proxy.internal:3128", "proxy.internal", 3128),
        ("http://proxy.internal", "proxy.internal", 80),
        ("HTTP://[fd00::1]:3128", "fd00::1", 3128),
    ],
)
def test_proxy_urls_are_read_as_botocore_reads_them(url: str, host: str, port: int) -> None:
    proxy = Proxy.parse(url, "HTTPS_PROXY")
    assert (proxy.host, proxy.port, proxy.authorization) == (host, port, None)


@pytest.mark.parametrize(
    ("url", "authorization"),
    [
        ("http://user:secret@p:3128", "Basic dXNlcjpzZWNyZXQ="),
        ("http://us%40er:p%3Ass@p:3128", "Basic dXNAZXI6cDpzcw=="),  # unquoted before encoding
        ("http://user@p:3128", None),  # boto3 sends credentials only with a password
        ("http://:secret@p:3128", None),
    ],
)
def test_proxy_credentials_become_basic_authorization(url: str, authorization: str) -> None:
    assert Proxy.parse(url, "HTTPS_PROXY").authorization == authorization


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


def test_a_chunked_body_is_measured_by_its_sizes_not_by_blank_lines_in_it() -> None:
    # Given chunks whose data holds blank lines, one of 26 bytes (size 1a) and one of 16 (10)
    body = (
        b"4\r\n\r\n\r\n\r\n"
        + b"1a\r\n"
        + b"\r\n" * 13
        + b"\r\n10;x=y\r\n"
        + b"a" * 16
        + b"\r\n0\r\n\r\n"
    )
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    # Then the answer ends after the last chunk and the empty line, and not before
    parsed = parse_response(bytearray(answer + b"HTTP/1.1"), eof=False)
    assert parsed is not None
    assert parsed[1] == len(answer)
    assert parse_response(bytearray(answer[:-2]), eof=False) is None


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


def parsed(answer: bytes, *, eof: bool = False) -> tuple[int, dict[str, str], bool, int]:
    result = parse_response(bytearray(answer), eof=eof)
    assert result is not None
    response, end = result
    return response.status, response.headers, response.keep_alive, end


def test_header_names_are_lowercased_and_values_trimmed() -> None:
    answer = b"HTTP/1.1 410 Gone\r\nX-Amzn-ErrorType :  GoneException \r\nContent-Length: 0\r\n\r\n"
    assert parsed(answer) == (
        410,
        {"x-amzn-errortype": "GoneException", "content-length": "0"},
        True,
        len(answer),
    )


@pytest.mark.parametrize("status", [100, 199, 204, 304])
def test_answers_that_never_have_a_body_end_with_their_head(status: int) -> None:
    head = f"HTTP/1.1 {status} X\r\nContent-Length: 5\r\n\r\n".encode()
    assert parsed(head + b"hello")[3] == len(head)


@pytest.mark.parametrize("status", [200, 205, 303, 400])
def test_other_answers_end_after_their_content_length(status: int) -> None:
    head = f"HTTP/1.1 {status} X\r\nContent-Length: 5\r\n\r\n".encode()
    assert parse_response(bytearray(head + b"hell"), eof=False) is None
    assert parsed(head + b"hello!")[3] == len(head) + 5


def test_a_head_is_awaited_up_to_64_kib_and_refused_beyond() -> None:
    assert parse_response(bytearray(b"H" * 65_536), eof=False) is None
    with pytest.raises(ValueError, match="answer head too long"):
        parse_response(bytearray(b"H" * 65_537), eof=False)


def test_a_status_line_needs_http_1_and_three_digits() -> None:
    assert parsed(b"HTTP/1.0 204 No Content\r\n\r\n")[0] == 204
    for line in (b"HTTP/2 200 OK", b"HTTP/1.1 20 OK", b"HTTP/1.1"):
        with pytest.raises(ValueError, match=r"not an HTTP/1\.x answer"):
            parse_response(bytearray(line + b"\r\n\r\n"), eof=False)


def test_chunks_are_counted_in_hex_and_each_is_read_whole() -> None:
    body = b"a\r\n0123456789\r\n10\r\n" + b"x" * 16 + b"\r\n0\r\n\r\n"
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n"
    assert parsed(head + body + b"next")[3] == len(head + body)
    assert parse_response(bytearray(head + body[:-1]), eof=False) is None
    assert parse_response(bytearray(head + b"a\r\n0123"), eof=False) is None


def test_connection_close_is_read_whatever_its_case() -> None:
    assert parsed(b"HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 0\r\n\r\n")[2] is False
