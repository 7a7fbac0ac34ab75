"""The answers of the routes `GatewayApp` serves before FastAPI (forward-auth, health,
metrics: `forward_auth.FAST_ROUTES`): raw ASGI status, headers and body, with the constant
headers encoded once rather than per request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from twofa.web.security_headers import SECURITY_HEADERS

RawHeaders = list[tuple[bytes, bytes]]

# Answers a browser may see (a refusal, Traefik's and Caddy's redirect, errors) carry the
# same hardening as every page.
HARDENING: Final[RawHeaders] = [
    (b"cache-control", b"no-store"),
    *((name.lower().encode(), value.encode()) for name, value in SECURITY_HEADERS.items()),
]


@dataclass(frozen=True)
class FastResponse:
    status: int
    headers: RawHeaders
    body: bytes = b""


def refused(why: str, status: int = 403, extra: RawHeaders | None = None) -> FastResponse:
    """A plain-text refusal with the hardening headers (and `extra`, e.g. WWW-Authenticate)."""
    body = why.encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        *(extra or ()),
        *HARDENING,
    ]
    return FastResponse(status, headers, body)
