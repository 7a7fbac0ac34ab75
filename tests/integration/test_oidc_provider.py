"""twofa as an OpenID Connect provider over real HTTP, on SQLite and PostgreSQL: a relying
party (Authlib's client for the token exchange, httpx for the browser) sends a user through
twofa's own sign-in, password and second factor included, gets a code, exchanges it, checks
the ID token against the JWKS with joserfc, and reads userinfo; and every refusal the issue
names: wrong secret, unknown client, unregistered redirect URI (an error page, never a
redirect), PKCE missing or wrong, a code reused or expired, prompt=none without a session,
a user the client does not admit."""

from __future__ import annotations

import secrets
import time
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from authlib.integrations.httpx_client import AsyncOAuth2Client
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import update

from tests.conftest import RunningSimulator
from tests.support.authenticator_totp import code_for, current_step, secret_from_page
from tests.support.databases import postgres_database, sqlite_database
from tests.support.gateway import csrf_from, running_gateway
from tests.support.totp_flow import submit_code
from tests.support.two_factor import allow_methods
from twofa.config import Settings
from twofa.security.tokens import token_digest
from twofa.services.idp.applications import IssuedApplication, NewApplication
from twofa.services.idp.claims import s256
from twofa.services.runtime import Gateway
from twofa.storage.oidc_tables import OidcCodeRow

CALLBACK = "http://127.0.0.1:9/oidc/callback"  # never fetched: the test reads the redirect
SIGNED_OUT = "http://127.0.0.1:9/signed-out"  # the password-only client's post-logout URI


@dataclass(frozen=True)
class Provider:
    base_url: str
    settings: Settings
    strict: IssuedApplication  # second factor required (the default), everyone
    password_only: IssuedApplication  # no second factor required
    public: IssuedApplication  # a public client: PKCE, no secret
    finance: IssuedApplication  # only the finance group

    async def expire_code(self, code: str) -> None:
        gateway = await Gateway.start(self.settings)
        try:
            async with gateway.db.begin() as db:
                await db.execute(
                    update(OidcCodeRow)
                    .where(OidcCodeRow.code_hash == token_digest(code))
                    .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
                )
        finally:
            await gateway.close()


async def register(settings: Settings) -> dict[str, IssuedApplication]:
    gateway = await Gateway.start(settings)
    try:
        add = gateway.applications.add
        return {
            "strict": await add(NewApplication("Jira", [CALLBACK]), actor="test"),
            "password_only": await add(
                NewApplication(
                    "Wiki",
                    [CALLBACK],
                    post_logout_redirect_uris=[SIGNED_OUT],
                    second_factor_required=False,
                ),
                actor="test",
            ),
            "public": await add(
                NewApplication("Tool", [CALLBACK], public=True, second_factor_required=False),
                actor="test",
            ),
            "finance": await add(
                NewApplication(
                    "Ledger", [CALLBACK], allowed_groups=["finance"], second_factor_required=False
                ),
                actor="test",
            ),
        }
    finally:
        await gateway.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def provider(
    request: pytest.FixtureRequest, tmp_path: Path, simulator: RunningSimulator
) -> AsyncIterator[Provider]:
    factory = sqlite_database(tmp_path) if request.param == "sqlite" else postgres_database()
    async with factory as url, running_gateway(url, simulator) as (base_url, settings):
        await allow_methods(settings, ("totp", "duo_push"), first_method="totp")
        yield Provider(base_url, settings, **await register(settings))


@pytest.fixture
async def browser(provider: Provider) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=provider.base_url, timeout=30) as client:
        yield client


def authorize_path(app: IssuedApplication, **extra: str) -> str:
    query = {
        "client_id": app.application.client_id,
        "redirect_uri": CALLBACK,
        "response_type": "code",
        "scope": "openid profile email groups",
        "state": "state-" + secrets.token_hex(4),
        "nonce": "nonce-" + secrets.token_hex(4),
        **extra,
    }
    return "/oidc/authorize?" + urllib.parse.urlencode(query)


def callback_query(response: httpx.Response) -> dict[str, str]:
    """The query of the redirect back to the relying party."""
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(CALLBACK + "?"), location
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))


async def follow_to_login(browser: httpx.AsyncClient, path: str) -> str:
    """Visits the authorization URL with no session: twofa's sign-in page, with the request
    to come back to."""
    first = await browser.get(path)
    assert first.status_code == 303, first.text
    login = first.headers["location"]
    assert login.startswith("/login?next=")
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(login).query)["next"][0].startswith(
        "/oidc/authorize?"
    )
    return login


async def password(browser: httpx.AsyncClient, login: str, username: str) -> httpx.Response:
    page = await browser.get(login)
    form = {"username": username, "password": f"{username}-password-1"}
    return await browser.post("/login", data={**form, "csrf_token": csrf_from(page.text)})


async def bob_code(browser: httpx.AsyncClient, app: IssuedApplication, **extra: str) -> str:
    path = authorize_path(app, **extra)
    signed_in = await password(browser, await follow_to_login(browser, path), "bob")
    assert signed_in.status_code == 303
    assert signed_in.headers["location"].startswith("/oidc/authorize?")
    return callback_query(await browser.get(signed_in.headers["location"]))["code"]


async def tokens_for(provider: Provider, app: IssuedApplication, code: str, **extra: Any) -> Any:
    """Authlib's client, as a relying party's server does the exchange."""
    async with AsyncOAuth2Client(
        app.application.client_id,
        app.client_secret,
        token_endpoint_auth_method=extra.pop("auth_method", "client_secret_basic"),
    ) as client:
        return await client.fetch_token(
            f"{provider.base_url}/oidc/token", code=code, redirect_uri=CALLBACK, **extra
        )


async def verified_claims(provider: Provider, id_token: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=provider.base_url) as rp:
        discovery = (await rp.get("/.well-known/openid-configuration")).json()
        jwks = (await rp.get(discovery["jwks_uri"].removeprefix(provider.base_url))).json()
    token = jwt.decode(id_token, KeySet.import_key_set(jwks), algorithms=["RS256"])
    return dict(token.claims)


async def test_discovery_is_complete_and_points_at_working_endpoints(provider: Provider) -> None:
    async with httpx.AsyncClient(base_url=provider.base_url) as rp:
        discovery = (await rp.get("/.well-known/openid-configuration")).json()
        jwks = (await rp.get("/oidc/jwks")).json()
    assert discovery["issuer"] == provider.settings.public_url
    for endpoint, path in (
        ("authorization", "authorize"),
        ("token", "token"),
        ("userinfo", "userinfo"),
    ):
        assert discovery[f"{endpoint}_endpoint"] == f"{provider.base_url}/oidc/{path}"
    assert discovery["jwks_uri"] == f"{provider.base_url}/oidc/jwks"
    assert discovery["end_session_endpoint"] == f"{provider.base_url}/oidc/logout"
    assert discovery["response_types_supported"] == ["code"]
    assert discovery["subject_types_supported"] == ["public"]
    assert "RS256" in discovery["id_token_signing_alg_values_supported"]
    assert discovery["code_challenge_methods_supported"] == ["S256"]
    assert {"client_secret_basic", "client_secret_post"} <= set(
        discovery["token_endpoint_auth_methods_supported"]
    )
    assert {key["alg"] for key in jwks["keys"]} == {"RS256", "ES256"}
    assert all("d" not in key for key in jwks["keys"])  # public halves only


async def test_a_user_without_2fa_signs_in_to_a_password_only_client(
    provider: Provider, browser: httpx.AsyncClient
) -> None:
    app = provider.password_only
    path = authorize_path(app, nonce="n-0S6_WzA2Mj")
    signed_in = await password(browser, await follow_to_login(browser, path), "bob")
    before = int(time.time())
    code = callback_query(await browser.get(signed_in.headers["location"]))
    assert code["iss"] == provider.settings.public_url
    assert code["state"] == dict(urllib.parse.parse_qsl(path.split("?", 1)[1]))["state"]

    tokens = await tokens_for(provider, app, code["code"])
    claims = await verified_claims(provider, tokens["id_token"])
    assert claims["iss"] == provider.settings.public_url
    assert claims["aud"] == app.application.client_id
    assert claims["nonce"] == "n-0S6_WzA2Mj"
    assert claims["sub"] not in ("bob", "2")
    assert abs(claims["iat"] - before) <= 5
    assert claims["exp"] - claims["iat"] == 600
    assert abs(claims["auth_time"] - before) <= 5
    assert claims["amr"] == ["pwd"]
    assert claims["acr"] == "urn:twofa:acr:pwd"
    assert claims["preferred_username"] == "bob"
    assert claims["name"] == "Bob Builder"
    assert claims["groups"] == []
    assert "email" not in claims  # bob has none

    async with httpx.AsyncClient(base_url=provider.base_url) as rp:
        bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
        info = (await rp.get("/oidc/userinfo", headers=bearer)).json()
        posted = await rp.post("/oidc/userinfo", headers=bearer)
    assert info == {
        "sub": claims["sub"],
        "preferred_username": "bob",
        "name": "Bob Builder",
        "groups": [],
    }
    assert posted.json() == info


async def test_alice_passes_her_second_factor_on_the_way_and_sso_follows(
    provider: Provider, browser: httpx.AsyncClient
) -> None:
    app = provider.strict
    path = authorize_path(app)
    signed_in = await password(browser, await follow_to_login(browser, path), "alice")
    assert signed_in.headers["location"] == "/2fa"  # the one pipeline, not around it
    page = await browser.get("/2fa/m/totp/enrol")
    secret = secret_from_page(page.text)
    answer = await submit_code(browser, "/2fa/m/totp/enrol", page, code_for(secret, current_step()))
    assert answer.headers["location"] == "/2fa/after?new=1"
    back = await browser.get("/2fa/after?new=1")
    assert back.headers["location"].startswith("/oidc/authorize?")
    code = callback_query(await browser.get(back.headers["location"]))["code"]

    tokens = await tokens_for(provider, app, code, auth_method="client_secret_post")
    claims = await verified_claims(provider, tokens["id_token"])
    assert claims["amr"] == ["pwd", "mfa", "otp"]
    assert claims["acr"] == "urn:twofa:acr:mfa"
    assert claims["preferred_username"] == "alice"
    assert claims["groups"] == ["engineering"]

    # A second application: signed in already, no question asked, the same subject.
    again = callback_query(await browser.get(authorize_path(provider.password_only)))
    other = await tokens_for(provider, provider.password_only, again["code"])
    assert (await verified_claims(provider, other["id_token"]))["sub"] == claims["sub"]


async def test_a_client_needing_2fa_sends_a_password_only_session_to_the_gate(
    provider: Provider, browser: httpx.AsyncClient
) -> None:
    await bob_code(browser, provider.password_only)  # bob is signed in, password only
    elevate = await browser.get(authorize_path(provider.strict))
    assert elevate.status_code == 303
    assert elevate.headers["location"] == "/2fa/elevate"
    none = callback_query(await browser.get(authorize_path(provider.strict, prompt="none")))
    assert none["error"] == "interaction_required"


async def test_wrong_client_secret_is_refused(
    provider: Provider, browser: httpx.AsyncClient
) -> None:
    app = provider.password_only
    code = await bob_code(browser, app)
    async with httpx.AsyncClient(base_url=provider.base_url) as rp:
        refused = await rp.post(
            "/oidc/token",
            data={"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK},
            auth=(app.application.client_id, "not-the-secret"),
        )
    assert refused.status_code == 401
    assert refused.json()["error"] == "invalid_client"
    assert refused.headers["www-authenticate"].startswith("Basic")
    assert refused.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("which", ["unknown client", "unregistered redirect URI"])
async def test_unknown_client_or_redirect_uri_shows_an_error_page_and_never_redirects(
    provider: Provider, browser: httpx.AsyncClient, which: str
) -> None:
    app = provider.password_only
    if which == "unknown client":
        path = authorize_path(app, client_id="no-such-client")
    else:
        path = authorize_path(app, redirect_uri="https://evil.example.com/cb")
    page = await browser.get(path)
    assert page.status_code in (400, 404)
    assert "location" not in page.headers
    assert "not registered" in page.text


async def test_a_public_client_needs_pkce_and_the_right_verifier(
    provider: Provider, browser: httpx.AsyncClient
) -> None:
    app = provider.public
    missing = callback_query(await browser.get(authorize_path(app)))
    assert missing["error"] == "invalid_request"  # before any sign-in

    verifier = secrets.token_urlsafe(48)
    pkce = {"code_challenge": s256(verifier), "code_challenge_method": "S256"}
    code = await bob_code(browser, app, **pkce)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": CALLBACK,
        "client_id": app.application.client_id,
    }
    async with httpx.AsyncClient(base_url=provider.base_url) as rp:
        wrong = await rp.post("/oidc/token", data={**form, "code_verifier": verifier[:-2] + "xx"})
        assert wrong.status_code == 400
        assert wrong.json()["error"] == "invalid_grant"
        code = callback_query(await browser.get(authorize_path(app, **pkce)))["code"]
        right = await rp.post("/oidc/token", data={**form, "code": code, "code_verifier": verifier})
    assert right.status_code == 200, right.text
    assert (await verified_claims(provider, right.json()["id_token"]))["amr"] == ["pwd"]


async def test_a_reused_code_is_refused_and_its_access_token_revoked(
    provider: Provider, browser: httpx.AsyncClient
) -> None:
    app = provider.password_only
    code = await bob_code(browser, app)
    tokens = await tokens_for(provider, app, code)
    async with httpx.AsyncClient(base_url=provider.base_url) as rp:
        bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
        assert (await rp.get("/oidc/userinfo", headers=bearer)).status_code == 200
        replay = await rp.post(
            "/oidc/token",
            data={"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK},
            auth=(app.application.client_id, app.client_secret or ""),
        )
        assert replay.status_code == 400
        assert replay.json()["error"] == "invalid_grant"
        revoked = await rp.get("/oidc/userinfo", headers=bearer)
    assert revoked.status_code == 401
    assert revoked.json()["error"] == "invalid_token"


async def test_an_expired_code_is_refused(provider: Provider, browser: httpx.AsyncClient) -> None:
    app = provider.password_only
    code = await bob_code(browser, app)
    await provider.expire_code(code)
    async with httpx.AsyncClient(base_url=provider.base_url) as rp:
        late = await rp.post(
            "/oidc/token",
            data={"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK},
            auth=(app.application.client_id, app.client_secret or ""),
        )
    assert late.status_code == 400
    assert late.json() == {"error": "invalid_grant", "error_description": "the code has expired"}


async def test_prompt_none_without_a_session_is_login_required(
    provider: Provider, browser: httpx.AsyncClient
) -> None:
    path = authorize_path(provider.strict, prompt="none", state="keep-me")
    answer = callback_query(await browser.get(path))
    assert answer["error"] == "login_required"
    assert answer["state"] == "keep-me"


async def test_prompt_login_signs_in_again(provider: Provider, browser: httpx.AsyncClient) -> None:
    await bob_code(browser, provider.password_only)
    again = await browser.get(authorize_path(provider.password_only, prompt="login"))
    assert again.status_code == 303
    assert again.headers["location"].startswith("/login?next=")
    assert "prompt" not in urllib.parse.unquote(again.headers["location"])
    assert (await browser.get("/")).status_code != 200  # the old session is over


async def test_a_user_the_client_does_not_admit_is_access_denied(
    provider: Provider, browser: httpx.AsyncClient
) -> None:
    path = authorize_path(provider.finance)
    signed_in = await password(browser, await follow_to_login(browser, path), "bob")
    answer = callback_query(await browser.get(signed_in.headers["location"]))
    assert answer["error"] == "access_denied"
    assert "code" not in answer


async def test_rp_initiated_logout_ends_the_session_and_returns_to_the_registered_uri(
    provider: Provider, browser: httpx.AsyncClient
) -> None:
    app = provider.password_only
    tokens = await tokens_for(provider, app, await bob_code(browser, app))
    hint = tokens["id_token"]

    elsewhere = await browser.get(
        "/oidc/logout",
        params={"id_token_hint": hint, "post_logout_redirect_uri": "https://evil.example.com/"},
    )
    assert elsewhere.status_code == 400
    assert "location" not in elsewhere.headers
    no_hint = await browser.get("/oidc/logout", params={"post_logout_redirect_uri": SIGNED_OUT})
    assert no_hint.status_code == 400
    assert "location" not in no_hint.headers
    assert (await browser.get("/")).status_code == 200  # neither ended anything

    ended = await browser.get(
        "/oidc/logout",
        params={"id_token_hint": hint, "post_logout_redirect_uri": SIGNED_OUT, "state": "s1"},
    )
    assert ended.status_code == 303
    assert ended.headers["location"] == f"{SIGNED_OUT}?state=s1"
    assert (await browser.get("/")).status_code != 200
    again = await browser.get(authorize_path(app, prompt="none"))
    assert callback_query(again)["error"] == "login_required"
