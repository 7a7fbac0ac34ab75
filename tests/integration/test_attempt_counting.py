"""Count, then check, over real HTTP on SQLite and PostgreSQL: fifty wrong answers at once to
one challenge (or fifty wrong passwords at once for one username) are checked exactly up to
the limit, the rest are refused as locked without being checked, none gets a server error,
and every one is audited (the audit log is the proof: `limit` refusals of a wrong answer,
`50 - limit` refusals as locked, one lock-out). Once locked, the right answer is refused too;
a right answer within the limit resets the count."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from html import unescape

import httpx
import pytest
from sqlalchemy import select

from tests.conftest import RunningSimulator
from tests.support.authenticator_backup_codes import codes_from_page, made_up_code
from tests.support.authenticator_security_questions import (
    answer_for,
    enrolment_form,
    questions_on_enrol_page,
    questions_on_verify_page,
)
from tests.support.authenticator_totp import code_at, secret_from_page
from tests.support.email_otp_flow import ERIN, email_site, enrol_erin, password_step
from tests.support.gateway import PASSWORDS, csrf_from, running_gateway, sign_in
from tests.support.smtp import SmtpServer
from tests.support.totp_flow import challenge_from, enrol_alice, sign_out, submit_code
from tests.support.two_factor import allow_methods
from twofa.config import Settings
from twofa.services.runtime import Gateway
from twofa.services.second_factor.failures import failure_rule
from twofa.services.settings.two_factor import BackupPolicy
from twofa.storage.tables import AuditRow, ThrottleRow

ATTEMPTS = 50
WRONG_CODE = "That code didn't work. Check it and try again."
WRONG_ANSWERS = "Those answers didn't work. Check them and try again."
LOCKED_15 = "Too many failed attempts with this method. Try again in 15 minutes."
LOCKED_HOUR = "Too many failed attempts with this method. Try again in an hour."
LOCKED_SIGN_IN = "Too many failed sign-in attempts"


@dataclass(frozen=True)
class Site:
    client: httpx.AsyncClient
    settings: Settings


@asynccontextmanager
async def app_site(
    url: str, simulator: RunningSimulator, backup_methods: tuple[str, ...] = ()
) -> AsyncIterator[Site]:
    """The authenticator app as the first method, and these offered as the backup step."""
    async with (
        running_gateway(url, simulator) as (base_url, settings),
        httpx.AsyncClient(base_url=base_url, timeout=60) as client,
    ):
        await allow_methods(
            settings,
            ("totp",),
            first_method="totp",
            backup=BackupPolicy.OPTIONAL if backup_methods else BackupPolicy.NONE,
            backup_methods=backup_methods,
        )
        yield Site(client, settings)


@pytest.fixture
async def site(database_url: str, simulator: RunningSimulator) -> AsyncIterator[Site]:
    async with app_site(database_url, simulator) as opened:
        yield opened


async def audit_of(settings: Settings, username: str) -> Counter[tuple[str, str]]:
    gateway = await Gateway.start(settings)
    try:
        async with gateway.db.begin() as db:
            rows = await db.scalars(select(AuditRow).where(AuditRow.username == username))
            return Counter((row.kind, row.outcome) for row in rows)
    finally:
        await gateway.close()


async def throttle_counts(settings: Settings) -> dict[str, int]:
    gateway = await Gateway.start(settings)
    try:
        async with gateway.db.begin() as db:
            return {row.key: row.failures for row in await db.scalars(select(ThrottleRow))}
    finally:
        await gateway.close()


async def all_at_once(
    client: httpx.AsyncClient, url: str, forms: list[dict[str, str]]
) -> list[httpx.Response]:
    """One browser (one cookie jar, one session) posting every form at the same moment."""
    return list(await asyncio.gather(*(client.post(url, data=form) for form in forms)))


def answers_to(
    page: httpx.Response, fields: Iterator[dict[str, str]], count: int = ATTEMPTS
) -> list[dict[str, str]]:
    """`count` forms answering the challenge on `page`, each with the next fields."""
    own = {"csrf_token": csrf_from(page.text), "challenge": challenge_from(page.text)}
    return [{**own, **next(fields)} for _ in range(count)]


def wrong_codes(right: set[str]) -> Iterator[dict[str, str]]:
    """Six-digit codes, all different, none of them `right`."""
    return ({"code": f"{n:06d}"} for n in range(1_000_000) if f"{n:06d}" not in right)


def assert_checked_up_to(
    replies: list[httpx.Response],
    audit: Counter[tuple[str, str]],
    limit: int,
    *,
    wrong: str,
    locked: str,
    kind: str = "second_factor",
    refused: str = "refused",
) -> None:
    assert [r.status_code for r in replies if r.status_code >= 500] == []
    assert audit[(kind, refused)] == limit, audit
    assert audit[(kind, "locked")] == ATTEMPTS - limit, audit
    assert audit[("lockout", "locked")] == 1, audit
    texts = [unescape(reply.text) for reply in replies]
    assert sum(wrong in text for text in texts) == limit
    assert sum(locked in text for text in texts) == ATTEMPTS - limit


async def signed_in(client: httpx.AsyncClient) -> bool:
    return (await client.get("/")).status_code == 200


async def enrol_app(client: httpx.AsyncClient) -> str:
    """Alice's first sign-in with the authenticator app; the backup step comes next."""
    assert (await sign_in(client, "alice")).headers["location"] == "/2fa"
    page = await client.get("/2fa/m/totp/enrol")
    secret = secret_from_page(page.text)
    answer = await submit_code(client, "/2fa/m/totp/enrol", page, code_at(secret))
    assert answer.headers["location"] == "/2fa/after?new=1", answer.text
    return secret


async def again_with_password(client: httpx.AsyncClient) -> None:
    await sign_out(client)
    client.cookies.clear()
    assert (await sign_in(client, "alice")).headers["location"] == "/2fa"


# ---- second factors ---------------------------------------------------------------------


async def test_fifty_wrong_app_codes_at_once_are_checked_five_times(site: Site) -> None:
    secret = await enrol_alice(site.client)
    await again_with_password(site.client)
    page = await site.client.get("/2fa/m/totp")
    right = {code_at(secret, offset) for offset in range(-3, 4)}

    replies = await all_at_once(site.client, "/2fa/m/totp", answers_to(page, wrong_codes(right)))

    audit = await audit_of(site.settings, "alice")
    assert_checked_up_to(replies, audit, 5, wrong=WRONG_CODE, locked=LOCKED_15)
    # Locked means locked: the right code is refused unchecked too.
    right_now = await submit_code(site.client, "/2fa/m/totp", page, code_at(secret, +1))
    assert right_now.status_code == 401
    assert LOCKED_15 in unescape(right_now.text)
    assert not await signed_in(site.client)
    assert (await audit_of(site.settings, "alice"))[("second_factor", "locked")] == 46


async def test_fifty_wrong_backup_codes_at_once_are_checked_five_times(
    database_url: str, simulator: RunningSimulator
) -> None:
    async with app_site(database_url, simulator, ("backup_codes",)) as site:
        await enrol_app(site.client)
        setup = await site.client.get("/2fa/m/backup_codes/enrol")
        codes = codes_from_page(setup.text)
        saved = await site.client.post(
            "/2fa/m/backup_codes/enrol",
            data={
                "csrf_token": csrf_from(setup.text),
                "challenge": challenge_from(setup.text),
                "saved": "on",
            },
        )
        assert saved.status_code == 303, saved.text
        await again_with_password(site.client)
        page = await site.client.get("/2fa/m/backup_codes")
        wrong = itertools.repeat({"code": made_up_code(codes)})

        replies = await all_at_once(site.client, "/2fa/m/backup_codes", answers_to(page, wrong))

        audit = await audit_of(site.settings, "alice")
        assert_checked_up_to(replies, audit, 5, wrong=WRONG_CODE, locked=LOCKED_15)
        right = await submit_code(site.client, "/2fa/m/backup_codes", page, codes[0])
        assert LOCKED_15 in unescape(right.text)
        assert not await signed_in(site.client)


async def test_fifty_wrong_mailed_codes_at_once_are_checked_five_times(
    database_url: str, simulator: RunningSimulator, mail: SmtpServer
) -> None:
    async with email_site(database_url, simulator, mail) as site:
        await enrol_erin(site)
        await sign_out(site.client)
        site.wait_out_cooldown()
        await password_step(site)
        page = await site.client.get("/2fa/m/email_otp")
        assert page.status_code == 200, page.text
        sent = site.latest_code()

        replies = await all_at_once(
            site.client, "/2fa/m/email_otp", answers_to(page, wrong_codes({sent}))
        )

        audit = await audit_of(site.settings, ERIN)
        assert_checked_up_to(replies, audit, 5, wrong=WRONG_CODE, locked=LOCKED_15)
        right = await submit_code(site.client, "/2fa/m/email_otp", page, sent)
        assert LOCKED_15 in unescape(right.text)
        assert not await signed_in(site.client)


async def test_fifty_wrong_security_answers_at_once_are_checked_three_times(
    database_url: str, simulator: RunningSimulator
) -> None:
    assert failure_rule("security_questions").limit == 3
    async with app_site(database_url, simulator, ("security_questions",)) as site:
        await enrol_app(site.client)
        setup = await site.client.get("/2fa/m/security_questions/enrol")
        pool, count = questions_on_enrol_page(setup.text)
        form = {
            "csrf_token": csrf_from(setup.text),
            "challenge": challenge_from(setup.text),
            **enrolment_form(pool, count),
        }
        enrolled = await site.client.post("/2fa/m/security_questions/enrol", data=form)
        assert enrolled.status_code == 303, enrolled.text
        await again_with_password(site.client)
        page = await site.client.get("/2fa/m/security_questions")
        asked = questions_on_verify_page(page.text)
        wrong = ({"answer_1": f"guess {n}", "answer_2": "guess"} for n in itertools.count())

        replies = await all_at_once(
            site.client, "/2fa/m/security_questions", answers_to(page, wrong)
        )

        audit = await audit_of(site.settings, "alice")
        assert_checked_up_to(replies, audit, 3, wrong=WRONG_ANSWERS, locked=LOCKED_HOUR)
        right = {f"answer_{n}": answer_for(q) for n, q in enumerate(asked, start=1)}
        answered = await site.client.post(
            "/2fa/m/security_questions",
            data={"csrf_token": csrf_from(page.text), "challenge": challenge_from(page.text)}
            | right,
        )
        assert LOCKED_HOUR in unescape(answered.text)
        assert not await signed_in(site.client)


# ---- passwords ----------------------------------------------------------------------------


async def test_fifty_wrong_passwords_at_once_are_checked_up_to_the_user_limit(
    site: Site,
) -> None:
    limit = site.settings.login_failures_per_user
    assert limit < site.settings.login_failures_per_ip  # the username's limit is the one met
    login = await site.client.get("/login")
    forms = [
        {"username": "alice", "password": f"guess {n}", "csrf_token": csrf_from(login.text)}
        for n in range(ATTEMPTS)
    ]

    replies = await all_at_once(site.client, "/login", forms)

    audit = await audit_of(site.settings, "alice")
    assert [r.status_code for r in replies if r.status_code >= 500] == []
    assert sorted(Counter(r.status_code for r in replies).items()) == [
        (401, limit),
        (429, ATTEMPTS - limit),
    ]
    assert audit[("login", "bad_password")] == limit
    assert audit[("login", "locked")] == ATTEMPTS - limit
    assert audit[("lockout", "locked")] == 1
    # The refused ones gave the address back its attempts: only the checked ones count there.
    counts = await throttle_counts(site.settings)
    assert counts["login-ip:127.0.0.1"] == limit
    right = await sign_in(site.client, "alice")
    assert right.status_code == 429
    assert LOCKED_SIGN_IN in right.text


async def test_a_right_answer_within_the_limit_resets_the_count(site: Site) -> None:
    secret = await enrol_alice(site.client)
    await sign_out(site.client)
    site.client.cookies.clear()
    login = await site.client.get("/login")
    guesses = [
        {"username": "alice", "password": f"guess {n}", "csrf_token": csrf_from(login.text)}
        for n in range(4)
    ]
    assert {r.status_code for r in await all_at_once(site.client, "/login", guesses)} == {401}
    assert (await sign_in(site.client, "alice", PASSWORDS["alice"])).status_code == 303
    counts = await throttle_counts(site.settings)
    assert "login-user-net:alice|127.0.0.1" not in counts  # reset: it is alice's own network
    assert counts["login-user-all:alice"] == 4  # shared with every network: given back only
    assert counts["login-ip:127.0.0.1"] == 4  # shared: only the right one's attempt given back

    page = await site.client.get("/2fa/m/totp")
    right = {code_at(secret, offset) for offset in range(-3, 4)}
    forms = answers_to(page, wrong_codes(right), count=4)
    assert {r.status_code for r in await all_at_once(site.client, "/2fa/m/totp", forms)} == {401}
    assert (await throttle_counts(site.settings))["2fa-totp:alice"] == 4
    answer = await submit_code(site.client, "/2fa/m/totp", page, code_at(secret, +1))
    assert answer.status_code == 303, answer.text
    assert "2fa-totp:alice" not in await throttle_counts(site.settings)
    audit = await audit_of(site.settings, "alice")
    assert (audit[("second_factor", "refused")], audit[("second_factor", "locked")]) == (4, 0)
    assert audit[("lockout", "locked")] == 0


# ---- Duo passcodes ----------------------------------------------------------------------


async def test_fifty_wrong_duo_passcodes_at_once_are_checked_five_times(
    database_url: str, simulator: RunningSimulator
) -> None:
    simulator.add_user("alice")
    async with (
        running_gateway(database_url, simulator, autopush=False) as (base_url, settings),
        httpx.AsyncClient(base_url=base_url, timeout=60) as client,
    ):
        assert (await sign_in(client, "alice")).status_code == 303
        page = await client.get("/2fa/validate")
        assert page.status_code == 200, page.text
        forms = [
            {"passcode": f"{n:06d}", "csrf_token": csrf_from(page.text)}
            for n in range(100_000, 100_000 + ATTEMPTS)
        ]

        replies = await all_at_once(client, "/2fa/duo/passcode", forms)

        audit = await audit_of(settings, "alice")
        assert [r.status_code for r in replies if r.status_code >= 500] == []
        assert audit[("duo_passcode", "refused")] == 5, audit
        assert audit[("duo_passcode", "locked")] == ATTEMPTS - 5, audit
        assert audit[("lockout", "locked")] == 1, audit
        assert not await signed_in(client)
