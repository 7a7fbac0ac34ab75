"""Codes by e-mail at an address the user chooses, over real HTTP and real SMTP (aiosmtpd): the
admin's switch on the console's E-mail Settings and in `twofa smtp addresses`, a user without
an account address setting up codes at one of their own, later codes going there, a malformed
address sent back with nothing sent or stored, and a hand-made form changing nothing while the
switch is off."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import timedelta
from html import unescape
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from tests.conftest import RunningSimulator
from tests.support.admin_sign_in import sign_in_admin_with_app
from tests.support.databases import postgres_database
from tests.support.email_otp_flow import (
    ADMIN,
    ADMIN_PASSWORD,
    ERIN,
    ERIN_EMAIL,
    ERIN_PASSWORD,
    FRANK,
    FRANK_PASSWORD,
    FRANKS_OWN,
    Site,
    add_frank_without_an_address,
    chosen_address_site,
    email_site,
    enrol_erin,
    let_users_choose,
)
from tests.support.gateway import csrf_from, sign_in
from tests.support.smtp import SmtpServer, code_in
from tests.support.totp_flow import sign_out, submit_code
from twofa.cli.main import app
from twofa.methods.email_otp import NOT_AN_ADDRESS
from twofa.methods.totp import time_step
from twofa.services.runtime import Gateway
from twofa.services.second_factor.email_code_options import AUDIT_KIND
from twofa.services.settings.cache import RECHECK_S
from twofa.storage.tables import AuditRow, ChallengeRow, CredentialRow

ENROL, BEGIN, VERIFY = "/2fa/m/email_otp/enrol", "/2fa/m/email_otp/enrol/begin", "/2fa/m/email_otp"
EMAIL_SETTINGS = "/admin/settings/email"


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name in list(os.environ):
        if name.startswith("TWOFA_"):  # a developer's own settings must not leak in
            monkeypatch.delenv(name)
    env = {"TWOFA_MODE": "dev", "TWOFA_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'c.db'}"}
    assert CliRunner().invoke(app, ["db", "upgrade"], env=env).exit_code == 0
    return env


@pytest.fixture
async def site(
    tmp_path: Path, simulator: RunningSimulator, mail: SmtpServer
) -> AsyncIterator[Site]:
    async with chosen_address_site(tmp_path, simulator, mail) as site:
        yield site


async def post_address(
    client: httpx.AsyncClient, page: httpx.Response, address: str
) -> httpx.Response:
    return await client.post(BEGIN, data={"csrf_token": csrf_from(page.text), "address": address})


async def address_page(client: httpx.AsyncClient) -> httpx.Response:
    """Frank's first sign-in, up to the set-up page asking where codes should go."""
    assert (await sign_in(client, FRANK, FRANK_PASSWORD)).headers["location"] == "/2fa"
    page = await client.get(ENROL)
    assert page.status_code == 200, page.text
    assert 'id="address-form"' in page.text
    return page


async def test_a_user_without_an_address_sets_up_codes_at_one_of_their_own(site: Site) -> None:
    page = await address_page(site.client)
    assert 'value=""' in page.text  # nothing to prefill: the account has no address

    code_page = await post_address(site.client, page, f"  {FRANKS_OWN} ")
    assert code_page.status_code == 200, code_page.text
    assert f"We sent a 6-digit code to <strong>{FRANKS_OWN}</strong>" in code_page.text
    assert 'id="change-address"' in code_page.text
    [mail] = site.mail.to(FRANKS_OWN)
    finished = await submit_code(site.client, ENROL, code_page, code_in(mail.body))
    assert finished.status_code == 303, finished.text
    assert finished.headers["location"] == "/2fa/after?new=1"
    assert await site.rows(CredentialRow, FRANK) == 1
    await sign_out(site.client)

    site.wait_out_cooldown()
    assert (await sign_in(site.client, FRANK, FRANK_PASSWORD)).headers["location"] == "/2fa"
    assert (await site.client.get("/2fa")).headers["location"] == VERIFY
    sign_in_page = await site.client.get(VERIFY)
    assert sign_in_page.status_code == 200, sign_in_page.text
    later = site.mail.to(FRANKS_OWN)
    assert len(later) == 2
    answer = await submit_code(site.client, VERIFY, sign_in_page, code_in(later[-1].body))
    assert answer.status_code == 303, answer.text
    assert (await site.client.get("/")).status_code == 200


async def test_the_address_form_is_prefilled_with_the_account_address(site: Site) -> None:
    assert (await sign_in(site.client, ERIN, ERIN_PASSWORD)).headers["location"] == "/2fa"
    page = await site.client.get(ENROL)
    assert f'value="{ERIN_EMAIL}"' in page.text
    assert site.mail.received == []  # nothing is sent before the user confirms where


@pytest.mark.parametrize(
    "typed", ["frank", "frank@localhost", "frank@example.org\r\nBcc: x@example.net", "F <f@x.org>"]
)
async def test_a_malformed_address_comes_back_to_fix_with_nothing_sent_or_stored(
    site: Site, typed: str
) -> None:
    page = await address_page(site.client)

    answer = await post_address(site.client, page, typed)

    assert answer.status_code == 400
    assert NOT_AN_ADDRESS in unescape(answer.text)
    assert 'aria-invalid="true"' in answer.text
    assert site.mail.received == []
    assert await site.rows(ChallengeRow, FRANK) == 0
    fixed = await post_address(site.client, answer, FRANKS_OWN)  # the page can be used again
    assert fixed.status_code == 200, fixed.text
    assert len(site.mail.to(FRANKS_OWN)) == 1


async def test_a_second_address_within_the_cooldown_is_not_mailed(site: Site) -> None:
    page = await address_page(site.client)
    assert (await post_address(site.client, page, FRANKS_OWN)).status_code == 200

    again = await post_address(site.client, page, "frank.other@example.org")

    assert "Wait 30 seconds before asking for another code." in unescape(again.text)
    assert site.mail.to("frank.other@example.org") == []
    site.wait_out_cooldown()
    assert (await post_address(site.client, page, "frank.other@example.org")).status_code == 200
    assert len(site.mail.to("frank.other@example.org")) == 1


async def test_the_address_form_needs_its_token(site: Site) -> None:
    await address_page(site.client)
    answer = await site.client.post(BEGIN, data={"csrf_token": "forged", "address": FRANKS_OWN})
    assert answer.status_code == 403
    assert site.mail.received == []


async def test_with_the_switch_off_a_hand_made_form_cannot_choose_the_address(site: Site) -> None:
    await let_users_choose(site, on=False)
    assert (await sign_in(site.client, ERIN, ERIN_PASSWORD)).headers["location"] == "/2fa"
    page = await site.client.get(ENROL)  # the code goes to the account address at once
    assert 'id="address-form"' not in page.text
    site.wait_out_cooldown()

    answer = await post_address(site.client, page, "mallory@example.net")

    assert answer.status_code == 200, answer.text
    assert site.mail.to("mallory@example.net") == []
    assert len(site.mail.to(ERIN_EMAIL)) == 2


async def test_admins_switch_it_on_the_email_settings_page(site: Site) -> None:
    await let_users_choose(site, on=False)
    admin = site.client
    step = time_step(site.clock.now())  # the site's clock stands still
    await sign_in_admin_with_app(admin, ADMIN, ADMIN_PASSWORD, step=step)
    page = await admin.get(EMAIL_SETTINGS)
    assert 'id="users_choose_address" name="users_choose_address" value="on" >' in page.text

    form = {"csrf_token": csrf_from(page.text), "users_choose_address": "on"}
    saved = await admin.post(f"{EMAIL_SETTINGS}/addresses", data=form)
    assert saved.headers["location"] == f"{EMAIL_SETTINGS}?addresses=on"
    shown = await admin.get(saved.headers["location"])
    assert "Users now choose the address at set-up" in shown.text
    assert 'value="on" checked>' in shown.text

    off = await admin.post(f"{EMAIL_SETTINGS}/addresses", data={"csrf_token": form["csrf_token"]})
    assert off.headers["location"] == f"{EMAIL_SETTINGS}?addresses=off"
    forged = await admin.post(f"{EMAIL_SETTINGS}/addresses", data={"users_choose_address": "on"})
    assert forged.status_code == 403

    async def audited(gateway: Gateway) -> list[tuple[str, object]]:
        async with gateway.db() as db:
            rows = await db.scalars(select(AuditRow).where(AuditRow.kind == AUDIT_KIND))
            return [(row.username, row.detail["after"]) for row in rows]

    assert (await site.query(audited))[-2:] == [
        (ADMIN, {"users_choose_address": True}),
        (ADMIN, {"users_choose_address": False}),
    ]


async def test_a_save_reaches_a_running_gateway_within_a_second(
    tmp_path: Path, simulator: RunningSimulator, mail: SmtpServer
) -> None:
    """The switch saved elsewhere (the CLI, another node) applies without a restart."""
    async with postgres_database() as url, email_site(url, simulator, mail) as site:
        await add_frank_without_an_address(site)
        assert (await sign_in(site.client, FRANK, FRANK_PASSWORD)).headers["location"] == "/2fa"
        assert (await site.client.get(ENROL)).status_code == 400  # ask the admin

        await let_users_choose(site)
        site.clock.advance(timedelta(seconds=RECHECK_S))  # the running gateway's next check
        page = await site.client.get(ENROL)
        assert 'id="address-form"' in page.text


def test_the_cli_says_and_sets_who_chooses(cli_env: dict[str, str]) -> None:
    def twofa(*args: str) -> str:
        result = CliRunner().invoke(app, ["smtp", "addresses", *args], env=cli_env)
        assert result.exit_code == 0, result.output
        return result.output

    assert twofa() == "addresses: the account's address\n"
    assert twofa("--users-choose") == "saved: users choose at set-up\n"
    assert twofa("--users-choose") == "unchanged: users choose at set-up\n"
    assert twofa() == "addresses: users choose at set-up\n"
    assert twofa("--account-only") == "saved: the account's address\n"


async def test_a_user_changes_the_address_from_my_2fa(site: Site) -> None:
    page = await address_page(site.client)
    code_page = await post_address(site.client, page, FRANKS_OWN)
    [first] = site.mail.to(FRANKS_OWN)
    assert (
        await submit_code(site.client, ENROL, code_page, code_in(first.body))
    ).status_code == 303
    my_2fa = await site.client.get("/my-2fa")
    assert (
        'href="/2fa/m/email_otp/enrol" data-replace="email_otp">Change address</a>' in my_2fa.text
    )
    site.wait_out_cooldown()

    form = await site.client.get(ENROL)  # just signed in with a code: no step-up needed
    moved = await post_address(site.client, form, "frank.new@example.org")
    [second] = site.mail.to("frank.new@example.org")
    assert (await submit_code(site.client, ENROL, moved, code_in(second.body))).status_code == 303
    await sign_out(site.client)

    site.wait_out_cooldown()
    assert (await sign_in(site.client, FRANK, FRANK_PASSWORD)).headers["location"] == "/2fa"
    assert (await site.client.get(VERIFY)).status_code == 200
    assert len(site.mail.to("frank.new@example.org")) == 2
    assert len(site.mail.to(FRANKS_OWN)) == 1  # the old address gets nothing more
    assert await site.rows(CredentialRow, FRANK) == 1


async def test_with_the_switch_off_my_2fa_offers_no_change_of_address(site: Site) -> None:
    await let_users_choose(site, on=False)
    await enrol_erin(site)

    my_2fa = await site.client.get("/my-2fa")

    assert "e***n@example.com" in my_2fa.text
    assert 'data-replace="email_otp"' not in my_2fa.text
