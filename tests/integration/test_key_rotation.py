"""Retiring a secret key, end to end on SQLite and PostgreSQL: secrets sealed through the real
gateway with the old key (an authenticator app set up in the browser, a set-up half done, the
Duo secret key, the SMTP password), the new key prepended to the key file, `twofa keys rotate`,
then the old key removed: every value is sealed by the new key, still holds the same secret,
and the gateway still signs the user in and finishes the half-done set-up."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner, Result

from tests.conftest import RunningSimulator
from tests.support.authenticator_totp import code_at, secret_from_page
from tests.support.email_otp_flow import smtp_edit
from tests.support.gateway import seed_users, sign_in
from tests.support.sealing_v1 import seal_v1
from tests.support.servers import free_port, serve_in_thread
from tests.support.smtp import SmtpServer
from tests.support.totp_flow import enrol_alice, post_code, submit_code
from tests.support.two_factor import allow_methods
from twofa.cli.main import app
from twofa.config import Settings, load_settings
from twofa.domain.client import NO_CLIENT
from twofa.domain.smtp_settings import PASSWORD_PURPOSE, SMTP_KEY
from twofa.security.sealing import Sealer, key_id
from twofa.services.doctor import State, examine
from twofa.services.runtime import Gateway
from twofa.services.second_factor.challenges import DRAFT_PURPOSE, SHOW_PURPOSE
from twofa.services.second_factor.credential_store import secret_purpose
from twofa.services.settings.duo import DUO_KEY, SKEY_PURPOSE
from twofa.storage.tables import ChallengeRow, ConsoleSettingRow, CredentialRow
from twofa.web.app import create_app

pytestmark = pytest.mark.integration
OLD = "the-old-secret-key-of-this-gateway-0123456789"
NEW = "the-new-secret-key-prepended-to-the-file-987654"
GONE = "a-key-this-gateway-no-longer-holds-0123456789"
SMTP_PASSWORD = "smtp-relay-password-1"
CAROL_PASSWORD = "carol-password-1"


@asynccontextmanager
async def browser(
    base_url: str, cookies: httpx.Cookies | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url, cookies=cookies, timeout=30) as client:
        yield client


@dataclass(frozen=True)
class Site:
    database_url: str
    simulator: RunningSimulator
    port: int
    key_file: Path

    def with_keys(self, *keys: str) -> Settings:
        """Writes `keys` (newest first) to the key file; the settings a gateway reads then."""
        self.key_file.write_text("\n".join(keys) + "\n", "utf-8")
        return load_settings(
            environ={"TWOFA_SECRET_KEY_FILE": str(self.key_file)},
            mode="dev",
            database_url=self.database_url,
            public_url=f"http://127.0.0.1:{self.port}",
            duo={
                "ikey": self.simulator.ikey,
                "skey": self.simulator.skey,
                "api_hostname": self.simulator.base_url,
            },
        )

    @contextmanager
    def serving(self, settings: Settings) -> Iterator[str]:
        """The gateway, always on the site's one port: a browser's cookies outlive a
        restart with other keys."""
        with serve_in_thread(create_app(settings), port=self.port) as base_url:
            yield base_url

    def cli(self, *args: str) -> Result:
        """`twofa ARGS` as an admin runs it on the gateway's machine (the same key file)."""
        env = {
            "TWOFA_MODE": "dev",
            "TWOFA_DATABASE_URL": self.database_url,
            "TWOFA_SECRET_KEY_FILE": str(self.key_file),
        }
        return CliRunner().invoke(app, list(args), env=env)

    async def twofa(self, *args: str) -> Result:
        return await asyncio.to_thread(self.cli, *args)  # the CLI runs its own event loop


@pytest.fixture
def site(
    database_url: str,
    simulator: RunningSimulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Site:
    for name in list(os.environ):  # a developer's own TWOFA_* must not leak into the CLI
        if name.startswith("TWOFA_"):
            monkeypatch.delenv(name)
    return Site(database_url, simulator, free_port(), tmp_path / "secret_key")


@dataclass(frozen=True)
class Sealed:
    """Every sealed value in the database, as stored."""

    credentials: dict[int, str]
    duo_skey: str
    smtp_password: str
    drafts: list[str]  # open challenges' sealed draft secrets
    pages: list[str]  # and their sealed pages

    def all(self) -> list[str]:
        return [
            *self.credentials.values(),
            self.duo_skey,
            self.smtp_password,
            *self.drafts,
            *self.pages,
        ]


async def stored(settings: Settings) -> Sealed:
    gateway = await Gateway.start(settings)
    try:
        async with gateway.db.begin() as db:
            credentials = {
                row.id: row.secret_sealed
                for row in await db.scalars(select(CredentialRow).order_by(CredentialRow.id))
                if row.secret_sealed
            }
            documents = {row.key: row.value for row in await db.scalars(select(ConsoleSettingRow))}
            payloads = [
                row.payload
                for row in await db.scalars(select(ChallengeRow))
                if row.consumed_at is None and row.payload
            ]
    finally:
        await gateway.close()
    return Sealed(
        credentials,
        documents[DUO_KEY]["skey_sealed"],
        documents[SMTP_KEY]["password_sealed"],
        [payload["secret"] for payload in payloads if payload.get("secret")],
        [payload["show"] for payload in payloads if payload.get("show")],
    )


async def add_carol(settings: Settings) -> None:
    """A second user who must set up 2FA (group engineering)."""
    gateway = await Gateway.start(settings)
    try:
        await gateway.accounts.add_user("carol", CAROL_PASSWORD, display_name="Carol")
        await gateway.accounts.set_membership("engineering", "carol", True)
    finally:
        await gateway.close()


async def save_duo_and_smtp(settings: Settings, mail: SmtpServer) -> None:
    """The Duo keys (proven against the simulator) and the SMTP password, saved as an admin
    saves them in the console."""
    gateway = await Gateway.start(settings)
    try:
        await gateway.console.save_duo_from_settings_file("test-admin", NO_CLIENT)
        edit = smtp_edit(mail, username="mailer", password=SMTP_PASSWORD)
        await gateway.smtp.save(edit, "test-admin", NO_CLIENT)
    finally:
        await gateway.close()


def usage_line(output: str, label: str) -> list[str]:
    """The `twofa keys status` row of one key id."""
    (line,) = [line for line in output.splitlines() if line.startswith(label)]
    return line.split()


async def test_rotation_reseals_every_secret_and_the_old_key_can_go(
    site: Site, mail: SmtpServer
) -> None:
    old_only = site.with_keys(OLD)
    await seed_users(old_only)
    await add_carol(old_only)
    await allow_methods(old_only, ("totp", "duo_push"), first_method="totp")
    await save_duo_and_smtp(old_only, mail)
    with site.serving(old_only) as base_url:
        async with browser(base_url) as alice, browser(base_url) as carol:
            alice_secret = await enrol_alice(alice)
            # carol starts setting up her app and stops at the QR code
            assert (await sign_in(carol, "carol", CAROL_PASSWORD)).headers["location"] == "/2fa"
            assert (await carol.get("/2fa")).status_code == 200
            carol_page = await carol.get("/2fa/m/totp/enrol")
            carol_secret = secret_from_page(carol_page.text)
            carol_cookies = carol.cookies
    before = await stored(old_only)
    assert all(value.startswith(f"v2:{key_id(OLD)}:") for value in before.all())
    assert (len(before.credentials), len(before.drafts), len(before.pages)) == (1, 1, 1)

    site.with_keys(NEW, OLD)  # the new key, prepended; gateways restarted
    waiting = await site.twofa("keys", "status")
    rotated = await site.twofa("keys", "rotate", "--batch-size", "1")
    done = await site.twofa("keys", "status")

    assert waiting.exit_code == 0, waiting.output
    assert usage_line(waiting.output, key_id(OLD))[1:3] == ["older", str(len(before.all()))]
    assert "run `twofa keys rotate`" in waiting.output
    assert rotated.exit_code == 0, rotated.output
    assert "batch 1 done" in rotated.output
    assert f"{len(before.all())} values sealed again" in rotated.output
    assert "remove the older keys from secret_key" in rotated.output
    assert usage_line(done.output, key_id(NEW))[1:3] == ["newest", str(len(before.all()))]
    assert usage_line(done.output, key_id(OLD))[1:3] == ["older", "0"]

    new_only = site.with_keys(NEW)  # the old key removed; gateways restarted
    after = await stored(new_only)
    sealer = Sealer([NEW])
    assert all(sealer.is_current(value) for value in after.all())
    ((credential_id, sealed_seed),) = after.credentials.items()
    assert credential_id in before.credentials
    assert sealer.open(sealed_seed, secret_purpose(credential_id)) == alice_secret
    assert sealer.open(after.duo_skey, SKEY_PURPOSE) == site.simulator.skey
    assert sealer.open(after.smtp_password, PASSWORD_PURPOSE) == SMTP_PASSWORD
    assert sealer.open(after.drafts[0], DRAFT_PURPOSE) == carol_secret
    assert carol_secret in sealer.open(after.pages[0], SHOW_PURPOSE).replace(" ", "")

    with site.serving(new_only) as base_url:
        async with browser(base_url) as alice, browser(base_url, carol_cookies) as carol:
            assert (await sign_in(alice, "alice")).headers["location"] == "/2fa"
            signed_in = await post_code(alice, "/2fa/m/totp", code_at(alice_secret, +1))
            # carol, back after the restart, finishes the set-up she began under the old key
            set_up = await submit_code(
                carol, "/2fa/m/totp/enrol", carol_page, code_at(carol_secret)
            )
    assert signed_in.status_code == 303, signed_in.text
    assert signed_in.headers["location"] == "/2fa/after"
    assert set_up.status_code == 303, set_up.text
    assert set_up.headers["location"] == "/2fa/after?new=1"
    gateway = await Gateway.start(new_only)
    try:
        duo = await gateway.console.effective_duo()
    finally:
        await gateway.close()
    assert duo.skey.get_secret_value() == site.simulator.skey


async def test_doctor_warns_while_an_old_key_is_needed_and_fails_once_it_is_gone(
    site: Site, mail: SmtpServer
) -> None:
    await save_duo_and_smtp(site.with_keys(OLD), mail)

    async def secret_keys_finding(settings: Settings) -> tuple[State, str]:
        gateway = await Gateway.start(settings)
        try:
            findings = {finding.part: finding for finding in await examine(gateway)}
        finally:
            await gateway.close()
        return findings["secret keys"].state, findings["secret keys"].detail

    removed_too_soon = await secret_keys_finding(site.with_keys(NEW))
    waiting = await secret_keys_finding(site.with_keys(NEW, OLD))
    assert (await site.twofa("keys", "rotate")).exit_code == 0
    rotated = await secret_keys_finding(site.with_keys(NEW, OLD))
    retired = await secret_keys_finding(site.with_keys(NEW))

    assert removed_too_soon[0] is State.FAILED
    assert f"2 by the key {key_id(OLD)}, which is not in secret_key" in removed_too_soon[1]
    assert waiting == (
        State.WARNING,
        f"2 of 2 sealed values are not sealed by the newest key (2 by the older key "
        f"{key_id(OLD)}): run `twofa keys rotate`, and keep the older keys until it finishes",
    )
    assert rotated == (
        State.OK,
        f"all 2 sealed values use the newest key ({key_id(NEW)}); the older keys (1) are "
        "unused and can be removed",
    )
    assert retired == (State.OK, f"all 2 sealed values use the newest key ({key_id(NEW)})")


async def test_values_sealed_before_key_ids_are_rotated_too(site: Site, mail: SmtpServer) -> None:
    """A gateway upgraded from the v1 format with its one key: the values name no key, and a
    rotation rewrites them with the key's id; one sealed by a key long gone is reported,
    left as it is, and the run exits 1."""
    settings = site.with_keys(OLD)
    await save_duo_and_smtp(settings, mail)
    gateway = await Gateway.start(settings)
    try:
        async with gateway.db.begin() as db:
            for key, field, value in (
                (SMTP_KEY, "password_sealed", seal_v1(OLD, SMTP_PASSWORD, PASSWORD_PURPOSE)),
                (DUO_KEY, "skey_sealed", seal_v1(GONE, "lost", SKEY_PURPOSE)),
            ):
                row = await db.get(ConsoleSettingRow, key)
                assert row is not None
                row.value = {**row.value, field: value}
    finally:
        await gateway.close()

    status = await site.twofa("keys", "status")
    rotated = await site.twofa("keys", "rotate")

    assert usage_line(status.output, "v1")[1:3] == ["unknown", "2"], status.output
    assert rotated.exit_code == 1, rotated.output
    assert "1 value sealed again" in rotated.output
    assert "cannot open setting duo: a stored secret cannot be decrypted" in rotated.output
    after = await stored(settings)
    assert Sealer([OLD]).open(after.smtp_password, PASSWORD_PURPOSE) == SMTP_PASSWORD
    assert after.smtp_password.startswith(f"v2:{key_id(OLD)}:")
    assert after.duo_skey.startswith("v1:")  # unreadable, and left exactly as it was
