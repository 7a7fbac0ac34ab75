"""CSRF protection for every unsafe request, in one place, so that no route can forget it.

A request with any method but GET, HEAD, OPTIONS and TRACE must carry the CSRF token of its
browser session: in the `X-CSRF-Token` header (the pages' scripts) or in the `csrf_token`
field of a urlencoded or multipart form (plain forms). Without a live session there is no
token to compare with, and the request is refused as well: the sign-in form is no exception,
as GET /login opens an anonymous session carrying its token (against login CSRF). A refusal
is what the app answers for `CsrfError` (its one mapping, `web/errors.py`: 403 and the error
page), or the API's JSON error on /api/v1.

The session read here is left on the request (`context.LOADED_SESSION`), and
`context.current_session` takes it from there: an unsafe request reads its session once.

Exempt, and nothing else:

- /api/v1 requests with a bearer `Authorization` header, or without the session cookie. The
  API authenticates by bearer token only (`web/api/auth.py`); a browser never sends that
  header by itself, so a forged request has no credential to ride on. An API request with the
  session cookie and no bearer token is checked like a page, so an API that some day accepts
  the cookie stays protected.
- /oidc/token, /oidc/revoke and /oidc/userinfo, OpenID Connect's endpoints for relying parties
  (web/oidc.py), on the same terms as the API: with a bearer `Authorization` header or
  without the session cookie. Relying parties call them from their servers, never as a
  browser form and never with twofa's cookie; the token endpoint authenticates the client by
  its secret or PKCE verifier and the code, userinfo by a bearer access token; neither reads
  the session. A request that does carry the session cookie is checked like a page.
- /saml/sso, SAML's single sign-on service, whose HTTP-POST binding is a form a service
  provider's page posts from its own site: it cannot carry twofa's token. A forged POST there
  can do exactly what a forged GET of the HTTP-Redirect binding can: start a sign-in to a
  registered provider, whose answer goes only to an address in that provider's metadata.
- /authz/nginx and /authz/forward, the forward-auth checks: proxies call them with the method
  of the request they check, and they change nothing.
- /healthz and /healthz/ready: the load balancers' probes (alive; able to reach the
  database), which change nothing either.
- /metrics: Prometheus' scrape (web/metrics.py), a GET that changes nothing, guarded by its
  own token and networks.

`GatewayApp` answers these before any middleware (`forward_auth.FAST_ROUTES`); they are
exempt here too so that this list, not the order of dispatch, says that they are.
"""

from __future__ import annotations

import inspect
from typing import Final, NamedTuple

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from twofa.security.tokens import same_token
from twofa.services.runtime import Gateway
from twofa.web.api.errors import ApiProblem, error_response, problem_for
from twofa.web.context import (
    CSRF_FIELD,
    CSRF_HEADER,
    LOADED_SESSION,
    CsrfError,
    raw_headers,
    session_token_in,
)
from twofa.web.unavailable import database_away

SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
EXEMPT_PATHS: Final = frozenset(
    {"/authz/nginx", "/authz/forward", "/healthz", "/healthz/ready", "/metrics"}
)
API_PREFIX: Final = "/api/v1"
RELYING_PARTY_PATHS: Final = frozenset({"/oidc/token", "/oidc/revoke", "/oidc/userinfo"})
SAML_BINDING_PATHS: Final = frozenset({"/saml/sso"})
FORM_TYPES: Final = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})
REFUSED: Final = "missing or wrong CSRF token"

_READ: Final = frozenset({b"cookie", CSRF_HEADER.encode(), b"authorization", b"content-type"})


class CsrfHeaders(NamedTuple):
    """The request headers the check reads, the first of each as Starlette's
    `Request.headers.get` would give the route, gathered in one pass over the headers."""

    cookie: str = ""
    csrf_token: str | None = None
    authorization: str = ""
    content_type: str = ""

    @classmethod
    def read(cls, raw: list[tuple[bytes, bytes]]) -> CsrfHeaders:
        found = raw_headers(raw, _READ)
        return cls(
            found.get(b"cookie", ""),
            found.get(CSRF_HEADER.encode()),
            found.get(b"authorization", ""),
            found.get(b"content-type", ""),
        )

    @property
    def session_token(self) -> str | None:
        return session_token_in(self.cookie)

    @property
    def has_bearer_token(self) -> bool:
        return self.authorization[:7].lower() == "bearer "

    @property
    def is_form(self) -> bool:
        return self.content_type.split(";", 1)[0].strip().lower() in FORM_TYPES


def is_api(path: str) -> bool:
    return path == API_PREFIX or path.startswith(API_PREFIX + "/")


def is_exempt(path: str, headers: CsrfHeaders) -> bool:
    """Whether a request with an unsafe method is let through unchecked: see the module's
    docstring for each case and why."""
    if path in EXEMPT_PATHS or path in SAML_BINDING_PATHS:
        return True
    cookieless = is_api(path) or path in RELYING_PARTY_PATHS
    return cookieless and (headers.has_bearer_token or not headers.session_token)


class CsrfMiddleware:
    """A plain ASGI middleware: it costs a safe request one comparison, and reads the body
    only for a form without the header (the decorator-style middleware would cost every
    request a task and a queue)."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS:
            await self._app(scope, receive, send)
            return
        headers = CsrfHeaders.read(scope["headers"])
        if is_exempt(scope["path"], headers):
            await self._app(scope, receive, send)
            return
        gateway: Gateway = scope["app"].state.gateway
        try:
            session = await gateway.sessions.load(headers.session_token)
        except Exception as exc:  # answered as the routes' own errors are
            if not database_away(exc):
                raise
            await database_away_answer(scope, receive, send, exc)
            return
        if session is None:
            await refuse(scope, receive, send)
            return
        scope.setdefault("state", {})[LOADED_SESSION] = session
        given = headers.csrf_token
        if given is None and headers.is_form:
            body = await read_body(receive)
            if body is None:
                return  # the client went away: there is no one to answer
            receive = replaying(body, receive)
            given = await form_token(scope, body)
        if given and same_token(session.csrf_token, given):
            await self._app(scope, receive, send)
            return
        await refuse(scope, receive, send)


async def read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None if the client disconnected first."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def replaying(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the app the body read here, then waits on the client as usual
    (for a disconnect)."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive_replayed() -> Message:
        return pending.pop() if pending else await receive()

    return receive_replayed


async def form_token(scope: Scope, body: bytes) -> str | None:
    """The form's `csrf_token` field, parsed by Starlette as the route will parse it (with the
    same limits); None when the form cannot be parsed."""

    async def receive_body() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        async with Request(scope, receive_body).form() as form:
            field = form.get(CSRF_FIELD)
    except (HTTPException, MultiPartException):
        return None
    return field if isinstance(field, str) else None


async def refuse(scope: Scope, receive: Receive, send: Send) -> None:
    request = Request(scope, receive)
    if is_api(scope["path"]):
        response: Response = error_response(ApiProblem(403, "forbidden", REFUSED))
    else:
        response = await mapped_response(scope["app"], request, CsrfError(REFUSED))
    await response(scope, receive, send)


async def database_away_answer(scope: Scope, receive: Receive, send: Send, exc: Exception) -> None:
    request = Request(scope, receive)
    if is_api(scope["path"]):
        problem = problem_for(exc)
        assert problem is not None
        response: Response = error_response(problem)
    else:
        response = await mapped_response(scope["app"], request, exc)
    await response(scope, receive, send)


async def mapped_response(app: Starlette, request: Request, exc: Exception) -> Response:
    """What the app's exception handlers answer for `exc`, found by its class's MRO as
    Starlette finds them: the mapping stays in `web/errors.py`, even for a refusal made
    before the router."""
    handlers = app.exception_handlers
    handler = next(handlers[cls] for cls in type(exc).__mro__ if cls in handlers)
    answer = handler(request, exc)
    response = await answer if inspect.isawaitable(answer) else answer
    assert isinstance(response, Response)
    return response
