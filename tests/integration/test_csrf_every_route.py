"""Every unsafe route refuses a request without its session's CSRF token, and the refusal
changes nothing, whatever the route forgets: the one middleware of `web/csrf.py` checks them
all. The routes are read from the app itself, so a route added later is walked too. The only
requests let through unchecked are the exemptions that module documents, pinned here.

The walk signs in as an admin (every console route would act for them) with the session
cookie, as a forged cross-site request would ride on it, and sends a form that each route
would act on: without a token, with a wrong one in the form, in the header, and as multipart.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from tests.conftest import RunningSimulator
from tests.integration.test_api import issue_token
from tests.integration.test_gate_walks_every_route import app_routes
from tests.support.admin_sign_in import sign_in_admin
from tests.support.databases import sqlite_database
from tests.support.gateway import csrf_from, running_gateway
from tests.support.user_management import ADMIN, ADMIN_PASSWORD, add_admin
from twofa.config import Settings
from twofa.services.runtime import Gateway
from twofa.storage.repositories import Users
from twofa.storage.tables import Base
from twofa.web import csrf
from twofa.web.context import SESSION_COOKIE
from twofa.web.forward_auth import FAST_ROUTES

APP = "jira.example.com"
ACCESS = {"access": {"domains": [APP]}}
WRONG_TOKEN = "not-the-sessions-token"
# What each path parameter is filled with; `{rule}` and `{token}` are made in `walker`. A
# route with a parameter not named here fails the walk: give it a plausible value.
PARAMETERS = {
    "code": "totp",
    "challenge": "made-up-challenge",
    "action": "remove",
    "username": "bob",
    "group": "engineering",
    "rule_id": "{rule}",
    "token_id": "{token}",
    "client_id": "made-up-client",
    "path": "no-such-route",
    "rest": "anything",
}
# A form every route would act on, had it no CSRF check: switch bob's 2FA on, add or delete
# things, save settings, answer a second factor, sign in again.
FORM = {
    "username": "bob",
    "password": "bob-password-1",
    "name": "engineering",
    "enabled": "1",
    "confirm": "yes",
    "question": "Which street did you grow up on?",
    "answers_required": "1",
    "issuer": "Forged",
    "users_choose_address": "on",
    "to": "mallory@example.com",
    "position": "1",
    "domains": APP,
    "policy": "deny",
    "enforcement": "everyone",
    "credential": "1",
    "method": "totp",
    "passcode": "123456",
    "code": "000000",
}
CSRF_REFUSAL = "did not come from this site"  # the CsrfError page's message (web/errors.py)


@dataclass(frozen=True)
class Walker:
    """A signed-in admin's browser, the settings to read the database with, and the API
    token and console access rule whose ids fill the walk's paths."""

    browser: httpx.AsyncClient
    settings: Settings
    base_url: str
    api_token: str
    rule_id: int

    @property
    def token_id(self) -> str:
        return self.api_token.split("_")[1]

    async def csrf(self) -> str:
        return csrf_from((await self.browser.get("/admin/users")).text)

    async def database(self) -> dict[str, list[str]]:
        return await database_state(self.settings)

    async def twofa_switch(self, username: str) -> bool:
        gateway = await Gateway.start(self.settings)
        try:
            async with gateway.db.begin() as db:
                user = await Users(db).by_name(username)
            assert user is not None
            return user.twofa_enabled
        finally:
            await gateway.close()

    async def groups(self) -> list[str]:
        gateway = await Gateway.start(self.settings)
        try:
            return [group.name for group in await gateway.accounts.groups()]
        finally:
            await gateway.close()


async def database_state(settings: Settings) -> dict[str, list[str]]:
    """Every row of every table, but when a session was last seen (reading it moves that)."""
    gateway = await Gateway.start(settings)
    try:
        state = {}
        async with gateway.db.begin() as db:
            for table in Base.metadata.sorted_tables:
                columns = [column for column in table.columns if column.name != "last_seen_at"]
                rows = (await db.execute(select(*columns))).all()
                state[table.name] = sorted(repr(tuple(row)) for row in rows)
        return state
    finally:
        await gateway.close()


@pytest.fixture
async def walker(tmp_path: Path, simulator: RunningSimulator) -> AsyncIterator[Walker]:
    async with (
        sqlite_database(tmp_path) as url,
        running_gateway(url, simulator, extra=ACCESS) as (base_url, settings),
    ):
        await add_admin(settings)
        api_token = await issue_token(settings, "ci")
        bearer = {"Authorization": f"Bearer {api_token}"}
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as browser:
            added = await browser.post(
                "/api/v1/access/rules", json={"domains": [APP], "policy": "deny"}, headers=bearer
            )
            assert added.status_code == 201, added.text
            await sign_in_admin(browser, simulator, ADMIN, ADMIN_PASSWORD)
            yield Walker(browser, settings, base_url, api_token, added.json()["id"])


def unsafe_routes(settings: Settings) -> list[tuple[str, str]]:
    return [
        (method, path) for method, path in app_routes(settings) if method not in csrf.SAFE_METHODS
    ]


def concrete(path: str, walker: Walker) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in PARAMETERS, f"{path}: give the walk a value for {{{name}}}"
        filled = PARAMETERS[name].replace("{rule}", str(walker.rule_id))
        return filled.replace("{token}", walker.token_id)

    return re.sub(r"{(\w+)(?::\w+)?}", value, path)


def assert_refused(answer: httpx.Response, method: str, path: str) -> None:
    assert answer.status_code == 403, (method, path, answer.status_code, answer.text[:300])
    if path.startswith("/api/"):
        assert answer.json()["error"]["code"] == "forbidden", (method, path)
    else:
        assert CSRF_REFUSAL in answer.text, (method, path, answer.text[:300])


async def test_every_unsafe_route_refuses_a_request_without_the_token(walker: Walker) -> None:
    routes = unsafe_routes(walker.settings)
    assert len(routes) > 60  # the pages, the console and the API, not a handful
    before = await walker.database()
    token = await walker.csrf()

    for method, route in routes:
        path = concrete(route, walker)
        if path in csrf.SAML_BINDING_PATHS:
            continue  # a service provider's cross-site form: see the test of its own below
        send = walker.browser.request
        attempts = {
            "no token": await send(method, path, data=FORM),
            "wrong token in the form": await send(
                method, path, data={**FORM, "csrf_token": WRONG_TOKEN}
            ),
            "wrong token in the header": await send(
                method, path, data=FORM, headers={"X-CSRF-Token": WRONG_TOKEN}
            ),
            "multipart, no token": await send(
                method, path, files={name: (None, value) for name, value in FORM.items()}
            ),
        }
        for attempt, answer in attempts.items():
            assert_refused(answer, method, f"{path} ({attempt})")

    assert await walker.database() == before  # no row written, changed or removed
    assert (await walker.browser.get("/admin/users")).status_code == 200  # still signed in
    assert await walker.csrf() == token  # and the session never rotated


async def test_a_request_with_no_session_at_all_is_refused(walker: Walker) -> None:
    """The sign-in form included: without the anonymous session GET /login opens there is
    no token to compare with."""
    before = await walker.database()
    async with httpx.AsyncClient(base_url=walker.base_url, timeout=30) as stranger:
        for method, route in unsafe_routes(walker.settings):
            path = concrete(route, walker)
            if (
                path.startswith("/api/")
                or path in csrf.RELYING_PARTY_PATHS | csrf.SAML_BINDING_PATHS
            ):
                continue  # no session cookie: the API and OIDC's token and userinfo answer
                # for themselves (a client secret, a bearer token), see below
            answer = await stranger.request(method, path, data={**FORM, "csrf_token": "x"})
            assert_refused(answer, method, path)
    assert await walker.database() == before


async def test_the_sign_in_form_needs_its_anonymous_sessions_token(walker: Walker) -> None:
    async with httpx.AsyncClient(base_url=walker.base_url, timeout=30) as browser:
        page = await browser.get("/login")
        anonymous = browser.cookies[SESSION_COOKIE]
        before = await walker.database()
        credentials = {"username": ADMIN, "password": ADMIN_PASSWORD}
        for forged in ({}, {"csrf_token": WRONG_TOKEN}):
            answer = await browser.post("/login", data={**credentials, **forged})
            assert_refused(answer, "POST", "/login")
        assert await walker.database() == before
        assert browser.cookies[SESSION_COOKIE] == anonymous

        signed_in = await browser.post(
            "/login", data={**credentials, "csrf_token": csrf_from(page.text)}
        )
        assert signed_in.status_code == 303
        assert browser.cookies[SESSION_COOKIE] != anonymous


async def test_a_forged_post_to_the_saml_binding_is_refused_by_saml_and_changes_nothing(
    walker: Walker,
) -> None:
    """/saml/sso takes a provider's cross-site form without twofa's token; what it posts must
    be a SAML request of a registered provider, so a forged one is an error page that writes
    nothing and sends the signed-in browser nowhere."""
    before = await walker.database()
    for forged in (FORM, {"SAMLRequest": "bm90IHNhbWw=", "RelayState": "https://evil.test/"}):
        answer = await walker.browser.post("/saml/sso", data=forged)
        assert answer.status_code == 400, (answer.status_code, answer.text[:300])
        assert "location" not in answer.headers
    assert await walker.database() == before
    assert (await walker.browser.get("/admin/users")).status_code == 200  # still signed in


async def test_the_right_token_in_the_header_is_accepted(walker: Walker) -> None:
    headers = {"X-CSRF-Token": await walker.csrf()}

    added = await walker.browser.post(
        "/admin/groups/add", data={"name": "finance"}, headers=headers
    )
    assert added.status_code == 303, added.text
    assert await walker.groups() == ["engineering", "finance"]

    signed_out = await walker.browser.post("/logout", headers=headers)
    assert signed_out.headers["location"] == "/login?signed_out=1"
    assert (await walker.browser.get("/admin/users")).status_code == 303  # to sign in


async def test_a_urlencoded_form_with_the_token_reaches_the_route(walker: Walker) -> None:
    form = {"username": "bob", "enabled": "1", "csrf_token": await walker.csrf()}
    answer = await walker.browser.post("/admin/users/policy", data=form)
    assert answer.status_code == 303, answer.text
    assert await walker.twofa_switch("bob")


async def test_a_long_form_is_read_whole_and_replayed_to_the_route(walker: Walker) -> None:
    """A body the server hands over in many pieces: the route still sees every field."""
    form = {"padding": "x" * 600_000, "name": "finance", "csrf_token": await walker.csrf()}
    answer = await walker.browser.post("/admin/groups/add", data=form)
    assert answer.status_code == 303, answer.text
    assert await walker.groups() == ["engineering", "finance"]


async def test_a_multipart_form_with_the_token_reaches_the_route(walker: Walker) -> None:
    token = await walker.csrf()
    upload = await walker.browser.post(
        "/admin/users/bulk-enable",
        data={"csrf_token": token},
        files={"file": ("users.csv", b"username\nbob\n", "text/csv")},
    )
    assert upload.status_code == 303, upload.text
    assert await walker.twofa_switch("bob")

    fields_only = {"name": (None, "finance"), "csrf_token": (None, token)}
    added = await walker.browser.post("/admin/groups/add", files=fields_only)
    assert added.status_code == 303, added.text
    assert await walker.groups() == ["engineering", "finance"]


async def test_a_bearer_token_api_call_needs_no_csrf_token(walker: Walker) -> None:
    """Exempt even with the session cookie along: a browser never sends a bearer token on its
    own. Without it, the same call with the cookie is checked like a page (the walk above),
    and one with neither gets the API's own 401."""
    bearer = {"Authorization": f"Bearer {walker.api_token}"}
    assert walker.browser.cookies.get(SESSION_COOKIE)

    created = await walker.browser.post("/api/v1/groups", json={"name": "finance"}, headers=bearer)
    assert created.status_code == 201, created.text
    assert await walker.groups() == ["engineering", "finance"]

    async with httpx.AsyncClient(base_url=walker.base_url, timeout=30) as script:
        anonymous = await script.post("/api/v1/groups", json={"name": "sales"})
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "unauthorized"


def test_the_exemptions_are_exactly_the_documented_ones() -> None:
    documented = csrf.__doc__ or ""
    safe_methods, exempt_paths, api_prefix = csrf.SAFE_METHODS, csrf.EXEMPT_PATHS, csrf.API_PREFIX
    assert safe_methods == {"GET", "HEAD", "OPTIONS", "TRACE"}
    assert exempt_paths == {
        "/authz/nginx",
        "/authz/forward",
        "/healthz",
        "/healthz/ready",
        "/metrics",
    }
    assert exempt_paths == set(FAST_ROUTES)  # answered before the middleware anyway
    assert all(path in documented for path in exempt_paths)
    assert api_prefix == "/api/v1"
    assert "bearer" in documented

    cookie = f"{SESSION_COOKIE}=some-session"
    cases: list[tuple[str, dict[str, str], bool]] = [
        ("/authz/nginx", {"cookie": cookie}, True),
        ("/authz/forward", {"cookie": cookie}, True),
        ("/healthz", {"cookie": cookie}, True),
        ("/metrics", {"cookie": cookie}, True),
        ("/api/v1/users", {"authorization": "Bearer t", "cookie": cookie}, True),
        ("/api/v1/users", {"authorization": "Basic dTpw"}, True),  # no cookie: a 401
        ("/api/v1/users", {}, True),
        ("/api/v1/users", {"cookie": cookie}, False),  # cookie-authenticated: checked
        ("/api/v1/users", {"authorization": "Basic dTpw", "cookie": cookie}, False),
        ("/api/v1", {"cookie": cookie}, False),
        ("/api/v10/users", {}, False),
        ("/login", {}, False),
        ("/authz/nginx/x", {}, False),
        ("/admin/users/add", {"authorization": "Bearer t", "cookie": cookie}, False),
        # OpenID Connect's endpoints for relying parties' servers: on the API's terms.
        ("/oidc/token", {"authorization": "Basic dTpw"}, True),
        ("/oidc/token", {}, True),
        ("/oidc/token", {"cookie": cookie}, False),
        ("/oidc/userinfo", {"authorization": "Bearer t", "cookie": cookie}, True),
        ("/oidc/userinfo", {"cookie": cookie}, False),
        ("/oidc/revoke", {"authorization": "Basic dTpw"}, True),
        ("/oidc/revoke", {"cookie": cookie}, False),
        ("/oidc/authorize", {}, False),
        # SAML's POST binding: a provider's cross-site form, with or without the cookie.
        ("/saml/sso", {"cookie": cookie}, True),
        ("/saml/sso", {}, True),
        ("/saml/slo", {"cookie": cookie}, False),
        ("/saml/sso/idp-initiated", {"cookie": cookie}, False),
    ]
    saml_bindings = csrf.SAML_BINDING_PATHS
    assert saml_bindings == {"/saml/sso"}
    assert "/saml/sso" in documented
    relying_parties = csrf.RELYING_PARTY_PATHS
    assert relying_parties == {"/oidc/token", "/oidc/revoke", "/oidc/userinfo"}
    assert all(path in documented for path in relying_parties)
    for path, headers, exempt in cases:
        raw = [(name.encode(), value.encode()) for name, value in headers.items()]
        assert csrf.is_exempt(path, csrf.CsrfHeaders.read(raw)) is exempt, (path, headers)
