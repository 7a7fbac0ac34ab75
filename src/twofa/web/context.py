"""Per-request helpers shared by the routes: the gateway, the client, the session cookie and
CSRF. Kept free of route logic so every page checks these the same way."""

from __future__ import annotations

from typing import Final

from fastapi import Request
from starlette.responses import Response

from twofa.domain.client import ClientInfo
from twofa.errors import TwofaError
from twofa.security.tokens import same_token
from twofa.services.runtime import Gateway
from twofa.services.state.sessions import Level, SessionView

SESSION_COOKIE: Final = "twofa_session"
DEVICE_COOKIE: Final = "twofa_device"  # "remember this device": a random token, see services
CSRF_HEADER: Final = "x-csrf-token"


class CsrfError(TwofaError):
    """A state-changing request without the session's CSRF token."""


class SignInRequired(TwofaError):
    """No session at the level this page needs; the user is sent to sign in."""

    def __init__(self, next_url: str = "/") -> None:
        self.next_url = next_url
        super().__init__("sign-in required")


def gateway_of(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


def client_of(request: Request) -> ClientInfo:
    """Who is asking: behind a trusted reverse proxy, the address it forwarded (throttling
    and the audit log need the browser's address, not the proxy's)."""
    ip = request.client.host if request.client else ""
    if gateway_of(request).forward_auth.trusts_proxy(ip):
        ip = forwarded_client_ip(request.headers.get("x-forwarded-for", ""), ip)
    return ClientInfo(ip=ip[:64], user_agent=request.headers.get("user-agent", "")[:300])


def forwarded_client_ip(forwarded_for: str, peer: str) -> str:
    """The address a trusted proxy saw the client come from: the last X-Forwarded-For entry
    (the one that proxy appended; earlier ones are whatever the client claimed), else the
    peer itself."""
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    return hops[-1] if hops else peer


async def current_session(request: Request) -> SessionView | None:
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


async def check_csrf(request: Request, session: SessionView) -> None:
    given = request.headers.get(CSRF_HEADER)
    if given is None:
        form = await request.form()
        field = form.get("csrf_token")
        given = field if isinstance(field, str) else None
    if not given or not same_token(session.csrf_token, given):
        raise CsrfError("missing or wrong CSRF token")


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
