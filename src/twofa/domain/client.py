"""Who is on the other end of a request, as far as audit and throttling need to know."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClientInfo:
    ip: str = ""
    user_agent: str = ""


CLI = ClientInfo(ip="", user_agent="twofa-cli")
NO_CLIENT = ClientInfo()
