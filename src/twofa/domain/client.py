"""Who is on the other end of a request, as far as audit and throttling need to know."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ClientInfo:
    ip: str = ""
    user_agent: str = ""


CLI = ClientInfo(ip="", user_agent="twofa-cli")
NO_CLIENT = ClientInfo()


def client_address(forwarded_for: str, peer: str, is_trusted_proxy: Callable[[str], bool]) -> str:
    """The address the nearest untrusted hop came from, for a request whose `peer` is a
    trusted proxy: X-Forwarded-For read from the right, past every trusted proxy. Each proxy
    appends the address it saw, so entries left of the first untrusted one are whatever the
    client claimed; with every hop trusted, the left-most. No entries: the peer itself."""
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not is_trusted_proxy(hop):
            return hop
    return hops[0] if hops else peer
