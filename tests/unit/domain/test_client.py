"""Which address a request comes from behind trusted proxies: X-Forwarded-For read from the
right, past every trusted proxy, so what a client wrote itself is never believed."""

from __future__ import annotations

import pytest

from twofa.domain.client import client_address

PROXIES = {"127.0.0.1", "10.0.0.5", "10.0.0.6"}


def trusted(address: str) -> bool:
    return address in PROXIES


@pytest.mark.parametrize(
    ("forwarded_for", "client"),
    [
        ("", "127.0.0.1"),  # no header: the peer itself
        ("203.0.113.9", "203.0.113.9"),  # one proxy, one hop
        ("198.51.100.1, 203.0.113.9", "203.0.113.9"),  # the client's own claim is left of it
        ("203.0.113.9, 10.0.0.5", "203.0.113.9"),  # two proxies in a row
        ("1.1.1.1, 203.0.113.9, 10.0.0.6, 10.0.0.5", "203.0.113.9"),
        ("10.0.0.6, 10.0.0.5", "10.0.0.6"),  # every hop a proxy: the left-most
        (" 203.0.113.9 ,, ", "203.0.113.9"),
        ("192.0.2.1, not-an-address", "not-an-address"),  # never a proxy, so never skipped
    ],
)
def test_the_nearest_untrusted_hop_is_the_client(forwarded_for: str, client: str) -> None:
    assert client_address(forwarded_for, "127.0.0.1", trusted) == client


def test_attack_a_client_writes_a_trusted_proxy_after_its_claim() -> None:
    """A client sends `X-Forwarded-For: 10.1.2.3, 10.0.0.5` to look like a proxy chain; the
    real proxy appends the address it saw, which is the one believed."""
    assert client_address("10.1.2.3, 10.0.0.5, 198.51.100.7", "127.0.0.1", trusted) == (
        "198.51.100.7"
    )
