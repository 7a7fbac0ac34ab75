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

from twofa.services.idp.admission import SecondFactorFirst, SignInFirst
from twofa.services.idp.errors import InvalidClient, InvalidToken, OAuthError
from twofa.services.idp.provider import AuthorizeRequest, ConsentFirst, RedirectToClient
from twofa.web.context import clear_session_cookie, client_of, current_session, gateway_of
from twofa.web.templating import render

router = APIRouter()
AUTHORIZE_PATH: Final = "/oidc/authorize"
CONSENT_PATH: Final = "/oidc/consent"
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


def _authorize_path(request: Request, kept_prompts: frozenset[str], drop_max_age: bool) -> str:
    """This authorization request again, with only `kept_prompts` of its prompt values."""
    query = []
    for name, value in request.query_params.multi_items():
        if name == "prompt":
            value = " ".join(p for p in value.split() if p in kept_prompts)
            if not value:
                continue
        if name != "max_age" or not drop_max_age:
            query.append((name, value))
    return AUTHORIZE_PATH + "?" + urllib.parse.urlencode(query)


def _back_here(request: Request) -> str:
    """This authorization request as a path to come back to after signing in, without its
    `max_age` and prompt=login: the sign-in they asked for is the one about to happen (kept,
    prompt=login or max_age=0 would ask again forever). prompt=consent is still to come."""
    return _authorize_path(request, frozenset({"consent"}), drop_max_age=True)


@router.get(AUTHORIZE_PATH)
async def authorize(request: Request) -> Response:
    gateway = gateway_of(request)
    session = await current_session(request)
    asked = AuthorizeRequest.of(dict(request.query_params))
    outcome = await gateway.oidc.authorize(asked, session, client_of(request))
    if isinstance(outcome, RedirectToClient):
        return RedirectResponse(outcome.url, status_code=302, headers=NO_STORE)
    if isinstance(outcome, ConsentFirst):  # the same request, shown to the user first
        return RedirectResponse(f"{CONSENT_PATH}?{request.url.query}", status_code=303)
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


@router.get(CONSENT_PATH)
async def consent_page(request: Request) -> Response:
    """Asks the user whether the application may have what it asked for. The query is the
    authorization request's; anything but a request waiting for consent goes back to
    authorize, which answers it (an unknown client or redirect URI: the error page here)."""
    session = await current_session(request)
    asked = AuthorizeRequest.of(dict(request.query_params))
    question = await gateway_of(request).oidc.consent_asked(asked, session)
    if question is None or session is None:
        return RedirectResponse(f"{AUTHORIZE_PATH}?{request.url.query}", status_code=303)
    return render(
        request,
        "oidc_consent.html",
        title=f"Allow {question.application}?",
        question=question,
        answer_url=f"{CONSENT_PATH}?{request.url.query}",
        csrf_token=session.csrf_token,
    )


@router.post(CONSENT_PATH)
async def consent_answer(request: Request) -> Response:
    """Allow: remembered, then authorize again, which now issues the code (without
    prompt=consent, which would ask forever). Deny: access_denied at the client. Checked
    first as authorize checks the request (services.idp.provider.answer_consent)."""
    form = await request.form()
    allowed = form.get("decision") == "allow"  # anything else refuses
    asked = AuthorizeRequest.of(dict(request.query_params))
    session = await current_session(request)
    refused = await gateway_of(request).oidc.answer_consent(
        asked, session, client_of(request), allowed
    )
    if refused is not None:
        return RedirectResponse(refused.url, status_code=303, headers=NO_STORE)
    again = _authorize_path(request, frozenset(), drop_max_age=False)
    return RedirectResponse(again, status_code=303)


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
