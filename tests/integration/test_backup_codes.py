"""Backup codes over real HTTP: set up after the authenticator app (the backup step), shown
once with a download that works only while the set-up is open, a code signs in once, two
sign-ins racing with one code (SQLite and PostgreSQL), regenerating behind a fresh second
factor, a lock-out of their own, and the low-on-codes warning."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from html import unescape
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from sqlalchemy import Select, select

from tests.conftest import RunningSimulator
from tests.support.authenticator_backup_codes import (
    codes_from_download,
    codes_from_page,
    made_up_code,
)
from tests.support.authenticator_totp import code_at, secret_from_page
from tests.support.databases import postgres_database, sqlite_database
from tests.support.gateway import csrf_from, running_gateway, sign_in
from tests.support.totp_flow import challenge_from, post_code, sign_out
from tests.support.two_factor import allow_methods
from twofa.config import Settings
from twofa.services.runtime import Gateway
from twofa.services.settings.two_factor import BackupPolicy
from twofa.storage.repositories import Users
from twofa.storage.tables import AuditRow, ChallengeRow, CredentialItemRow, SessionRow

WRONG = "That code didn't work. Check it and try again."
ENROL = "/2fa/m/backup_codes/enrol"
VERIFY = "/2fa/m/backup_codes"
Site = tuple[httpx.AsyncClient, Settings]
T = TypeVar("T")


async def _site(url: str, simulator: RunningSimulator) -> AsyncIterator[Site]:
    async with (
        running_gateway(url, simulator) as (base_url, settings),
        httpx.AsyncClient(base_url=base_url, timeout=30) as client,
    ):
        await allow_methods(
            settings,
            ("totp",),
            first_method="totp",
            backup=BackupPolicy.OPTIONAL,
            backup_methods=("backup_codes",),
        )
        yield client, settings


@pytest.fixture(params=["sqlite", "postgresql"])
async def site(
    request: pytest.FixtureRequest, tmp_path: Path, simulator: RunningSimulator
) -> AsyncIterator[Site]:
    factory = sqlite_database(tmp_path) if request.param == "sqlite" else postgres_database()
    async with factory as url:
        async for opened in _site(url, simulator):
            yield opened


@pytest.fixture
async def sqlite_site(tmp_path: Path, simulator: RunningSimulator) -> AsyncIterator[Site]:
    async with sqlite_database(tmp_path) as url:
        async for opened in _site(url, simulator):
            yield opened


async def generate_codes(client: httpx.AsyncClient) -> list[str]:
    """Opens the set-up page, reads the codes, ticks "saved" and finishes."""
    page = await client.get(ENROL)
    assert page.status_code == 200, page.text
    codes = codes_from_page(page.text)
    answer = await client.post(
        ENROL,
        data={
            "csrf_token": csrf_from(page.text),
            "challenge": challenge_from(page.text),
            "saved": "on",
        },
    )
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/2fa/after"
    return codes


async def enrol_app_then_codes(client: httpx.AsyncClient) -> tuple[str, list[str]]:
    """Alice's first sign-in: the authenticator app, then backup codes offered as the
    backup step. Returns the app's secret and the codes; she ends signed in."""
    assert (await sign_in(client, "alice")).headers["location"] == "/2fa"
    page = await client.get("/2fa/m/totp/enrol")
    secret = secret_from_page(page.text)
    answer = await client.post(
        "/2fa/m/totp/enrol",
        data={
            "csrf_token": csrf_from(page.text),
            "challenge": challenge_from(page.text),
            "code": code_at(secret),
        },
    )
    assert answer.headers["location"] == "/2fa/after?new=1"
    step = await client.get("/2fa/after?new=1")
    assert f'href="{ENROL}"' in step.text
    return secret, await generate_codes(client)


async def sign_in_with_code(client: httpx.AsyncClient, code: str) -> httpx.Response:
    """A sign-in from a fresh browser session (signed out first), finished with `code`."""
    await sign_out(client)
    client.cookies.clear()  # a refused attempt leaves a password-only session behind
    await sign_in(client, "alice")
    return await post_code(client, VERIFY, code)


async def query(settings: Settings, statement: Select[T]) -> list[T]:
    gateway = await Gateway.start(settings)
    try:
        async with gateway.db() as db:
            return list((await db.scalars(statement)).all())
    finally:
        await gateway.close()


async def test_a_code_signs_in_once(site: Site) -> None:
    client, _ = site
    _, codes = await enrol_app_then_codes(client)
    assert len(codes) == 10

    accepted = await sign_in_with_code(client, codes[0])
    assert accepted.status_code == 303
    assert accepted.headers["location"] == "/2fa/after"
    assert (await client.get("/2fa/after")).headers["location"] == "/"
    assert "Alice Liddell" in (await client.get("/")).text

    replayed = await sign_in_with_code(client, codes[0])
    assert replayed.status_code == 401
    assert WRONG in unescape(replayed.text)
    assert (await client.get("/")).status_code != 200  # still not signed in


async def test_two_sign_ins_racing_with_one_code_let_exactly_one_in(site: Site) -> None:
    client, settings = site
    _, codes = await enrol_app_then_codes(client)
    await sign_out(client)
    base_url = str(client.base_url)
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=30) as first,
        httpx.AsyncClient(base_url=base_url, timeout=30) as second,
    ):
        forms = []
        for browser in (first, second):
            await sign_in(browser, "alice")
            page = await browser.get(VERIFY)
            forms.append(
                {
                    "csrf_token": csrf_from(page.text),
                    "challenge": challenge_from(page.text),
                    "code": codes[4],
                }
            )
        answers = await asyncio.gather(
            first.post(VERIFY, data=forms[0]), second.post(VERIFY, data=forms[1])
        )
        assert sorted(answer.status_code for answer in answers) == [303, 401]
        signed_in = [(await browser.get("/")).status_code == 200 for browser in (first, second)]
        assert signed_in.count(True) == 1
    used = await query(
        settings, select(CredentialItemRow).where(CredentialItemRow.used_at.is_not(None))
    )
    assert len(used) == 1


async def test_codes_typed_in_lower_case_with_spaces_are_accepted(sqlite_site: Site) -> None:
    client, _ = sqlite_site
    _, codes = await enrol_app_then_codes(client)
    typed = " " + codes[2].lower().replace("-", "  ") + " "

    assert (await sign_in_with_code(client, typed)).status_code == 303


async def test_a_made_up_code_gets_the_plain_message(sqlite_site: Site) -> None:
    client, _ = sqlite_site
    _, codes = await enrol_app_then_codes(client)
    await sign_out(client)
    await sign_in(client, "alice")
    for junk in (made_up_code(codes), "12345", ""):
        answer = await post_code(client, VERIFY, junk)
        assert answer.status_code == 401
        assert WRONG in unescape(answer.text)
        assert "Enter one of your backup codes" in answer.text
        assert 'href="/2fa/use"' in answer.text  # other methods offered


async def test_the_download_serves_the_codes_only_while_the_set_up_is_open(
    sqlite_site: Site,
) -> None:
    client, _ = sqlite_site
    await enrol_app_then_codes(client)  # a first set, so this one is a regeneration
    page = await client.get(ENROL)
    challenge = challenge_from(page.text)
    link = f"{ENROL}/{challenge}/codes.txt"
    assert f'href="{link}"' in page.text

    download = await client.get(link)
    assert download.status_code == 200
    assert download.headers["content-type"].startswith("text/plain")
    assert download.headers["content-disposition"].startswith("attachment")
    assert download.headers["cache-control"] == "no-store"
    assert codes_from_download(download.text) == codes_from_page(page.text)

    finished = await client.post(
        ENROL, data={"csrf_token": csrf_from(page.text), "challenge": challenge, "saved": "on"}
    )
    assert finished.status_code == 303
    after = await client.get(link)
    assert after.status_code == 400
    assert codes_from_page(page.text)[0] not in after.text


async def test_the_download_is_refused_to_another_session(sqlite_site: Site) -> None:
    client, _ = sqlite_site
    await enrol_app_then_codes(client)
    page = await client.get(ENROL)
    link = f"{ENROL}/{challenge_from(page.text)}/codes.txt"
    async with httpx.AsyncClient(base_url=str(client.base_url), timeout=30) as other:
        await sign_in(other, "alice")
        stolen = await other.get(link)
    assert stolen.status_code == 400
    assert codes_from_page(page.text)[0] not in stolen.text


async def test_finishing_without_confirming_shows_the_same_codes_again(
    sqlite_site: Site,
) -> None:
    client, _ = sqlite_site
    await enrol_app_then_codes(client)
    page = await client.get(ENROL)
    form = {"csrf_token": csrf_from(page.text), "challenge": challenge_from(page.text)}

    refused = await client.post(ENROL, data=form)
    assert refused.status_code == 400
    assert "Confirm that you saved the codes" in unescape(refused.text)
    assert codes_from_page(refused.text) == codes_from_page(page.text)
    assert (await client.post(ENROL, data={**form, "saved": "on"})).status_code == 303


async def test_the_set_up_page_has_download_print_and_no_inline_script(
    sqlite_site: Site,
) -> None:
    client, _ = sqlite_site
    await enrol_app_then_codes(client)
    page = await client.get(ENROL)

    assert "I have saved these codes" in page.text
    assert 'id="download-codes"' in page.text
    assert 'id="print-codes" data-print' in page.text
    assert '<script src="/static/print.js"></script>' in page.text
    assert page.text.count("<script") == 1  # the CSP allows no inline script
    assert "script-src" not in page.headers["content-security-policy"]  # default-src 'self'
    script = await client.get("/static/print.js")
    assert script.status_code == 200
    assert "window.print()" in script.text
    style = await client.get("/static/backup-codes.css")
    assert "@media print" in style.text


async def age_second_factor(settings: Settings) -> None:
    """Moves every session's second factor 11 minutes into the past (no longer fresh)."""
    gateway = await Gateway.start(settings)
    try:
        async with gateway.db.begin() as db:
            for row in (await db.scalars(select(SessionRow))).all():
                if row.second_factor_at is not None:
                    row.second_factor_at -= timedelta(minutes=11)
    finally:
        await gateway.close()


async def test_regenerating_needs_a_fresh_second_factor_and_voids_the_old_codes(
    sqlite_site: Site,
) -> None:
    client, settings = sqlite_site
    secret, old = await enrol_app_then_codes(client)
    await age_second_factor(settings)

    asked = await client.get(ENROL)
    assert asked.status_code == 303
    assert asked.headers["location"] == "/2fa/use?step_up=1"
    confirmed = await post_code(client, "/2fa/m/totp", code_at(secret, +1))
    assert confirmed.status_code == 303
    assert (await client.get(confirmed.headers["location"])).headers["location"] == ENROL

    new = await generate_codes(client)
    assert not set(new) & set(old)
    refused = await sign_in_with_code(client, old[1])
    assert refused.status_code == 401
    assert (await sign_in_with_code(client, new[1])).status_code == 303
    my = await client.get("/my-2fa")
    assert "9 codes left" in my.text


async def test_five_wrong_codes_lock_backup_codes_but_not_the_app(sqlite_site: Site) -> None:
    client, _ = sqlite_site
    secret, codes = await enrol_app_then_codes(client)
    await sign_out(client)
    await sign_in(client, "alice")
    for _ in range(5):
        assert (await post_code(client, VERIFY, made_up_code(codes))).status_code == 401

    locked = await client.get(VERIFY)
    assert locked.status_code == 400
    assert "Too many failed attempts" in locked.text
    app = await post_code(client, "/2fa/m/totp", code_at(secret, +1))
    assert app.status_code == 303
    assert (await client.get("/")).status_code == 200


async def test_running_low_is_reported_by_my_2fa(sqlite_site: Site) -> None:
    client, settings = sqlite_site
    _, codes = await enrol_app_then_codes(client)
    for code in codes[:7]:
        assert (await sign_in_with_code(client, code)).status_code == 303
    assert not await low_on_codes(settings)
    assert "running out of backup codes" not in (await client.get("/my-2fa")).text

    eighth = await sign_in_with_code(client, codes[7])
    assert eighth.status_code == 303
    assert eighth.headers["location"] == "/2fa/after?codes_low=1"
    notice = await client.get(eighth.headers["location"])
    assert "You have 2 backup codes left." in notice.text
    assert 'href="/2fa/m/backup_codes/enrol"' in notice.text
    assert await low_on_codes(settings)
    page = await client.get("/my-2fa")
    assert "You are running out of backup codes" in page.text
    assert "2 codes left" in page.text


async def low_on_codes(settings: Settings) -> bool:
    gateway = await Gateway.start(settings)
    try:
        async with gateway.db() as db:
            alice = await Users(db).by_name("alice")
        assert alice is not None
        return (await gateway.my_methods.overview(alice.id)).low_on_backup_codes
    finally:
        await gateway.close()


async def test_codes_are_stored_hashed_and_every_use_audited(sqlite_site: Site) -> None:
    client, settings = sqlite_site
    _, codes = await enrol_app_then_codes(client)
    await sign_in_with_code(client, codes[0])

    items = await query(settings, select(CredentialItemRow))
    stored = " ".join(f"{item.slot} {item.digest}" for item in items)
    assert len(items) == 10
    for code in codes:
        assert code not in stored
        assert code.replace("-", "") not in stored
    events = await query(settings, select(AuditRow).where(AuditRow.username == "alice"))
    assert any(
        (event.kind, event.outcome, event.detail.get("method"))
        == ("second_factor", "allow", "backup_codes")
        for event in events
    )


async def test_no_plaintext_code_is_left_in_the_database(sqlite_site: Site) -> None:
    client, settings = sqlite_site
    _, codes = await enrol_app_then_codes(client)

    payloads = await query(settings, select(ChallengeRow.payload))
    dumped = repr(payloads)
    assert not [code for code in codes if code in dumped]
