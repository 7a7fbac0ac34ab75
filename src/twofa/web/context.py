"""Per-request helpers shared by the routes: the gateway, the client and the session cookie.
Kept free of route logic so every page checks these the same way. CSRF is not among them: the
`web/csrf.py` middleware checks it for every unsafe request, so no route can forget it."""

from __future__ import annotations

from collections.abc import Iterable
from http.cookies import _unquote
from typing import Final, NamedTuple

from fastapi import Request
from starlette.responses import Response

from twofa.domain.client import ClientInfo, client_address
from twofa.errors import Forbidden, SessionExpired
from twofa.services.runtime import Gateway
from twofa.services.state.sessions import Level, SessionView

SESSION_COOKIE: Final = "twofa_session"
DEVICE_COOKIE: Final = "twofa_device"  # "remember this device": a random token, see services
CSRF_HEADER: Final = "x-csrf-token"
CSRF_FIELD: Final = "csrf_token"
# The scope["state"] key of the session the CSRF middleware loaded for an unsafe request.
LOADED_SESSION: Final = "twofa.session"


class CsrfError(Forbidden):
    """A state-changing request without the session's CSRF token. Never raised through the
    routes: the middleware of `web/csrf.py` answers with what the app maps this class to."""


class SignInRequired(SessionExpired):
    """No session at the level this page needs; the user is sent to sign in."""

    def __init__(self, next_url: str = "/") -> None:
        self.next_url = next_url
        super().__init__("sign-in required")


# twofa's own cookies, a bearer session and a remembered device, are for the gateway only,
# never for a protected application under the same cookie domain (`split_cookie_header`).


class CookieSplit(NamedTuple):
    session_token: str | None  # twofa's session cookie, as `request.cookies` reads it
    for_the_app: str  # the header without twofa's own cookies


def split_cookie_header(cookie_header: str) -> CookieSplit:
    """One pass over a Cookie header for the gateway's two needs.

    - The session token, read as Starlette's cookie parser (`request.cookies`) reads it, so
      the ASGI handlers and the routes see the same session: split at `;`, name and value
      stripped, the value unquoted, the last of the name winning.
    - The Cookie header a protected application gets: the browser's, without twofa's own. A
      cookie is dropped if the gateway would read it by that name, so no spelling of it slips
      through.
    """
    if SESSION_COOKIE not in cookie_header and DEVICE_COOKIE not in cookie_header:
        return CookieSplit(None, cookie_header)  # the common case for the app, and the cheapest
    token = None
    kept = []
    for chunk in cookie_header.split(";"):
        if "=" in chunk:
            name, value = chunk.split("=", 1)
            name = name.strip()
            if name == SESSION_COOKIE:
                token = _unquote(value.strip())
                continue
            if name == DEVICE_COOKIE:
                continue
        if chunk := chunk.strip():
            kept.append(chunk)
    return CookieSplit(token, "; ".join(kept))


def cookies_for_the_app(cookie_header: str) -> str:
    return split_cookie_header(cookie_header).for_the_app


def raw_headers(
    raw: Iterable[tuple[bytes, bytes]],
    wanted: frozenset[bytes],
    joined: frozenset[bytes] = frozenset(),
) -> dict[bytes, str]:
    """The `wanted` headers of a raw ASGI request as latin-1 text, in one pass: the first of
    each, as Starlette's `Request.headers.get` gives a route; for a name in `joined`, every
    line joined with commas (X-Forwarded-For: a proxy may add a line of its own). For the
    ASGI handlers that run before any route (the CSRF check, forward-auth)."""
    found: dict[bytes, str] = {}
    for name, value in raw:
        if name in wanted:
            if name not in found:
                found[name] = value.decode("latin-1")
            elif name in joined:
                found[name] += "," + value.decode("latin-1")
    return found


def session_token_in(cookie_header: str) -> str | None:
    return split_cookie_header(cookie_header).session_token


def gateway_of(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


def client_of(request: Request) -> ClientInfo:
    """Who is asking: behind a trusted reverse proxy, the address it forwarded (throttling
    and the audit log need the browser's address, not the proxy's)."""
    ip = request.client.host if request.client else ""
    trusts_proxy = gateway_of(request).forward_auth.trusts_proxy
    if trusts_proxy(ip):
        # Every X-Forwarded-For line, in order: a proxy may add its own line, not a comma.
        forwarded_for = ",".join(request.headers.getlist("x-forwarded-for"))
        ip = client_address(forwarded_for, ip, trusts_proxy)
    return ClientInfo(ip=ip[:64], user_agent=request.headers.get("user-agent", "")[:300])


async def current_session(request: Request) -> SessionView | None:
    """An unsafe request's session was loaded already, by the CSRF middleware: reading it
    again would cost a second database round trip on the sign-in path."""
    loaded = request.scope.get("state", {}).get(LOADED_SESSION)
    if isinstance(loaded, SessionView):
        return loaded
    return await gateway_of(request).sessions.load(request.cookies.get(SESSION_COOKIE))


async def session_at(request: Request, level: Level) -> SessionView:
    session = await current_session(request)
    if session is None or session.level is not level:
        raise SignInRequired(request.url.path)
    return session


async def session_in(request: Request, *levels: Level) -> SessionView:
    """The session if it is at one of `levels` (a second factor is asked both at sign-in,
    `PASSWORD`, and to confirm a sensitive change, `SIGNED_IN`)."""
    session = await current_session(request)
    if session is None or session.level not in levels:
        raise SignInRequired(request.url.path)
    return session


def set_session_cookie(request: Request, response: Response, token: str) -> None:
    settings = gateway_of(request).settings
    response.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,
        samesite="lax",
        secure=settings.cookie_secure,
        path="/",
        max_age=settings.session_absolute_hours * 3600,
        domain=settings.access.cookie_domain or None,  # one sign-in for every subdomain
    )


def set_device_cookie(request: Request, response: Response, token: str, days: int) -> None:
    response.set_cookie(
        DEVICE_COOKIE,
        token,
        httponly=True,
        samesite="lax",
        secure=gateway_of(request).settings.cookie_secure,
        path="/",
        max_age=days * 86400,
    )


def clear_session_cookie(request: Request, response: Response) -> None:
    domain = gateway_of(request).settings.access.cookie_domain or None
    response.delete_cookie(SESSION_COOKIE, path="/", domain=domain)
