"""The mail server settings against a real SMTP server (aiosmtpd on loopback): the console's
E-mail Settings page (validation, the sealed password never shown, Send test e-mail), STARTTLS,
TLS and logins with a throwaway CA, and `twofa smtp`."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from html import unescape
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner, Result

from tests.conftest import RunningSimulator
from tests.support.admin_sign_in import sign_in_admin_with_app
from tests.support.console import field_problem, field_value
from tests.support.databases import sqlite_database
from tests.support.email_otp_flow import (
    ADMIN,
    ADMIN_PASSWORD,
    FROM,
    Site,
    email_site,
    smtp_edit,
)
from tests.support.gateway import csrf_from, gateway_settings, sign_in
from tests.support.servers import free_port
from tests.support.smtp import SmtpServer, ThrowawayTls, make_throwaway_tls, smtp_server
from twofa.cli.main import app
from twofa.config import Settings, load_settings
from twofa.domain.client import NO_CLIENT
from twofa.domain.smtp_settings import PASSWORD_PURPOSE, SmtpConfig, SmtpEdit
from twofa.errors import ConfigurationError
from twofa.methods.base import Delivery
from twofa.methods.totp import time_step
from twofa.security.sealing import Sealer, key_id
from twofa.services.mail.delivery import (
    NOT_CONFIGURED,
    SEND_FAILED,
    SendTestOutcome,
    SmtpMailer,
)
from twofa.services.runtime import Gateway
from twofa.services.second_factor.pipeline import DeliveryFailed
from twofa.services.settings.console import SettingsRejected
from twofa.storage.tables import AuditRow

EMAIL = "/admin/settings/email"
SMTP_PASSWORD = "smtp-secret-Pa55"
LOGIN = ("mailer", SMTP_PASSWORD)


@pytest.fixture
async def site(
    tmp_path: Path, simulator: RunningSimulator, mail: SmtpServer
) -> AsyncIterator[Site]:
    async with sqlite_database(tmp_path) as url, email_site(url, simulator, mail) as site:
        step = time_step(site.clock.now())
        await sign_in_admin_with_app(site.client, ADMIN, ADMIN_PASSWORD, step=step)
        yield site


def email_form(mail: SmtpServer, **changes: str) -> dict[str, str]:
    return {
        "host": mail.host,
        "port": str(mail.port),
        "security": "none",
        "username": "",
        "password": "",
        "from_address": FROM,
        "timeout_s": "5",
        **changes,
    }


async def post(site: Site, path: str, form: dict[str, str]) -> str:
    page = await site.client.get(EMAIL)
    answer = await site.client.post(path, data={**form, "csrf_token": csrf_from(page.text)})
    if answer.status_code == 303:
        answer = await site.client.get(answer.headers["location"])
    return answer.text


async def saved(site: Site) -> SmtpConfig:
    async def read(gateway: Gateway) -> SmtpConfig | None:
        return await gateway.smtp.get()

    config = await site.query(read)
    assert config is not None
    return config


async def smtp_audit(site: Site) -> list[AuditRow]:
    async def read(gateway: Gateway) -> list[AuditRow]:
        async with gateway.db() as db:
            query = select(AuditRow).where(AuditRow.kind == "settings_smtp")
            return list((await db.scalars(query.order_by(AuditRow.id))).all())

    return await site.query(read)


def result_on(page: str) -> str:
    found = re.search(r'id="test-result">(.*?)</p>', page, re.S)
    assert found, "no test result on the page"
    return unescape(found.group(1))


# ---- the console page --------------------------------------------------------------------


async def test_the_page_shows_the_saved_server_and_never_the_password(site: Site) -> None:
    page = await site.client.get(EMAIL)
    assert page.status_code == 200
    assert field_value(page.text, "host") == site.mail.host
    assert field_value(page.text, "port") == str(site.mail.port)
    assert 'href="/admin/settings/email" aria-current="page"' in page.text

    saved_page = await post(
        site, EMAIL, email_form(site.mail, username="mailer", password=SMTP_PASSWORD)
    )
    assert "Saved." in saved_page
    assert SMTP_PASSWORD not in saved_page
    assert field_value(saved_page, "password") == ""
    assert "Password: set." in saved_page

    config = await saved(site)
    assert config.username == "mailer"
    assert config.password_sealed.startswith(f"v2:{key_id(site.settings.secret_keys[0])}:")
    assert SMTP_PASSWORD not in config.password_sealed
    sealer = Sealer(site.settings.secret_key.get_secret_value())
    assert sealer.open(config.password_sealed, PASSWORD_PURPOSE) == SMTP_PASSWORD
    last = (await smtp_audit(site))[-1]
    assert last.username == ADMIN
    assert last.detail["after"]["password_sealed"] == "(set)"
    assert last.detail["before"]["password_sealed"] == "(not set)"
    assert SMTP_PASSWORD not in str(last.detail)


async def test_an_empty_password_keeps_the_stored_one(site: Site) -> None:
    await post(site, EMAIL, email_form(site.mail, username="mailer", password=SMTP_PASSWORD))
    before = await saved(site)

    await post(site, EMAIL, email_form(site.mail, username="mailer", timeout_s="7"))
    after = await saved(site)
    assert after.timeout_s == 7
    assert after.password_sealed == before.password_sealed


async def test_every_problem_is_named_at_once_and_nothing_is_saved(site: Site) -> None:
    before = await saved(site)
    form = email_form(
        site.mail,
        host="smtp://mail.example.com",
        port="0",
        security="ssl",
        from_address="not an address",
        timeout_s="600",
        username="mailer",
        password="",
    )
    page = await post(site, EMAIL, form)

    assert "Nothing was saved" in page
    for field in ("host", "port", "security", "from_address", "timeout_s", "password"):
        assert field_problem(page, field), f"no problem shown for {field}"
    assert field_value(page, "host") == "smtp://mail.example.com"  # the form comes back as typed
    assert await saved(site) == before


async def test_send_test_email_arrives_at_the_server(site: Site) -> None:
    page = await post(site, f"{EMAIL}/test", {"to": "ops@example.com"})

    assert result_on(page) == "Sent a test e-mail to ops@example.com."
    [mail] = site.mail.to("ops@example.com")
    assert mail.mail_from == FROM
    assert mail.message["Subject"] == "twofa test message"
    assert "sent by admin" in mail.body
    assert [row.outcome for row in await smtp_audit(site)][-1] == "test_sent"


async def test_a_wrong_host_gives_a_clear_error(site: Site) -> None:
    closed_port = str(free_port())
    await post(site, EMAIL, email_form(site.mail, port=closed_port))

    page = await post(site, f"{EMAIL}/test", {"to": "ops@example.com"})
    assert result_on(page) == (
        f"The test e-mail was not sent: cannot connect to {site.mail.host}:{closed_port}: "
        "connection refused."
    )
    assert 'class="error"' in page
    assert [row.outcome for row in await smtp_audit(site)][-1] == "test_failed"


async def test_a_host_that_does_not_resolve_is_named(site: Site) -> None:
    await post(site, EMAIL, email_form(site.mail, host="no-such-host.invalid"))

    page = await post(site, f"{EMAIL}/test", {"to": "ops@example.com"})
    assert "cannot find the host no-such-host.invalid" in result_on(page)


async def test_a_test_address_that_is_not_one_is_refused_before_sending(site: Site) -> None:
    page = await post(site, f"{EMAIL}/test", {"to": "ops at example"})
    assert result_on(page).startswith("The test address is not usable")
    assert site.mail.received == []


async def test_the_page_is_for_admins_only(site: Site) -> None:
    async def add_plain_user(gateway: Gateway) -> None:
        await gateway.accounts.add_user("gina", "gina-password-1")

    await site.query(add_plain_user)
    async with httpx.AsyncClient(base_url=site.base_url, timeout=30) as gina:
        assert (await sign_in(gina, "gina", "gina-password-1")).status_code == 303
        assert (await gina.get(EMAIL)).status_code == 403
        page = await gina.get("/")
        answer = await gina.post(
            f"{EMAIL}/test", data={"to": "gina@example.com", "csrf_token": csrf_from(page.text)}
        )
        assert answer.status_code == 403
    assert site.mail.received == []


async def test_a_save_without_the_form_token_is_refused(site: Site) -> None:
    before = await saved(site)
    answer = await site.client.post(EMAIL, data=email_form(site.mail, host="evil.example.com"))
    assert answer.status_code == 403
    assert await saved(site) == before


# ---- TLS and logins, through the service ---------------------------------------------------


@pytest.fixture
def tls(tmp_path: Path) -> ThrowawayTls:
    return make_throwaway_tls(tmp_path)


@pytest.fixture
async def settings(tmp_path: Path, simulator: RunningSimulator) -> AsyncIterator[Settings]:
    async with sqlite_database(tmp_path) as url:
        yield gateway_settings(url, simulator, free_port())


@asynccontextmanager
async def gateway_on(settings: Settings, trust: ThrowawayTls | None) -> AsyncIterator[Gateway]:
    """A gateway that trusts the throwaway CA (or, without `trust`, the system's CAs)."""
    context = trust.client_context() if trust is not None else None
    gateway = await Gateway.start(settings, smtp_tls=context)
    try:
        yield gateway
    finally:
        await gateway.close()


async def send_test_via(
    settings: Settings, server: SmtpServer, trust: ThrowawayTls | None, **changes: str
) -> SendTestOutcome:
    async with gateway_on(settings, trust) as gateway:
        await gateway.smtp.save(smtp_edit(server, **changes), "test-admin", NO_CLIENT)
        return await gateway.smtp.send_test("ops@example.com", "test-admin", NO_CLIENT)


async def test_starttls_with_a_login_delivers(settings: Settings, tls: ThrowawayTls) -> None:
    with smtp_server(starttls=tls, login=LOGIN) as server:
        outcome = await send_test_via(
            settings, server, tls, security="starttls", username="mailer", password=SMTP_PASSWORD
        )
        assert outcome == SendTestOutcome(True, "Sent a test e-mail to ops@example.com.")
        assert len(server.to("ops@example.com")) == 1


# aiosmtpd warns about AUTH without STARTTLS: its TLS from the first byte is TLS all the same
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_tls_from_the_first_byte_delivers(settings: Settings, tls: ThrowawayTls) -> None:
    with smtp_server(implicit_tls=tls, login=LOGIN) as server:
        outcome = await send_test_via(
            settings, server, tls, security="tls", username="mailer", password=SMTP_PASSWORD
        )
        assert outcome.sent, outcome.message
        assert len(server.to("ops@example.com")) == 1


async def test_a_wrong_smtp_password_is_named(settings: Settings, tls: ThrowawayTls) -> None:
    with smtp_server(starttls=tls, login=LOGIN) as server:
        outcome = await send_test_via(
            settings, server, tls, security="starttls", username="mailer", password="wrong-one"
        )
        assert not outcome.sent
        assert "refused the user name or password (535" in outcome.message
        assert server.received == []


async def test_a_certificate_no_trusted_ca_signed_is_refused(
    settings: Settings, tls: ThrowawayTls
) -> None:
    with smtp_server(starttls=tls) as server:
        outcome = await send_test_via(settings, server, None, security="starttls")
        assert not outcome.sent
        assert "TLS connection" in outcome.message
        assert "certificate" in outcome.message
        assert server.received == []


async def test_starttls_against_a_server_without_it_is_refused(
    settings: Settings, mail: SmtpServer
) -> None:
    outcome = await send_test_via(settings, mail, None, security="starttls")
    assert not outcome.sent
    assert "cannot do what these settings ask" in outcome.message
    assert "STARTTLS" in outcome.message
    assert mail.received == []


async def test_plain_smtp_to_a_server_that_requires_starttls_is_refused(
    settings: Settings, tls: ThrowawayTls
) -> None:
    with smtp_server(starttls=tls) as server:
        outcome = await send_test_via(settings, server, tls, security="none")
        assert not outcome.sent
        assert "(530 Must issue a STARTTLS command first)" in outcome.message
        assert server.received == []


async def test_users_get_one_plain_message_whatever_failed(
    settings: Settings, mail: SmtpServer
) -> None:
    delivery = Delivery(to="erin@example.com", subject="s", body="b")
    async with gateway_on(settings, None) as gateway:
        mailer = SmtpMailer(gateway.smtp)
        with pytest.raises(DeliveryFailed) as unset:
            await mailer.send(delivery)
        assert unset.value.message == NOT_CONFIGURED

        await gateway.smtp.save(smtp_edit(mail), "test-admin", NO_CLIENT)
        await mailer.send(delivery)
        assert len(mail.to("erin@example.com")) == 1

        mail.stop()
        with pytest.raises(DeliveryFailed) as down:
            await mailer.send(delivery)
        assert down.value.message == SEND_FAILED


async def test_a_header_with_a_line_break_is_never_sent(
    settings: Settings, mail: SmtpServer
) -> None:
    async with gateway_on(settings, None) as gateway:
        await gateway.smtp.save(smtp_edit(mail), "test-admin", NO_CLIENT)
        with pytest.raises(DeliveryFailed):
            await SmtpMailer(gateway.smtp).send(
                Delivery(to="erin@example.com\r\nBcc: eve@example.com", subject="s", body="b")
            )
    assert mail.received == []


async def test_a_rejected_save_names_every_field(settings: Settings) -> None:
    async with gateway_on(settings, None) as gateway:
        edit = SmtpEdit(host="", port="x", security="", from_address="", timeout_s="0")
        with pytest.raises(SettingsRejected) as rejected:
            await gateway.smtp.save(edit, "test-admin", NO_CLIENT)
        assert set(rejected.value.problems) == {
            "host",
            "port",
            "security",
            "from_address",
            "timeout_s",
        }
        assert await gateway.smtp.get() is None


# ---- twofa smtp ---------------------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name in list(os.environ):
        if name.startswith("TWOFA_"):  # a developer's own settings must not leak in
            monkeypatch.delenv(name)
    env = {
        "TWOFA_MODE": "dev",
        "TWOFA_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
        "COLUMNS": "200",
    }
    assert CliRunner().invoke(app, ["db", "upgrade"], env=env).exit_code == 0
    return env


def twofa(env: dict[str, str], *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(app, list(args), env=env, input=input)


def test_cli_sets_shows_and_tests_the_mail_server(
    cli_env: dict[str, str], tls: ThrowawayTls
) -> None:
    with smtp_server(login=LOGIN, starttls=tls) as server:
        saved_ = twofa(
            cli_env,
            "smtp", "set", "--host", server.host, "--port", str(server.port),
            "--security", "starttls", "--username", "mailer", "--password-stdin",
            "--from", FROM,
            input=SMTP_PASSWORD + "\n",
        )  # fmt: skip
        assert saved_.exit_code == 0, saved_.output
        shown = twofa(cli_env, "smtp", "show")
        assert "password:" in shown.output
        assert "set" in shown.output
        assert SMTP_PASSWORD not in shown.output
        assert f"port:      {server.port}" in shown.output

        # the CLI's gateway trusts the system CAs only: the throwaway certificate is refused
        untrusted = twofa(cli_env, "smtp", "test", "ops@example.com")
        assert untrusted.exit_code == 2
        assert "certificate" in untrusted.output
        assert server.received == []


def test_cli_test_sends_and_reports_a_server_that_is_down(
    cli_env: dict[str, str], mail: SmtpServer
) -> None:
    saved_ = twofa(
        cli_env, "smtp", "set", "--host", mail.host, "--port", str(mail.port),
        "--security", "none", "--from", FROM,
    )  # fmt: skip
    assert saved_.exit_code == 0, saved_.output

    sent = twofa(cli_env, "smtp", "test", "ops@example.com")
    assert sent.exit_code == 0, sent.output
    assert "Sent a test e-mail to ops@example.com." in sent.output
    [message] = mail.to("ops@example.com")
    assert message.message["Subject"] == "twofa test message"

    mail.stop()
    down = twofa(cli_env, "smtp", "test", "ops@example.com")
    assert down.exit_code == 2
    assert f"cannot connect to {mail.host}:{mail.port}: connection refused" in down.output


def test_cli_refuses_a_bad_edit_by_option_name(cli_env: dict[str, str]) -> None:
    refused = twofa(cli_env, "smtp", "set", "--host", "mail.example.com", "--from", "nobody")
    assert refused.exit_code == 2
    assert "--from:" in refused.output
    assert "nothing was saved" in refused.output
    assert "not configured" in twofa(cli_env, "smtp", "show").output


async def test_a_ca_file_in_the_settings_is_trusted_for_the_mail_server(
    settings: Settings, tls: ThrowawayTls, tmp_path: Path
) -> None:
    """An internal relay's CA, given as `smtp_ca_path`, replaces the system's CAs for SMTP."""
    ca_file = tmp_path / "mail-ca.pem"
    ca_file.write_bytes(tls.ca_pem)
    with smtp_server(starttls=tls) as server:
        trusting = settings.model_copy(update={"smtp_ca_path": str(ca_file)})
        outcome = await send_test_via(trusting, server, None, security="starttls")
        assert outcome.sent, outcome.message
        assert len(server.to("ops@example.com")) == 1


def test_a_missing_smtp_ca_path_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"smtp_ca_path.*the CA file .* does not exist"):
        load_settings(
            environ={"TWOFA_SMTP_CA_PATH": str(tmp_path / "nowhere.pem")},
            mode="dev",
            secret_key="x" * 40,
        )
