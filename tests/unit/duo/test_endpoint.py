"""DuoEndpoint.parse: what an admin may type as the API hostname (Duo's own hosts, and any
other only where custom hosts are allowed), and the HTTP client for it."""

from __future__ import annotations

import ssl

import httpx
import pytest

from twofa.duo.endpoint import (
    CustomHostRefused,
    DuoEndpoint,
    InvalidEndpoint,
    is_duo_hostname,
    is_loopback,
    make_http_client,
)
from twofa.duo.transport import PooledTransport


def parsed(value: str, *, custom: bool = False) -> tuple[str, str, bool]:
    endpoint = DuoEndpoint.parse(value, allow_custom_host=custom)
    return endpoint.signed_host, endpoint.base_url, endpoint.uses_tls


def test_bare_duo_hostname_is_signed_as_is_and_dialled_over_https() -> None:
    assert parsed("api-1234abcd.duosecurity.com") == (
        "api-1234abcd.duosecurity.com",
        "https://api-1234abcd.duosecurity.com",
        True,
    )


@pytest.mark.parametrize(
    "value",
    [
        "API-1234ABCD.DuoSecurity.COM",
        "  api-1234abcd.duosecurity.com\n",
        "https://API-1234abcd.duosecurity.com",
        "https://api-1234abcd.duosecurity.com/",
    ],
)
def test_hostname_is_lower_cased_trimmed_and_a_bare_slash_ignored(value: str) -> None:
    assert parsed(value) == (
        "api-1234abcd.duosecurity.com",
        "https://api-1234abcd.duosecurity.com",
        True,
    )


def test_https_url_keeps_its_port_in_signed_host_and_base_url() -> None:
    assert parsed("https://api-x.duosecurity.com:8443", custom=True) == (
        "api-x.duosecurity.com:8443",
        "https://api-x.duosecurity.com:8443",
        True,
    )


@pytest.mark.parametrize(
    ("value", "host"),
    [("http://127.0.0.1:8081", "127.0.0.1:8081"), ("http://LocalHost:8081", "localhost:8081")],
)
def test_plain_http_to_a_simulator_on_loopback_is_accepted(value: str, host: str) -> None:
    assert parsed(value, custom=True) == (host, f"http://{host}", False)


@pytest.mark.parametrize(
    ("value", "host"), [("http://[::1]:8081", "[::1]:8081"), ("http://[::1]", "[::1]")]
)
def test_plain_http_to_ipv6_loopback_keeps_the_brackets(value: str, host: str) -> None:
    assert parsed(value, custom=True) == (host, f"http://{host}", False)
    assert httpx.URL(f"http://{host}/auth/v2/ping").host == "::1"


@pytest.mark.parametrize(
    "value",
    [
        "http://duo.example.com",
        "http://api-1234abcd.duosecurity.com",
        "http://10.0.0.1:8081",
        "http://127.0.0.1.nip.io:8081",
        "http://localhost.example.com",
    ],
)
def test_plain_http_to_anything_but_loopback_is_refused(value: str) -> None:
    with pytest.raises(InvalidEndpoint, match="plain http"):
        DuoEndpoint.parse(value, allow_custom_host=True)


@pytest.mark.parametrize(
    ("value", "host"),
    [
        ("api-1234abcd.duosecurity.com", "api-1234abcd.duosecurity.com"),
        ("api-1234abcd.duofederal.com", "api-1234abcd.duofederal.com"),
        ("https://api-1234abcd.duosecurity.eu", "api-1234abcd.duosecurity.eu"),
        ("https://api-1234abcd.duosecurity.com:443", "api-1234abcd.duosecurity.com:443"),
    ],
)
def test_duos_own_hosts_need_no_allowance(value: str, host: str) -> None:
    assert parsed(value) == (host, f"https://{host}", True)


@pytest.mark.parametrize(
    "value",
    [
        "http://127.0.0.1:8081",  # a service on the gateway's own machine
        "http://localhost:6379",
        "https://[::1]:8443",
        "https://internal.example:8443",  # a host of the internal network
        "https://10.0.0.1",
        "https://169.254.169.254",  # a cloud metadata service
        "api-x.duosecurity.com.evil.test",  # Duo's name as a prefix of the attacker's
        "api-x.duosecurity.co",
        "duosecurity.com",
        "evilduosecurity.com",
        "https://api-x.duosecurity.com:8443",  # Duo's host, but a port Duo does not serve
    ],
)
def test_attack_duo_hostname_pointed_elsewhere_is_refused_unless_allowed(value: str) -> None:
    with pytest.raises(CustomHostRefused, match="is not a Duo API host"):
        DuoEndpoint.parse(value)
    assert DuoEndpoint.parse(value, allow_custom_host=True).base_url  # allowed: accepted


def test_a_refused_custom_host_is_an_invalid_endpoint() -> None:
    assert issubclass(CustomHostRefused, InvalidEndpoint)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("ftp://x", "scheme"),
        ("api-x.duosecurity.com/path", "bare host name"),
        ("https://api-x.duosecurity.com/auth/v2", "bare host name"),
        ("https://api-x.duosecurity.com?x=1", "bare host name"),
        ("https://api-x.duosecurity.com#frag", "bare host name"),
        ("user@host", "bare host name"),
        ("https://user:pw@api-x.duosecurity.com", "bare host name"),
        ("bad host name", "not a valid host name"),
        ("-bad.example.com", "not a valid host name"),
        ("under_score.example.com", "not a valid host name"),
        ("https://:8443", "not a valid host name"),
        ("host:99999", "port"),
        ("host:http", "port"),
    ],
)
def test_unusable_values_are_refused_with_a_reason(value: str, says: str) -> None:
    with pytest.raises(InvalidEndpoint, match=says):
        DuoEndpoint.parse(value)


def test_port_zero_is_refused() -> None:
    with pytest.raises(InvalidEndpoint, match="port"):
        DuoEndpoint.parse("https://api-x.duosecurity.com:0")


def test_invalid_endpoint_is_a_value_error() -> None:
    assert issubclass(InvalidEndpoint, ValueError)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("localhost", True),
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("10.0.0.1", False),
        ("0.0.0.0", False),  # noqa: S104 (a value to classify, not a bind address)
        ("::", False),
        ("localhost.example.com", False),
        ("api-x.duosecurity.com", False),
        ("", False),
    ],
)
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("api-1234abcd.duosecurity.com", True),
        ("api-1234abcd.duofederal.com", True),
        ("api-1234abcd.duosecurity.eu", True),
        ("duosecurity.com.evil.example", False),
        ("evilduosecurity.com", False),
        ("api-x.duosecurity.co", False),
        ("127.0.0.1", False),
    ],
)
def test_is_duo_hostname(host: str, expected: bool) -> None:
    assert is_duo_hostname(host) is expected


async def test_make_http_client_verifies_certificates_and_never_follows_redirects() -> None:
    endpoint = DuoEndpoint.parse("api-1234abcd.duosecurity.com")
    client = make_http_client(endpoint, max_connections=7, connect_timeout=2.5)
    try:
        transport = client._transport  # the transport is the point of this factory
        assert isinstance(transport, PooledTransport)
        assert transport.tls_context.verify_mode is ssl.CERT_REQUIRED
        assert transport.tls_context.check_hostname is True
        assert transport.max_connections == 7
        assert client.follow_redirects is False
        assert (client.timeout.connect, client.timeout.read) == (2.5, 15.0)
    finally:
        await client.aclose()
    assert client.is_closed


async def test_make_http_client_works_for_a_loopback_simulator_too() -> None:
    client = make_http_client(DuoEndpoint.parse("http://127.0.0.1:8081", allow_custom_host=True))
    async with client:
        assert isinstance(client, httpx.AsyncClient)
        assert client.timeout.connect == 5.0
    assert client.is_closed
