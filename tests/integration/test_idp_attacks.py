"""An attacker against twofa's identity provider, over real HTTP: each test is one attempt
on the OpenID Connect provider or the SAML 2.0 IdP, named for the attack, and asserts the
refusal. The fixtures and helpers are those of test_oidc_provider, test_oidc_refresh_tokens
and test_saml_idp (OIDC on SQLite and PostgreSQL, SAML on SQLite)."""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
import urllib.parse
import zlib
from collections.abc import AsyncIterator
from html import unescape
from pathlib import Path
from typing import Any

import httpx
import pytest
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.client import Saml2Client
from saml2.config import SPConfig
from saml2.metadata import entity_descriptor
from saml2.response import StatusNoPassive
from saml2.saml import NAMEID_FORMAT_PERSISTENT, NameID
from saml2.xmldsig import SIG_RSA_SHA256
from sqlalchemy import update

from tests.conftest import RunningSimulator
from tests.integration import test_oidc_provider
from tests.integration.test_oidc_provider import (
    CALLBACK,
    SIGNED_OUT,
    Provider,
    authorize_path,
    bob_code,
    callback_query,
    tokens_for,
)
from tests.integration.test_oidc_refresh_tokens import (
    credentials,
    database,
    refresh,
    refused_grant,
    userinfo_status,
)
from tests.integration.test_saml_idp import (
    Idp,
    accepted,
    authn_request,
    error_page,
    parameter,
    posted_response,
    sign_in_as_bob,
    start_idp,
)
from tests.support.databases import sqlite_database
from tests.support.gateway import csrf_from
from twofa.services.idp.applications import IssuedApplication
from twofa.services.idp.claims import s256
from twofa.services.idp.saml.registry import NewServiceProvider
from twofa.services.idp.saml.wiring import build_saml
from twofa.services.runtime import Gateway
from twofa.storage.tables import ApplicationRow

provider = test_oidc_provider.provider
browser = test_oidc_provider.browser


@pytest.fixture
async def saml_idp(tmp_path: Path, simulator: RunningSimulator) -> AsyncIterator[Idp]:
    async with sqlite_database(tmp_path) as url:
        async for running in start_idp(url, simulator, tmp_path):
            yield running


@pytest.fixture
async def saml_browser(saml_idp: Idp) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=saml_idp.base_url, timeout=30) as client:
        yield client


def code_form(code: str, **extra: str) -> dict[str, str]:
    return {"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK, **extra}


async def post_token(
    provider: Provider, form: dict[str, str], auth: tuple[str, str] | None = None
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=provider.base_url, timeout=30) as rp:
        return await rp.post("/oidc/token", data=form, auth=auth)


async def change_application(provider: Provider, app: IssuedApplication, **values: object) -> None:
    """What an admin does in the console, straight in the table."""
    async with database(provider) as db:
        await db.execute(
            update(ApplicationRow)
            .where(ApplicationRow.client_id == app.application.client_id)
            .values(**values)
        )


# --- OpenID Connect: codes --------------------------------------------------------------


async def test_code_injection_a_code_issued_to_one_client_is_refused_to_another(
    provider: Provider, browser: httpx.AsyncClient
) -> None:
    code = await bob_code(browser, provider.password_only)
    stolen = await post_token(provider, code_form(code), credentials(provider.strict))
    assert refused_grant(stolen)
    assert "access_token" not in stolen.text


async def test_a_code_redeemed_with_another_redirect_uri_is_refused(
    provider: Provider, browser: httpx.AsyncClient
) -> None:
    code = await bob_code(browser, provider.password_only)
    other = code_form(code, redirect_uri=CALLBACK + "?next=https://evil.example.test/")
    assert refused_grant(await post_token(provider, other, credentials(provider.password_only)))


async def test_a_code_bound_to_pkce_is_refused_without_its_verifier(
    provider: Provider, browser: httpx.AsyncClient
) -> None:
    verifier = secrets.token_urlsafe(48)
    pkce = {"code_challenge": s256(verifier), "code_challenge_method": "S256"}
    app = provider.password_only  # confidential: the secret alone must not be enough
    code = await bob_code(browser, app, **pkce)
    assert refused_grant(await post_token(provider, code_form(code), credentials(app)))


async def test_pkce_downgrade_to_plain_is_refused_before_any_sign_in(
    provider: Provider, browser: httpx.AsyncClient
) -> None:
    verifier = secrets.token_urlsafe(48)
    path = authorize_path(provider.public, code_challenge=verifier, code_challenge_method="plain")
    answer = callback_query(await browser.get(path))
    assert answer["error"] == "invalid_request"
    assert "code" not in answer


async def test_concurrent_redemptions_of_one_code_give_one_token_set(
    provider: Provider, browser: httpx.AsyncClient
) -> None:
    app = provider.password_only
    code = await bob_code(browser, app)
    answers = await asyncio.gather(
        *(post_token(provider, code_form(code), credentials(app)) for _ in range(6))
    )
    assert sorted(a.status_code for a in answers) == [200, 400, 400, 400, 400, 400]


async def test_a_code_is_dead_once_its_session_signs_out(
    provider: Provider, browser: httpx.AsyncClient
) -> None:
    code = await bob_code(browser, provider.password_only)
    page = await browser.get("/")
    signed_out = await browser.post("/logout", data={"csrf_token": csrf_from(page.text)})
    assert signed_out.status_code in (302, 303)
    assert (await browser.get("/")).status_code != 200
    late = await post_token(provider, code_form(code), credentials(provider.password_only))
    assert refused_grant(late)


async def test_a_code_is_refused_once_the_application_no_longer_admits_the_user(
    provider: Provider, browser: httpx.AsyncClient
) -> None:
    app = provider.password_only
    code = await bob_code(browser, app)
    await change_application(provider, app, allowed_users=["somebody-else"])
    assert refused_grant(await post_token(provider, code_form(code), credentials(app)))


@pytest.mark.parametrize(
    "variant",
    [
        CALLBACK + "/",
        CALLBACK.upper(),
        CALLBACK + "?x=1",
        CALLBACK + "#frag",
        CALLBACK.replace("127.0.0.1", "127.0.0.1@evil.example.test"),
        CALLBACK.replace("http://", "http://evil.example.test@"),
        CALLBACK.replace("callback", "%63allback"),
        CALLBACK.replace("/oidc/", "/oidc/../oidc/"),
    ],
)
async def test_a_redirect_uri_trick_gets_an_error_page_and_no_redirect(
    provider: Provider, browser: httpx.AsyncClient, variant: str
) -> None:
    page = await browser.get(authorize_path(provider.password_only, redirect_uri=variant))
    assert page.status_code == 400
    assert "location" not in page.headers


# --- OpenID Connect: client authentication, tokens, userinfo --------------------------


async def test_client_authentication_confusion_is_refused(
    provider: Provider, browser: httpx.AsyncClient
) -> None:
    app, public = provider.password_only, provider.public
    client_id, secret = credentials(app)
    code = await bob_code(browser, app)
    no_secret = await post_token(provider, code_form(code, client_id=client_id))
    assert no_secret.status_code == 401  # a confidential client without its secret
    both = await post_token(
        provider, code_form(code, client_id=client_id, client_secret=secret), (client_id, secret)
    )
    assert both.status_code == 400
    assert both.json()["error"] == "invalid_request"
    public_id = public.application.client_id
    with_secret = await post_token(provider, code_form(code), (public_id, "made-up"))
    assert with_secret.status_code == 401
    as_public = await post_token(provider, code_form(code, client_id=client_id, client_secret=""))
    assert as_public.status_code == 401
    right = await post_token(provider, code_form(code), (client_id, secret))
    assert right.status_code == 200, right.text  # none of the attempts spent the code


async def test_userinfo_refuses_an_id_token_and_a_revoked_access_token(
    provider: Provider, browser: httpx.AsyncClient
) -> None:
    app = provider.password_only
    tokens = await tokens_for(provider, app, await bob_code(browser, app))
    assert await userinfo_status(provider, tokens["id_token"]) == 401
    assert await userinfo_status(provider, tokens["refresh_token"]) == 401
    async with httpx.AsyncClient(base_url=provider.base_url) as rp:
        revoked = await rp.post(
            "/oidc/revoke", data={"token": tokens["access_token"]}, auth=credentials(app)
        )
    assert revoked.status_code == 200
    assert await userinfo_status(provider, tokens["access_token"]) == 401


async def test_revoking_another_clients_tokens_leaves_them_working(
    provider: Provider, browser: httpx.AsyncClient
) -> None:
    app = provider.password_only
    tokens = await tokens_for(provider, app, await bob_code(browser, app))
    async with httpx.AsyncClient(base_url=provider.base_url) as attacker:
        for token in (tokens["access_token"], tokens["refresh_token"]):
            answer = await attacker.post(
                "/oidc/revoke", data={"token": token}, auth=credentials(provider.strict)
            )
            assert answer.status_code == 200
    assert await userinfo_status(provider, tokens["access_token"]) == 200
    assert (await refresh(provider, app, tokens["refresh_token"])).status_code == 200


async def test_userinfo_refuses_a_user_the_application_no_longer_admits(
    provider: Provider, browser: httpx.AsyncClient
) -> None:
    app = provider.password_only
    tokens = await tokens_for(provider, app, await bob_code(browser, app))
    assert await userinfo_status(provider, tokens["access_token"]) == 200
    await change_application(provider, app, allowed_users=["somebody-else"])
    assert await userinfo_status(provider, tokens["access_token"]) == 401


async def test_a_refresh_is_refused_once_the_application_requires_a_second_factor(
    provider: Provider, browser: httpx.AsyncClient
) -> None:
    """bob signed in with his password while the application asked no more; the admin then
    requires a second factor: his refresh token must not go on giving password-only tokens."""
    app = provider.password_only
    tokens = await tokens_for(provider, app, await bob_code(browser, app))
    await change_application(provider, app, second_factor_required=True)
    assert refused_grant(await refresh(provider, app, tokens["refresh_token"]))


async def test_prompt_none_with_max_age_zero_does_not_answer_from_an_old_session(
    provider: Provider, browser: httpx.AsyncClient
) -> None:
    await bob_code(browser, provider.password_only)
    await asyncio.sleep(1.1)
    path = authorize_path(provider.password_only, prompt="none", max_age="0")
    answer = callback_query(await browser.get(path))
    assert answer["error"] == "login_required"
    assert "code" not in answer


@pytest.mark.parametrize(
    "variant",
    [SIGNED_OUT + "/", SIGNED_OUT + "?x=1", "https://evil.example.test/", SIGNED_OUT.upper()],
)
async def test_post_logout_redirect_uri_is_no_open_redirect(
    provider: Provider, browser: httpx.AsyncClient, variant: str
) -> None:
    app = provider.password_only
    hint = (await tokens_for(provider, app, await bob_code(browser, app)))["id_token"]
    query = {"id_token_hint": hint, "post_logout_redirect_uri": variant}
    answer = await browser.get("/oidc/logout", params=query)
    assert answer.status_code == 400
    assert "location" not in answer.headers
    assert (await browser.get("/")).status_code == 200  # nothing was ended


async def test_consent_posted_cross_site_without_the_token_grants_nothing(
    provider: Provider, browser: httpx.AsyncClient
) -> None:
    app = provider.password_only
    await change_application(provider, app, skip_consent=False)
    path = authorize_path(app)
    signed_in = await test_oidc_provider.password(
        browser, await test_oidc_provider.follow_to_login(browser, path), "bob"
    )
    asked = await browser.get(signed_in.headers["location"])
    assert asked.headers["location"].startswith("/oidc/consent?")
    query = asked.headers["location"].partition("?")[2]
    forged = await browser.post(f"/oidc/consent?{query}", data={"decision": "allow"})
    assert forged.status_code == 403
    again = await browser.get(authorize_path(app, prompt="none"))
    assert callback_query(again)["error"] == "consent_required"


# --- SAML -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "appended",
    ["SAMLRequest={forged}", "SAML%52equest={forged}", "RelayState=https%3A%2F%2Fevil.test%2F"],
)
async def test_a_second_samlrequest_appended_to_a_signed_query_is_refused(
    saml_idp: Idp, saml_browser: httpx.AsyncClient, appended: str
) -> None:
    """The signature covers the first SAMLRequest; the request must not be read from a later
    one (HTTP parameter pollution: a signed query of the provider's, anyone's message)."""
    sp = saml_idp.password_only
    await sign_in_as_bob(saml_browser, authn_request(saml_idp, sp)[1])
    _, signed = authn_request(saml_idp, sp)
    _, own = sp.client.create_authn_request(f"{saml_idp.base_url}/saml/sso", sign=False)
    info = sp.client.apply_binding(
        BINDING_HTTP_REDIRECT, str(own), f"{saml_idp.base_url}/saml/sso", "/x", sign=False
    )
    forged = parameter(dict(info["headers"])["Location"], "SAMLRequest")
    polluted = await saml_browser.get(f"{signed}&{appended.format(forged=forged)}")
    error_page(polluted, 400)


async def test_a_logout_request_for_another_subject_does_not_end_the_session(
    saml_idp: Idp, saml_browser: httpx.AsyncClient
) -> None:
    """mallory's own signed LogoutRequest (she signs out of the provider and keeps the URL)
    sent to bob's browser: bob's session is not mallory's, it must go on."""
    sp = saml_idp.password_only
    await sign_in_as_bob(saml_browser, authn_request(saml_idp, sp)[1])
    destination = f"{saml_idp.base_url}/saml/slo"
    mallory = NameID(format=NAMEID_FORMAT_PERSISTENT, text="mallorys-persistent-id")
    _, logout = sp.client.create_logout_request(
        destination, saml_idp.entity_id, name_id=mallory, sign=False
    )
    info = sp.client.apply_binding(
        BINDING_HTTP_REDIRECT, str(logout), destination, "", sign=True, sigalg=SIG_RSA_SHA256
    )
    answer = await saml_browser.get(dict(info["headers"])["Location"])
    assert answer.status_code in (303, 400)
    still = await saml_browser.get(authn_request(saml_idp, sp)[1])
    assert still.status_code == 200  # answered at once: bob is still signed in
    assert "SAMLResponse" in still.text


def deflated(xml: bytes) -> str:
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    return base64.b64encode(deflate.compress(xml) + deflate.flush()).decode()


def unsigned_request_xml(idp: Idp, prolog: str, issuer: str) -> bytes:
    return (
        f"{prolog}<samlp:AuthnRequest xmlns:samlp='urn:oasis:names:tc:SAML:2.0:protocol' "
        "xmlns:saml='urn:oasis:names:tc:SAML:2.0:assertion' ID='id-evil' Version='2.0' "
        f"IssueInstant='2026-01-01T00:00:00Z' Destination='{idp.base_url}/saml/sso'>"
        f"<saml:Issuer>{issuer}</saml:Issuer></samlp:AuthnRequest>"
    ).encode()


@pytest.mark.parametrize(
    "prolog",
    [
        "<!DOCTYPE r [<!ENTITY x SYSTEM 'file:///etc/passwd'>]>",
        "<!DOCTYPE r [<!ENTITY a 'aaaaaaaaaa'><!ENTITY b '&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;'>"
        "<!ENTITY c '&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;'><!ENTITY d '&c;&c;&c;&c;&c;&c;&c;&c;'>]>",
    ],
    ids=["external entity", "billion laughs"],
)
async def test_a_samlrequest_with_a_doctype_is_refused(
    saml_idp: Idp, saml_browser: httpx.AsyncClient, prolog: str
) -> None:
    xml = unsigned_request_xml(saml_idp, prolog, saml_idp.unsigned.entity_id + "&d;")
    query = urllib.parse.urlencode({"SAMLRequest": deflated(xml)})
    error_page(await saml_browser.get(f"/saml/sso?{query}"), 400)


async def test_a_deflate_bomb_is_refused_before_it_is_inflated(
    saml_idp: Idp, saml_browser: httpx.AsyncClient
) -> None:
    bomb = deflated(b"<a>" + b" " * 50_000_000 + b"</a>")
    assert len(bomb) < 100_000
    query = urllib.parse.urlencode({"SAMLRequest": bomb})
    error_page(await saml_browser.get(f"/saml/sso?{query}"), 400)
    slo = await saml_browser.get(f"/saml/slo?{query}")
    assert slo.status_code == 400


async def test_an_acs_by_index_or_binding_outside_the_metadata_is_refused(
    saml_idp: Idp, saml_browser: httpx.AsyncClient
) -> None:
    sp = saml_idp.password_only
    await sign_in_as_bob(saml_browser, authn_request(saml_idp, sp)[1])
    _, by_index = authn_request(saml_idp, sp, assertion_consumer_service_index="7")
    error_page(await saml_browser.get(by_index), 400)
    _, artifact = authn_request(
        saml_idp,
        sp,
        assertion_consumer_service_urls=[sp.acs_url],
        response_binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Artifact",
    )
    error_page(await saml_browser.get(artifact), 400)


async def test_an_authn_request_naming_another_providers_acs_is_refused(
    saml_idp: Idp, saml_browser: httpx.AsyncClient
) -> None:
    sp, other = saml_idp.password_only, saml_idp.strict
    await sign_in_as_bob(saml_browser, authn_request(saml_idp, sp)[1])
    _, path = authn_request(saml_idp, sp, assertion_consumer_service_urls=[other.acs_url])
    error_page(await saml_browser.get(path), 400)


async def test_idp_initiated_sign_in_needs_admission_and_the_second_factor(
    saml_idp: Idp, saml_browser: httpx.AsyncClient
) -> None:
    await sign_in_as_bob(saml_browser, authn_request(saml_idp, saml_idp.password_only)[1])
    finance = urllib.parse.urlencode({"sp": saml_idp.finance.entity_id})
    error_page(await saml_browser.get(f"/saml/sso/idp-initiated?{finance}"), 403)
    strict = urllib.parse.urlencode({"sp": saml_idp.strict.entity_id})
    elevate = await saml_browser.get(f"/saml/sso/idp-initiated?{strict}")
    assert elevate.status_code == 303
    assert elevate.headers["location"] == "/2fa/elevate"


async def test_is_passive_does_not_skip_the_second_factor(
    saml_idp: Idp, saml_browser: httpx.AsyncClient
) -> None:
    await sign_in_as_bob(saml_browser, authn_request(saml_idp, saml_idp.password_only)[1])
    sp = saml_idp.strict
    request_id, path = authn_request(saml_idp, sp, is_passive="true")
    page = await saml_browser.get(path)
    response = posted_response(page, sp)
    with pytest.raises(StatusNoPassive):
        accepted(sp, response, request_id)


async def test_an_unsigned_logout_request_naming_the_user_is_no_logout_csrf(
    saml_idp: Idp, saml_browser: httpx.AsyncClient
) -> None:
    """A link on any page, to an unsigned LogoutRequest naming bob as a provider knows him
    (his username, for a provider given NameIDs by username): it ends nothing."""
    sp = saml_idp.strict  # NameID: the username, which anyone can guess
    await sign_in_as_bob(saml_browser, authn_request(saml_idp, saml_idp.password_only)[1])
    destination = f"{saml_idp.base_url}/saml/slo"
    bob = NameID(text="bob")
    _, logout = sp.client.create_logout_request(
        destination, saml_idp.entity_id, name_id=bob, sign=False
    )
    info = sp.client.apply_binding(BINDING_HTTP_REDIRECT, str(logout), destination, "", sign=False)
    error_page(await saml_browser.get(dict(info["headers"])["Location"]), 400)
    still = await saml_browser.get(authn_request(saml_idp, saml_idp.password_only)[1])
    assert "SAMLResponse" in still.text  # bob is still signed in


async def test_an_unsigned_post_binding_request_for_a_provider_that_signs_is_refused(
    saml_idp: Idp, saml_browser: httpx.AsyncClient
) -> None:
    sp = saml_idp.password_only
    await sign_in_as_bob(saml_browser, authn_request(saml_idp, sp)[1])
    _, info = sp.client.prepare_for_authenticate(
        entityid=saml_idp.entity_id, binding=BINDING_HTTP_POST, sign=False, relay_state="/x"
    )
    found = re.search(r'name="SAMLRequest" value="([^"]+)"', info["data"])
    assert found is not None
    page = await saml_browser.get("/")
    form = {"SAMLRequest": unescape(found.group(1)), "csrf_token": csrf_from(page.text)}
    error_page(await saml_browser.post("/saml/sso", data=form), 400)


def keyless_provider(idp: Idp) -> tuple[str, Saml2Client]:
    """A provider whose metadata has no signing certificate: it cannot sign anything."""
    base = "http://127.0.0.1:9/sp/keyless"
    settings: dict[str, Any] = {
        "entityid": f"{base}/metadata",
        "xmlsec_binary": "/usr/bin/xmlsec1",
        "metadata": {"inline": [idp_metadata_of(idp)]},
        "service": {
            "sp": {
                "endpoints": {
                    "assertion_consumer_service": [(f"{base}/acs", BINDING_HTTP_POST)],
                    "single_logout_service": [(f"{base}/slo", BINDING_HTTP_REDIRECT)],
                },
                "authn_requests_signed": False,
                "logout_requests_signed": False,
            }
        },
    }
    config = SPConfig()
    config.load(settings)
    return str(entity_descriptor(config)), Saml2Client(config)


def idp_metadata_of(idp: Idp) -> str:
    return httpx.get(f"{idp.base_url}/saml/metadata").text


async def test_a_provider_without_a_signing_key_cannot_sign_users_out_by_a_link(
    saml_idp: Idp, saml_browser: httpx.AsyncClient
) -> None:
    metadata, keyless = keyless_provider(saml_idp)
    gateway = await Gateway.start(saml_idp.settings)
    try:
        settings = saml_idp.settings
        saml = build_saml(gateway.db, gateway.clock, settings.secret_keys, settings.public_url)
        await saml.providers.add(
            NewServiceProvider("Keyless", metadata, name_id_format="email"), actor="test"
        )
    finally:
        await gateway.close()
    await sign_in_as_bob(saml_browser, authn_request(saml_idp, saml_idp.password_only)[1])
    destination = f"{saml_idp.base_url}/saml/slo"
    _, logout = keyless.create_logout_request(
        destination, saml_idp.entity_id, name_id=NameID(text="bob"), sign=False
    )
    info = keyless.apply_binding(BINDING_HTTP_REDIRECT, str(logout), destination, "", sign=False)
    error_page(await saml_browser.get(dict(info["headers"])["Location"]), 400)
    still = await saml_browser.get(authn_request(saml_idp, saml_idp.password_only)[1])
    assert "SAMLResponse" in still.text  # bob is still signed in
