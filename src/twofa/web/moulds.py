"""Responses cast once and filled per request, for the express lane (web.express): the page
and the redirect are made by the same code as always (the Jinja template, Starlette's cookie),
once, with markers where the per-request tokens go; each request then swaps its tokens in.
Rendering the template took a tenth of the lane's time per verification.

A cast that does not show each marker exactly where expected is not kept: the caller renders
that response the usual way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from markupsafe import escape
from starlette.responses import Response
from starlette.types import Send

from twofa.web.security_headers import SECURITY_HEADERS

RawHeaders = list[tuple[bytes, bytes]]

CHALLENGE_MARK: Final = "expressmouldchallengemark"
CSRF_MARK: Final = "expressmouldcsrfmark"
COOKIE_MARK: Final = "expressmouldcookiemark"
_HARDENING: Final[RawHeaders] = [
    (name.lower().encode("latin-1"), value.encode("latin-1"))
    for name, value in SECURITY_HEADERS.items()
]


def _as_sent(response: Response) -> RawHeaders:
    """The response's headers as SecurityHeaders sends them, without the length."""
    headers = [(k, v) for k, v in response.raw_headers if k != b"content-length"]
    present = {name for name, _ in headers}
    return [*headers, *((k, v) for k, v in _HARDENING if k not in present)]


@dataclass(frozen=True)
class PageMould:
    status: int
    headers: RawHeaders
    body: str  # with CHALLENGE_MARK and CSRF_MARK

    @classmethod
    def cast(cls, rendered: Response) -> PageMould | None:
        body = bytes(rendered.body).decode("utf-8")
        if CHALLENGE_MARK not in body or CSRF_MARK not in body:
            return None
        return cls(rendered.status_code, _as_sent(rendered), body)

    async def send(self, send: Send, challenge_id: str, csrf_token: str) -> None:
        body = (
            self.body.replace(CHALLENGE_MARK, str(escape(challenge_id)))
            .replace(CSRF_MARK, str(escape(csrf_token)))
            .encode("utf-8")
        )
        headers = [*self.headers, (b"content-length", str(len(body)).encode("latin-1"))]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@dataclass(frozen=True)
class RedirectMould:
    status: int
    headers: RawHeaders  # one set-cookie header holds COOKIE_MARK

    @classmethod
    def cast(cls, made: Response) -> RedirectMould | None:
        marked = [value for name, value in made.raw_headers if COOKIE_MARK.encode() in value]
        if len(marked) != 1 or made.body:
            return None
        return cls(made.status_code, _as_sent(made))

    async def send(self, send: Send, cookie_value: str) -> None:
        mark, value = COOKIE_MARK.encode(), cookie_value.encode("latin-1")
        headers = [(k, v.replace(mark, value)) for k, v in self.headers]
        headers.append((b"content-length", b"0"))
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
