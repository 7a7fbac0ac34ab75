"""The forward-auth endpoints reverse proxies call before every request to a protected app,
kept on plain Starlette routes (no dependency injection: this is the hot path).

- `/authz/nginx` for nginx `auth_request`: 200 with the identity headers, 401 when the
  browser must sign in (nginx turns it into a redirect to the portal), 403 when refused.
- `/authz/forward` for Traefik ForwardAuth and Caddy `forward_auth`: 200 with the headers,
  302 to the portal with the original URL, or 403.

The original URL comes from `X-Original-URL` (nginx) or `X-Forwarded-Proto/Host/Uri`
(Traefik, Caddy), and the client address from `X-Forwarded-For`: believed only from a trusted
proxy, and only for a configured domain.
"""

from __future__ import annotations

import urllib.parse
from typing import Final

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from twofa.services.forward_auth import AuthzAnswer, OriginalRequest, Verdict
from twofa.web.context import SESSION_COOKIE, forwarded_client_ip, gateway_of

IDENTITY_HEADERS: Final = ("remote-user", "remote-name", "remote-email", "remote-groups")
_UNSAFE = str.maketrans("", "", "\r\n\x00")


def original_request(request: Request, trusted: bool) -> OriginalRequest | None:
    """The proxied request, or None when the headers do not describe one."""
    if not trusted:
        return None
    headers = request.headers
    peer = request.client.host if request.client else ""
    client_ip = forwarded_client_ip(headers.get("x-forwarded-for", ""), peer)
    if original := headers.get("x-original-url"):
        try:
            parts = urllib.parse.urlsplit(original)
        except ValueError:
            return None
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.username:
            return None
        uri = parts.path or "/"
        if parts.query:
            uri += "?" + parts.query
        return OriginalRequest(parts.scheme, parts.netloc.lower(), uri, client_ip)
    scheme = headers.get("x-forwarded-proto", "")
    host = headers.get("x-forwarded-host", "")
    uri = headers.get("x-forwarded-uri", "/")
    if scheme not in ("http", "https") or not host or not uri.startswith("/"):
        return None
    if any(ch in host for ch in "/@\\ ") or any(ch in uri for ch in "\r\n"):
        return None
    return OriginalRequest(scheme, host.lower(), uri, client_ip)


def _with_identity(response: Response, answer: AuthzAnswer) -> Response:
    """On an allow, the identity headers, always all four: empty for an anonymous (bypass)
    request, so a proxy that copies them (Caddy's copy_headers) overwrites whatever the
    client sent instead of passing it, or a placeholder, on to the app."""
    if answer.verdict is Verdict.ALLOW:
        user = answer.user
        values = (
            (user.username, user.display_name, user.email, ",".join(user.groups))
            if user is not None
            else ("", "", "", "")
        )
        for name, value in zip(IDENTITY_HEADERS, values, strict=True):
            # UTF-8 as bytes: display names are not always Latin-1.
            response.raw_headers.append((name.encode(), value.translate(_UNSAFE).encode()))
    response.headers["cache-control"] = "no-store"
    return response


async def _answer(request: Request) -> tuple[AuthzAnswer | None, OriginalRequest | None]:
    forward_auth = gateway_of(request).forward_auth
    peer = request.client.host if request.client else ""
    original = original_request(request, forward_auth.trusts_proxy(peer))
    if original is None:
        return None, None
    answer = await forward_auth.check(request.cookies.get(SESSION_COOKIE), original)
    return answer, original


def _refused(why: str) -> Response:
    return PlainTextResponse(why, status_code=403, headers={"cache-control": "no-store"})


async def nginx_auth_request(request: Request) -> Response:
    answer, _ = await _answer(request)
    if answer is None:
        return _refused("forward-auth: not called by a trusted proxy with X-Original-URL")
    if answer.verdict is Verdict.ALLOW:
        return _with_identity(Response(status_code=200), answer)
    if answer.verdict is Verdict.SIGN_IN:
        return _with_identity(Response(status_code=401), answer)
    return _refused(answer.reason)


async def traefik_caddy_forward_auth(request: Request) -> Response:
    answer, original = await _answer(request)
    if answer is None or original is None:
        return _refused("forward-auth: not called by a trusted proxy with X-Forwarded-* headers")
    if answer.verdict is Verdict.ALLOW:
        return _with_identity(Response(status_code=200), answer)
    if answer.verdict is Verdict.SIGN_IN:
        portal = gateway_of(request).settings.public_url.rstrip("/")
        target = f"{portal}/login?" + urllib.parse.urlencode({"next": original.url})
        return _with_identity(RedirectResponse(target, status_code=302), answer)
    return _refused(answer.reason)


async def healthz(request: Request) -> Response:
    """A bare 200: for load balancers, and the benchmark's yardstick for the check above."""
    return PlainTextResponse("ok")


FAST_ROUTES: Final = {
    "/authz/nginx": nginx_auth_request,
    "/authz/forward": traefik_caddy_forward_auth,
    "/healthz": healthz,
}


class FastRoutes:
    """Answers the forward-auth and health paths straight from the middleware stack, before
    the router: an exact path match and one handler call, nothing else per request."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = FAST_ROUTES.get(scope["path"]) if scope["type"] == "http" else None
        if handler is None:
            await self._app(scope, receive, send)
            return
        if scope["method"] not in ("GET", "HEAD"):
            response: Response = PlainTextResponse("Method Not Allowed", status_code=405)
        else:
            response = await handler(Request(scope, receive))
        await response(scope, receive, send)
