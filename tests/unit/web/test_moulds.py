"""Cast responses (web.moulds): filled per request with exactly what a fresh render would
give, and never kept when the markers are not where the tokens go."""

from __future__ import annotations

from starlette.responses import HTMLResponse, RedirectResponse
from starlette.types import Message

from twofa.web.moulds import CHALLENGE_MARK, COOKIE_MARK, CSRF_MARK, PageMould, RedirectMould


class Sent:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.messages[0]["headers"])

    @property
    def body(self) -> bytes:
        return bytes(self.messages[1]["body"])


def page(challenge: str, csrf: str) -> HTMLResponse:
    return HTMLResponse(
        f'<form><input name="challenge" value="{challenge}">'
        f'<input name="csrf_token" value="{csrf}"></form>',
        headers={"Cache-Control": "no-store"},
    )


async def test_a_filled_page_is_the_page_rendered_with_those_tokens() -> None:
    mould = PageMould.cast(page(CHALLENGE_MARK, CSRF_MARK))
    assert mould is not None
    sent = Sent()
    await mould.send(sent, "ch-123", "csrf-456")
    fresh = page("ch-123", "csrf-456")
    assert sent.body == fresh.body
    assert sent.headers[b"content-length"] == str(len(fresh.body)).encode()
    assert sent.headers[b"cache-control"] == b"no-store"
    assert sent.headers[b"x-frame-options"] == b"DENY"  # the hardening SecurityHeaders adds


async def test_a_token_is_escaped_as_the_template_would() -> None:
    mould = PageMould.cast(page(CHALLENGE_MARK, CSRF_MARK))
    assert mould is not None
    sent = Sent()
    await mould.send(sent, '"><script>', "x")
    assert b"<script>" not in sent.body
    assert b"&#34;&gt;&lt;script&gt;" in sent.body


def test_a_page_without_both_markers_is_not_cast() -> None:
    assert PageMould.cast(page(CHALLENGE_MARK, "fixed")) is None
    assert PageMould.cast(page("fixed", CSRF_MARK)) is None


async def test_a_filled_redirect_sets_the_cookie_a_fresh_one_would() -> None:
    cast = RedirectResponse("/2fa/after", status_code=303)
    cast.set_cookie("twofa_session", COOKIE_MARK, httponly=True, samesite="lax", path="/")
    mould = RedirectMould.cast(cast)
    assert mould is not None
    sent = Sent()
    await mould.send(sent, "token-abc")
    fresh = RedirectResponse("/2fa/after", status_code=303)
    fresh.set_cookie("twofa_session", "token-abc", httponly=True, samesite="lax", path="/")
    assert sent.messages[0]["status"] == 303
    assert sent.headers[b"set-cookie"] == dict(fresh.raw_headers)[b"set-cookie"]
    assert sent.headers[b"location"] == b"/2fa/after"
    assert sent.body == b""


def test_a_redirect_without_the_marked_cookie_is_not_cast() -> None:
    assert RedirectMould.cast(RedirectResponse("/2fa/after", status_code=303)) is None
