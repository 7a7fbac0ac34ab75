"""Bad input never makes the identity provider answer 5xx, and relying parties always get the
protocol's JSON errors. The OIDC and SAML endpoints are not in the REST API's OpenAPI
document, so a document written here describes their inputs as relying parties and browsers
send them; schemathesis throws valid and invalid requests at each operation of a live gateway
(SQLite) with a confidential client, a public client and a SAML provider registered, and, for
the endpoints a browser visits, once without and once with a signed-in session, so the
fuzzer gets past "sign in first" into the authorize, consent and logout decisions. The run is
bounded and derandomized: the same requests each time, in seconds.

Then the token confusions issue 17 names, over real HTTP: an ID token is not an access token,
an access token is the user's and not bound to its client (RFC 6750 bearer tokens carry no
audience; userinfo answers for the user whichever client holds it), and a logout token is not
an ID token hint."""

from __future__ import annotations

import asyncio
import base64
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from saml2 import BINDING_HTTP_REDIRECT

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
    verified_claims,
)
from tests.integration.test_saml_idp import ServiceProviderClient
from tests.integration.test_saml_idp import register as register_saml_providers
from tests.support.databases import sqlite_database
from tests.support.gateway import PASSWORDS, csrf_from, running_gateway
from twofa.config import Settings
from twofa.services.idp.applications import IssuedApplication, NewApplication
from twofa.services.idp.backchannel import LogoutNotice
from twofa.services.idp.claims import s256
from twofa.services.runtime import Gateway
from twofa.web.context import SESSION_COOKIE

# The OIDC provider tests' fixtures: a gateway with four clients, and a browser for it.
provider = test_oidc_provider.provider
browser = test_oidc_provider.browser

schemathesis = pytest.importorskip(
    "schemathesis", reason="schemathesis is not installed (it is in the dev extras: .[dev])"
)
from schemathesis.checks import not_a_server_error  # noqa: E402 (after the import guard)

EXAMPLES_PER_OPERATION = 100
RELYING_PARTY_PATHS = frozenset({"/oidc/token", "/oidc/revoke", "/oidc/userinfo"})
# RFC 6749 §5.2, RFC 6750 §3.1 and RFC 7009 §2.2.1: every error a relying party may be sent.
PROTOCOL_ERRORS = frozenset(
    {
        "invalid_request",
        "invalid_client",
        "invalid_grant",
        "unauthorized_client",
        "unsupported_grant_type",
        "invalid_scope",
        "invalid_token",
        "insufficient_scope",
        "unsupported_token_type",
    }
)


@dataclass
class LiveIdp:
    """One gateway for the module, with what a relying party and a signed-in browser hold."""

    base_url: str
    confidential: IssuedApplication  # asks consent, has a post-logout URI
    public: IssuedApplication  # PKCE, no secret, trusted
    saml_entity_id: str  # the provider that does not sign its requests
    new_saml_request: Callable[[], str]  # a fresh AuthnRequest of it (each is answered once)
    access_token: str
    refresh_token: str
    id_token: str
    cookie: str = ""  # bob's twofa session; empty: sign in again before the next request

    def session(self) -> dict[str, str]:
        if not self.cookie:
            self.cookie = signed_in_cookie(self.base_url)
        return {SESSION_COOKIE: self.cookie}

    def csrf_token(self) -> str:
        with httpx.Client(base_url=self.base_url, cookies=self.session()) as visitor:
            return csrf_from(visitor.get("/").text)


def signed_in_cookie(base_url: str) -> str:
    """Bob's password sign-in (he needs no second factor), as a browser does it."""
    with httpx.Client(base_url=base_url, timeout=30) as visitor:
        page = visitor.get("/login")
        form = {"username": "bob", "password": PASSWORDS["bob"], "csrf_token": csrf_from(page.text)}
        assert visitor.post("/login", data=form).status_code == 303
        cookie = visitor.cookies.get(SESSION_COOKIE)
    assert cookie
    return cookie


async def register_clients(settings: Settings) -> tuple[IssuedApplication, IssuedApplication]:
    gateway = await Gateway.start(settings)
    try:
        add = gateway.applications.add
        confidential = NewApplication(
            "Fuzz wiki",
            [CALLBACK],
            post_logout_redirect_uris=[SIGNED_OUT],
            second_factor_required=False,
            skip_consent=False,
        )
        public = NewApplication("Fuzz tool", [CALLBACK], public=True, second_factor_required=False)
        return (
            await add(confidential, actor="test"),
            await add(public, actor="test"),
        )
    finally:
        await gateway.close()


async def tokens_through_consent(base_url: str, app: IssuedApplication) -> dict[str, Any]:
    """Bob signs in to `app`, allows it on the consent page, and the client redeems the code."""
    path = authorize_path(app)
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as visitor:
        login = (await visitor.get(path)).headers["location"]
        page = await visitor.get(login)
        form = {"username": "bob", "password": PASSWORDS["bob"], "csrf_token": csrf_from(page.text)}
        back = (await visitor.post("/login", data=form)).headers["location"]
        consent = (await visitor.get(back)).headers["location"]
        asked = await visitor.get(consent)
        allow = {"decision": "allow", "csrf_token": csrf_from(asked.text)}
        again = (await visitor.post(consent, data=allow)).headers["location"]
        code = callback_query(await visitor.get(again))["code"]
    exchange = {"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK}
    async with httpx.AsyncClient(base_url=base_url) as relying_party:  # its server: no cookie
        answer = await relying_party.post(
            "/oidc/token", data=exchange, auth=(app.application.client_id, app.client_secret or "")
        )
    assert answer.status_code == 200, answer.text
    tokens: dict[str, Any] = answer.json()
    return tokens


def saml_requests(sp: ServiceProviderClient, idp_entity_id: str) -> Callable[[], str]:
    """The SAMLRequest of a new AuthnRequest of `sp` (a provider that does not sign) each call."""

    def new_request() -> str:
        _, info = sp.client.prepare_for_authenticate(
            entityid=idp_entity_id, binding=BINDING_HTTP_REDIRECT, sign=False
        )
        location = dict(info["headers"])["Location"]
        return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))["SAMLRequest"]

    return new_request


async def prepared(base_url: str, settings: Settings, tmp_path: Path) -> LiveIdp:
    confidential, public = await register_clients(settings)
    async with httpx.AsyncClient(base_url=base_url) as http:
        metadata = (await http.get("/saml/metadata")).text
    clients = await register_saml_providers(settings, tmp_path, metadata)
    tokens = await tokens_through_consent(base_url, confidential)
    return LiveIdp(
        base_url,
        confidential,
        public,
        clients["unsigned"].entity_id,
        saml_requests(clients["unsigned"], f"{base_url}/saml/metadata"),
        tokens["access_token"],
        tokens["refresh_token"],
        tokens["id_token"],
    )


@pytest.fixture(scope="module")
def live_idp(
    tmp_path_factory: pytest.TempPathFactory, simulator_server: RunningSimulator
) -> Iterator[LiveIdp]:
    """One gateway for the module; its own event loop creates the database and the registry
    around the served app, which runs in a thread."""
    tmp_path = tmp_path_factory.mktemp("idp-fuzz")
    loop = asyncio.new_event_loop()
    database = sqlite_database(tmp_path)
    try:
        url = loop.run_until_complete(database.__aenter__())
        gateway = running_gateway(url, simulator_server)
        try:
            base_url, settings = loop.run_until_complete(gateway.__aenter__())
            try:
                yield loop.run_until_complete(prepared(base_url, settings, tmp_path))
            finally:
                loop.run_until_complete(gateway.__aexit__(None, None, None))
        finally:
            loop.run_until_complete(database.__aexit__(None, None, None))
    finally:
        loop.close()


TEXT: Final = {"type": "string"}
BASIC_SHAPE: Final = {"type": "string", "pattern": "^Basic [A-Za-z0-9+/=]+$"}
BEARER_SHAPE: Final = {"type": "string", "pattern": "^Bearer [A-Za-z0-9._~+/=-]+$"}


def header(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    """A header of a given shape: its negative cases are headers of another shape (values of
    any other type cannot be a header)."""
    return {"name": name, "in": "header", "required": False, "schema": schema}


def query(*names: str) -> list[dict[str, Any]]:
    return [{"name": name, "in": "query", "required": False, "schema": TEXT} for name in names]


def form(*names: str, required: tuple[str, ...] = ()) -> dict[str, Any]:
    schema = {
        "type": "object",
        "properties": dict.fromkeys(names, TEXT),
        "required": list(required),
    }
    return {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": schema}}}


def operation(**parts: Any) -> dict[str, Any]:
    return {**parts, "responses": {"default": {"description": "any answer but a 5xx"}}}


AUTHORIZE_QUERY: Final = query(
    "client_id", "redirect_uri", "response_type", "scope", "state", "nonce",
    "code_challenge", "code_challenge_method", "prompt", "max_age",
)  # fmt: skip
SAML_QUERY: Final = query("SAMLRequest", "RelayState", "SigAlg", "Signature")
CLIENT_AUTH: Final = header("Authorization", BASIC_SHAPE)
BEARER: Final = header("Authorization", BEARER_SHAPE)
TOKEN_FORM: Final = form(
    "grant_type", "code", "redirect_uri", "code_verifier", "refresh_token", "client_id",
    "client_secret", "scope", required=("grant_type",),
)  # fmt: skip
USERINFO: Final = operation(parameters=[BEARER])


def idp_document(base_url: str) -> dict[str, Any]:
    """The identity provider's inputs, as relying parties, providers and browsers send them."""
    paths = {
        "/oidc/token": {"post": operation(parameters=[CLIENT_AUTH], requestBody=TOKEN_FORM)},
        "/oidc/userinfo": {"get": USERINFO, "post": USERINFO},
        "/oidc/revoke": {
            "post": operation(
                parameters=[CLIENT_AUTH],
                requestBody=form(
                    "token", "token_type_hint", "client_id", "client_secret", required=("token",)
                ),
            )
        },
        "/oidc/authorize": {"get": operation(parameters=AUTHORIZE_QUERY)},
        "/oidc/consent": {
            "get": operation(parameters=AUTHORIZE_QUERY),
            "post": operation(
                parameters=AUTHORIZE_QUERY, requestBody=form("decision", "csrf_token")
            ),
        },
        "/oidc/logout": {
            "get": operation(
                parameters=query("id_token_hint", "post_logout_redirect_uri", "state", "client_id")
            )
        },
        "/saml/sso": {
            "get": operation(parameters=SAML_QUERY + query("resume", "id")),
            "post": operation(
                requestBody=form("SAMLRequest", "RelayState", required=("SAMLRequest",))
            ),
        },
        "/saml/slo": {"get": operation(parameters=SAML_QUERY)},
        "/saml/sso/idp-initiated": {"get": operation(parameters=query("sp", "RelayState"))},
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "twofa identity provider (test description)", "version": "1"},
        "servers": [{"url": base_url}],
        "paths": paths,
    }


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


# field: (where it goes, values twofa knows, the first a valid one; a callable makes a new one)
Known = dict[str, tuple[str, tuple[str | Callable[[], str] | None, ...]]]  # None: left out


def known_inputs(live: LiveIdp) -> dict[str, Known]:
    """Per path, values the gateway knows, so the fuzzer gets past "unknown client" and "bad
    credentials" to what lies behind (random text would never name a registered client)."""
    confidential, public = (
        live.confidential.application.client_id,
        live.public.application.client_id,
    )
    secret = live.confidential.client_secret or ""
    clients = ("body", (None, confidential, public))
    authorize: Known = {
        "client_id": ("query", (confidential, public)),
        "redirect_uri": ("query", (CALLBACK,)),
        "response_type": ("query", ("code", "token", "id_token code")),
        "scope": (
            "query",
            ("openid", "openid profile email groups", "openid offline_access", "profile"),
        ),
        "code_challenge": ("query", ("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",)),
        "code_challenge_method": ("query", ("S256", "plain")),
        "prompt": ("query", ("", "none", "login", "consent", "none login", "select_account")),
        "max_age": ("query", ("3600", "0", "-1", "1e9")),
    }
    saml: Known = {
        "SAMLRequest": ("query", (live.new_saml_request,)),
        "SigAlg": ("query", ("http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",)),
    }
    client_auth = ("headers", (basic(confidential, secret), basic(confidential, "wrong")))
    return {
        "/oidc/token": {
            "Authorization": client_auth,
            "grant_type": ("body", ("refresh_token", "authorization_code", "client_credentials")),
            "redirect_uri": ("body", (None, CALLBACK)),
            "refresh_token": ("body", (live.refresh_token,)),
            "client_id": clients,
            "client_secret": ("body", (None, secret)),
        },
        "/oidc/userinfo": {
            "Authorization": ("headers", (f"Bearer {live.access_token}", f"Bearer {live.id_token}"))
        },
        "/oidc/revoke": {
            "Authorization": client_auth,
            "token": ("body", (live.access_token, live.refresh_token)),
            "token_type_hint": ("body", ("access_token", "refresh_token")),
            "client_id": clients,
        },
        "/oidc/authorize": authorize,
        "/oidc/consent": {  # bob allowed the client already: asked again
            **authorize,
            "prompt": ("query", ("consent", "", "none", "consent login")),
            "decision": ("body", ("allow", "deny")),
        },
        "/oidc/logout": {
            "id_token_hint": ("query", (live.id_token,)),
            "post_logout_redirect_uri": ("query", (SIGNED_OUT,)),
            "client_id": ("query", (confidential,)),
        },
        "/saml/sso": {**saml, "SAMLRequest": ("any", (live.new_saml_request,))},
        "/saml/slo": saml,
        "/saml/sso/idp-initiated": {"sp": ("query", (live.saml_entity_id,))},
    }


def put_value(case: Any, name: str, where: str, value: str | None) -> None:
    """Sets a field where it goes (`any`: the query of a GET, the form of a POST); None
    leaves it out."""
    if value is None:
        for sent in (case.query, case.headers, case.body):
            if isinstance(sent, dict):
                sent.pop(name, None)
    elif where == "headers":
        case.headers = {**(case.headers or {}), name: value}
    elif where == "body" or (where == "any" and case.method == "POST"):
        if isinstance(case.body, dict):  # a negative case's body may be no form at all
            case.body[name] = value
    else:
        case.query = {**(case.query or {}), name: value}


def put_known_values(case: Any, known: Known, data: st.DataObject) -> None:
    """Half the cases are a valid request with at most one field off (generated, another
    known value, or left out), which reaches the decisions a valid request meets; in the
    others each field is drawn on its own."""
    one_off = data.draw(st.booleans(), label="a valid request with one field off")
    off = data.draw(st.sampled_from([None, *known]), label="field off") if one_off else None
    for name, (where, values) in known.items():
        if one_off and name != off:
            choice = "valid"
        else:
            choice = data.draw(st.sampled_from(("generated", "known", "known", "absent")))
        if choice == "generated":
            continue
        chosen = values[0] if choice == "valid" else data.draw(st.sampled_from(values))
        value = chosen() if callable(chosen) else chosen
        put_value(case, name, where, None if choice == "absent" else value)


@pytest.fixture(scope="module")
def idp_schema(live_idp: LiveIdp) -> Any:
    return schemathesis.openapi.from_dict(idp_document(live_idp.base_url))


def relying_party_errors_are_json(ctx: Any, response: Any, case: Any) -> bool | None:
    """RFC 6749 §5.2 / RFC 6750 §3: a refusal at the token, revocation or userinfo endpoint is
    a JSON object with a registered `error` code, never cached, and a 401 says how to
    authenticate."""
    if case.path not in RELYING_PARTY_PATHS or response.status_code < 400:
        return None
    try:
        body = response.json()
    except ValueError:
        raise AssertionError(f"not JSON: {response.text[:200]!r}") from None
    assert isinstance(body, dict), body
    assert body.get("error") in PROTOCOL_ERRORS, body
    assert response.headers.get("cache-control") == ["no-store"], response.headers
    if response.status_code == 401:
        assert response.headers.get("www-authenticate"), response.headers
    return None


# Relying parties call these from their servers; browsers visit the others, with and without
# a twofa session. Userinfo goes first, while its access token is live: the token endpoint's
# run reuses the refresh token, which revokes its family, and revocation revokes it.
OPERATIONS = [
    ("GET", "/oidc/userinfo", False),
    ("POST", "/oidc/userinfo", False),
    ("POST", "/oidc/token", False),
    ("POST", "/oidc/revoke", False),
    *[
        (method, path, signed_in)
        for method, path in (
            ("GET", "/oidc/authorize"),
            ("GET", "/oidc/consent"),
            ("POST", "/oidc/consent"),
            ("GET", "/oidc/logout"),
            ("GET", "/saml/sso"),
            ("POST", "/saml/sso"),
            ("GET", "/saml/slo"),
            ("GET", "/saml/sso/idp-initiated"),
        )
        for signed_in in (False, True)
    ],
]
# A signed-in browser's negative cases are refused before the session is read, and a consent
# answered without a session is refused by the CSRF check whatever it says: positive only.
CASES = [
    (method, path, signed_in, mode)
    for method, path, signed_in in OPERATIONS
    for mode in ("positive", "negative")
    if mode == "positive" or not (signed_in or (method, path) == ("POST", "/oidc/consent"))
]


def fuzz_call(live: LiveIdp, case: Any, signed_in: bool) -> Any:
    """One request; a signed-in one carries bob's session (and its CSRF token where a form
    needs one), and a session the answer ended is replaced before the next request."""
    cookies = live.session() if signed_in else None
    if signed_in and case.path == "/oidc/consent" and isinstance(case.body, dict):
        case.body["csrf_token"] = live.csrf_token()
    response = case.call(base_url=live.base_url, cookies=cookies, timeout=30, allow_redirects=False)
    if signed_in and any(
        value.startswith(f"{SESSION_COOKIE}=") for value in response.headers.get("set-cookie", [])
    ):
        live.cookie = ""
    return response


@pytest.mark.parametrize(
    ("method", "path", "signed_in", "mode"),
    CASES,
    ids=[f"{m} {p}{' signed-in' if s else ''} {g}" for m, p, s, g in CASES],
)
def test_no_idp_operation_answers_5xx(
    idp_schema: Any, live_idp: LiveIdp, method: str, path: str, signed_in: bool, mode: str
) -> None:
    operation = idp_schema[path][method]
    answers: Counter[int] = Counter()

    known = known_inputs(live_idp)[path]

    @given(
        case=operation.as_strategy(generation_mode=schemathesis.GenerationMode(mode)),
        data=st.data(),
    )
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def call(case: Any, data: st.DataObject) -> None:
        put_known_values(case, known, data)
        response = fuzz_call(live_idp, case, signed_in)
        answers[response.status_code] += 1
        case.validate_response(response, checks=[not_a_server_error, relying_party_errors_are_json])

    call()
    print(f"{method} {path} signed_in={signed_in} {mode}: {dict(sorted(answers.items()))}")
    assert answers, "schemathesis generated no request"


# The token confusions of issue 17, over real HTTP on SQLite and PostgreSQL, with the
# provider of tests/integration/test_oidc_provider.py.


async def bob_signed_in_to(
    provider: Provider, browser: httpx.AsyncClient, app: IssuedApplication, **extra: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Bob's tokens from `app` and its ID token's verified claims."""
    tokens = await tokens_for(provider, app, await bob_code(browser, app, **extra))
    return dict(tokens), await verified_claims(provider, tokens["id_token"])


async def userinfo_with(provider: Provider, bearer: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=provider.base_url) as relying_party:
        return await relying_party.get(
            "/oidc/userinfo", headers={"Authorization": f"Bearer {bearer}"}
        )


def refused_as_invalid_token(answer: httpx.Response) -> bool:
    return (
        answer.status_code == 401
        and answer.json()["error"] == "invalid_token"
        and answer.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    )


async def test_an_id_token_is_refused_at_userinfo_as_not_an_access_token(
    provider: Provider, browser: httpx.AsyncClient
) -> None:
    tokens, _ = await bob_signed_in_to(provider, browser, provider.password_only)
    other_app = provider.public  # bob's single sign-on: another client's ID token
    verifier = "v" * 48
    pkce = {"code_challenge": s256(verifier), "code_challenge_method": "S256"}
    code = callback_query(await browser.get(authorize_path(other_app, **pkce)))["code"]
    async with httpx.AsyncClient(base_url=provider.base_url) as relying_party:
        exchange = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": CALLBACK,
            "client_id": other_app.application.client_id,
            "code_verifier": verifier,
        }
        others = (await relying_party.post("/oidc/token", data=exchange)).json()

    assert refused_as_invalid_token(await userinfo_with(provider, tokens["id_token"]))
    assert refused_as_invalid_token(await userinfo_with(provider, others["id_token"]))
    assert (await userinfo_with(provider, tokens["access_token"])).status_code == 200


async def test_an_access_token_is_the_users_whichever_client_presents_it(
    provider: Provider, browser: httpx.AsyncClient
) -> None:
    """RFC 6750 bearer tokens carry no audience and userinfo takes no client credentials:
    twofa answers for the token's user, within the scopes it was issued for, to whoever
    holds it. What is bound is the user and the scope, and that is what is checked."""
    tokens, claims = await bob_signed_in_to(
        provider, browser, provider.password_only, scope="openid"
    )
    answer = await userinfo_with(provider, tokens["access_token"])
    assert answer.status_code == 200
    # Bob's subject, and no more than `openid` gives (twofa always names the username,
    # which Atlassian's SSO app maps accounts by): no name, no groups.
    only_openid = {"sub": claims["sub"], "preferred_username": "bob"}
    assert answer.json() == only_openid
    async with httpx.AsyncClient(base_url=provider.base_url) as another_client:
        strict = provider.strict.application
        posted = await another_client.post(
            "/oidc/userinfo",
            headers={"Authorization": f"Bearer {tokens['access_token']}"},
            data={"client_id": strict.client_id, "client_secret": provider.strict.client_secret},
        )
    assert posted.json() == only_openid  # naming another client changes nothing


async def logout_token_for(provider: Provider, claims: dict[str, Any]) -> str:
    """A logout token the gateway would send the ID token's client for this sign-in."""
    gateway = await Gateway.start(provider.settings)
    try:
        app = provider.password_only.application
        notice = LogoutNotice(
            app.name, app.client_id, "http://127.0.0.1:9/bc", "bob", claims["sub"], claims["sid"]
        )
        return await gateway.oidc_backchannel.logout_token(notice)
    finally:
        await gateway.close()


async def test_a_logout_token_is_refused_as_an_id_token_hint(
    provider: Provider, browser: httpx.AsyncClient
) -> None:
    _, claims = await bob_signed_in_to(provider, browser, provider.password_only)
    logout_token = await logout_token_for(provider, claims)

    answer = await browser.get(
        "/oidc/logout",
        params={"id_token_hint": logout_token, "post_logout_redirect_uri": SIGNED_OUT},
    )
    assert answer.status_code == 400
    assert "location" not in answer.headers
    assert (await browser.get("/")).status_code == 200  # bob is still signed in
