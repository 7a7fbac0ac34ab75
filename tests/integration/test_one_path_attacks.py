"""Attacks over real HTTP on the second-factor path's prebuilt statements, on SQLite and
PostgreSQL: one right answer raced, one time step raced over two challenges, wrong answers
raced past the limit, challenges of someone else / expired / used, enrolment that changed
between the page and the answer, OIDC grants of a session that never signed in (and of one
that steps up), and a password-level session's end that other gateway processes never hear
of (two gateways on one PostgreSQL database, change feed "postgresql")."""

from __future__ import annotations

import asyncio
import re
import urllib.parse
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import unescape
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tests.conftest import RunningSimulator
from tests.integration.test_oidc_provider import CALLBACK, authorize_path
from tests.support.authenticator_totp import code_at, code_for, secret_from_page
from tests.support.databases import postgres_database
from tests.support.gateway import (
    PASSWORDS,
    SECRET,
    csrf_from,
    running_gateway,
    seed_users,
    sign_in,
)
from tests.support.servers import free_port, serve_in_thread
from tests.support.totp_flow import challenge_from, sign_out, submit_code
from tests.support.two_factor import allow_methods
from twofa.clock import FrozenClock
from twofa.config import Settings, load_settings
from twofa.methods.totp import time_step
from twofa.services.idp.applications import NewApplication
from twofa.services.runtime import Gateway
from twofa.services.state.sessions import Level
from twofa.storage.oidc_tables import OidcCodeRow
from twofa.storage.tables import (
    AuditRow,
    ChallengeRow,
    CredentialRow,
    DuoEnrolmentRow,
    SessionRow,
    UserRow,
)
from twofa.web.app import create_app

VERIFY = "/2fa/m/totp"
WRONG = "That code didn't work. Check it and try again."
EXPIRED = "This request has expired or was already used. Start again."
LOCKED_15 = "Too many failed attempts with this method. Try again in 15 minutes."
NOT_SET_UP = "You have not set up"
SIGNED_OUT = "Your sign-in has expired. Please sign in again."
STEP = timedelta(seconds=30)
APP = "app.example.test"
COOKIE = "twofa_session"
CAROL_PASSWORD = "carol-password-1"  # a second user with the second factor (engineering)
# How a right answer that lost a race is refused: as a wrong code (the page again, or the
# plain page once its challenge is used) or as a used challenge. Never a server error.
LOSERS = {(401, WRONG), (400, WRONG), (400, EXPIRED)}


@dataclass
class Site:
    client: httpx.AsyncClient
    settings: Settings
    clock: FrozenClock

    def code(self, secret: str, steps_on: int = 0) -> str:
        return code_for(secret, time_step(self.clock.now()) + steps_on)


@pytest.fixture
async def site(database_url: str, simulator: RunningSimulator) -> AsyncIterator[Site]:
    clock = FrozenClock(datetime.now(UTC))
    async with (
        running_gateway(database_url, simulator, clock=clock) as (base_url, settings),
        httpx.AsyncClient(base_url=base_url, timeout=60) as client,
    ):
        await allow_methods(settings, ("totp", "duo_push"), first_method="totp")
        yield Site(client, settings, clock)


@asynccontextmanager
async def database(settings: Settings) -> AsyncIterator[AsyncSession]:
    """One transaction on the site's database, from outside the running gateway."""
    gateway = await Gateway.start(settings)
    try:
        async with gateway.db.begin() as db:
            yield db
    finally:
        await gateway.close()


async def user_id(settings: Settings, username: str) -> int:
    async with database(settings) as db:
        found = await db.scalar(select(UserRow.id).where(UserRow.username == username))
    assert found is not None
    return found


async def enrol(site: Site, client: httpx.AsyncClient | None = None, who: str = "alice") -> str:
    """`who` sets up the app at the clock's step and ends signed in; the clock moves a step."""
    browser = client or site.client
    assert (await sign_in(browser, who, password_of(who))).headers["location"] == "/2fa"
    page = await browser.get("/2fa/m/totp/enrol")
    secret = secret_from_page(page.text)
    answer = await submit_code(browser, "/2fa/m/totp/enrol", page, site.code(secret))
    assert answer.status_code == 303, answer.text
    site.clock.advance(STEP)
    return secret


async def password_only(client: httpx.AsyncClient, who: str = "alice") -> None:
    await sign_out(client)
    client.cookies.clear()
    assert (await sign_in(client, who, password_of(who))).headers["location"] == "/2fa"


def password_of(who: str) -> str:
    return PASSWORDS.get(who, CAROL_PASSWORD)


async def signed_in(client: httpx.AsyncClient) -> bool:
    return (await client.get("/")).status_code == 200


async def facts(settings: Settings, who: str = "alice") -> dict[str, Any]:
    """What a second factor's success writes: signed-in sessions, credential versions, audit."""
    uid = await user_id(settings, who)
    async with database(settings) as db:
        levels = await db.scalars(select(SessionRow.level).where(SessionRow.user_id == uid))
        versions = await db.scalars(
            select(CredentialRow.version).where(CredentialRow.user_id == uid)
        )
        audit = await db.scalars(select(AuditRow).where(AuditRow.username == who))
        return {
            "signed_in": sum(level == Level.SIGNED_IN for level in levels),
            "versions": list(versions),
            "audit": Counter((row.kind, row.outcome) for row in audit),
        }


def refusals(replies: list[httpx.Response]) -> list[tuple[int, str]]:
    """Each refusal's status and which plain message it carried (else the page's title)."""
    found = []
    for reply in replies:
        text = unescape(reply.text)
        title = re.search(r"<title>(.*?)</title>", text)
        other = title.group(1) if title else text[:100]
        message = next((m for m in (WRONG, EXPIRED, LOCKED_15) if m in text), other)
        found.append((reply.status_code, message))
    return found


async def post_as(client: httpx.AsyncClient, form: dict[str, str]) -> httpx.Response:
    """`form` posted with the session cookie `client` holds now, from a browser of its own
    (what one browser's racing requests all carry, whatever the first answer sets)."""
    cookie = {"Cookie": f"{COOKIE}={client.cookies[COOKIE]}"}
    async with httpx.AsyncClient(base_url=client.base_url, timeout=60) as racer:
        return await racer.post(VERIFY, data=form, headers=cookie)


# ---- 1, 2: one right answer raced -------------------------------------------------------


async def test_one_right_code_posted_eight_times_at_once_signs_in_once(site: Site) -> None:
    secret = await enrol(site)
    await password_only(site.client)
    before = await facts(site.settings)
    page = await site.client.get(VERIFY)
    form = {
        "csrf_token": csrf_from(page.text),
        "challenge": challenge_from(page.text),
        "code": site.code(secret),
    }

    replies = await asyncio.gather(*(post_as(site.client, form) for _ in range(8)))

    after = await facts(site.settings)
    written = after["audit"] - before["audit"]
    refused = Counter(refusals([r for r in replies if r.status_code != 303]))
    # A loser is refused as a wrong code (it lost the race inside its transaction: counted
    # and audited as a refusal) or as a used challenge (it read the challenge used); never
    # a server error, and never unaudited. Each loser's attempt counts (count, then check),
    # so past the method's limit the last ones are refused as locked, and audited so. One
    # that arrives after the winner committed carries a session that no longer exists: the
    # CSRF check refuses it before anything is counted (a busy machine makes that happen).
    late = (403, "Sign-in problem · twofa")
    assert set(refused) <= LOSERS | {(400, LOCKED_15), late}, (refused, written)
    assert written[("second_factor", "locked")] == refused[(400, LOCKED_15)], written
    assert [r.headers["location"] for r in replies if r.status_code == 303] == ["/2fa/after"]
    assert written[("second_factor", "allow")] == 1
    wrong = refused[(401, WRONG)] + refused[(400, WRONG)]
    assert written[("second_factor", "refused")] == wrong, written
    assert after["signed_in"] == before["signed_in"] + 1 == 1
    assert after["versions"] == [v + 1 for v in before["versions"]]


@pytest.mark.parametrize("browsers", ["one_session", "two_sessions"])
async def test_one_time_step_answered_on_two_challenges_at_once_signs_in_once(
    site: Site, browsers: str
) -> None:
    secret = await enrol(site)
    await password_only(site.client)
    before = await facts(site.settings)
    async with httpx.AsyncClient(base_url=site.client.base_url, timeout=60) as other:
        second = site.client
        if browsers == "two_sessions":
            second = other
            assert (await sign_in(other, "alice")).headers["location"] == "/2fa"
        pages = [await site.client.get(VERIFY), await second.get(VERIFY)]
        assert challenge_from(pages[0].text) != challenge_from(pages[1].text)
        code = site.code(secret)

        forms = [
            {"csrf_token": csrf_from(p.text), "challenge": challenge_from(p.text), "code": code}
            for p in pages
        ]
        replies = await asyncio.gather(post_as(site.client, forms[0]), post_as(second, forms[1]))

    assert sorted(r.status_code for r in replies)[0] == 303
    assert sum(r.status_code == 303 for r in replies) == 1, refusals(list(replies))
    [(status, text)] = refusals([r for r in list(replies) if r.status_code != 303])
    assert (status, text) in LOSERS
    after = await facts(site.settings)
    assert after["signed_in"] == 1
    assert after["versions"] == [2]  # the set-up's, then one sign-in
    assert (after["audit"] - before["audit"])[("second_factor", "allow")] == 1


# ---- 3: wrong answers raced past the limit ----------------------------------------------


async def test_wrong_codes_at_once_past_the_limit_lock_the_method(site: Site) -> None:
    secret = await enrol(site)
    await password_only(site.client)
    page = await site.client.get(VERIFY)
    right = {site.code(secret, offset) for offset in range(-2, 3)}
    wrong = [f"{n:06d}" for n in range(100) if f"{n:06d}" not in right][:12]
    own = {"csrf_token": csrf_from(page.text), "challenge": challenge_from(page.text)}

    replies = await asyncio.gather(
        *(site.client.post(VERIFY, data={**own, "code": code}) for code in wrong)
    )

    assert sorted(Counter(refusals(replies)).items()) == [
        ((401, WRONG), 5),
        ((401, LOCKED_15), 7),
    ]
    audit = (await facts(site.settings))["audit"]
    assert (audit[("second_factor", "refused")], audit[("second_factor", "locked")]) == (5, 7)
    assert audit[("lockout", "locked")] == 1
    right_now = await submit_code(site.client, VERIFY, page, site.code(secret))
    assert refusals([right_now]) == [(401, LOCKED_15)]
    locked_page = await site.client.get(VERIFY)
    assert locked_page.status_code == 400
    assert LOCKED_15 in unescape(locked_page.text)
    assert not await signed_in(site.client)
    assert (await facts(site.settings))["signed_in"] == 0


# ---- 4: challenges that are not this session's to answer --------------------------------


async def test_foreign_expired_and_used_challenges_are_refused(site: Site) -> None:
    gateway = await Gateway.start(site.settings)
    try:
        await gateway.accounts.add_user("carol", CAROL_PASSWORD, display_name="Carol")
        await gateway.accounts.set_membership("engineering", "carol", True)
    finally:
        await gateway.close()
    async with (
        httpx.AsyncClient(base_url=site.client.base_url, timeout=60) as carol,
        httpx.AsyncClient(base_url=site.client.base_url, timeout=60) as alice_elsewhere,
    ):
        carol_secret = await enrol(site, carol, "carol")
        await password_only(carol, "carol")
        carols = challenge_from((await carol.get(VERIFY)).text)
        secret = await enrol(site)
        await password_only(site.client)
        assert (await sign_in(alice_elsewhere, "alice")).headers["location"] == "/2fa"
        elsewhere = challenge_from((await alice_elsewhere.get(VERIFY)).text)
        page = await site.client.get(VERIFY)
        own = challenge_from(page.text)
        csrf = csrf_from(page.text)

        async def answer(challenge: str, code: str) -> tuple[int, str]:
            form = {"csrf_token": csrf, "challenge": challenge, "code": code}
            return refusals([await site.client.post(VERIFY, data=form)])[0]

        assert await answer(carols, site.code(secret)) == (400, EXPIRED)
        assert await answer(carols, site.code(carol_secret)) == (400, EXPIRED)
        assert await answer(elsewhere, site.code(secret)) == (400, EXPIRED)
        async with database(site.settings) as db:  # this session's own, expired a second ago
            gone = site.clock.now() - timedelta(seconds=1)
            await db.execute(update(ChallengeRow).where(ChallengeRow.id == own).values(
                expires_at=gone
            ))  # fmt: skip
        assert await answer(own, site.code(secret)) == (400, EXPIRED)
        # Used: another of this session's challenges, consumed by a right answer in a
        # transaction that then could not sign in (its credential step spent meanwhile).
        fresh = await site.client.get(VERIFY)
        async with database(site.settings) as db:
            await db.execute(
                update(ChallengeRow)
                .where(ChallengeRow.id == challenge_from(fresh.text))
                .values(consumed_at=site.clock.now(), status="allow")
            )
        assert await answer(challenge_from(fresh.text), site.code(secret)) == (400, EXPIRED)
        assert await answer("", site.code(secret)) == (400, EXPIRED)
    assert not await signed_in(site.client)
    assert (await facts(site.settings))["signed_in"] == 0
    assert (await facts(site.settings, "carol"))["signed_in"] == 0


async def test_a_used_challenge_is_refused_to_the_session_that_used_it(site: Site) -> None:
    secret = await enrol(site)
    await password_only(site.client)
    before = await facts(site.settings)
    page = await site.client.get(VERIFY)
    used = await submit_code(site.client, VERIFY, page, site.code(secret))
    assert used.status_code == 303, used.text
    site.clock.advance(STEP)
    # The signed-in session (a step-up would be open to it) answers the used challenge again.
    again = await site.client.post(
        VERIFY,
        data={
            "csrf_token": csrf_from((await site.client.get("/")).text),
            "challenge": challenge_from(page.text),
            "code": site.code(secret),
        },
    )
    assert refusals([again]) == [(400, EXPIRED)]
    after = await facts(site.settings)
    assert (after["audit"] - before["audit"])[("second_factor", "allow")] == 1


# ---- 5: enrolment changed between the page and the answer -------------------------------


async def test_a_duo_set_up_never_finished_is_no_enrolment(site: Site) -> None:
    uid = await user_id(site.settings, "alice")
    async with database(site.settings) as db:
        db.add(DuoEnrolmentRow(user_id=uid, duo_user_id="DU-never", activation_code="x"))
    assert (await sign_in(site.client, "alice")).headers["location"] == "/2fa"

    start = await site.client.get("/2fa")
    assert start.status_code == 200, start.headers  # the set-up, not a validation
    assert 'href="/2fa/m/totp/enrol"' in start.text
    refused = await site.client.get(VERIFY)
    assert refused.status_code == 400
    assert NOT_SET_UP in unescape(refused.text)

    async with database(site.settings) as db:  # once configured, it is an enrolment
        await db.execute(
            update(DuoEnrolmentRow)
            .where(DuoEnrolmentRow.user_id == uid)
            .values(configured_at=site.clock.now())
        )
    assert (await site.client.get("/2fa")).headers["location"] == "/2fa/validate"


@pytest.mark.parametrize("change", ["credential_removed", "user_disabled"])
async def test_an_answer_after_the_enrolment_changed_is_refused(site: Site, change: str) -> None:
    secret = await enrol(site)
    await password_only(site.client)
    page = await site.client.get(VERIFY)
    uid = await user_id(site.settings, "alice")
    async with database(site.settings) as db:  # behind the gateway's back: no session ended
        if change == "credential_removed":
            await db.execute(delete(CredentialRow).where(CredentialRow.user_id == uid))
        else:
            await db.execute(update(UserRow).where(UserRow.id == uid).values(enabled=False))

    answer = await submit_code(site.client, VERIFY, page, site.code(secret))

    if change == "credential_removed":  # the page again, saying why
        assert answer.status_code == 401
        assert f"{NOT_SET_UP} authenticator app." in unescape(answer.text)
    else:
        assert answer.status_code == 400
        assert SIGNED_OUT in unescape(answer.text)
    assert not await signed_in(site.client)
    assert (await facts(site.settings))["signed_in"] == 0


# ---- 6: OIDC grants of a session that never signed in, and of one that steps up ----------


async def password_app(settings: Settings) -> Any:
    gateway = await Gateway.start(settings)
    try:
        new = NewApplication("Wiki", [CALLBACK], second_factor_required=False)
        return await gateway.applications.add(new, actor="test")
    finally:
        await gateway.close()


async def test_a_password_level_session_gets_no_authorization_code(site: Site) -> None:
    app = await password_app(site.settings)
    await enrol(site)
    await password_only(site.client)

    plain = await site.client.get(authorize_path(app))
    passive = await site.client.get(authorize_path(app, prompt="none"))

    assert plain.status_code == 303
    assert plain.headers["location"].startswith("/login?next=")
    assert passive.status_code == 302
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(passive.headers["location"]).query))
    assert query.get("error") == "login_required"
    assert "code" not in query
    async with database(site.settings) as db:
        assert await db.scalar(select(func.count()).select_from(OidcCodeRow)) == 0


async def test_a_signed_in_session_that_steps_up_still_loses_its_grants(site: Site) -> None:
    app = await password_app(site.settings)
    secret = await enrol(site)
    granted = await site.client.get(authorize_path(app))
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(granted.headers["location"]).query))
    async with httpx.AsyncClient(base_url=str(site.client.base_url), timeout=30) as rp:
        auth = (app.application.client_id, app.client_secret or "")
        exchange = {"grant_type": "authorization_code", "code": query["code"]}
        tokens = (
            await rp.post("/oidc/token", data={**exchange, "redirect_uri": CALLBACK}, auth=auth)
        ).json()
        assert "refresh_token" in tokens, tokens
        form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
        live = await rp.post("/oidc/token", data=form, auth=auth)
        assert live.status_code == 200, live.text  # the grant works until the step-up
        tokens = live.json()

        step_up = await site.client.get(VERIFY)  # signed in: a step-up
        assert step_up.status_code == 200, step_up.text
        stepped = await submit_code(site.client, VERIFY, step_up, site.code(secret))
        assert stepped.status_code == 303, stepped.text
        assert await signed_in(site.client)

        form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
        refreshed = await rp.post("/oidc/token", data=form, auth=auth)
    assert refreshed.status_code == 400
    assert refreshed.json()["error"] == "invalid_grant"


# ---- 7: two gateway processes on one PostgreSQL database --------------------------------


def node_settings(database_url: str, simulator: RunningSimulator, port: int) -> Settings:
    return load_settings(
        environ={},
        mode="dev",
        secret_key=SECRET,
        database_url=database_url,
        public_url=f"http://127.0.0.1:{port}",
        change_feed="postgresql",
        duo={
            "ikey": simulator.ikey,
            "skey": simulator.skey,
            "api_hostname": simulator.base_url,
            "application_name": "Test app",
        },
        access={
            "domains": [APP],
            "rules": [
                {"domain": APP, "resources": ["/wiki/*"], "policy": "one_factor"},
                {"domain": APP, "policy": "two_factor"},
            ],
        },
    )


@asynccontextmanager
async def two_nodes(simulator: RunningSimulator) -> AsyncIterator[tuple[str, str]]:
    async with postgres_database() as url:
        ports = (free_port(), free_port())
        first = node_settings(url, simulator, ports[0])
        await seed_users(first)
        await allow_methods(first, ("totp",), first_method="totp")
        settings = (first, node_settings(url, simulator, ports[1]))
        with (
            serve_in_thread(create_app(settings[0]), port=ports[0]) as a,
            serve_in_thread(create_app(settings[1]), port=ports[1]) as b,
        ):
            await asyncio.sleep(0.5)  # both feeds listening
            yield a, b


async def authz(node: str, cookie: str) -> int:
    async with httpx.AsyncClient(base_url=node, timeout=10) as proxy:
        headers = {"Cookie": f"{COOKIE}={cookie}", "X-Original-URL": f"https://{APP}/wiki/Home"}
        return (await proxy.get("/authz/nginx", headers=headers)).status_code


async def totp_page(node: str, cookie: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=node, timeout=10) as browser:
        return await browser.get(VERIFY, headers={"Cookie": f"{COOKIE}={cookie}"})


async def test_an_old_password_level_cookie_is_refused_by_the_other_node(
    simulator: RunningSimulator,
) -> None:
    async with two_nodes(simulator) as (a, b), httpx.AsyncClient(base_url=a, timeout=30) as alice:
        assert (await sign_in(alice, "alice")).headers["location"] == "/2fa"
        page = await alice.get("/2fa/m/totp/enrol")
        secret = secret_from_page(page.text)
        assert (await submit_code(alice, "/2fa/m/totp/enrol", page, code_at(secret))).status_code
        await password_only(alice)
        old = str(alice.cookies[COOKIE])
        assert (await totp_page(b, old)).status_code == 200  # B has seen it, at its level
        assert await authz(b, old) == 401

        signed = await submit_code(alice, VERIFY, await alice.get(VERIFY), code_at(secret, +1))
        assert signed.status_code == 303, signed.text
        new = str(alice.cookies[COOKIE])
        assert new != old
        assert await authz(b, new) == 200

        assert await authz(b, old) == 401
        on_b = await totp_page(b, old)
        assert on_b.status_code == 303, on_b.text[:300]
        assert on_b.headers["location"].startswith("/login")


async def test_a_sign_out_on_one_node_is_refused_by_the_other_within_a_second(
    simulator: RunningSimulator,
) -> None:
    async with two_nodes(simulator) as (a, b), httpx.AsyncClient(base_url=a, timeout=30) as bob:
        assert (await sign_in(bob, "bob")).status_code == 303
        cookie = str(bob.cookies[COOKIE])
        for _ in range(3):  # B answers it from memory now
            assert await authz(b, cookie) == 200
        home = await bob.get("/")
        loop = asyncio.get_running_loop()
        await bob.post("/logout", data={"csrf_token": csrf_from(home.text)})
        ended = loop.time()
        last_allowed = None
        while loop.time() - ended < 2.0:
            if await authz(b, cookie) == 200:
                last_allowed = loop.time() - ended
            await asyncio.sleep(0.02)
    assert last_allowed is None or last_allowed <= 1.0, last_allowed
