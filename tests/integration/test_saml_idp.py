"""twofa as a SAML 2.0 identity provider over real HTTP, on SQLite (and PostgreSQL for the main
flow): pysaml2's own service provider client (`Saml2Client`, with its key and certificate made
here) sends signed AuthnRequests over the HTTP-Redirect binding, a browser (httpx) goes through
twofa's sign-in, and the client accepts the response only if its signatures, audience,
recipient, InResponseTo and times are right. And every refusal: unknown provider, ACS URL not
in its metadata, unsigned or tampered request where the provider signs, expired or replayed
request, a disabled user, a user the provider does not admit; IdP-initiated sign-in; single
logout."""

from __future__ import annotations

import base64
import re
import urllib.parse
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
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
from saml2.xmldsig import DIGEST_SHA256, SIG_RSA_SHA256
from sqlalchemy import select, update

from tests.conftest import RunningSimulator
from tests.integration.test_oidc_provider import password
from tests.support.authenticator_totp import code_for, current_step, secret_from_page
from tests.support.databases import postgres_database, sqlite_database
from tests.support.gateway import csrf_from, running_gateway
from tests.support.totp_flow import submit_code
from tests.support.two_factor import allow_methods
from twofa.clock import SystemClock
from twofa.config import Settings
from twofa.services.idp.saml.keys import new_key_and_certificate
from twofa.services.idp.saml.registry import NewServiceProvider
from twofa.services.idp.saml.server import MFA_CLASS, PASSWORD_CLASS
from twofa.services.idp.saml.wiring import build_saml
from twofa.services.runtime import Gateway
from twofa.storage.tables import AuditRow, UserRow

XMLSEC = "/usr/bin/xmlsec1"
MELLON_LIKE_SP = "http://127.0.0.1:9/sp"  # never fetched: the test reads what goes there


@dataclass(frozen=True)
class ServiceProviderClient:
    """One pysaml2 service provider: its client and where its endpoints are."""

    entity_id: str
    acs_url: str
    slo_url: str
    client: Saml2Client
    metadata_xml: str


def sp_client(
    tmp_path: Path, name: str, idp_metadata: str | None, *, signs: bool = True
) -> ServiceProviderClient:
    base = f"{MELLON_LIKE_SP}/{name}"
    key_pem, cert_pem = new_key_and_certificate(f"sp {name}", SystemClock())
    key_file, cert_file = tmp_path / f"{name}.key", tmp_path / f"{name}.crt"
    key_file.write_text(key_pem)
    cert_file.write_text(cert_pem)
    settings: dict[str, Any] = {
        "entityid": f"{base}/metadata",
        "xmlsec_binary": XMLSEC,
        "key_file": str(key_file),
        "cert_file": str(cert_file),
        "signing_algorithm": SIG_RSA_SHA256,
        "digest_algorithm": DIGEST_SHA256,
        "service": {
            "sp": {
                "endpoints": {
                    "assertion_consumer_service": [(f"{base}/acs", BINDING_HTTP_POST)],
                    "single_logout_service": [(f"{base}/slo", BINDING_HTTP_REDIRECT)],
                },
                "authn_requests_signed": signs,
                "logout_requests_signed": True,
                "want_response_signed": True,
                "want_assertions_signed": True,
                "allow_unsolicited": True,
            }
        },
    }
    if idp_metadata is not None:
        settings["metadata"] = {"inline": [idp_metadata]}
    config = SPConfig()
    config.load(settings)
    metadata = str(entity_descriptor(config))
    return ServiceProviderClient(
        f"{base}/metadata", f"{base}/acs", f"{base}/slo", Saml2Client(config), metadata
    )


@dataclass(frozen=True)
class Idp:
    base_url: str
    settings: Settings
    entity_id: str
    strict: ServiceProviderClient  # second factor required, everyone
    password_only: ServiceProviderClient  # no second factor, persistent NameID
    finance: ServiceProviderClient  # only the finance group
    unregistered: ServiceProviderClient  # never added
    unsigned: ServiceProviderClient  # does not sign: metadata says so


async def register(settings: Settings, tmp_path: Path, idp_metadata: str) -> dict[str, Any]:
    clients = {
        name: sp_client(tmp_path, name, idp_metadata)
        for name in ("strict", "password_only", "finance", "unregistered")
    }
    clients["unsigned"] = sp_client(tmp_path, "unsigned", idp_metadata, signs=False)
    gateway = await Gateway.start(settings)
    try:
        saml = build_saml(gateway.db, gateway.clock, settings.secret_keys, settings.public_url)
        add = saml.providers.add
        await add(
            NewServiceProvider("Jira", clients["strict"].metadata_xml, name_id_format="email"),
            actor="test",
        )
        await add(
            NewServiceProvider(
                "Wiki", clients["password_only"].metadata_xml, second_factor_required=False
            ),
            actor="test",
        )
        await add(
            NewServiceProvider(
                "Ledger",
                clients["finance"].metadata_xml,
                allowed_groups=["finance"],
                second_factor_required=False,
            ),
            actor="test",
        )
        await add(
            NewServiceProvider(
                "Old", clients["unsigned"].metadata_xml, second_factor_required=False
            ),
            actor="test",
        )
    finally:
        await gateway.close()
    return clients


async def start_idp(url: str, simulator: RunningSimulator, tmp_path: Path) -> AsyncIterator[Idp]:
    async with running_gateway(url, simulator) as (base_url, settings):
        await allow_methods(settings, ("totp", "duo_push"), first_method="totp")
        async with httpx.AsyncClient(base_url=base_url) as http:
            answer = await http.get("/saml/metadata")
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("application/samlmetadata+xml")
        clients = await register(settings, tmp_path, answer.text)
        yield Idp(base_url, settings, f"{base_url}/saml/metadata", **clients)


@pytest.fixture
async def idp(tmp_path: Path, simulator: RunningSimulator) -> AsyncIterator[Idp]:
    async with sqlite_database(tmp_path) as url:
        async for running in start_idp(url, simulator, tmp_path):
            yield running


@pytest.fixture
async def browser(idp: Idp) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=idp.base_url, timeout=30) as client:
        yield client


def authn_request(idp: Idp, sp: ServiceProviderClient, **extra: Any) -> tuple[str, str]:
    """The request id, and the path of the SSO URL the provider sends the browser to."""
    request_id, info = sp.client.prepare_for_authenticate(
        entityid=idp.entity_id,
        binding=BINDING_HTTP_REDIRECT,
        sign=sp is not idp.unsigned,
        sigalg=SIG_RSA_SHA256,
        relay_state="/after",
        **extra,
    )
    location = dict(info["headers"])["Location"]
    assert location.startswith(idp.base_url + "/saml/sso?")
    return request_id, location.removeprefix(idp.base_url)


def posted_response(page: httpx.Response, sp: ServiceProviderClient) -> str:
    """The SAMLResponse of the page that posts it to the provider's ACS."""
    assert page.status_code == 200, page.text
    action = re.search(r'<form id="saml-post" method="post" action="([^"]+)"', page.text)
    assert action is not None, page.text
    assert unescape(action.group(1)) == sp.acs_url
    found = re.search(r'name="SAMLResponse" value="([^"]+)"', page.text)
    assert found is not None
    assert (
        f"form-action 'self' http://{urllib.parse.urlsplit(sp.acs_url).netloc}"
        in (page.headers["content-security-policy"])
    )
    return unescape(found.group(1))


async def sign_in_through(browser: httpx.AsyncClient, path: str, username: str) -> httpx.Response:
    """Visits the SSO URL with no session, signs in with the password, and comes back."""
    first = await browser.get(path)
    assert first.status_code == 303, first.text
    login = first.headers["location"]
    assert login.startswith("/login?next=%2Fsaml%2Fsso%3F")
    signed_in = await password(browser, login, username)
    assert signed_in.status_code == 303
    return signed_in


async def sign_in_as_bob(browser: httpx.AsyncClient, path: str) -> httpx.Response:
    signed_in = await sign_in_through(browser, path, "bob")
    assert signed_in.headers["location"].startswith("/saml/sso?")
    return await browser.get(signed_in.headers["location"])


def accepted(sp: ServiceProviderClient, saml_response: str, request_id: str | None) -> Any:
    outstanding = {request_id: "/after"} if request_id else {}
    return sp.client.parse_authn_request_response(saml_response, BINDING_HTTP_POST, outstanding)


async def test_bob_signs_in_to_a_password_only_provider_with_a_signed_response(
    idp: Idp, browser: httpx.AsyncClient
) -> None:
    sp = idp.password_only
    request_id, path = authn_request(idp, sp)
    page = await sign_in_as_bob(browser, path)
    response = accepted(sp, posted_response(page, sp), request_id)

    assert response.in_response_to == request_id
    assert response.response.destination == sp.acs_url
    assert response.assertion.issuer.text == idp.entity_id
    audiences = response.assertion.conditions.audience_restriction[0].audience
    assert [a.text for a in audiences] == [sp.entity_id]
    assert response.response.signature is not None
    assert response.assertion.signature is not None
    assert "rsa-sha256" in response.assertion.signature.signed_info.signature_method.algorithm
    not_after = datetime.strptime(
        response.assertion.conditions.not_on_or_after.replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S%z"
    )
    assert timedelta(0) < not_after - datetime.now(UTC) <= timedelta(minutes=6)
    assert response.ava == {"uid": ["bob"], "displayName": ["Bob Builder"]}
    assert response.authn_info()[0][0] == PASSWORD_CLASS
    assert response.name_id.format.endswith(":persistent")
    assert response.name_id.text not in ("bob", "2")

    again_id, again = authn_request(idp, sp)  # single sign-on: no sign-in, the same NameID
    second = accepted(sp, posted_response(await browser.get(again), sp), again_id)
    assert second.name_id.text == response.name_id.text


async def test_alice_passes_her_second_factor_and_the_assertion_says_so(
    idp: Idp, browser: httpx.AsyncClient
) -> None:
    sp = idp.strict
    request_id, path = authn_request(idp, sp)
    signed_in = await sign_in_through(browser, path, "alice")
    assert signed_in.headers["location"] == "/2fa"  # the one pipeline, not around it
    page = await browser.get("/2fa/m/totp/enrol")
    secret = secret_from_page(page.text)
    answer = await submit_code(browser, "/2fa/m/totp/enrol", page, code_for(secret, current_step()))
    back = await browser.get(answer.headers["location"])
    assert back.headers["location"].startswith("/saml/sso?")
    response = accepted(
        sp, posted_response(await browser.get(back.headers["location"]), sp), request_id
    )

    assert response.authn_info()[0][0] == MFA_CLASS
    assert response.ava == {
        "uid": ["alice"],
        "displayName": ["Alice Liddell"],
        "isMemberOf": ["engineering"],
    }
    assert response.name_id.format.endswith(":unspecified")  # "email": the username
    assert response.name_id.text == "alice"


async def test_a_password_only_session_passes_a_second_factor_for_a_provider_that_wants_one(
    idp: Idp, browser: httpx.AsyncClient
) -> None:
    await sign_in_as_bob(browser, authn_request(idp, idp.password_only)[1])
    _, path = authn_request(idp, idp.strict)
    asked = await browser.get(path)
    assert asked.status_code == 303
    assert asked.headers["location"] == "/2fa/elevate"


async def test_force_authn_asks_for_the_password_again_then_answers(
    idp: Idp, browser: httpx.AsyncClient
) -> None:
    sp = idp.password_only
    await sign_in_as_bob(browser, authn_request(idp, sp)[1])
    request_id, path = authn_request(idp, sp, force_authn="true")
    signed_in = await sign_in_through(browser, path, "bob")  # the old session is ended
    page = await browser.get(signed_in.headers["location"])  # the same request: no loop
    assert accepted(sp, posted_response(page, sp), request_id).in_response_to == request_id


def error_page(answer: httpx.Response, status: int) -> None:
    assert answer.status_code == status, answer.text
    assert "location" not in answer.headers  # never sent anywhere the request names
    assert "SAMLResponse" not in answer.text
    assert "Nothing was signed in" in answer.text or "may not sign in" in answer.text


async def test_an_unregistered_provider_gets_an_error_page(
    idp: Idp, browser: httpx.AsyncClient
) -> None:
    _, path = authn_request(idp, idp.unregistered)
    error_page(await browser.get(path), 404)


async def test_an_acs_url_not_in_the_metadata_gets_an_error_page(
    idp: Idp, browser: httpx.AsyncClient
) -> None:
    await sign_in_as_bob(browser, authn_request(idp, idp.password_only)[1])
    _, path = authn_request(
        idp, idp.password_only, assertion_consumer_service_urls=["https://evil.example.test/acs"]
    )
    error_page(await browser.get(path), 400)


def without(path: str, *names: str) -> str:
    base, _, query = path.partition("?")
    kept = [part for part in query.split("&") if part.partition("=")[0] not in names]
    return base + "?" + "&".join(kept)


def parameter(path: str, name: str) -> str:
    query = path.partition("?")[2]
    return next(p.partition("=")[2] for p in query.split("&") if p.partition("=")[0] == name)


async def test_an_unsigned_request_from_a_provider_that_signs_is_refused(
    idp: Idp, browser: httpx.AsyncClient
) -> None:
    await sign_in_as_bob(browser, authn_request(idp, idp.password_only)[1])
    _, path = authn_request(idp, idp.password_only)
    error_page(await browser.get(without(path, "Signature", "SigAlg")), 400)


async def test_a_tampered_request_is_refused(idp: Idp, browser: httpx.AsyncClient) -> None:
    await sign_in_as_bob(browser, authn_request(idp, idp.password_only)[1])
    _, signed = authn_request(idp, idp.password_only)
    _, other = authn_request(idp, idp.password_only, force_authn="true")
    swapped = signed.replace(parameter(signed, "SAMLRequest"), parameter(other, "SAMLRequest"))
    error_page(await browser.get(swapped), 400)
    xml = zlib.decompress(
        base64.b64decode(urllib.parse.unquote(parameter(signed, "SAMLRequest"))), -15
    )
    edited = xml.replace(b'ForceAuthn="false"', b'ForceAuthn="true"').replace(
        b"<ns0:AuthnRequest ", b'<ns0:AuthnRequest IsPassive="false" '
    )
    assert b"IsPassive" not in xml
    assert b"IsPassive" in edited  # the content changed
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    encoded = base64.b64encode(deflate.compress(edited) + deflate.flush()).decode()
    forged = signed.replace(parameter(signed, "SAMLRequest"), urllib.parse.quote(encoded, safe=""))
    error_page(await browser.get(forged), 400)


async def test_an_expired_request_is_refused(idp: Idp, browser: httpx.AsyncClient) -> None:
    await sign_in_as_bob(browser, authn_request(idp, idp.password_only)[1])
    sp = idp.password_only
    destination = f"{idp.base_url}/saml/sso"
    _, request = sp.client.create_authn_request(destination, sign=False)
    request.issue_instant = (datetime.now(UTC) - timedelta(minutes=11)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    info = sp.client.apply_binding(
        BINDING_HTTP_REDIRECT, str(request), destination, "/after", sign=True, sigalg=SIG_RSA_SHA256
    )
    old = dict(info["headers"])["Location"].removeprefix(idp.base_url)
    error_page(await browser.get(old), 400)


async def test_a_request_is_answered_once(idp: Idp, browser: httpx.AsyncClient) -> None:
    _, path = authn_request(idp, idp.password_only)
    posted_response(await sign_in_as_bob(browser, path), idp.password_only)
    error_page(await browser.get(path), 409)


async def test_a_user_disabled_during_the_session_is_not_signed_in(
    idp: Idp, browser: httpx.AsyncClient
) -> None:
    await sign_in_as_bob(browser, authn_request(idp, idp.password_only)[1])
    gateway = await Gateway.start(idp.settings)
    try:
        async with gateway.db.begin() as db:  # as a disabled account's revocation races it
            await db.execute(update(UserRow).where(UserRow.username == "bob").values(enabled=False))
    finally:
        await gateway.close()
    _, path = authn_request(idp, idp.password_only)
    error_page(await browser.get(path), 403)


async def test_a_user_the_provider_does_not_admit_is_refused_and_audited(
    idp: Idp, browser: httpx.AsyncClient
) -> None:
    await sign_in_as_bob(browser, authn_request(idp, idp.password_only)[1])
    _, path = authn_request(idp, idp.finance)
    error_page(await browser.get(path), 403)
    gateway = await Gateway.start(idp.settings)
    try:
        async with gateway.db() as db:
            rows = (await db.scalars(select(AuditRow).where(AuditRow.kind == "saml_sso"))).all()
    finally:
        await gateway.close()
    assert [(r.outcome, r.detail.get("application")) for r in rows][-1] == ("deny", "Ledger")


async def test_idp_initiated_sign_in_posts_an_unsolicited_response(
    idp: Idp, browser: httpx.AsyncClient
) -> None:
    sp = idp.password_only
    await sign_in_as_bob(browser, authn_request(idp, sp)[1])
    query = urllib.parse.urlencode({"sp": sp.entity_id, "RelayState": "/dashboard"})
    page = await browser.get(f"/saml/sso/idp-initiated?{query}")
    response = accepted(sp, posted_response(page, sp), None)
    assert response.in_response_to is None
    assert response.ava["uid"] == ["bob"]
    assert 'name="RelayState" value="/dashboard"' in page.text
    unknown = urllib.parse.urlencode({"sp": "https://nobody.example.test/metadata"})
    error_page(await browser.get(f"/saml/sso/idp-initiated?{unknown}"), 404)


async def test_a_post_binding_request_signed_in_its_xml_is_kept_through_the_sign_in(
    idp: Idp, browser: httpx.AsyncClient
) -> None:
    """The form carries the session's CSRF token: the CSRF middleware refuses a provider's
    cross-site form POST without one today (the report says what csrf.py needs)."""
    sp = idp.password_only
    request_id, info = sp.client.prepare_for_authenticate(
        entityid=idp.entity_id,
        binding=BINDING_HTTP_POST,
        sign=True,
        sigalg=SIG_RSA_SHA256,
        relay_state="/posted",
    )
    found = re.search(r'name="SAMLRequest" value="([^"]+)"', info["data"])
    assert found is not None
    login_page = await browser.get("/login")
    form = {"SAMLRequest": unescape(found.group(1)), "RelayState": "/posted"}
    posted = await browser.post(
        "/saml/sso", data={**form, "csrf_token": csrf_from(login_page.text)}
    )
    assert posted.status_code == 303, posted.text
    login = posted.headers["location"]
    resume = urllib.parse.parse_qs(urllib.parse.urlsplit(login).query)["next"][0]
    assert resume.startswith("/saml/sso?resume=")  # short: the request is kept server-side
    signed_in = await password(browser, login, "bob")
    assert signed_in.headers["location"] == resume
    page = await browser.get(resume)
    assert accepted(sp, posted_response(page, sp), request_id).in_response_to == request_id
    assert 'name="RelayState" value="/posted"' in page.text
    error_page(await browser.get(resume), 409)  # answered once


async def test_single_logout_ends_the_session_and_answers_signed(
    idp: Idp, browser: httpx.AsyncClient
) -> None:
    sp = idp.password_only
    request_id, path = authn_request(idp, sp)
    response = accepted(sp, posted_response(await sign_in_as_bob(browser, path), sp), request_id)
    destination = f"{idp.base_url}/saml/slo"
    _, logout = sp.client.create_logout_request(
        destination, idp.entity_id, name_id=response.name_id, sign=False
    )
    info = sp.client.apply_binding(
        BINDING_HTTP_REDIRECT, str(logout), destination, "/bye", sign=True, sigalg=SIG_RSA_SHA256
    )
    slo_path = dict(info["headers"])["Location"].removeprefix(idp.base_url)

    error_page(await browser.get(without(slo_path, "Signature")), 400)  # unsigned: refused
    answer = await browser.get(slo_path)
    assert answer.status_code == 303, answer.text
    back = answer.headers["location"]
    assert back.startswith(sp.slo_url + "?SAMLResponse=")
    assert "Signature=" in back
    assert "RelayState=%2Fbye" in back
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(back).query))
    logged_out = sp.client.parse_logout_request_response(
        query["SAMLResponse"], BINDING_HTTP_REDIRECT
    )
    assert logged_out.response.status.status_code.value.endswith(":Success")

    _, next_path = authn_request(idp, sp)  # twofa's session is gone: the password again
    again = await browser.get(next_path)
    assert again.status_code == 303
    assert again.headers["location"].startswith("/login?")


async def test_postgresql_runs_the_main_flow(tmp_path: Path, simulator: RunningSimulator) -> None:
    async with postgres_database() as url:
        async for running in start_idp(url, simulator, tmp_path):
            async with httpx.AsyncClient(base_url=running.base_url, timeout=30) as browser:
                sp = running.password_only
                request_id, path = authn_request(running, sp)
                response = accepted(
                    sp, posted_response(await sign_in_as_bob(browser, path), sp), request_id
                )
                assert response.ava["uid"] == ["bob"]
                again_id, again = authn_request(running, sp)
                second = accepted(sp, posted_response(await browser.get(again), sp), again_id)
                assert second.name_id.text == response.name_id.text
                error_page(await browser.get(path), 409)


async def test_a_passive_request_without_a_session_gets_a_signed_no_passive_status(
    idp: Idp, browser: httpx.AsyncClient
) -> None:
    sp = idp.password_only
    request_id, path = authn_request(idp, sp, is_passive="true")
    page = await browser.get(path)  # no session, and the user may not be asked
    with pytest.raises(StatusNoPassive):
        accepted(sp, posted_response(page, sp), request_id)
