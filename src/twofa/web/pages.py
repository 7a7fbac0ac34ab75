"""Sign-in, sign-out, the home page and the demo application behind the gateway."""

from __future__ import annotations

import urllib.parse

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from twofa.domain.redirects import safe_redirect
from twofa.services.access.forward_auth import OriginalRequest, Verdict
from twofa.services.signin.login import LoginResult
from twofa.services.state.sessions import Level
from twofa.web.context import (
    DEVICE_COOKIE,
    SESSION_COOKIE,
    clear_session_cookie,
    client_of,
    current_session,
    gateway_of,
    session_at,
    set_session_cookie,
)
from twofa.web.duo_pages import completed
from twofa.web.templating import render

router = APIRouter()

LOGIN_REFUSED = "Invalid username or password."
LOGIN_LOCKED = "Too many failed sign-in attempts. Try again in a few minutes."
LOGIN_UNAVAILABLE = (
    "Your password cannot be checked right now: the user directory is not answering. "
    "Try again in a few minutes."
)
LOGIN_PROBLEMS = {
    LoginResult.REFUSED: (LOGIN_REFUSED, 401),
    LoginResult.LOCKED: (LOGIN_LOCKED, 429),
    LoginResult.UNAVAILABLE: (LOGIN_UNAVAILABLE, 503),
}


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def checked_next(request: Request, target: str | None) -> str:
    gateway = gateway_of(request)
    own_host = urllib.parse.urlsplit(gateway.settings.public_url).hostname or ""
    allowed = (*gateway.settings.allowed_redirect_hosts, *gateway.settings.access.domains)
    return safe_redirect(target, own_host, allowed)


async def needs_second_factor_for(request: Request, target: str) -> bool:
    """Whether the protected app at `target` wants a second factor this session has not
    passed (a two-factor access rule, a user whose own policy does not ask for one)."""
    parts = urllib.parse.urlsplit(target)
    forward_auth = gateway_of(request).forward_auth
    if not parts.hostname or not forward_auth.protects(parts.hostname):
        return False
    uri = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    original = OriginalRequest(parts.scheme, parts.netloc, uri, client_of(request).ip)
    answer = await forward_auth.check(request.cookies.get(SESSION_COOKIE), original)
    return answer.verdict is Verdict.SIGN_IN and answer.user is not None


@router.get("/login")
async def login_page(request: Request, next: str | None = None) -> Response:
    gateway = gateway_of(request)
    session = await current_session(request)
    landing = "/app" if gateway.settings.is_demo else None  # the demo lands in its demo app
    next_url = checked_next(request, next or landing)
    if session is not None and session.level is Level.SIGNED_IN:
        if await needs_second_factor_for(request, next_url):
            await gateway.sessions.set_next_url(session, next_url)
            return redirect("/2fa/elevate")
        return redirect(next_url)
    if session is not None and session.level is Level.AWAITING_SECOND_FACTOR:
        return redirect("/2fa")
    token = None
    if session is None:
        token, session = await gateway.sessions.open(client_of(request), next_url)
    elif next is not None:
        await gateway.sessions.set_next_url(session, next_url)
    notice = "You have been signed out." if request.query_params.get("signed_out") else None
    response = render(request, "login.html", csrf_token=session.csrf_token, notice=notice)
    if token is not None:
        set_session_cookie(request, response, token)
    return response


@router.post("/login")
async def login_submit(request: Request) -> Response:
    gateway = gateway_of(request)
    session = await current_session(request)
    if session is None or session.level is not Level.ANONYMOUS:
        return redirect("/login")
    form = await request.form()
    username, password = str(form.get("username", "")), str(form.get("password", ""))
    outcome = await gateway.login.sign_in(session, username, password, client_of(request))
    if outcome.token is None or outcome.session is None:
        message, status = LOGIN_PROBLEMS[outcome.result]
        return render(
            request,
            "login.html",
            status_code=status,
            csrf_token=session.csrf_token,
            error=message,
            username=username,
        )
    if outcome.result is LoginResult.SECOND_FACTOR:
        remembered = await gateway.devices.skip_second_factor(
            outcome.session, request.cookies.get(DEVICE_COOKIE), client_of(request)
        )
        if remembered is not None:
            return completed(request, remembered)
    target = outcome.session.next_url if outcome.result is LoginResult.SIGNED_IN else "/2fa"
    response = redirect(target)
    set_session_cookie(request, response, outcome.token)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    session = await current_session(request)
    response = redirect("/login?signed_out=1")
    if session is not None:
        await gateway_of(request).sessions.end(session)
    clear_session_cookie(request, response)
    return response


@router.get("/")
async def home(request: Request) -> Response:
    session = await session_at(request, Level.SIGNED_IN)
    return await _signed_in_page(
        request, session.user_id, session.csrf_token, "home.html", "Signed in"
    )


@router.get("/app")
@router.get("/app/{rest:path}")
async def demo_app(request: Request, rest: str = "") -> Response:
    """A stand-in for the application twofa protects (Jira, a dashboard …) in the demo."""
    session = await session_at(request, Level.SIGNED_IN)
    return await _signed_in_page(
        request, session.user_id, session.csrf_token, "demo_app.html", "Demo app"
    )


async def _signed_in_page(
    request: Request, user_id: int | None, csrf_token: str, template: str, title: str
) -> Response:
    accounts = gateway_of(request).console_access
    account = await accounts.signed_in_account(user_id) if user_id is not None else None
    name = account.display_name if account else "unknown"
    is_admin = bool(account and account.is_admin)
    return render(
        request, template, title=title, display_name=name, csrf_token=csrf_token, is_admin=is_admin
    )
