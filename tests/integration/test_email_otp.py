"""Codes by e-mail over real HTTP and real SMTP (aiosmtpd on loopback): set-up through the
pages with the mailed code, sign-in with a new code, a code used once, wrong and expired codes,
the resend cooldown, and a mail server that is down (a clear message, nothing half-written,
the other methods still offered)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from html import unescape
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.conftest import RunningSimulator
from tests.support.authenticator_email_otp import other_code
from tests.support.authenticator_totp import code_for, secret_from_page
from tests.support.databases import postgres_database, sqlite_database
from tests.support.email_otp_flow import (
    ERIN,
    ERIN_EMAIL,
    ERIN_PASSWORD,
    FROM,
    Site,
    email_site,
    enrol_erin,
    password_step,
    smtp_edit,
)
from tests.support.gateway import csrf_from, sign_in
from tests.support.smtp import SmtpServer, code_in, smtp_server
from tests.support.totp_flow import challenge_from, sign_out, submit_code
from twofa.domain.client import NO_CLIENT
from twofa.methods.email_otp import NO_ADDRESS
from twofa.methods.totp import time_step
from twofa.services.mail.delivery import SEND_FAILED
from twofa.services.runtime import Gateway
from twofa.storage.tables import AuditRow, ChallengeRow, CredentialRow

WRONG = "That code didn't work. Check it and try again."
EXPIRED = "This request has expired or was already used. Start again."
VERIFY = "/2fa/m/email_otp"


@pytest.fixture
async def site(
    tmp_path: Path, simulator: RunningSimulator, mail: SmtpServer
) -> AsyncIterator[Site]:
    async with sqlite_database(tmp_path) as url, email_site(url, simulator, mail) as site:
        yield site


async def signed_out_after_enrolment(site: Site) -> None:
    await enrol_erin(site)
    await sign_out(site.client)
    site.wait_out_cooldown()


async def audit_outcomes(site: Site, kind: str) -> list[str]:
    async def read(gateway: Gateway) -> list[str]:
        async with gateway.db() as db:
            rows = await db.scalars(select(AuditRow).where(AuditRow.kind == kind))
            return [row.outcome for row in rows]

    return await site.query(read)


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
async def test_set_up_by_mail_then_sign_in_with_a_mailed_code(
    database: str, tmp_path: Path, simulator: RunningSimulator, mail: SmtpServer
) -> None:
    factory = sqlite_database(tmp_path) if database == "sqlite" else postgres_database()
    async with factory as url, email_site(url, simulator, mail) as site:
        await enrol_erin(site)
        [enrolment_mail] = mail.to(ERIN_EMAIL)
        assert enrolment_mail.mail_from == FROM
        assert enrolment_mail.message["Subject"] == "Your verification code"
        assert "valid for 10 minutes" in enrolment_mail.body
        assert (await site.client.get("/")).status_code == 200  # signed in
        my_2fa = await site.client.get("/my-2fa")
        assert "e***n@example.com" in my_2fa.text
        await sign_out(site.client)

        site.wait_out_cooldown()
        await password_step(site)
        page = await site.client.get(VERIFY)
        assert page.status_code == 200, page.text
        assert (
            "We sent a 6-digit code to <strong>e***n@example.com</strong>. "
            "It is valid for 10 minutes."
        ) in page.text
        assert ERIN_EMAIL not in page.text
        assert 'href="/2fa/m/email_otp"' in page.text  # send a new code
        assert 'href="/2fa/use"' in page.text  # the other methods
        assert len(mail.to(ERIN_EMAIL)) == 2

        answer = await submit_code(site.client, VERIFY, page, site.latest_code())
        assert answer.status_code == 303, answer.text
        assert answer.headers["location"] == "/2fa/after"
        assert (await site.client.get("/")).status_code == 200


async def test_the_code_is_accepted_typed_with_spaces(site: Site) -> None:
    await signed_out_after_enrolment(site)
    await password_step(site)
    page = await site.client.get(VERIFY)
    code = site.latest_code()

    answer = await submit_code(site.client, VERIFY, page, f" {code[:3]} {code[3:]} ")
    assert answer.status_code == 303


async def test_a_mailed_code_works_once(site: Site) -> None:
    await signed_out_after_enrolment(site)
    await password_step(site)
    page = await site.client.get(VERIFY)
    code = site.latest_code()
    assert (await submit_code(site.client, VERIFY, page, code)).status_code == 303

    home = await site.client.get("/")  # the session was renewed: its form token is new
    replayed = await site.client.post(  # the same challenge and code again
        VERIFY,
        data={
            "csrf_token": csrf_from(home.text),
            "challenge": challenge_from(page.text),
            "code": code,
        },
    )
    assert replayed.status_code == 400
    assert EXPIRED in unescape(replayed.text)

    await sign_out(site.client)
    site.wait_out_cooldown()
    await password_step(site)
    new_page = await site.client.get(VERIFY)
    old_code_again = await submit_code(site.client, VERIFY, new_page, code)
    if code != site.latest_code():  # one in a million: the new code is the same digits
        assert old_code_again.status_code == 401
        assert WRONG in unescape(old_code_again.text)


async def test_a_wrong_code_gets_the_plain_message_and_sends_no_new_mail(site: Site) -> None:
    await signed_out_after_enrolment(site)
    await password_step(site)
    page = await site.client.get(VERIFY)
    sent = len(site.codes_sent())

    wrong = await submit_code(site.client, VERIFY, page, other_code(site.latest_code()))
    assert wrong.status_code == 401
    assert WRONG in unescape(wrong.text)
    assert len(site.codes_sent()) == sent
    assert "a***" not in wrong.text  # the page masks erin's address, never shows another

    right = await submit_code(site.client, VERIFY, wrong, site.latest_code())
    assert right.status_code == 303


async def test_an_expired_code_is_refused(site: Site) -> None:
    await signed_out_after_enrolment(site)
    await password_step(site)
    page = await site.client.get(VERIFY)
    site.clock.advance(timedelta(minutes=10, seconds=1))

    late = await submit_code(site.client, VERIFY, page, site.latest_code())
    assert late.status_code == 400
    assert EXPIRED in unescape(late.text)
    assert "expired" in await audit_outcomes(site, "second_factor")


async def test_a_new_code_within_30_seconds_is_not_sent(site: Site) -> None:
    await signed_out_after_enrolment(site)
    await password_step(site)
    assert (await site.client.get(VERIFY)).status_code == 200
    site.clock.advance(timedelta(seconds=12))

    too_soon = await site.client.get(VERIFY)
    assert too_soon.status_code == 200  # the page of the code already sent, again
    assert "Wait 18 seconds before asking for another code." in unescape(too_soon.text)
    assert len(site.codes_sent()) == 2  # the enrolment's and the first sign-in code

    site.clock.advance(timedelta(seconds=18))
    again = await site.client.get(VERIFY)
    assert again.status_code == 200
    assert len(site.codes_sent()) == 3
    assert (await submit_code(site.client, VERIFY, again, site.latest_code())).status_code == 303


async def test_five_wrong_codes_lock_the_method(site: Site) -> None:
    await signed_out_after_enrolment(site)
    await password_step(site)
    page = await site.client.get(VERIFY)
    for _ in range(5):
        page = await submit_code(site.client, VERIFY, page, other_code(site.latest_code()))
    sent = len(site.codes_sent())

    site.wait_out_cooldown()
    locked = await site.client.get(VERIFY)
    assert locked.status_code == 400
    assert "Too many failed attempts" in locked.text
    assert len(site.codes_sent()) == sent  # a locked method mails nothing


# ---- the mail server is down -------------------------------------------------------------


async def test_smtp_down_at_set_up_says_so_and_writes_nothing(site: Site) -> None:
    site.mail.stop()
    await sign_in(site.client, ERIN, ERIN_PASSWORD)

    answer = await site.client.get("/2fa/m/email_otp/enrol")
    assert answer.status_code in (400, 503)
    assert SEND_FAILED in unescape(answer.text)
    assert await site.rows(ChallengeRow) == 0
    assert await site.rows(CredentialRow) == 0
    assert "failed" in await audit_outcomes(site, "delivery")


async def enrol_erin_with_totp_too(site: Site) -> str:
    """E-mail codes first, then (freshly verified) an authenticator app; its secret."""
    await enrol_erin(site)
    page = await site.client.get("/2fa/m/totp/enrol")
    assert page.status_code == 200, page.text
    secret = secret_from_page(page.text)
    code = code_for(secret, time_step(site.clock.now()))
    assert (await submit_code(site.client, "/2fa/m/totp/enrol", page, code)).status_code == 303
    await sign_out(site.client)
    site.clock.advance(timedelta(seconds=60))  # past the cooldown and the step just used
    return secret


async def test_smtp_down_at_sign_in_says_so_and_the_other_methods_still_work(site: Site) -> None:
    secret = await enrol_erin_with_totp_too(site)
    challenges = await site.rows(ChallengeRow)
    site.mail.stop()
    await password_step(site)

    down = await site.client.get(VERIFY)
    assert down.status_code in (400, 503)
    assert SEND_FAILED in unescape(down.text)
    assert await site.rows(ChallengeRow) == challenges  # no challenge for a code never sent

    other = await site.client.get("/2fa/use")
    assert 'data-method="totp"' in other.text
    page = await site.client.get("/2fa/m/totp")
    code = code_for(secret, time_step(site.clock.now()))
    assert (await submit_code(site.client, "/2fa/m/totp", page, code)).status_code == 303


async def test_the_smtp_down_page_links_to_the_other_methods(site: Site) -> None:
    await enrol_erin_with_totp_too(site)
    site.mail.stop()
    await password_step(site)

    down = await site.client.get(VERIFY)
    assert 'href="/2fa/use"' in down.text


async def test_a_user_without_an_address_is_told_to_ask_the_admin(site: Site) -> None:
    async def without_email(gateway: Gateway) -> None:
        await gateway.accounts.add_user("frank", "frank-password-1")
        await gateway.accounts.set_user_policy("frank", True)

    await site.query(without_email)
    await sign_in(site.client, "frank", "frank-password-1")
    answer = await site.client.get("/2fa/m/email_otp/enrol")
    assert answer.status_code == 400
    assert NO_ADDRESS in unescape(answer.text)
    assert site.mail.received == []


async def test_a_new_mail_server_applies_to_the_next_code_without_a_restart(
    site: Site,
) -> None:
    await signed_out_after_enrolment(site)
    site.mail.stop()
    with smtp_server() as replacement:

        async def move(gateway: Gateway) -> None:
            await gateway.smtp.save(smtp_edit(replacement), "test-admin", NO_CLIENT)

        await site.query(move)
        await password_step(site)
        page = await site.client.get(VERIFY)
        assert page.status_code == 200, page.text
        [mail] = replacement.to(ERIN_EMAIL)
        answer = await submit_code(site.client, VERIFY, page, code_in(mail.body))
    assert answer.status_code == 303
