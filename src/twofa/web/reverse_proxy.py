"""The built-in reverse proxy (`twofa serve --upstream URL`) for small set-ups without nginx,
Traefik or Caddy: requests for a protected domain are checked like forward-auth, then passed
to the upstream application with the identity headers; everything else is twofa itself. The
path is checked in its normal form and sent on in exactly that form (domain.request_paths), so
the application serves the resource the rules decided about.

Bodies stream both ways (an upload or a download is never held in memory); hop-by-hop headers
are dropped; any header the client sent whose name starts with `Remote` is removed before the
app sees the request: not only `Remote-User`, but its aliases (`Remote_User`, `Remote.User`),
which backends that read headers as CGI or WSGI variables take for it. The client's own
`X-Forwarded-*` headers are replaced, not added to (this proxy is the first hop: the address
it saw is the client's), and twofa's cookies never reach the app.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator, Mapping
from typing import Final

import httpx
from fastapi import FastAPI
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from twofa.domain.request_paths import PathRefusal
from twofa.services.access.forward_auth import ForwardAuthService, OriginalRequest, Verdict
from twofa.services.runtime import Gateway
from twofa.web.context import SESSION_COOKIE, cookies_for_the_app
from twofa.web.forward_auth import DECIDED, identity_headers, measured_check
from twofa.web.security_headers import security_headers

HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
IDENTITY_PREFIX: Final = "remote"  # the identity headers and every alias of them
# Set here from what this proxy saw; whatever the client sent under these names is dropped.
REPLACED: Final = frozenset({"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "cookie"})


class ReverseProxy:
    """ASGI wrapper: a protected domain goes to the upstream, any other host to twofa."""

    def __init__(
        self, twofa: FastAPI, upstream: str, http: httpx.AsyncClient | None = None
    ) -> None:
        self._twofa = twofa
        self._upstream = upstream.rstrip("/")
        self._upstream_path = urllib.parse.urlsplit(self._upstream).path
        self._http = http or httpx.AsyncClient(timeout=httpx.Timeout(60, connect=10))
        self._hardening: Mapping[str, str] | None = None  # this proxy's own answers' headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gateway: Gateway | None = getattr(self._twofa.state, "gateway", None)
        if scope["type"] != "http" or gateway is None:
            await self._twofa(scope, receive, send)  # lifespan, websockets, before start-up
            return
        request = Request(scope, receive)
        if not gateway.forward_auth.protects(request.headers.get("host", "")):
            await self._twofa(scope, receive, send)
            return
        portal = gateway.settings.public_url
        measured = gateway.settings.metrics.enabled  # forward-auth counted and timed
        response = await self._proxied(request, gateway.forward_auth, portal, measured)
        if not isinstance(response, StreamingResponse):  # this proxy's own answer, not the app's
            if self._hardening is None:  # the settings do not change while serving
                self._hardening = security_headers(gateway.settings)
            for name, value in self._hardening.items():
                response.headers.setdefault(name, value)
        await response(scope, receive, send)

    async def _proxied(
        self, request: Request, forward_auth: ForwardAuthService, portal: str, measured: bool
    ) -> Response:
        # The path in normal form is what is checked and what the app gets (`/public/../x`
        # is checked and sent as `/x`); the query goes on as it came.
        path = forward_auth.normal_path(_raw_path(request.scope))
        if isinstance(path, PathRefusal):
            if measured:
                DECIDED[Verdict.BAD_PATH].inc()  # the check's verdict for it, as forward-auth's
            return PlainTextResponse(f"Bad request: {path.value}.", status_code=400)
        query = request.scope.get("query_string", b"").decode("latin-1")
        original = OriginalRequest(
            request.url.scheme,
            request.headers.get("host", ""),
            path.path + (f"?{query}" if query else ""),
            request.client.host if request.client else "",
        )
        token = request.cookies.get(SESSION_COOKIE)
        if measured:
            answer = await measured_check(forward_auth, token, original)
        else:
            answer = await forward_auth.check(token, original)
        if answer.verdict is Verdict.SIGN_IN:
            target = f"{portal.rstrip('/')}/login?" + urllib.parse.urlencode({"next": original.url})
            return RedirectResponse(target, status_code=302)
        if answer.verdict is Verdict.BAD_PATH:
            return PlainTextResponse(f"Bad request: {answer.reason}.", status_code=400)
        if answer.verdict is not Verdict.ALLOW:
            return PlainTextResponse("Access denied.", status_code=403)
        headers = [
            (name, value)
            for name, value in request.headers.items()
            if name not in HOP_BY_HOP
            and name not in REPLACED
            and not name.startswith(IDENTITY_PREFIX)
        ]
        if cookies := cookies_for_the_app("; ".join(request.headers.getlist("cookie"))):
            headers.append(("cookie", cookies))
        headers.append(("x-forwarded-for", original.client_ip))
        headers.append(("x-forwarded-proto", original.scheme))
        headers.append(("x-forwarded-host", original.host))
        sent = [(name.encode(), value.encode()) for name, value in headers]
        if answer.user is not None:  # the client's own were dropped above: none at all here
            sent += identity_headers(answer)
        upstream_request = self._http.build_request(
            request.method,
            self._upstream + original.uri,
            headers=sent,
            content=_body(request),
            # The request line, byte for byte: httpx would otherwise rework the URL's path
            # on its own terms after the check.
            extensions={"target": (self._upstream_path + original.uri).encode("latin-1")},
        )
        try:
            upstream = await self._http.send(upstream_request, stream=True)
        except httpx.HTTPError:
            return PlainTextResponse("The application is not reachable.", status_code=502)
        response = StreamingResponse(
            upstream.aiter_raw(),
            status_code=upstream.status_code,
            background=BackgroundTask(upstream.aclose),
        )
        # Raw pairs, not a dict: an app may set several cookies in one response.
        response.raw_headers = [
            (name.lower(), value)
            for name, value in upstream.headers.raw
            if name.lower().decode("latin-1") not in HOP_BY_HOP
        ]
        return response


def _raw_path(scope: Scope) -> str:
    """The path as the client sent it (a server that gives no `raw_path` gets its decoded
    path escaped again), one character per byte."""
    raw: bytes | None = scope.get("raw_path")
    if raw is None:
        return urllib.parse.quote(scope["path"], safe="/:@!$&'()*+,;=")
    return raw.decode("latin-1")


async def _body(request: Request) -> AsyncIterator[bytes]:
    async for chunk in request.stream():
        yield chunk
