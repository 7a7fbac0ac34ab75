"""Where the Duo API lives and how to reach it: TLS with certificate checks to real Duo,
plain HTTP only to a simulator on this machine.

An admin types an API hostname; `DuoEndpoint.parse` turns it into the host that is signed and
the URL that is dialled, and refuses anything that would send signed requests in clear text
over a network. Only Duo's own hosts are accepted unless the caller allows custom ones (a
simulator, a test proxy): an API hostname pointed inward would make the key check a probe of
the internal network.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from dataclasses import dataclass
from typing import Final

import httpx

from twofa.duo.transport import PooledTransport

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)
DUO_HOST_SUFFIXES: Final = (".duosecurity.com", ".duofederal.com", ".duosecurity.eu")
_LOOPBACK_NAMES: Final = frozenset({"localhost"})


class InvalidEndpoint(ValueError):
    """The API hostname cannot be used; the message says why in words an admin understands."""


class CustomHostRefused(InvalidEndpoint):
    """A well-formed host that is not one of Duo's, while custom hosts are not allowed."""


def is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_duo_hostname(host: str) -> bool:
    return host.endswith(DUO_HOST_SUFFIXES)


def _is_official(scheme: str, host: str, port: int | None) -> bool:
    """Duo's own API: https to a host under one of Duo's domains, on the standard port."""
    return scheme == "https" and is_duo_hostname(host) and port in (None, 443)


@dataclass(frozen=True)
class DuoEndpoint:
    """`signed_host` goes into the canonical request; `base_url` is what the client dials."""

    signed_host: str
    base_url: str

    @property
    def uses_tls(self) -> bool:
        return self.base_url.startswith("https://")

    @classmethod
    def parse(cls, value: str, *, allow_custom_host: bool = False) -> DuoEndpoint:
        """Accepts `api-xxxxxxxx.duosecurity.com` (or `https://` and Duo's other domains);
        with `allow_custom_host` also `https://any-host[:port]` and `http://127.0.0.1:PORT`
        (a local simulator). Anything else is refused, a foreign host as `CustomHostRefused`."""
        text = value.strip()
        if not text:
            raise InvalidEndpoint("the API hostname is empty")
        has_scheme = "://" in text
        try:
            parsed = urllib.parse.urlsplit(text if has_scheme else f"https://{text}")
        except ValueError as exc:  # e.g. an unbalanced "[" in an IPv6 literal
            raise InvalidEndpoint(f"{text!r} is not a valid host name: {exc}") from None
        if parsed.scheme not in ("http", "https"):
            raise InvalidEndpoint(f"unsupported scheme {parsed.scheme!r}; use https")
        if parsed.path not in ("", "/") or parsed.query or parsed.fragment or parsed.username:
            raise InvalidEndpoint(
                "the API hostname must be a bare host name, e.g. api-1234abcd.duosecurity.com"
            )
        host = (parsed.hostname or "").lower()
        try:
            port = parsed.port
        except ValueError:
            raise InvalidEndpoint("the port is not a number between 1 and 65535") from None
        if not host or not (_HOSTNAME.match(host) or is_loopback(host)):
            raise InvalidEndpoint(f"{host or text!r} is not a valid host name")
        if parsed.scheme == "http" and not is_loopback(host):
            raise InvalidEndpoint(
                "plain http is only allowed to a simulator on this machine (127.0.0.1 or localhost)"
            )
        if port == 0:
            raise InvalidEndpoint("the port is not a number between 1 and 65535")
        if not allow_custom_host and not _is_official(parsed.scheme, host, port):
            raise CustomHostRefused(
                f"{host!r} is not a Duo API host (such as api-1234abcd.duosecurity.com, "
                "over https on the standard port)"
            )
        bracketed = f"[{host}]" if ":" in host else host  # an IPv6 literal keeps its brackets
        netloc = f"{bracketed}:{port}" if port is not None else bracketed
        return cls(signed_host=netloc, base_url=f"{parsed.scheme}://{netloc}")


def make_http_client(
    endpoint: DuoEndpoint, *, max_connections: int = 100, connect_timeout: float = 5.0
) -> httpx.AsyncClient:
    """An HTTP client for one Duo endpoint: certificate and host-name checks always on for TLS.

    Each pending push holds one long-poll connection, so size `max_connections` for the
    number of pushes a node should keep open at once; the pooled transport stays fast there.
    """
    return httpx.AsyncClient(
        base_url=endpoint.base_url,
        transport=PooledTransport(max_connections=max_connections),
        timeout=httpx.Timeout(connect_timeout, read=15.0),
        follow_redirects=False,
    )
