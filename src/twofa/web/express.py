"""The express lane's pages: GET and POST `/2fa/m/totp` answered before FastAPI when the
gateway runs on PostgreSQL (services.express), with the same page, cookie and redirect as
`web.factors`. Anything the lane does not take (a wrong code, an expired page, "remember this
device", a form it does not expect) goes on to FastAPI's route unchanged, its body replayed,
so every refusal, message and audit record comes from one place.
"""

from __future__ import annotations

import string
import urllib.parse
from dataclasses import dataclass
from typing import Final

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from twofa.services.express import ExpressLane
from twofa.services.factors import Started
from twofa.services.sessions import Level
from twofa.web.context import (
    CSRF_HEADER,
    SESSION_COOKIE,
    client_of,
    gateway_of,
    set_session_cookie,
)
from twofa.web.factors import PAGE_FIELDS, method_page
from twofa.web.moulds import CHALLENGE_MARK, COOKIE_MARK, CSRF_MARK, PageMould, RedirectMould
from twofa.web.security_headers import SecurityHeaders

PREFIX: Final = "/2fa/m/"
MAX_FORM_BYTES: Final = 16_384  # a code form is a few hundred bytes; more goes the long way
FORM_TYPE: Final = "application/x-www-form-urlencoded"
SIGNED_IN_LANDING: Final = "/2fa/after"  # web.second_factor.landing_after, no enrolment
PLAIN_TOKEN: Final = frozenset(string.ascii_letters + string.digits + "-_")  # new_token's


def express_code(lane: ExpressLane, scope: Scope) -> str | None:
    """The method code when this request is one the lane may answer."""
    path: str = scope["path"]
    if not path.startswith(PREFIX) or scope["method"] not in ("GET", "POST"):
        return None
    code = path[len(PREFIX) :]
    return code if lane.serves(code) and not scope.get("query_string") else None


class Moulds:
    """This app's cast responses: a page per (method, step-up, remember-days offer), and the
    signed-in redirect. The settings they show are the app's own, so one per app."""

    def __init__(self) -> None:
        self.pages: dict[tuple[str, bool, int], PageMould | None] = {}
        self.signed_in: RedirectMould | None = None


@dataclass(frozen=True)
class _Call:
    """One request the lane was offered, and where it goes when the lane does not answer."""

    lane: ExpressLane
    code: str
    scope: Scope
    send: Send
    general: ASGIApp
    moulds: Moulds

    async def hand_on(self, receive: Receive) -> None:
        await self.general(self.scope, receive, self.send)

    async def respond(self, response: Response, receive: Receive) -> None:
        await SecurityHeaders(response)(self.scope, receive, self.send)


async def serve_express(
    lane: ExpressLane,
    code: str,
    scope: Scope,
    receive: Receive,
    send: Send,
    general: ASGIApp,
    moulds: Moulds,
) -> None:
    call = _Call(lane, code, scope, send, general, moulds)
    if scope["method"] == "GET":
        await _page(call, receive)
    else:
        await _answer(call, receive)


async def _page(call: _Call, receive: Receive) -> None:
    request = Request(call.scope, receive)
    opened = await call.lane.open(request.cookies.get(SESSION_COOKIE), call.code)
    if opened is None:
        await call.hand_on(receive)
        return
    level = Level.SIGNED_IN if opened.step_up else Level.PASSWORD
    mould = await _page_mould(call, request, opened.step_up, level)
    if mould is not None:
        await mould.send(call.send, opened.challenge_id, opened.csrf_token)
        return
    started = Started(opened.challenge_id, {})
    page = await method_page(request, call.code, "verify", started, opened.csrf_token, level)
    await call.respond(page, receive)


async def _page_mould(
    call: _Call, request: Request, step_up: bool, level: Level
) -> PageMould | None:
    """The verify page cast for what it shows (None: it could not be cast)."""
    days = 0 if step_up else await gateway_of(request).devices.days()
    key = (call.code, step_up, days)
    if key not in call.moulds.pages:
        marked = Started(CHALLENGE_MARK, {})
        cast = await method_page(request, call.code, "verify", marked, CSRF_MARK, level)
        call.moulds.pages[key] = PageMould.cast(cast)
    return call.moulds.pages[key]


async def _answer(call: _Call, receive: Receive) -> None:
    body = await _read_body(receive)
    replay = _replaying(body, receive)
    request = Request(call.scope, replay)
    fields = _form_fields(request, body.data) if body.usable else None
    token = request.cookies.get(SESSION_COOKIE)
    if fields is None or token is None:
        await call.hand_on(replay)
        return
    signed_in = await call.lane.answer(
        token,
        call.code,
        fields.get("challenge", ""),
        fields.get("csrf_token", ""),
        {name: value for name, value in fields.items() if name not in PAGE_FIELDS},
        client_of(request),
    )
    if signed_in is None:
        await call.hand_on(replay)
        return
    if call.moulds.signed_in is None:
        cast = RedirectResponse(SIGNED_IN_LANDING, status_code=303)
        set_session_cookie(request, cast, COOKIE_MARK)
        call.moulds.signed_in = RedirectMould.cast(cast)
    if call.moulds.signed_in is not None and set(signed_in) <= PLAIN_TOKEN:
        await call.moulds.signed_in.send(call.send, signed_in)
        return
    response = RedirectResponse(SIGNED_IN_LANDING, status_code=303)
    set_session_cookie(request, response, signed_in)
    await call.respond(response, replay)


def _form_fields(request: Request, body: bytes) -> dict[str, str] | None:
    """The form as the general route would read it, or None when the lane should not guess:
    not a plain urlencoded form, a CSRF token in a header, a field given twice, a request
    to remember this device (the general route sets that cookie)."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != FORM_TYPE or CSRF_HEADER in request.headers:
        return None
    try:
        pairs = urllib.parse.parse_qsl(
            body.decode("latin-1"), keep_blank_values=True, strict_parsing=False
        )
    except ValueError:
        return None
    fields = dict(pairs)
    if len(fields) != len(pairs) or "remember" in fields:
        return None
    return fields


@dataclass(frozen=True)
class _ReadBody:
    data: bytes
    finished: bool  # the whole body was read
    ended_by: Message | None  # what stopped the reading early (the client went away)

    @property
    def usable(self) -> bool:
        return self.finished and len(self.data) <= MAX_FORM_BYTES


async def _read_body(receive: Receive) -> _ReadBody:
    """The request body, up to a little past the lane's limit."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return _ReadBody(b"".join(chunks), False, message)
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False):
            return _ReadBody(b"".join(chunks), True, None)
        if size > MAX_FORM_BYTES:
            return _ReadBody(b"".join(chunks), False, None)


def _replaying(body: _ReadBody, receive: Receive) -> Receive:
    """A `receive` that gives what was read once more, then the rest of the request."""
    more = not body.finished and body.ended_by is None
    pending: list[Message] = [{"type": "http.request", "body": body.data, "more_body": more}]
    if body.ended_by is not None:
        pending.append(body.ended_by)

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay
