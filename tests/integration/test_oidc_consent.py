"""The consent page of twofa's OpenID Connect provider, over real HTTP: an application not
marked trusted asks the user once what it may receive (again for more, with prompt=consent,
or after the user revoked it on My 2FA); Deny goes back to the client with access_denied; a
forged or misdirected answer is refused without a redirect. The main flow runs on SQLite and
PostgreSQL, the rest on SQLite."""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from tests.conftest import RunningSimulator
from tests.integration.test_oidc_provider import (
    CALLBACK,
    authorize_path,
    callback_query,
    follow_to_login,
    password,
    tokens_for,
    verified_claims,
)
from tests.support.databases import postgres_database, sqlite_database
from tests.support.gateway import csrf_from, running_gateway
from twofa.config import Settings
from twofa.services.idp.applications import IssuedApplication, NewApplication
from twofa.services.runtime import Gateway
from twofa.storage.oidc_tables import OidcConsentRow
from twofa.storage.tables import AuditRow

EVERYTHING = "openid profile email groups"


@dataclass(frozen=True)
class Provider:
    base_url: str
    settings: Settings
    forum: IssuedApplication  # not trusted: asks for consent
    wiki: IssuedApplication  # trusted (skip_consent): never asks

    async def consents(self) -> list[tuple[int, str]]:
        """(application id, scope) of every consent given."""
        gateway = await Gateway.start(self.settings)
        try:
            async with gateway.db.begin() as db:
                rows = (await db.scalars(select(OidcConsentRow))).all()
            return [(row.application_id, row.scope) for row in rows]
        finally:
            await gateway.close()

    async def audited(self) -> list[tuple[str, str, str]]:
        """(outcome, username, application) of every consent audit record, in order."""
        gateway = await Gateway.start(self.settings)
        try:
            query = select(AuditRow).where(AuditRow.kind == "oidc_consent").order_by(AuditRow.id)
            async with gateway.db.begin() as db:
                rows = (await db.scalars(query)).all()
            return [(row.outcome, row.username, row.detail["application"]) for row in rows]
        finally:
            await gateway.close()


async def register(settings: Settings) -> dict[str, IssuedApplication]:
    gateway = await Gateway.start(settings)
    try:
        add = gateway.applications.add
        untrusted = NewApplication(
            "Forum", [CALLBACK], second_factor_required=False, skip_consent=False
        )
        trusted = NewApplication("Wiki", [CALLBACK], second_factor_required=False)
        return {
            "forum": await add(untrusted, actor="test"),
            "wiki": await add(trusted, actor="test"),
        }
    finally:
        await gateway.close()


@asynccontextmanager
async def started_provider(url: str, simulator: RunningSimulator) -> AsyncIterator[Provider]:
    async with running_gateway(url, simulator) as (base_url, settings):
        yield Provider(base_url, settings, **await register(settings))


@pytest.fixture
async def provider(tmp_path: Path, simulator: RunningSimulator) -> AsyncIterator[Provider]:
    async with sqlite_database(tmp_path) as url, started_provider(url, simulator) as running:
        yield running


@pytest.fixture(params=["sqlite", "postgresql"])
async def any_provider(
    request: pytest.FixtureRequest, tmp_path: Path, simulator: RunningSimulator
) -> AsyncIterator[Provider]:
    factory = sqlite_database(tmp_path) if request.param == "sqlite" else postgres_database()
    async with factory as url, started_provider(url, simulator) as running:
        yield running


@pytest.fixture
async def browser(provider: Provider) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=provider.base_url, timeout=30) as client:
        yield client


async def sign_in_bob(browser: httpx.AsyncClient, path: str) -> str:
    """Signs bob in on the way of the authorization request `path`: where twofa sends the
    browser next (the authorization request again)."""
    signed_in = await password(browser, await follow_to_login(browser, path), "bob")
    assert signed_in.status_code == 303, signed_in.text
    back = signed_in.headers["location"]
    assert back.startswith("/oidc/authorize?")
    return back


async def consent_page(browser: httpx.AsyncClient, path: str) -> httpx.Response:
    """Follows the authorization request to the consent page it must send the browser to."""
    asked = await browser.get(path)
    assert asked.status_code == 303, asked.text
    location = asked.headers["location"]
    assert location.startswith("/oidc/consent?"), location
    page = await browser.get(location)
    assert page.status_code == 200, page.text
    return page


def answer_url(page: httpx.Response) -> str:
    action = page.text.split('<form method="post" action="', 1)[1].split('"', 1)[0]
    return action.replace("&amp;", "&")


async def answer(browser: httpx.AsyncClient, page: httpx.Response, decision: str) -> str:
    """Presses Allow or Deny: where the browser goes next."""
    form = {"csrf_token": csrf_from(page.text), "decision": decision}
    answered = await browser.post(answer_url(page), data=form)
    assert answered.status_code == 303, answered.text
    return answered.headers["location"]


async def allow(browser: httpx.AsyncClient, path: str) -> dict[str, str]:
    """Through the consent page with Allow, to the code at the client."""
    again = await answer(browser, await consent_page(browser, path), "allow")
    assert again.startswith("/oidc/authorize?")
    return callback_query(await browser.get(again))


def query_of(path: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(path).query))


async def test_an_untrusted_application_asks_once_then_signs_in_without_asking(
    any_provider: Provider, simulator: RunningSimulator
) -> None:
    provider = any_provider
    forum = provider.forum
    async with httpx.AsyncClient(base_url=provider.base_url, timeout=30) as browser:
        path = authorize_path(forum, scope=EVERYTHING)
        back = await sign_in_bob(browser, path)
        page = await consent_page(browser, back)
        assert "Allow Forum?" in page.text
        for words in ("your username", "your name", "your e-mail address", "the groups"):
            assert words in page.text
        assert query_of(answer_url(page)) == query_of(path)  # the request it was shown for

        again = await answer(browser, page, "allow")
        code = callback_query(await browser.get(again))
        assert code["state"] == query_of(path)["state"]
        tokens = await tokens_for(provider, forum, code["code"])
        claims = await verified_claims(provider, tokens["id_token"])
        assert claims["preferred_username"] == "bob"
        assert claims["aud"] == forum.application.client_id

        second = callback_query(await browser.get(authorize_path(forum, scope=EVERYTHING)))
        assert "code" in second  # no page the second time
        trusted = callback_query(await browser.get(authorize_path(provider.wiki)))
        assert "code" in trusted  # a trusted application never asks

    assert await provider.consents() == [(forum.application.id, EVERYTHING)]
    assert await provider.audited() == [("grant", "bob", "Forum")]


async def test_deny_sends_access_denied_to_the_client_and_remembers_nothing(
    provider: Provider, browser: httpx.AsyncClient
) -> None:
    path = authorize_path(provider.forum)
    back = await sign_in_bob(browser, path)
    refused = await answer(browser, await consent_page(browser, back), "deny")
    assert refused.startswith(CALLBACK + "?")
    error = query_of(refused)
    assert error["error"] == "access_denied"
    assert error["state"] == query_of(path)["state"]
    assert error["iss"] == provider.settings.public_url

    assert await provider.consents() == []
    await consent_page(browser, authorize_path(provider.forum))  # asked again
    assert await provider.audited() == [("deny", "bob", "Forum")]


async def test_a_request_for_more_scopes_asks_again(
    provider: Provider, browser: httpx.AsyncClient
) -> None:
    narrow = authorize_path(provider.forum, scope="openid profile")
    await allow(browser, await sign_in_bob(browser, narrow))
    assert await provider.consents() == [(provider.forum.application.id, "openid profile")]

    wider = authorize_path(provider.forum, scope="openid profile email")
    page = await consent_page(browser, wider)
    assert "your e-mail address" in page.text
    code = callback_query(await browser.get(await answer(browser, page, "allow")))
    assert "code" in code

    scopes = "openid profile email"
    assert await provider.consents() == [(provider.forum.application.id, scopes)]
    narrower = callback_query(await browser.get(authorize_path(provider.forum, scope="openid")))
    assert "code" in narrower  # covered by what was allowed


async def test_prompt_none_without_consent_is_consent_required(
    provider: Provider, browser: httpx.AsyncClient
) -> None:
    await sign_in_bob(browser, authorize_path(provider.forum))
    silent = callback_query(await browser.get(authorize_path(provider.forum, prompt="none")))
    assert silent["error"] == "consent_required"
    assert await provider.consents() == []

    await allow(browser, authorize_path(provider.forum))
    silent = callback_query(await browser.get(authorize_path(provider.forum, prompt="none")))
    assert "code" in silent


async def test_prompt_consent_asks_even_with_consent(
    provider: Provider, browser: httpx.AsyncClient
) -> None:
    await allow(browser, await sign_in_bob(browser, authorize_path(provider.forum)))
    forced = authorize_path(provider.forum, prompt="consent")
    again = await answer(browser, await consent_page(browser, forced), "allow")
    assert "prompt" not in query_of(again)  # else it would ask forever
    assert "code" in callback_query(await browser.get(again))


async def test_prompt_login_and_consent_asks_for_both(
    provider: Provider, browser: httpx.AsyncClient
) -> None:
    await allow(browser, await sign_in_bob(browser, authorize_path(provider.forum)))
    both = authorize_path(provider.forum, prompt="login consent")
    back = await sign_in_bob(browser, both)
    assert query_of(back)["prompt"] == "consent"
    assert "code" in await allow(browser, back)


async def test_a_forged_allow_without_the_csrf_token_is_refused(
    provider: Provider, browser: httpx.AsyncClient
) -> None:
    path = authorize_path(provider.forum)
    page = await consent_page(browser, await sign_in_bob(browser, path))
    for forged in ({"decision": "allow"}, {"decision": "allow", "csrf_token": "wrong"}):
        refused = await browser.post(answer_url(page), data=forged)
        assert refused.status_code == 403
        assert "location" not in refused.headers
    assert await provider.consents() == []
    await consent_page(browser, path)  # still asks


@pytest.mark.parametrize("which", ["unknown client", "unregistered redirect URI"])
@pytest.mark.parametrize("decision", ["allow", "deny"])
async def test_a_consent_answer_for_a_wrong_client_or_redirect_shows_an_error_page(
    provider: Provider, browser: httpx.AsyncClient, which: str, decision: str
) -> None:
    page = await consent_page(browser, await sign_in_bob(browser, authorize_path(provider.forum)))
    if which == "unknown client":
        wrong = authorize_path(provider.forum, client_id="no-such-client")
    else:
        wrong = authorize_path(provider.forum, redirect_uri="https://evil.example.com/cb")
    form = {"csrf_token": csrf_from(page.text), "decision": decision}
    answered = await browser.post("/oidc/consent?" + wrong.split("?", 1)[1], data=form)
    assert answered.status_code in (400, 404)
    assert "location" not in answered.headers
    assert "not registered" in answered.text
    shown = await browser.get("/oidc/consent?" + wrong.split("?", 1)[1])
    assert shown.status_code in (400, 404)
    assert "location" not in shown.headers
    assert await provider.consents() == []


async def test_an_answer_when_nothing_waits_for_consent_changes_nothing(
    provider: Provider, browser: httpx.AsyncClient
) -> None:
    """A trusted application: Allow is not remembered and Deny does not refuse; the browser
    goes back to authorize, which answers as it would have."""
    page = await consent_page(browser, await sign_in_bob(browser, authorize_path(provider.forum)))
    token = csrf_from(page.text)
    trusted = authorize_path(provider.wiki).split("?", 1)[1]
    for decision in ("allow", "deny"):
        data = {"csrf_token": token, "decision": decision}
        answered = await browser.post("/oidc/consent?" + trusted, data=data)
        assert answered.status_code == 303
        assert answered.headers["location"].startswith("/oidc/authorize?")
    assert await provider.consents() == []
    assert await provider.audited() == []


async def test_revoking_on_my_2fa_asks_again_at_the_next_sign_in(
    provider: Provider, browser: httpx.AsyncClient
) -> None:
    await allow(browser, await sign_in_bob(browser, authorize_path(provider.forum)))
    mine = await browser.get("/my-2fa")
    assert "Applications you allowed" in mine.text
    application_id = provider.forum.application.id
    assert f'data-application="{application_id}"' in mine.text
    assert "Wiki" not in mine.text  # trusted: nothing was asked, nothing to revoke

    form = {"csrf_token": csrf_from(mine.text), "application": str(application_id)}
    revoked = await browser.post("/my-2fa/revoke", data=form)
    assert revoked.status_code == 303
    assert revoked.headers["location"] == "/my-2fa?done=revoked"
    after = await browser.get(revoked.headers["location"])
    assert "will ask for your consent again" in after.text
    assert "Applications you allowed" not in after.text

    assert await provider.consents() == []
    await consent_page(browser, authorize_path(provider.forum))  # asked again
    assert await provider.audited() == [("grant", "bob", "Forum"), ("revoke", "bob", "Forum")]


async def test_the_consent_page_without_a_session_sends_the_browser_to_sign_in(
    provider: Provider, browser: httpx.AsyncClient
) -> None:
    query = authorize_path(provider.forum).split("?", 1)[1]
    shown = await browser.get("/oidc/consent?" + query)
    assert shown.status_code == 303
    assert shown.headers["location"] == "/oidc/authorize?" + query  # which asks to sign in
    assert (
        (await browser.get(shown.headers["location"]))
        .headers["location"]
        .startswith("/login?next=")
    )


@pytest.mark.parametrize("application", ["", "forum", "9" * 30])
async def test_revoking_something_that_is_not_an_application_id_is_refused(
    provider: Provider, browser: httpx.AsyncClient, application: str
) -> None:
    await allow(browser, await sign_in_bob(browser, authorize_path(provider.forum)))
    mine = await browser.get("/my-2fa")
    form = {"csrf_token": csrf_from(mine.text), "application": application}
    refused = await browser.post("/my-2fa/revoke", data=form)
    assert refused.status_code == 400
    assert "That change is not possible." in refused.text
    assert len(await provider.consents()) == 1
