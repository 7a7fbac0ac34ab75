"""The server of bench/totp_http_floor.py: a plain ASGI callable, no framework, no routing
library, no ORM, serving the TOTP page and its answer with bench/_totp_minimal.py's statements
(one for the page, one read and one write for the answer) on an asyncpg pool per worker.

GET /2fa/m/totp: the `twofa_session` cookie's session at the password or signed-in level gets
a fresh challenge and a small HTML form (challenge and CSRF token escaped into it); without
one, a 303 to the sign-in page. POST /2fa/m/totp (form: csrf_token, challenge, code): the CSRF
token compared in constant time, the code checked against the sealed seed (a step never used
before), then a 303 to /2fa/after with the rotated session's cookie; a wrong CSRF token is a
403, an expired or used challenge or a wrong code the page again (400) with the failure
counted and audited. Every answer carries the gateway's hardening headers. GET /healthz: 200.

Configured by environment variables: TOTP_FLOOR_DSN, TOTP_FLOOR_SECRET (the sealing key),
TOTP_FLOOR_POOL (connections per worker).
"""

from __future__ import annotations

import gc
import html
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

import asyncpg

from _totp_minimal import answer, keep_connection, open_challenge, session_id_of
from twofa.security.sealing import Sealer

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PATH = "/2fa/m/totp"
COOKIE = "twofa_session"
HARDENING = [
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    ),
]
PAGE_HEADERS = [
    (b"content-type", b"text/html; charset=utf-8"),
    (b"cache-control", b"no-store"),
    *HARDENING,
]
SIGN_IN = [(b"location", b"/login?next=/2fa/m/totp"), (b"content-length", b"0"), *HARDENING]
SESSION_COOKIE_TAIL = "; HttpOnly; Max-Age=43200; Path=/; SameSite=lax"
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Verify it's you</title></head>
<body><main><h1>Enter the code from your authenticator app</h1>{error}
<form method="post" action="/2fa/m/totp">
<input type="hidden" name="csrf_token" value="{csrf}">
<input type="hidden" name="challenge" value="{challenge}">
<label>Code <input name="code" inputmode="numeric" autocomplete="one-time-code" required></label>
<button type="submit">Verify</button>
</form></main></body></html>
"""
WRONG_CODE = '<p role="alert">That code did not work. Try the current one.</p>'
EXPIRED = '<p role="alert">This request has expired or was already used. Start again.</p>'


class State:
    pool: asyncpg.Pool | None = None
    sealer = Sealer(os.environ.get("TOTP_FLOOR_SECRET", "unset-totp-floor-secret-key-000000000"))


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    path, method = scope["path"], scope["method"]
    if path == PATH and method == "GET":
        await challenge_page(scope, send)
    elif path == PATH and method == "POST":
        await answer_page(scope, receive, send)
    elif path == "/healthz":
        await respond(send, 200, [(b"content-length", b"2"), *HARDENING], b"ok")
    else:
        await respond(send, 404, [(b"content-length", b"0"), *HARDENING], b"")


async def lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            size = int(os.environ.get("TOTP_FLOOR_POOL", "10"))
            State.pool = await asyncpg.create_pool(
                os.environ["TOTP_FLOOR_DSN"], min_size=size, max_size=size, reset=keep_connection
            )
            gc.freeze()  # as twofa.cli.runtime.tune_garbage_collector does
            gc.set_threshold(50_000, 50, 100)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if State.pool is not None:
                await State.pool.close()
            await send({"type": "lifespan.shutdown.complete"})
            return


def session_cookie(scope: Scope) -> str:
    name: bytes
    value: bytes
    for name, value in scope["headers"]:
        if name == b"cookie":
            for part in value.decode("latin-1").split(";"):
                key, _, cookie = part.strip().partition("=")
                if key == COOKIE:
                    return cookie
    return ""


async def respond(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def page(send: Send, status: int, challenge: str, csrf: str, error: str = "") -> None:
    body = PAGE.format(
        error=error, csrf=html.escape(csrf), challenge=html.escape(challenge)
    ).encode()
    headers = [*PAGE_HEADERS, (b"content-length", str(len(body)).encode())]
    await respond(send, status, headers, body)


async def challenge_page(scope: Scope, send: Send) -> None:
    assert State.pool is not None
    session_id = session_id_of(session_cookie(scope))
    opened = await open_challenge(State.pool, session_id) if session_id else None
    if opened is None:
        await respond(send, 303, SIGN_IN, b"")
        return
    challenge_id, csrf = opened
    await page(send, 200, challenge_id, csrf)


async def answer_page(scope: Scope, receive: Receive, send: Send) -> None:
    assert State.pool is not None
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body") or len(body) > 4096:
            break
    session_id = session_id_of(session_cookie(scope))
    if session_id is None:
        await respond(send, 303, SIGN_IN, b"")
        return
    form = dict(parse_qsl(body.decode("latin-1"), max_num_fields=8))
    client = scope.get("client") or ("", 0)
    headers = dict(scope["headers"])
    user_agent = headers.get(b"user-agent", b"").decode("latin-1")[:300]
    challenge_id = form.get("challenge", "")
    outcome = await answer(
        State.pool,
        State.sealer,
        session_id,
        challenge_id,
        form.get("csrf_token", ""),
        form.get("code", ""),
        (str(client[0])[:64], user_agent),
    )
    if outcome.status == "allow":
        cookie = f"{COOKIE}={outcome.cookie}{SESSION_COOKIE_TAIL}".encode()
        answered = [
            (b"location", b"/2fa/after"),
            (b"set-cookie", cookie),
            (b"content-length", b"0"),
            *HARDENING,
        ]
        await respond(send, 303, answered, b"")
    elif outcome.status == "csrf":
        await respond(send, 403, [(b"content-length", b"0"), *HARDENING], b"")
    else:  # the page again; an expired challenge cannot be answered, a new one is opened
        opened = await open_challenge(State.pool, session_id)
        if opened is None:
            await respond(send, 303, SIGN_IN, b"")
            return
        error = WRONG_CODE if outcome.status == "deny" else EXPIRED
        await page(send, 400, opened[0], opened[1], error)
