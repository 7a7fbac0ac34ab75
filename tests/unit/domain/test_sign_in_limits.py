"""The client network a failed password is counted in (IPv4 address, IPv6 /64) and the wait a
distributed attack on a username imposes on each further attempt."""

from __future__ import annotations

import pytest

from twofa.domain.sign_in_limits import client_network, slowdown_seconds


@pytest.mark.parametrize(
    ("address", "network"),
    [
        ("203.0.113.5", "203.0.113.5"),
        (" 203.0.113.5 ", "203.0.113.5"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:DB8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("::ffff:203.0.113.5", "203.0.113.5"),
        ("fe80::1%eth0", "fe80::/64"),
        ("::1", "::/64"),
        ("", "unknown"),
        ("testclient", "testclient"),
        ("Not|An Address", "not_an_address"),
    ],
)
def test_each_address_is_counted_in_its_network(address: str, network: str) -> None:
    assert client_network(address) == network


def test_two_addresses_of_one_ipv6_64_are_one_network() -> None:
    assert client_network("2001:db8:aa:1::1") == client_network("2001:db8:aa:1:a:b:c:d")
    assert client_network("2001:db8:aa:1::1") != client_network("2001:db8:aa:2::1")


def test_each_ipv4_address_is_its_own_network() -> None:
    assert client_network("198.51.100.1") != client_network("198.51.100.2")


def test_a_network_never_holds_the_key_separator() -> None:
    assert "|" not in client_network("a|b")


def test_no_wait_up_to_the_limit() -> None:
    assert [slowdown_seconds(n, 100, 16) for n in (1, 50, 100)] == [0.0, 0.0, 0.0]


def test_the_wait_doubles_past_the_limit_up_to_the_cap() -> None:
    waits = [slowdown_seconds(n, 100, 16) for n in range(101, 108)]
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 16.0, 16.0]


def test_a_huge_count_waits_the_cap() -> None:
    assert slowdown_seconds(10**9, 100, 16) == 16.0


def test_what_is_not_an_address_is_cut_short() -> None:
    assert client_network("x" * 100) == "x" * 32
