"""Posts through an HTTP proxy, as boto3 makes them when HTTPS_PROXY / HTTP_PROXY are set:
an https endpoint through a CONNECT tunnel (TLS end to end), an http one in absolute form,
and NO_PROXY hosts directly."""

from __future__ import annotations

import base64
import socket
import threading
from collections.abc import Iterator

import pytest

from local.tls import Authority
from tests.fakes.proxy import FakeProxy, running_proxy
from tests.integration.test_gateway import RawServer, serve_in_thread
from wspush.fanout.gateway import Gateway, Network, PostOutcome, PostResult
from wspush.settings import SettingsError

REGION = "eu-west-1"
CREDENTIALS = ("svc", "p@ss:w/rd")
QUOTED_CREDENTIALS = "svc:p%40ss%3Aw%2Frd"


@pytest.fixture
def proxy() -> Iterator[FakeProxy]:
    with running_proxy() as fake:
        yield fake


@pytest.fixture
def authenticating_proxy() -> Iterator[FakeProxy]:
    with running_proxy(CREDENTIALS) as fake:
        yield fake


@pytest.fixture
def https_server(tls_authority: Authority) -> Iterator[RawServer]:
    yield from serve_in_thread(RawServer("https"), tls_authority.server_context())


@pytest.fixture
def misnamed_https_server(tls_authority: Authority) -> Iterator[RawServer]:
    """An endpoint at 127.0.0.2 whose certificate, from the trusted authority, names other
    hosts (localhost, 127.0.0.1, ::1)."""
    yield from serve_in_thread(RawServer("https", host="127.0.0.2"), tls_authority.server_context())


@pytest.fixture
def http_server() -> Iterator[RawServer]:
    yield from serve_in_thread(RawServer("http"), None)


@pytest.fixture
def made() -> Iterator[list[Gateway]]:
    gateways: list[Gateway] = []
    yield gateways
    for gateway in gateways:
        gateway.close()


def post_twice(url: str, network: Network, made: list[Gateway]) -> list[PostResult]:
    gateway = Gateway(url, region=REGION, max_connections=2, network=network)
    made.append(gateway)
    return [gateway.run(gateway.post(cid, b'{"n":1}')) for cid in ("c-1", "c-2")]


def test_an_https_endpoint_is_reached_through_a_connect_tunnel_with_the_proxy_credentials(
    authenticating_proxy: FakeProxy,
    https_server: RawServer,
    tls_authority: Authority,
    made: list[Gateway],
) -> None:
    # Given HTTPS_PROXY with credentials (quoted in the URL, as they must be)
    proxy_url = authenticating_proxy.url
    assert f"//{QUOTED_CREDENTIALS}@" in proxy_url
    network = Network(ca_bundle=str(tls_authority.ca_bundle), https_proxy=proxy_url)
    # When two posts are made
    results = post_twice(https_server.url, network, made)
    # Then both are delivered through one tunnel to the endpoint, opened with the credentials
    assert [r.outcome for r in results] == [PostOutcome.DELIVERED] * 2
    assert authenticating_proxy.tunnels == 1
    assert authenticating_proxy.refused == 0
    (connect,) = authenticating_proxy.requests
    authority = f"127.0.0.1:{https_server.port}"
    assert connect.line == f"CONNECT {authority} HTTP/1.1"
    assert connect.headers["host"] == authority
    expected = base64.b64encode(":".join(CREDENTIALS).encode()).decode()
    assert connect.headers["proxy-authorization"] == f"Basic {expected}"
    # And TLS ran end to end: the proxy saw no request, the endpoint saw no proxy header
    assert b"@connections" not in authenticating_proxy.tunnelled
    assert len(https_server.requests) == 2
    assert all(b"Proxy-Authorization" not in r for r in https_server.requests)


def test_a_proxy_that_refuses_the_tunnel_is_a_retryable_proxy_error(
    authenticating_proxy: FakeProxy,
    https_server: RawServer,
    tls_authority: Authority,
    made: list[Gateway],
) -> None:
    # Given a proxy that wants credentials the proxy URL does not carry
    network = Network(
        ca_bundle=str(tls_authority.ca_bundle),
        https_proxy=f"http://127.0.0.1:{authenticating_proxy.port}",
    )
    results = post_twice(https_server.url, network, made)
    # Then each is a proxy error a retry may fix, which says what the proxy answered
    assert [(r.outcome, r.reason, r.retryable) for r in results] == [
        (
            PostOutcome.ERROR,
            "ProxyConnectionError (the proxy answered CONNECT with 407)",
            True,
        )
    ] * 2
    assert authenticating_proxy.refused == 2
    assert https_server.requests == []


def test_an_http_endpoint_is_posted_to_in_absolute_form_through_the_proxy(
    authenticating_proxy: FakeProxy, http_server: RawServer, made: list[Gateway]
) -> None:
    network = Network(http_proxy=authenticating_proxy.url)
    results = post_twice(http_server.url, network, made)
    assert [r.outcome for r in results] == [PostOutcome.DELIVERED] * 2
    assert authenticating_proxy.forwarded == 2
    assert authenticating_proxy.tunnels == 0
    lines = [r.line for r in authenticating_proxy.requests]
    assert lines == [f"POST {http_server.url}/@connections/c-{i} HTTP/1.1" for i in (1, 2)]
    assert all(r.headers["proxy-authorization"] for r in authenticating_proxy.requests)
    assert http_server.connections == 1  # the proxy kept one connection for both


@pytest.mark.parametrize(
    "no_proxy", ["127.0.0.1", "localhost,127.0.0.1", " 127.0.0.1 ", "*", "127.0.0.1:{port}"]
)
def test_no_proxy_hosts_are_reached_directly(
    proxy: FakeProxy,
    https_server: RawServer,
    tls_authority: Authority,
    made: list[Gateway],
    no_proxy: str,
) -> None:
    network = Network(
        ca_bundle=str(tls_authority.ca_bundle),
        https_proxy=proxy.url,
        no_proxy=no_proxy.format(port=https_server.port),
    )
    results = post_twice(https_server.url, network, made)
    assert [r.outcome for r in results] == [PostOutcome.DELIVERED] * 2
    assert proxy.requests == []
    assert https_server.connections == 1


@pytest.mark.parametrize("no_proxy", ["localhost", "127.0.0.2", "27.0.0.1", "127.0.0.1:1"])
def test_other_no_proxy_entries_do_not_bypass_the_proxy(
    proxy: FakeProxy,
    https_server: RawServer,
    tls_authority: Authority,
    made: list[Gateway],
    no_proxy: str,
) -> None:
    # (No name resolution, no address ranges: urllib's matching, which botocore uses)
    network = Network(
        ca_bundle=str(tls_authority.ca_bundle), https_proxy=proxy.url, no_proxy=no_proxy
    )
    results = post_twice(https_server.url, network, made)
    assert [r.outcome for r in results] == [PostOutcome.DELIVERED] * 2
    assert proxy.tunnels == 1


def test_the_proxy_of_the_other_scheme_is_not_used(
    proxy: FakeProxy, http_server: RawServer, made: list[Gateway]
) -> None:
    results = post_twice(http_server.url, Network(https_proxy=proxy.url), made)
    assert [r.outcome for r in results] == [PostOutcome.DELIVERED] * 2
    assert proxy.requests == []


@pytest.mark.parametrize(
    ("proxy_url", "message"),
    [
        ("https://127.0.0.1:3128", "only http:// proxies"),
        ("socks5://127.0.0.1:1080", "only http:// proxies"),
        ("http://127.0.0.1:port", "port is not a number"),
        ("http://", "names no host"),
    ],
)
def test_a_proxy_that_cannot_be_used_is_refused_when_the_gateway_is_made(
    proxy_url: str, message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        Gateway(
            "https://abc.execute-api.eu-west-1.amazonaws.com/prod",
            region=REGION,
            max_connections=1,
            network=Network(https_proxy=proxy_url),
        )


@pytest.mark.parametrize(
    ("endpoint", "network", "variable"),
    [
        (
            "https://abc.execute-api.eu-west-1.amazonaws.com",
            Network(https_proxy="socks5://p"),
            "HTTPS",
        ),
        ("http://127.0.0.1:3001", Network(http_proxy="socks5://p"), "HTTP"),
    ],
)
def test_a_proxy_that_cannot_be_used_is_named_by_its_variable(
    endpoint: str, network: Network, variable: str
) -> None:
    with pytest.raises(SettingsError) as refused:
        Gateway(endpoint, region=REGION, max_connections=1, network=network)
    assert str(refused.value).startswith(f"{variable}_PROXY: only http:// proxies")


@pytest.fixture
def ipv6_server(tls_authority: Authority) -> Iterator[RawServer]:
    yield from serve_in_thread(RawServer("https", "::1"), tls_authority.server_context())


def test_an_ipv6_endpoint_is_named_in_brackets_in_the_connect_request(
    proxy: FakeProxy, ipv6_server: RawServer, tls_authority: Authority, made: list[Gateway]
) -> None:
    # Given an endpoint at an IPv6 address, reached through a proxy
    network = Network(ca_bundle=str(tls_authority.ca_bundle), https_proxy=proxy.url)
    url = f"https://[::1]:{ipv6_server.port}/prod"
    # When posts are made
    results = post_twice(url, network, made)
    # Then the tunnel is asked for with the address in brackets, and TLS checks the address
    assert [r.outcome for r in results] == [PostOutcome.DELIVERED] * 2
    (connect,) = proxy.requests
    assert connect.line == f"CONNECT [::1]:{ipv6_server.port} HTTP/1.1"
    assert connect.headers["host"] == f"[::1]:{ipv6_server.port}"


@pytest.fixture
def proxy_answering(request: pytest.FixtureRequest) -> Iterator[str]:
    """A proxy that answers every CONNECT with the given bytes (then closes, when they are
    empty): the URL to reach it."""
    answer: bytes = request.param
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed
            received = b""
            while b"\r\n\r\n" not in received and (data := client.recv(4096)):
                received += data
            client.sendall(answer)
            if answer:
                held.append(client)
            else:
                client.close()

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()
    for client in held:
        client.close()


@pytest.mark.parametrize(
    ("proxy_answering", "detail"),
    [
        (
            b"HTTP/1.1 300 Multiple Choices\r\nContent-Length: 0\r\n\r\n",
            "the proxy answered CONNECT with 300",
        ),
        (
            b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n",
            "the proxy answered CONNECT with 502",
        ),
        (
            b"SSH-2.0-OpenSSH\r\n\r\n",
            "the proxy did not answer CONNECT: not an HTTP/1.x answer",
        ),
        (
            b"",  # closed without an answer
            "the proxy did not answer CONNECT: the connection closed before a whole answer",
        ),
        (
            b"HTTP/1.1 200 Connection established\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
            "the proxy closed the tunnel, or sent more than its answer",
        ),
    ],
    ids=["300", "502", "not-http", "closed", "more-than-its-answer"],
    indirect=["proxy_answering"],
)
def test_a_tunnel_not_cleanly_opened_is_a_retryable_proxy_error_that_says_why(
    proxy_answering: str, detail: str, tls_authority: Authority, made: list[Gateway]
) -> None:
    # Given a proxy that does not answer CONNECT with a 2xx and nothing more
    network = Network(ca_bundle=str(tls_authority.ca_bundle), https_proxy=proxy_answering)
    # When posts are made through it
    results = post_twice("https://127.0.0.1:1/prod", network, made)
    # Then none goes into a tunnel: each is a proxy error, which a retry may fix, and says why
    expected = PostResult(PostOutcome.ERROR, None, "ProxyConnectionError", detail)
    assert results == [expected] * 2
    assert all(r.retryable for r in results)
    assert results[0].reason == f"ProxyConnectionError ({detail})"


@pytest.mark.parametrize("through_proxy", [True, False], ids=["tunnel", "direct"])
def test_an_endpoint_whose_certificate_names_another_host_is_not_posted_to(
    authenticating_proxy: FakeProxy,
    misnamed_https_server: RawServer,
    tls_authority: Authority,
    made: list[Gateway],
    through_proxy: bool,
) -> None:
    # Given an endpoint whose certificate is trusted but names other hosts
    proxy = {"https_proxy": authenticating_proxy.url} if through_proxy else {}
    network = Network(ca_bundle=str(tls_authority.ca_bundle), **proxy)
    # When two posts are made to it, through a tunnel or directly
    results = post_twice(misnamed_https_server.url, network, made)
    # Then TLS refuses the endpoint's name: nothing reaches it
    assert [(r.outcome, r.reason) for r in results] == [(PostOutcome.ERROR, "SSLError")] * 2
    assert misnamed_https_server.requests == []
