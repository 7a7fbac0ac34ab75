"""The forward-auth endpoints reverse proxies call before every request to a protected app.

- `/authz/nginx` for nginx `auth_request`: 200 with the identity headers, 401 when the
  browser must sign in (nginx turns it into a redirect to the portal), 403 when refused.
- `/authz/forward` for Traefik ForwardAuth and Caddy `forward_auth`: 200 with the headers,
  302 to the portal with the original URL, or 403.
- Both answer 400 for a path that cannot be checked safely (domain.request_paths).

The original URL comes from `X-Original-URL` (nginx) or `X-Forwarded-Proto/Host/Uri`
(Traefik, Caddy), and the client address from `X-Forwarded-For`: believed only from a trusted
proxy, and only for a configured domain.

This is the hot path of every protected app, so these are raw ASGI handlers dispatched by
`GatewayApp` before FastAPI and its middlewares: one pass over the request headers, one
cached session lookup, and a response whose constant headers are encoded once. With the
metrics on (`[metrics] enabled`), each check is counted by verdict and timed
(twofa.telemetry), here and in the built-in proxy (`measured_check`); off, the routes are
built without it (`fast_routes`): a few microseconds a check nobody would read.
"""

from __future__ import annotations

import json
import logging
import re
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from time import perf_counter
from typing import Final, NamedTuple

from starlette.types import Scope, Send

from twofa.domain.client import client_address
from twofa.services.access.forward_auth import (
    UNSAFE_IN_HEADERS,
    AuthzAnswer,
    ForwardAuthService,
    OriginalRequest,
    Verdict,
)
from twofa.services.runtime import Gateway
from twofa.telemetry import FORWARD_AUTH_DECISIONS, FORWARD_AUTH_SECONDS
from twofa.web.context import CookieSplit, raw_headers, split_cookie_header
from twofa.web.fast_response import HARDENING, FastResponse, RawHeaders, refused
from twofa.web.metrics import metrics
from twofa.web.unavailable import RETRY_AFTER_S, database_away

log = logging.getLogger(__name__)

FastHandler = Callable[[Gateway, Scope], Awaitable[FastResponse]]

IDENTITY_HEADERS: Final = (b"remote-user", b"remote-name", b"remote-email", b"remote-groups")
_PROXY_HEADERS: Final = frozenset(
    {
        b"cookie",
        b"x-original-url",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-uri",
    }
)
_JOINED: Final = frozenset({b"x-forwarded-for"})
# Answers a browser may see (a refusal, Traefik's and Caddy's redirect, errors) carry the
# same hardening as every page. An allow and nginx's 401 go only to the proxy, which never
# passes them on (it copies the identity headers it is told to, or serves its own page),
# so they carry just what the proxy reads: every header costs the server time per request.
_ALWAYS: Final[RawHeaders] = HARDENING
_TO_PROXY: Final[RawHeaders] = [(b"content-length", b"0"), (b"cache-control", b"no-store")]
_EMPTY_BODY: Final[RawHeaders] = [(b"content-length", b"0"), *_ALWAYS]
_ANONYMOUS: Final[RawHeaders] = [(name, b"") for name in IDENTITY_HEADERS]
_HEALTHY: Final[RawHeaders] = [
    (b"content-type", b"text/plain; charset=utf-8"),
    (b"content-length", b"2"),
    *_ALWAYS,
]
_URL_SAFE: Final = ":/%#?=@[]!$&'()*+,;"  # what Starlette's RedirectResponse leaves unquoted
_AFTER_AUTHORITY: Final = re.compile(r"[^:/?#]+://[^/?#]*(.*)", re.DOTALL)
# Bound once: `labels()` looks its child up under a lock at every call.
DECIDED: Final = {verdict: FORWARD_AUTH_DECISIONS.labels(verdict.value) for verdict in Verdict}
UNAVAILABLE_COUNT: Final = FORWARD_AUTH_DECISIONS.labels("unavailable")
_ERROR_COUNT: Final = FORWARD_AUTH_DECISIONS.labels("error")


class ProxyHeaders(NamedTuple):
    """The request headers forward-auth reads, as latin-1 text (`raw_headers`: the first of
    each, every X-Forwarded-For line). A named tuple: it is built for every request, and a
    frozen dataclass costs several times as much to construct."""

    cookie: str = ""
    original_url: str = ""
    forwarded_for: str = ""
    forwarded_proto: str = ""
    forwarded_host: str = ""
    forwarded_uri: str = "/"

    @classmethod
    def read(cls, raw: Iterable[tuple[bytes, bytes]]) -> ProxyHeaders:
        found = raw_headers(raw, _PROXY_HEADERS, joined=_JOINED)
        return cls(
            found.get(b"cookie", ""),
            found.get(b"x-original-url", ""),
            found.get(b"x-forwarded-for", ""),
            found.get(b"x-forwarded-proto", ""),
            found.get(b"x-forwarded-host", ""),
            found.get(b"x-forwarded-uri", "/"),
        )

    @property
    def cookies(self) -> CookieSplit:
        return split_cookie_header(self.cookie)


def original_request(
    headers: ProxyHeaders, peer: str, is_trusted_proxy: Callable[[str], bool]
) -> OriginalRequest | None:
    """The proxied request, or None when the headers do not describe one. Only call it for
    a trusted proxy: these headers are whatever the caller says."""
    client_ip = client_address(headers.forwarded_for, peer, is_trusted_proxy)
    if original := headers.original_url:
        try:
            parts = urllib.parse.urlsplit(original)
        except ValueError:
            return None
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.username:
            return None
        # The path and query as nginx passes them on ($request_uri), not urlsplit's: it drops
        # tabs and line breaks and cuts at `#`, so the check would see less than the app.
        tail = _AFTER_AUTHORITY.match(original)
        uri = tail[1] if tail and tail[1].startswith("/") else "/" + (tail[1] if tail else "")
        return OriginalRequest(parts.scheme, parts.netloc.lower(), uri, client_ip)
    scheme, host, uri = headers.forwarded_proto, headers.forwarded_host, headers.forwarded_uri
    if scheme not in ("http", "https") or not host or not uri.startswith("/"):
        return None
    if any(ch in host for ch in "/@\\ ") or any(ch in uri for ch in "\r\n"):
        return None
    return OriginalRequest(scheme, host.lower(), uri, client_ip)


def app_cookie_header(cookies: CookieSplit) -> RawHeaders:
    """On an allow, the Cookie header the proxy sets on the request to the app: the
    browser's without twofa's session and device cookies, so an application under the cookie
    domain never holds a bearer session. Always sent (empty when nothing is left): nginx sets
    it from `$upstream_http_cookie`, Traefik's `authResponseHeaders` and Caddy's
    `copy_headers` replace the request's with it."""
    return [(b"cookie", cookies.for_the_app.translate(UNSAFE_IN_HEADERS).encode("latin-1"))]


def identity_headers(answer: AuthzAnswer) -> RawHeaders:
    """On an allow, the identity headers, always all four: empty for an anonymous (bypass)
    request, so a proxy that copies them (Caddy's copy_headers) overwrites whatever the
    client sent instead of passing it, or a placeholder, on to the app."""
    if answer.verdict is not Verdict.ALLOW:
        return []
    if answer.user is None:
        return _ANONYMOUS
    return list(zip(IDENTITY_HEADERS, answer.user.header_values, strict=True))


def _not_allowed(answer: AuthzAnswer) -> FastResponse:
    """A refusal: 400 for a path no normal form is safe for (nginx's auth_request turns any
    status but 2xx, 401 and 403 into a 500, which deploy/nginx/twofa.conf turns back into a
    400; Caddy and Traefik pass it on), 403 for the rest."""
    return refused(answer.reason, 400 if answer.verdict is Verdict.BAD_PATH else 403)


class Answered(NamedTuple):
    answer: AuthzAnswer
    original: OriginalRequest
    cookies: CookieSplit


async def measured_check(
    forward_auth: ForwardAuthService, token: str | None, original: OriginalRequest
) -> AuthzAnswer:
    """`forward_auth.check`, counted by verdict and timed. A check that fails is counted as
    `unavailable` (the database is away: the caller answers 503) or `error` (a 500)."""
    started = perf_counter()
    try:
        answer = await forward_auth.check(token, original)
    except Exception as exc:
        (UNAVAILABLE_COUNT if database_away(exc) else _ERROR_COUNT).inc()
        raise
    finally:
        FORWARD_AUTH_SECONDS.observe(perf_counter() - started)
    DECIDED[answer.verdict].inc()
    return answer


def _unchecked(measured: bool) -> Answered | None:
    """A request refused before the check (an untrusted caller, no request described)."""
    if measured:
        DECIDED[Verdict.FORBIDDEN].inc()
    return None


async def _answer(gateway: Gateway, scope: Scope, measured: bool) -> Answered | None:
    """The check's answer, or None (counted as forbidden when `measured`) for a caller that
    is not a trusted proxy or headers that do not describe a request."""
    forward_auth = gateway.forward_auth
    client = scope.get("client")
    peer = client[0] if client else ""
    if not forward_auth.trusts_proxy(peer):
        return _unchecked(measured)
    headers = ProxyHeaders.read(scope["headers"])
    original = original_request(headers, peer, forward_auth.trusts_proxy)
    if original is None:
        return _unchecked(measured)
    cookies = headers.cookies
    if measured:
        answer = await measured_check(forward_auth, cookies.session_token, original)
    else:
        answer = await forward_auth.check(cookies.session_token, original)
    return Answered(answer, original, cookies)


async def nginx_auth_request(
    gateway: Gateway, scope: Scope, measured: bool = False
) -> FastResponse:
    answered = await _answer(gateway, scope, measured)
    if answered is None:
        return refused("forward-auth: not called by a trusted proxy with X-Original-URL")
    answer, _, cookies = answered
    if answer.verdict is Verdict.ALLOW:
        allow = [*identity_headers(answer), *app_cookie_header(cookies), *_TO_PROXY]
        return FastResponse(200, allow)
    if answer.verdict is Verdict.SIGN_IN:
        return FastResponse(401, _TO_PROXY)
    return _not_allowed(answer)


async def traefik_caddy_forward_auth(
    gateway: Gateway, scope: Scope, measured: bool = False
) -> FastResponse:
    answered = await _answer(gateway, scope, measured)
    if answered is None:
        return refused("forward-auth: not called by a trusted proxy with X-Forwarded-* headers")
    answer, original, cookies = answered
    if answer.verdict is Verdict.ALLOW:
        allow = [*identity_headers(answer), *app_cookie_header(cookies), *_TO_PROXY]
        return FastResponse(200, allow)
    if answer.verdict is Verdict.SIGN_IN:
        portal = gateway.settings.public_url.rstrip("/")
        target = f"{portal}/login?" + urllib.parse.urlencode({"next": original.url})
        location = urllib.parse.quote(target, safe=_URL_SAFE).encode("latin-1")
        return FastResponse(302, [(b"location", location), *_EMPTY_BODY])
    return _not_allowed(answer)


async def healthz(gateway: Gateway, scope: Scope) -> FastResponse:
    """A bare 200 (liveness): for load balancers, and the benchmark's yardstick for the check
    above."""
    return FastResponse(200, _HEALTHY, b"ok")


async def healthz_ready(gateway: Gateway, scope: Scope) -> FastResponse:
    """Readiness: 200 while the database answers, 503 while it does not, so a load balancer
    takes the node out instead of sending it sign-ins it cannot serve. The body says whether
    the change feed is live too; a node without it still serves (reading every second)."""
    if not await gateway.database_answers():
        return refused("not ready: the database cannot be reached", 503)
    state = gateway.feed_state
    feed = "none" if state is None or state.kind == "none" else "lost"
    if state is not None and state.live_generation is not None:
        feed = "live"
    body = json.dumps({"ready": True, "change_feed": feed}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *_ALWAYS,
    ]
    return FastResponse(200, headers, body)


FAST_ROUTES: Final[dict[str, FastHandler]] = {
    "/authz/nginx": nginx_auth_request,
    "/authz/forward": traefik_caddy_forward_auth,
    "/healthz": healthz,
    "/healthz/ready": healthz_ready,
    "/metrics": metrics,
}


def fast_routes(measured: bool) -> dict[str, FastHandler]:
    """`FAST_ROUTES`, with the forward-auth checks counted and timed when `measured` (the
    metrics are on): decided once, when the app is built, not per request."""
    if not measured:
        return dict(FAST_ROUTES)
    return {
        **FAST_ROUTES,
        "/authz/nginx": partial(nginx_auth_request, measured=True),
        "/authz/forward": partial(traefik_caddy_forward_auth, measured=True),
    }


async def serve_fast_route(
    handler: FastHandler, gateway: Gateway, scope: Scope, send: Send
) -> None:
    """Runs a fast route with the method check and the last-resort error answer FastAPI's
    middlewares would otherwise give: a failure is a 500 (the proxy refuses), never an allow."""
    if scope["method"] not in ("GET", "HEAD"):
        response = _NOT_ALLOWED
    else:
        try:
            response = await handler(gateway, scope)
        except Exception as exc:
            if database_away(exc):  # never an allow; the proxy refuses until it is back
                log.warning("forward-auth: %s: the database cannot be reached", scope["path"])
                response = _UNAVAILABLE
            else:
                log.exception("forward-auth: %s failed", scope["path"])
                response = _FAILED
    await send(
        {"type": "http.response.start", "status": response.status, "headers": response.headers}
    )
    await send({"type": "http.response.body", "body": response.body})


_NOT_ALLOWED: Final = FastResponse(
    405, [(b"allow", b"GET, HEAD"), (b"content-length", b"18"), *_ALWAYS], b"Method Not Allowed"
)
_FAILED: Final = FastResponse(500, [(b"content-length", b"0"), *_ALWAYS])
_UNAVAILABLE: Final = FastResponse(
    503, [(b"content-length", b"0"), (b"retry-after", RETRY_AFTER_S.encode()), *_ALWAYS]
)
