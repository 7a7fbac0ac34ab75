"""The figures password throttling keys on: which client network an address belongs to (an
IPv4 address is its own network; IPv6 addresses are grouped by /64, the block one subscriber
or one host usually holds whole), and how long an attempt on a username under a distributed
attack waits before its password is checked (doubling from one second up to a cap)."""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv6Address, IPv6Network, ip_address
from typing import Final

IPV6_GROUP_PREFIX: Final = 64
NOT_AN_ADDRESS_LENGTH: Final = 32  # a key of the longest username and network fits its column
FIRST_DELAY_S: Final = 1.0
UNKNOWN_NETWORK: Final = "unknown"
# What is left of an address that is not an IP (a test client, a Unix socket): never the
# separator the throttle keys put between a username and a network.
_NOT_NETWORK_TEXT: Final = re.compile(r"[^0-9A-Za-z.:_-]")


def client_network(address: str) -> str:
    """The network `address` is counted in: `203.0.113.5` itself, `2001:db8:1:2::/64` for any
    address in that /64, an IPv4-mapped IPv6 address as its IPv4 address. What does not
    parse as an address is its own network (lower-cased, with anything but letters, digits,
    `.`, `:`, `_` and `-` replaced, at most 32 characters)."""
    text = address.strip()
    if not text:
        return UNKNOWN_NETWORK
    try:
        parsed = ip_address(text)
    except ValueError:
        return _NOT_NETWORK_TEXT.sub("_", text.lower())[:NOT_AN_ADDRESS_LENGTH]
    if isinstance(parsed, IPv6Address) and parsed.ipv4_mapped is not None:
        parsed = parsed.ipv4_mapped
    if isinstance(parsed, IPv4Address):
        return str(parsed)
    host_bits = 128 - IPV6_GROUP_PREFIX
    first = (int(parsed) >> host_bits) << host_bits  # no zone id: fe80::1%eth0 too
    return str(IPv6Network((first, IPV6_GROUP_PREFIX)))


def slowdown_seconds(failures: int, limit: int, cap_s: float) -> float:
    """How long the attempt numbered `failures` (this one included) waits when `limit`
    failures for one username from every network were reached: nothing up to the limit,
    then 1 s, 2 s, 4 s … for each attempt over it, never more than `cap_s`."""
    over = failures - limit
    if over <= 0:
        return 0.0
    return float(min(cap_s, FIRST_DELAY_S * 2.0 ** min(over - 1, 62)))
