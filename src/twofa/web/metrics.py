"""`GET /metrics`: the gateway's Prometheus metrics (twofa.telemetry), for a scraper only.

Off unless `[metrics] enabled` (404, as for any unknown path). Enabled, a scrape passes every
rule the settings set: its address in `networks` (the peer's; behind a trusted proxy, the
forwarded one, as for every page), else 403; and `Authorization: Bearer <token>`, else 401
without the header and 403 with a wrong one, compared in constant time. The numbers say how
busy the gateway is and how sign-ins go: nothing an outsider should read.

A raw ASGI handler like forward-auth (`forward_auth.FAST_ROUTES`): a scrape needs no session,
no CSRF token (it is a GET that changes nothing) and none of FastAPI's machinery.
"""

from __future__ import annotations

from typing import Final

from starlette.types import Scope

from twofa.domain.access import in_networks
from twofa.domain.client import client_address
from twofa.security.tokens import same_token
from twofa.services.runtime import Gateway
from twofa.telemetry import CONTENT_TYPE, metrics_page
from twofa.web.context import raw_headers
from twofa.web.fast_response import FastResponse, RawHeaders, refused

_READ: Final = frozenset({b"authorization", b"x-forwarded-for"})
_JOINED: Final = frozenset({b"x-forwarded-for"})
_CHALLENGE: Final[RawHeaders] = [(b"www-authenticate", b'Bearer realm="twofa metrics"')]
_NOT_FOUND: Final = refused("Not Found", 404)


def _bearer_token(authorization: str) -> str | None:
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def metrics(gateway: Gateway, scope: Scope) -> FastResponse:
    rules = gateway.settings.metrics
    if not rules.enabled:
        return _NOT_FOUND
    headers = raw_headers(scope["headers"], _READ, joined=_JOINED)
    if rules.networks:
        client = scope.get("client")
        peer = client[0] if client else ""
        trusts_proxy = gateway.forward_auth.trusts_proxy
        address = peer
        if trusts_proxy(peer):
            address = client_address(headers.get(b"x-forwarded-for", ""), peer, trusts_proxy)
        if not in_networks(address, rules.networks):
            return refused("metrics: not from an allowed network")
    if rules.token is not None:
        given = _bearer_token(headers.get(b"authorization", ""))
        if given is None:
            return refused("metrics: a bearer token is needed", 401, _CHALLENGE)
        if not same_token(rules.token.get_secret_value(), given):
            return refused("metrics: wrong token")
    body = metrics_page()
    return FastResponse(
        200,
        [
            (b"content-type", CONTENT_TYPE.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
        ],
        body,
    )
