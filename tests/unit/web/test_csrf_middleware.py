"""The CSRF middleware on a small app of its own: where it finds the token, that the route
still reads the whole form after it (urlencoded, multipart, a body in pieces), that the
session is read once per request, and what a refusal looks like. The walk over every route
of the real app is tests/integration/test_csrf_every_route.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from twofa.services.state.sessions import Level, SessionView
from twofa.web.context import SESSION_COOKIE, CsrfError, current_session
from twofa.web.csrf import CsrfMiddleware

TOKEN = "the-sessions-csrf-token"
SESSION = SessionView("session-1", 7, Level.SIGNED_IN, TOKEN, "/")
COOKIE = {SESSION_COOKIE: "live-cookie"}
UNSAFE = ["POST", "PUT", "PATCH", "DELETE", "PROPFIND"]


class StubSessions:
    def __init__(self) -> None:
        self.loaded: list[str | None] = []

    async def load(self, token: str | None) -> SessionView | None:
        self.loaded.append(token)
        return SESSION if token == COOKIE[SESSION_COOKIE] else None


async def echo(request: Request) -> Response:
    """What the route sees: its session and every form field (a file by its name)."""
    session = await current_session(request)
    form = await request.form()
    fields = {
        name: value if isinstance(value, str) else value.filename for name, value in form.items()
    }
    return JSONResponse({"session": session.id if session else None, "fields": fields})


async def csrf_refused(request: Request, exc: Exception) -> Response:
    return PlainTextResponse("refused by the app's CsrfError mapping", status_code=403)


def client(*, signed_in: bool = True) -> tuple[httpx.AsyncClient, StubSessions]:
    """A browser with a live session's cookie (`signed_in`) or with none, and the sessions
    the app reads."""
    methods = ["GET", *UNSAFE]
    app = Starlette(
        routes=[
            Route("/form", echo, methods=methods),
            Route("/api/v1/form", echo, methods=methods),
        ],
        middleware=[Middleware(CsrfMiddleware)],
        exception_handlers={CsrfError: csrf_refused},
    )
    sessions = StubSessions()
    app.state.gateway = SimpleNamespace(sessions=sessions)
    transport = httpx.ASGITransport(app=app)
    cookies = COOKIE if signed_in else None
    return httpx.AsyncClient(
        transport=transport, base_url="http://twofa", cookies=cookies
    ), sessions


async def test_a_safe_request_is_not_checked_and_reads_no_session() -> None:
    browser, sessions = client()
    async with browser:
        answer = await browser.get("/form")
    assert answer.status_code == 200
    assert sessions.loaded == [COOKIE[SESSION_COOKIE]]  # the route's own read, only


async def test_the_token_in_a_urlencoded_form_passes_and_the_route_reads_the_form() -> None:
    browser, sessions = client()
    async with browser:
        answer = await browser.post("/form", data={"csrf_token": TOKEN, "name": "finance"})
    assert answer.json() == {
        "session": "session-1",
        "fields": {"csrf_token": TOKEN, "name": "finance"},
    }
    assert sessions.loaded == [COOKIE[SESSION_COOKIE]]  # once: the route took the middleware's


async def test_the_token_in_a_multipart_form_passes_with_the_file() -> None:
    browser, _ = client()
    async with browser:
        answer = await browser.post(
            "/form",
            data={"csrf_token": TOKEN},
            files={"file": ("users.csv", b"username\nbob\n", "text/csv")},
        )
    assert answer.json()["fields"] == {"csrf_token": TOKEN, "file": "users.csv"}


async def test_a_body_sent_in_pieces_reaches_the_route_whole() -> None:
    async def pieces() -> AsyncIterator[bytes]:
        for piece in (b"name=fin", b"ance&csrf_", f"token={TOKEN}".encode()):
            yield piece

    browser, _ = client()
    async with browser:
        answer = await browser.post(
            "/form",
            content=pieces(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert answer.json()["fields"] == {"name": "finance", "csrf_token": TOKEN}


async def test_the_token_in_the_header_passes_for_every_unsafe_method() -> None:
    browser, _ = client()
    async with browser:
        for method in UNSAFE:
            answer = await browser.request(
                method, "/form", headers={"X-CSRF-Token": TOKEN}, json={}
            )
            assert answer.status_code == 200, method


async def test_a_missing_or_wrong_token_gets_the_apps_csrf_answer() -> None:
    browser, _ = client()
    async with browser:
        for method in UNSAFE:
            refused = [
                await browser.request(method, "/form", data={"name": "x"}),
                await browser.request(method, "/form", data={"csrf_token": "x"}),
                await browser.request(method, "/form", json={"csrf_token": TOKEN}),
                await browser.request(method, "/form", headers={"X-CSRF-Token": ""}),
                # the header decides when it is there, as it did per route
                await browser.request(
                    method,
                    "/form",
                    headers={"X-CSRF-Token": "x"},
                    data={"csrf_token": TOKEN},
                ),
            ]
            async with client(signed_in=False)[0] as stranger:  # no session at all
                refused.append(await stranger.request(method, "/form", data={"csrf_token": TOKEN}))
            for answer in refused:
                assert answer.status_code == 403, method
                assert answer.text == "refused by the app's CsrfError mapping"


async def test_the_api_refuses_a_cookie_call_in_its_own_error_shape() -> None:
    browser, _ = client()
    async with browser:
        answer = await browser.post("/api/v1/form", json={"name": "x"})
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "forbidden"
    assert set(answer.json()["error"]) == {"code", "message", "fields"}


async def test_an_api_call_with_a_bearer_token_or_without_the_cookie_is_not_checked() -> None:
    browser, sessions = client()
    async with browser:
        with_bearer = await browser.post(
            "/api/v1/form", headers={"Authorization": "Bearer t"}, json={}
        )
    stranger, strangers_sessions = client(signed_in=False)
    async with stranger:
        without_cookie = await stranger.post("/api/v1/form", json={})
    assert (with_bearer.status_code, without_cookie.status_code) == (200, 200)
    assert sessions.loaded == [COOKIE[SESSION_COOKIE]]  # the route's own read
    assert strangers_sessions.loaded == [None]
