"""The SAML 2.0 identity provider's endpoints (services.idp.saml): the IdP metadata, the
single sign-on service (HTTP-Redirect, and HTTP-POST where the CSRF middleware lets a
provider's form through), IdP-initiated sign-in, and single logout. A request that cannot be
trusted is a `TwofaError` shown as an error page by `web/errors.py`, never answered to the
provider; a response goes to the provider's ACS as a form the browser posts by itself."""

from __future__ import annotations

import re
import urllib.parse
from typing import Final

from fastapi import APIRouter, Request
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from starlette.responses import RedirectResponse, Response

from twofa.services.idp.admission import SecondFactorFirst, SignInFirst
from twofa.services.idp.saml.errors import InvalidSamlRequest
from twofa.services.idp.saml.server import METADATA_PATH, SLO_PATH, SSO_PATH
from twofa.services.idp.saml.sso import PostToProvider, SignedMessage, SsoOutcome
from twofa.services.idp.saml.wiring import SamlServices, build_saml
from twofa.web.context import clear_session_cookie, client_of, current_session, gateway_of
from twofa.web.security_headers import content_security_policy
from twofa.web.templating import render

router = APIRouter()
IDP_INITIATED_PATH: Final = "/saml/sso/idp-initiated"
NO_STORE: Final = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_ORIGIN: Final = re.compile(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?")


def saml_of(request: Request) -> SamlServices:
    """The app's SAML services, built on first use from its gateway and kept with it."""
    gateway = gateway_of(request)
    kept: SamlServices | None = getattr(request.app.state, "saml", None)
    if kept is None or getattr(request.app.state, "saml_gateway", None) is not gateway:
        kept = build_saml(
            gateway.db, gateway.clock, gateway.settings.secret_keys, gateway.settings.public_url
        )
        request.app.state.saml = kept
        request.app.state.saml_gateway = gateway
    return kept


@router.get(METADATA_PATH)
async def metadata(request: Request) -> Response:
    xml = await saml_of(request).idp.metadata()
    headers = {"Cache-Control": "public, max-age=300"}
    return Response(xml, media_type="application/samlmetadata+xml", headers=headers)


# The parameters a Redirect-binding signature covers: each must come once, or the signature
# could be checked over one copy while the message is read from another.
_SIGNED_PARAMETERS: Final = ("SAMLRequest", "RelayState", "SigAlg", "Signature")


def _message_of_query(request: Request) -> SignedMessage:
    query = request.query_params
    if any(len(query.getlist(name)) > 1 for name in _SIGNED_PARAMETERS):
        raise InvalidSamlRequest("a SAML parameter is repeated in the query")
    saml_request = query.get("SAMLRequest")
    if not saml_request:
        raise InvalidSamlRequest("no SAMLRequest")
    return SignedMessage(
        BINDING_HTTP_REDIRECT, saml_request, query.get("RelayState"), request.url.query
    )


@router.get(SSO_PATH)
async def sso_redirect(request: Request) -> Response:
    """HTTP-Redirect binding; or, with `resume`, a request that came by HTTP-POST, back from
    the sign-in."""
    idp, client = saml_of(request).idp, client_of(request)
    session = await current_session(request)
    query = request.query_params
    if "resume" in query:
        outcome = await idp.resume(query["resume"], query.get("id", ""), session, client)
    else:
        outcome = await idp.sso(_message_of_query(request), session, client)
    return await _answer(request, outcome, SSO_PATH + "?" + request.url.query)


@router.post(SSO_PATH)
async def sso_post(request: Request) -> Response:
    form = await request.form()
    saml_request, relay_state = form.get("SAMLRequest"), form.get("RelayState")
    if not isinstance(saml_request, str) or not saml_request:
        raise InvalidSamlRequest("no SAMLRequest")
    relay = relay_state if isinstance(relay_state, str) else None
    message = SignedMessage(BINDING_HTTP_POST, saml_request, relay)
    session = await current_session(request)
    outcome = await saml_of(request).idp.sso(message, session, client_of(request))
    return await _answer(request, outcome, SSO_PATH)  # Pending.resume: how to come back


@router.get(IDP_INITIATED_PATH)
async def idp_initiated(request: Request) -> Response:
    entity_id = request.query_params.get("sp", "")
    relay_state = request.query_params.get("RelayState")
    session = await current_session(request)
    idp = saml_of(request).idp
    outcome = await idp.idp_initiated(entity_id, relay_state, session, client_of(request))
    return await _answer(request, outcome, IDP_INITIATED_PATH + "?" + request.url.query)


async def _answer(request: Request, outcome: SsoOutcome, back: str) -> Response:
    """The response posted to the provider, or the way through sign-in (or the second
    factor) and back to `back`, as web.oidc's authorize does."""
    if isinstance(outcome, PostToProvider):
        return _post_to_provider(request, outcome)
    if outcome.resume is not None:
        back = f"{SSO_PATH}?{outcome.resume}"
    gateway = gateway_of(request)
    session = await current_session(request)
    if isinstance(outcome.step, SecondFactorFirst):
        assert session is not None
        await gateway.sessions.set_next_url(session, back)
        return RedirectResponse("/2fa/elevate", status_code=303)
    assert isinstance(outcome.step, SignInFirst)
    response = RedirectResponse("/login?" + urllib.parse.urlencode({"next": back}), status_code=303)
    if outcome.step.fresh and session is not None:  # ForceAuthn: sign in again
        await gateway.sessions.end(session)
        clear_session_cookie(request, response)
    return response


def _post_to_provider(request: Request, outcome: PostToProvider) -> Response:
    """A page that posts the response to the ACS by itself (static/saml-post.js), with a
    button where scripts are off; its policy lets the form go to that ACS only."""
    response = render(
        request,
        "saml_post.html",
        title="Signing in",
        acs_url=outcome.acs_url,
        saml_response=outcome.saml_response,
        relay_state=outcome.relay_state,
    )
    response.headers["Content-Security-Policy"] = _policy_posting_to(outcome.acs_url)
    response.headers["Pragma"] = "no-cache"
    return response


def _policy_posting_to(acs_url: str) -> str:
    """The gateway's policy with the ACS's origin, scheme included (a scheme-less source
    would not let a page served over http post to an https ACS), as a form target."""
    parts = urllib.parse.urlsplit(acs_url)
    origin = f"{parts.scheme}://{parts.netloc}"
    if parts.scheme not in ("http", "https") or not _ORIGIN.fullmatch(parts.netloc):
        raise InvalidSamlRequest(f"ACS {acs_url!r} cannot be a form target")
    return f"{content_security_policy(())} {origin}"  # form-action is the last directive


@router.get(SLO_PATH)
async def single_logout(request: Request) -> Response:
    message = _message_of_query(request)
    session = await current_session(request)
    answer = await saml_of(request).logout.logout(message, session, client_of(request))
    response = RedirectResponse(answer.redirect_url, status_code=303, headers=NO_STORE)
    if answer.end_session and session is not None:
        await gateway_of(request).sessions.end(session)
        clear_session_cookie(request, response)
    return response
