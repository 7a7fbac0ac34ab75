"""The hardening headers every answer of the gateway carries (pages, the API, forward-auth).

The Content-Security-Policy keeps scripts, styles and images to the gateway's own, forbids a
`<base>` (an injected one would re-point every relative link and form), keeps forms to the
gateway and the hosts a sign-in may return to (browsers apply `form-action` to the redirect a
form's answer is, too), and keeps the pages out of every frame (clickjacking). Behind https the
browser is told to come back over https only (HSTS)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from twofa.config import Settings

_CSP_BASE: Final = (
    "default-src 'self'; img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'"
)
# A year, and not includeSubDomains: other hosts of the domain may not serve https yet, and
# HSTS is not the gateway's to decide for them.
HSTS: Final = "max-age=31536000"
SECURITY_HEADERS: Final = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": f"{_CSP_BASE}; form-action 'self'",
}
_HOST_SOURCE = re.compile(r"^(\*\.)?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*(:[0-9]{1,5})?$")


def content_security_policy(return_hosts: Iterable[str]) -> str:
    """The policy, with the hosts a signed-in browser may be sent back to (the protected
    domains, the allowed redirect hosts: `*.example.com` patterns too) as form targets."""
    sources = sorted({host for host in return_hosts if _HOST_SOURCE.fullmatch(host)})
    targets = " ".join(("'self'", *sources))
    return f"{_CSP_BASE}; form-action {targets}"


def security_headers(settings: Settings) -> Mapping[str, str]:
    headers = dict(SECURITY_HEADERS)
    hosts = (*settings.allowed_redirect_hosts, *settings.access.domains)
    headers["Content-Security-Policy"] = content_security_policy(hosts)
    if settings.cookie_secure:  # public_url is https
        headers["Strict-Transport-Security"] = HSTS
    return headers


class SecurityHeaders:
    """Adds the security headers a response does not set itself. A plain ASGI middleware:
    the decorator-style one costs a task and a queue per request."""

    def __init__(self, app: ASGIApp, headers: Mapping[str, str] = SECURITY_HEADERS) -> None:
        self._app = app
        self._headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in self._headers if k not in present]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self._app(scope, receive, send_with_headers)
