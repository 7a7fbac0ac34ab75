"""OpenID Connect grants end with the twofa session that made them, and relying parties are
told (Back-Channel Logout 1.0), over real HTTP on SQLite and PostgreSQL: a small server on
127.0.0.1 stands for the relying parties' back-channel endpoints. However the session ends
(sign-out, an admin ending it, a new password, a 2FA reset, a disabled or deleted account, or
running out unread) each application it signed in to with a back-channel URI receives a valid
logout token naming the user and the session, and every refresh token of that session stops
working; another session of the same user keeps its own. A relying party that is down or
hangs neither blocks nor breaks the sign-out: it is retried, logged loudly and audited."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import select

from tests.conftest import RunningSimulator
from tests.integration.test_oidc_provider import (
    CALLBACK,
    authorize_path,
    callback_query,
    follow_to_login,
    password,
    tokens_for,
)
from tests.support.backchannel_receiver import Receiver, backchannel_receiver
from tests.support.databases import postgres_database, sqlite_database
from tests.support.gateway import csrf_from, running_gateway
from twofa.clock import FrozenClock, SystemClock
from twofa.config import Settings
from twofa.domain.client import NO_CLIENT
from twofa.services.admin.accounts import AccountService
from twofa.services.idp.applications import IssuedApplication, NewApplication
from twofa.services.idp.claims import BACKCHANNEL_LOGOUT_EVENT
from twofa.services.runtime import Gateway
from twofa.services.state.sessions import SWEEP_IDLE_GRACE
from twofa.storage.sessions import Sessions
from twofa.storage.tables import AuditRow, SessionRow

BOB_NEW_PASSWORD = "a-brand-new-password-for-bob-7"


@dataclass(frozen=True)
class Deployment:
    base_url: str
    settings: Settings
    receiver: Receiver
    one: IssuedApplication  # back-channel URI: receiver's /one
    two: IssuedApplication  # back-channel URI: receiver's /two
    quiet: IssuedApplication  # no back-channel URI: never told, its grants end all the same


async def register(settings: Settings, receiver: Receiver) -> dict[str, IssuedApplication]:
    gateway = await Gateway.start(settings)
    try:
        apps = {}
        for key, name in (("one", "App one"), ("two", "App two"), ("quiet", "Quiet app")):
            uri = None if key == "quiet" else receiver.uri(key)
            new = NewApplication(
                name, [CALLBACK], second_factor_required=False, backchannel_logout_uri=uri
            )
            apps[key] = await gateway.applications.add(new, actor="test")
        return apps
    finally:
        await gateway.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def deployment(
    request: pytest.FixtureRequest, tmp_path: Path, simulator: RunningSimulator
) -> AsyncIterator[Deployment]:
    factory = sqlite_database(tmp_path) if request.param == "sqlite" else postgres_database()
    with backchannel_receiver() as receiver:
        async with factory as url, running_gateway(url, simulator) as (base_url, settings):
            yield Deployment(base_url, settings, receiver, **await register(settings, receiver))


@pytest.fixture
async def browser(deployment: Deployment) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=deployment.base_url, timeout=30) as client:
        yield client


@dataclass(frozen=True)
class SignedIn:
    """One application's tokens from one browser session, and its ID token's claims."""

    app: IssuedApplication
    tokens: dict[str, Any]
    claims: dict[str, Any]


async def jwks(deployment: Deployment) -> KeySet:
    async with httpx.AsyncClient(base_url=deployment.base_url) as rp:
        return KeySet.import_key_set((await rp.get("/oidc/jwks")).json())


async def sign_in_to(
    deployment: Deployment, browser: httpx.AsyncClient, *apps: IssuedApplication
) -> list[SignedIn]:
    """Bob signs in (password) through the first application; the others get his single
    sign-on. Each application redeems its code as its server would."""
    keys, signed_in = await jwks(deployment), []
    for app in apps:
        path = authorize_path(app)
        answer = await browser.get(path)
        if answer.status_code == 303:  # no session yet: twofa's sign-in page first
            login = await follow_to_login(browser, path)
            after = await password(browser, login, "bob")
            answer = await browser.get(after.headers["location"])
        code = callback_query(answer)["code"]
        tokens = await tokens_for(deployment, app, code)  # type: ignore[arg-type]  # duck: base_url
        claims = dict(jwt.decode(tokens["id_token"], keys, algorithms=["RS256"]).claims)
        signed_in.append(SignedIn(app, dict(tokens), claims))
    return signed_in


async def sign_out(browser: httpx.AsyncClient) -> None:
    page = await browser.get("/")
    assert page.status_code == 200
    ended = await browser.post("/logout", data={"csrf_token": csrf_from(page.text)})
    assert ended.status_code == 303
    assert (await browser.get("/")).status_code != 200


def verified_logout_token(token: str, keys: KeySet) -> tuple[dict[str, Any], dict[str, Any]]:
    decoded = jwt.decode(token, keys, algorithms=["RS256"])
    return dict(decoded.header), dict(decoded.claims)


def assert_tells_the_end_of(
    token: str, keys: KeySet, deployment: Deployment, signed_in: SignedIn
) -> None:
    header, claims = verified_logout_token(token, keys)
    assert header["typ"] == "logout+jwt"
    assert claims["iss"] == deployment.settings.public_url
    assert claims["aud"] == signed_in.app.application.client_id
    assert claims["sub"] == signed_in.claims["sub"]
    assert claims["sid"] == signed_in.claims["sid"]
    assert claims["events"] == {BACKCHANNEL_LOGOUT_EVENT: {}}
    assert "nonce" not in claims
    assert claims["jti"]
    assert 0 < claims["exp"] - claims["iat"] <= 300


async def refresh_status(deployment: Deployment, signed_in: SignedIn) -> int:
    app = signed_in.app
    async with httpx.AsyncClient(base_url=deployment.base_url, timeout=30) as rp:
        form = {"grant_type": "refresh_token", "refresh_token": signed_in.tokens["refresh_token"]}
        auth = (app.application.client_id, app.client_secret or "")
        return (await rp.post("/oidc/token", data=form, auth=auth)).status_code


async def userinfo_status(deployment: Deployment, signed_in: SignedIn) -> int:
    async with httpx.AsyncClient(base_url=deployment.base_url) as rp:
        bearer = {"Authorization": f"Bearer {signed_in.tokens['access_token']}"}
        return (await rp.get("/oidc/userinfo", headers=bearer)).status_code


async def audited(deployment: Deployment, outcome: str) -> list[AuditRow]:
    gateway = await Gateway.start(deployment.settings)
    try:
        async with gateway.db() as db:
            query = select(AuditRow).where(
                AuditRow.kind == "oidc_backchannel_logout", AuditRow.outcome == outcome
            )
            return list((await db.scalars(query)).all())
    finally:
        await gateway.close()


async def test_signing_out_tells_every_application_of_that_session_and_ends_its_grants(
    deployment: Deployment, browser: httpx.AsyncClient
) -> None:
    one, two, quiet = await sign_in_to(
        deployment, browser, deployment.one, deployment.two, deployment.quiet
    )
    assert one.claims["sid"] == two.claims["sid"] == quiet.claims["sid"]  # one twofa session
    async with httpx.AsyncClient(base_url=deployment.base_url, timeout=30) as elsewhere:
        (other,) = await sign_in_to(deployment, elsewhere, deployment.one)  # bob's 2nd browser
    assert other.claims["sid"] != one.claims["sid"]

    await sign_out(browser)

    keys = await jwks(deployment)
    (told_one,) = deployment.receiver.wait_for("one", 1)
    (told_two,) = deployment.receiver.wait_for("two", 1)
    assert_tells_the_end_of(told_one, keys, deployment, one)
    assert_tells_the_end_of(told_two, keys, deployment, two)
    for ended in (one, two, quiet):
        assert await refresh_status(deployment, ended) == 400
        assert await userinfo_status(deployment, ended) == 401
    # Bob's other browser is another session: still signed in, its grant still good.
    assert await refresh_status(deployment, other) == 200
    assert len(deployment.receiver.tokens("one")) == 1
    sent = await audited(deployment, "sent")
    assert sorted(row.detail["application"] for row in sent) == ["App one", "App two"]
    assert {row.username for row in sent} == {"bob"}


async def refreshed(deployment: Deployment, signed_in: SignedIn) -> SignedIn:
    """A refresh: the rotated grant is still the session's."""
    app = signed_in.app
    async with httpx.AsyncClient(base_url=deployment.base_url, timeout=30) as rp:
        form = {"grant_type": "refresh_token", "refresh_token": signed_in.tokens["refresh_token"]}
        auth = (app.application.client_id, app.client_secret or "")
        answer = await rp.post("/oidc/token", data=form, auth=auth)
    assert answer.status_code == 200, answer.text
    tokens = answer.json()
    claims = dict(jwt.decode(tokens["id_token"], await jwks(deployment), ["RS256"]).claims)
    return SignedIn(app, tokens, claims)


async def test_a_rotated_refresh_token_ends_with_the_session_too(
    deployment: Deployment, browser: httpx.AsyncClient
) -> None:
    (first,) = await sign_in_to(deployment, browser, deployment.one)
    second = await refreshed(deployment, first)
    assert second.claims["sid"] == first.claims["sid"]  # a refreshed ID token names it too

    await sign_out(browser)

    assert await refresh_status(deployment, second) == 400
    assert await userinfo_status(deployment, second) == 401
    (told,) = deployment.receiver.wait_for("one", 1)
    assert_tells_the_end_of(told, await jwks(deployment), deployment, second)


async def end_sessions(accounts: AccountService) -> None:
    await accounts.end_sessions("bob")


async def change_password(accounts: AccountService) -> None:
    await accounts.set_password("bob", BOB_NEW_PASSWORD)


async def disable(accounts: AccountService) -> None:
    await accounts.set_enabled("bob", False)


async def reset_second_factor(accounts: AccountService) -> None:
    await accounts.reset_second_factor("bob")


async def delete_the_user(accounts: AccountService) -> None:
    await accounts.delete_user("bob")  # the subject and grants go with the row


@pytest.mark.parametrize("deployment", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    "admin_action", [end_sessions, change_password, disable, reset_second_factor, delete_the_user]
)
async def test_an_admin_ending_the_users_sessions_tells_the_applications_and_ends_grants(
    deployment: Deployment,
    browser: httpx.AsyncClient,
    admin_action: Callable[[AccountService], Awaitable[None]],
) -> None:
    one, two = await sign_in_to(deployment, browser, deployment.one, deployment.two)

    gateway = await Gateway.start(deployment.settings)  # another process: the CLI, say
    try:
        await admin_action(gateway.accounts)
    finally:
        await gateway.close()  # waits for the deliveries under way

    keys = await jwks(deployment)
    assert_tells_the_end_of(deployment.receiver.wait_for("one", 1)[0], keys, deployment, one)
    assert_tells_the_end_of(deployment.receiver.wait_for("two", 1)[0], keys, deployment, two)
    assert await refresh_status(deployment, one) == 400
    assert await userinfo_status(deployment, two) == 401
    assert (await browser.get("/")).status_code != 200


async def test_only_the_process_that_ended_the_session_tells_the_applications(
    deployment: Deployment, browser: httpx.AsyncClient
) -> None:
    await sign_in_to(deployment, browser, deployment.one)
    gateway = await Gateway.start(deployment.settings)  # another node of the same gateway
    try:
        await gateway.accounts.end_sessions("bob")
    finally:
        await gateway.close()
    assert len(deployment.receiver.wait_for("one", 1)) == 1
    # The serving node heard of it through the change feed (its cached session is gone)...
    for _ in range(100):
        if (await browser.get("/")).status_code != 200:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # ...and, had it acted on what it heard, would have sent by now
    assert len(deployment.receiver.tokens("one")) == 1
    assert len(await audited(deployment, "sent")) == 1


class Abandoned(Exception):
    pass


async def end_bobs_session_then_fail(gateway: Gateway) -> None:
    """A unit of work that ends the session, then fails before its commit."""
    async with gateway.db.begin() as db:
        signed_in = select(SessionRow.id).where(SessionRow.user_id.is_not(None))
        (session_id,) = (await db.scalars(signed_in)).all()
        await Sessions(db).remove(session_id)
        raise Abandoned


@pytest.mark.parametrize("deployment", ["sqlite"], indirect=True)
async def test_a_sign_out_rolled_back_ends_no_grant_and_tells_nobody(
    deployment: Deployment, browser: httpx.AsyncClient
) -> None:
    (one,) = await sign_in_to(deployment, browser, deployment.one)
    gateway = await Gateway.start(deployment.settings)
    try:
        with pytest.raises(Abandoned):
            await end_bobs_session_then_fail(gateway)
    finally:
        await gateway.close()
    assert (await browser.get("/")).status_code == 200
    assert await refresh_status(deployment, one) == 200
    assert deployment.receiver.tokens("one") == []


@pytest.fixture
def backchannel_errors(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.ERROR, logger="twofa.services.idp.backchannel"):
        yield caplog


@pytest.mark.parametrize("deployment", ["sqlite"], indirect=True)
async def test_a_relying_party_down_or_hung_neither_blocks_nor_breaks_the_sign_out(
    deployment: Deployment,
    browser: httpx.AsyncClient,
    backchannel_errors: pytest.LogCaptureFixture,
) -> None:
    receiver = deployment.receiver
    receiver.held.add("one")  # hangs on the first attempt...
    receiver.statuses["one"] = 503  # ...then answers that it is unavailable, every time
    one, two = await sign_in_to(deployment, browser, deployment.one, deployment.two)

    await sign_out(browser)  # returns while app one's endpoint still holds the request

    assert receiver.wait_for("one", 1)
    assert_tells_the_end_of(receiver.wait_for("two", 1)[0], await jwks(deployment), deployment, two)
    assert await refresh_status(deployment, one) == 400  # its grant ended all the same
    receiver.release()
    assert len(receiver.wait_for("one", 3)) == 3  # retried: three attempts in all
    failed = await wait_for_audit(deployment, "failed")
    assert [row.detail["application"] for row in failed] == ["App one"]
    assert failed[0].detail["attempts"] == 3
    assert failed[0].detail["status"] == 503
    assert any(
        "back-channel logout FAILED" in record.getMessage() and "App one" in record.getMessage()
        for record in backchannel_errors.records
    )


async def wait_for_audit(deployment: Deployment, outcome: str) -> list[AuditRow]:
    """The audit rows of `outcome`, once the delivery under way has written one."""
    for _ in range(200):
        rows = await audited(deployment, outcome)
        if rows:
            return rows
        await asyncio.sleep(0.1)
    raise AssertionError(f"no back-channel logout audited as {outcome}")


@pytest.mark.parametrize("ended_by", ["idle", "lifetime"])
async def test_a_session_that_expires_unread_is_swept_and_its_applications_are_told(
    deployment: Deployment, browser: httpx.AsyncClient, ended_by: str
) -> None:
    """Nobody signs out and nothing reads the session again: the sweep that deletes it ends
    its grants and sends the logout tokens, as a sign-out would. A sign-in page left open
    (never signed in) is swept without a word."""
    (one,) = await sign_in_to(deployment, browser, deployment.one)
    async with httpx.AsyncClient(base_url=deployment.base_url) as idle_browser:
        assert (await idle_browser.get("/login")).status_code == 200  # anonymous, left open
    settings = deployment.settings
    later = (
        timedelta(minutes=settings.session_idle_minutes) + SWEEP_IDLE_GRACE + timedelta(minutes=1)
        if ended_by == "idle"
        else timedelta(hours=settings.session_absolute_hours, minutes=1)
    )
    gateway = await Gateway.start(settings, clock=FrozenClock(SystemClock().now() + later))
    try:
        await gateway.sessions.open(NO_CLIENT)  # opening a session sweeps the ended ones
        async with gateway.db() as db:
            left = (await db.scalars(select(SessionRow.id))).all()
        assert len(left) == 1  # only the session just opened
    finally:
        await gateway.close()  # waits for the deliveries under way

    (told,) = deployment.receiver.wait_for("one", 1)
    assert_tells_the_end_of(told, await jwks(deployment), deployment, one)
    assert await refresh_status(deployment, one) == 400
    assert await userinfo_status(deployment, one) == 401
    assert len(deployment.receiver.tokens("one")) == 1
