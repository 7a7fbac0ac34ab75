"""The OpenID Connect provider's endpoints (services.idp): discovery, JWKS, the authorization
endpoint a browser visits, and the token, revocation and userinfo endpoints relying parties
call from their servers. The protocol's own errors are answered here, in its shapes (a JSON
body and a `WWW-Authenticate` challenge, RFC 6749 §5.2 and RFC 6750 §3); an unknown client or
an unregistered redirect URI is a `TwofaError` shown as an error page by `web/errors.py`."""

from __future__ import annotations

import base64
import binascii
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any, Final

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from twofa.services.idp.errors import InvalidClient, InvalidToken, OAuthError
from twofa.services.idp.provider import (
    AuthorizeRequest,
    RedirectToClient,
    SecondFactorFirst,
    SignInFirst,
)
from twofa.web.context import clear_session_cookie, client_of, current_session, gateway_of

router = APIRouter()
AUTHORIZE_PATH: Final = "/oidc/authorize"
NO_STORE: Final = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _json(body: dict[str, Any], status: int = 200, **headers: str) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers={**NO_STORE, **headers})


async def _answered(call: Callable[[], Awaitable[dict[str, Any]]]) -> JSONResponse:
    """The one mapping of the protocol's errors to its responses, for the endpoints that
    relying parties call."""
    try:
        return _json(await call())
    except OAuthError as refused:
        body = {"error": refused.code, "error_description": refused.description}
        headers: dict[str, str] = {}
        if isinstance(refused, InvalidClient):
            headers["WWW-Authenticate"] = 'Basic realm="twofa"'
        elif isinstance(refused, InvalidToken):
            headers["WWW-Authenticate"] = f'Bearer error="{refused.code}"'
        return _json(body, refused.status, **headers)


@router.get("/.well-known/openid-configuration")
async def discovery(request: Request) -> Response:
    return JSONResponse(gateway_of(request).oidc.discovery())


@router.get("/oidc/jwks")
async def jwks(request: Request) -> Response:
    keys = await gateway_of(request).oidc_keys.jwks()
    return JSONResponse(keys, headers={"Cache-Control": "public, max-age=300"})


def _back_here(request: Request) -> str:
    """This authorization request as a path to come back to after signing in, without its
    `prompt` and `max_age`: the sign-in they asked for is the one about to happen (kept,
    prompt=login or max_age=0 would ask again forever)."""
    dropped = ("prompt", "max_age")
    query = [(k, v) for k, v in request.query_params.multi_items() if k not in dropped]
    return AUTHORIZE_PATH + "?" + urllib.parse.urlencode(query)


@router.get(AUTHORIZE_PATH)
async def authorize(request: Request) -> Response:
    gateway = gateway_of(request)
    session = await current_session(request)
    asked = AuthorizeRequest.of(dict(request.query_params))
    outcome = await gateway.oidc.authorize(asked, session, client_of(request))
    if isinstance(outcome, RedirectToClient):
        return RedirectResponse(outcome.url, status_code=302, headers=NO_STORE)
    back = _back_here(request)
    if isinstance(outcome, SecondFactorFirst):
        assert session is not None
        await gateway.sessions.set_next_url(session, back)
        return RedirectResponse("/2fa/elevate", status_code=303)
    assert isinstance(outcome, SignInFirst)
    response = RedirectResponse("/login?" + urllib.parse.urlencode({"next": back}), status_code=303)
    if outcome.fresh and session is not None:  # prompt=login, max_age: sign in again
        await gateway.sessions.end(session)
        clear_session_cookie(request, response)
    return response


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    """client_secret_basic (RFC 6749 §2.3.1: each part form-urlencoded)."""
    header = request.headers.get("authorization", "")
    if header[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidClient("malformed Basic credentials") from None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        raise InvalidClient("malformed Basic credentials")
    return urllib.parse.unquote_plus(client_id), urllib.parse.unquote_plus(secret)


@router.post("/oidc/token")
async def token(request: Request) -> Response:
    async def exchange() -> dict[str, Any]:
        form = await request.form()
        values = {k: v for k, v in form.items() if isinstance(v, str)}
        basic = _basic_credentials(request)
        return await gateway_of(request).oidc.tokens.token(values, basic, client_of(request))

    return await _answered(exchange)


@router.post("/oidc/revoke")
async def revoke(request: Request) -> Response:
    """RFC 7009: 200 with an empty object whether or not there was anything to revoke."""

    async def revocation() -> dict[str, Any]:
        form = await request.form()
        values = {k: v for k, v in form.items() if isinstance(v, str)}
        basic = _basic_credentials(request)
        return await gateway_of(request).oidc.tokens.revoke(values, basic, client_of(request))

    return await _answered(revocation)


@router.get("/oidc/userinfo")
@router.post("/oidc/userinfo")
async def userinfo(request: Request) -> Response:
    async def claims() -> dict[str, Any]:
        header = request.headers.get("authorization", "")
        if header[:7].lower() != "bearer " or not header[7:].strip():
            raise InvalidToken("a bearer access token is required")
        return await gateway_of(request).oidc.tokens.userinfo(header[7:].strip())

    return await _answered(claims)


@router.get("/oidc/logout")
async def end_session(request: Request) -> Response:
    """RP-initiated logout: ends this browser's twofa session (and so every application's
    single sign-on) when the relying party's ID token is this user's; see services.idp.logout."""
    gateway = gateway_of(request)
    session = await current_session(request)
    decision = await gateway.oidc.logout.decide(
        dict(request.query_params), session, client_of(request)
    )
    response = RedirectResponse(decision.return_to or "/login?signed_out=1", status_code=303)
    if decision.end_session and session is not None:
        await gateway.sessions.end(session)
        clear_session_cookie(request, response)
    return response
