"""A gateway over real HTTP whose e-mail goes to a real SMTP server (aiosmtpd), on a clock the
test moves, with `erin` (2FA on, an e-mail address) and an admin (and, for the tests of
addresses users choose, `frank`, without one); plus the steps a browser and
a mailbox reader take for codes by e-mail."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import httpx
from sqlalchemy import func, select

from tests.conftest import RunningSimulator
from tests.support.databases import sqlite_database
from tests.support.gateway import gateway_settings, sign_in
from tests.support.servers import free_port, serve_in_thread
from tests.support.smtp import SmtpServer, code_in
from tests.support.totp_flow import submit_code
from twofa.clock import FrozenClock
from twofa.config import Settings
from twofa.domain.client import NO_CLIENT
from twofa.domain.smtp_settings import SmtpEdit
from twofa.services.runtime import Gateway
from twofa.services.settings.two_factor import TwoFactorConfig
from twofa.storage.tables import ChallengeRow, CredentialRow, UserRow
from twofa.web.app import create_app

ERIN, ERIN_PASSWORD, ERIN_EMAIL = "erin", "erin-password-1", "erin@example.com"
ADMIN, ADMIN_PASSWORD = "admin", "admin-password-1"
FRANK, FRANK_PASSWORD, FRANKS_OWN = "frank", "frank-password-1", "frank.home@example.org"
FROM = "twofa@example.com"
COOLDOWN = timedelta(seconds=30)
T = TypeVar("T")


def smtp_edit(server: SmtpServer, **changes: str) -> SmtpEdit:
    fields = {
        "host": server.host,
        "port": str(server.port),
        "security": "none",
        "from_address": FROM,
        "timeout_s": "5",
        **changes,
    }
    return SmtpEdit(**fields)


@dataclass
class Site:
    client: httpx.AsyncClient
    settings: Settings
    clock: FrozenClock
    mail: SmtpServer
    base_url: str

    async def query(self, action: Callable[[Gateway], Awaitable[T]]) -> T:
        """Reads the gateway's database through a second `Gateway` on it."""
        gateway = await Gateway.start(self.settings, clock=self.clock)
        try:
            return await action(gateway)
        finally:
            await gateway.close()

    async def rows(
        self, table: type[ChallengeRow] | type[CredentialRow], username: str = ERIN
    ) -> int:
        async def count(gateway: Gateway) -> int:
            async with gateway.db() as db:
                user = select(UserRow.id).where(UserRow.username == username).scalar_subquery()
                query = select(func.count()).select_from(table).where(table.user_id == user)
                return int(await db.scalar(query) or 0)

        return await self.query(count)

    def codes_sent(self) -> list[str]:
        return [code_in(mail.body) for mail in self.mail.to(ERIN_EMAIL)]

    def latest_code(self) -> str:
        codes = self.codes_sent()
        assert codes, "no code was mailed to erin"
        return codes[-1]

    def wait_out_cooldown(self) -> None:
        self.clock.advance(COOLDOWN)


async def seed(
    settings: Settings, clock: FrozenClock, mail: SmtpServer, methods: tuple[str, ...]
) -> None:
    gateway = await Gateway.start(settings, clock=clock)
    try:
        accounts = gateway.accounts
        await accounts.add_user(ERIN, ERIN_PASSWORD, display_name="Erin Example", email=ERIN_EMAIL)
        await accounts.set_user_policy(ERIN, True)
        await accounts.add_user(ADMIN, ADMIN_PASSWORD, is_admin=True)
        await gateway.smtp.save(smtp_edit(mail), "test-admin", NO_CLIENT)
        await gateway.console.save_two_factor(
            TwoFactorConfig(methods=methods, first_method=methods[0]), "test-admin", NO_CLIENT
        )
    finally:
        await gateway.close()


@asynccontextmanager
async def email_site(
    database_url: str,
    simulator: RunningSimulator,
    mail: SmtpServer,
    methods: tuple[str, ...] = ("email_otp", "totp"),
) -> AsyncIterator[Site]:
    port = free_port()
    settings = gateway_settings(database_url, simulator, port)
    # Frozen at the real time: only the test moves it (cooldown, expiry), and it never drifts.
    clock = FrozenClock(datetime.now(UTC))
    await seed(settings, clock, mail, methods)
    with serve_in_thread(create_app(settings, clock=clock), port=port) as base_url:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            yield Site(client, settings, clock, mail, base_url)


async def let_users_choose(site: Site, on: bool = True) -> None:
    async def switch(gateway: Gateway) -> None:
        await gateway.email_codes.set_users_choose_address(on, "test-admin", NO_CLIENT)

    await site.query(switch)


async def add_frank_without_an_address(site: Site) -> None:
    async def add(gateway: Gateway) -> None:
        await gateway.accounts.add_user(FRANK, FRANK_PASSWORD)
        await gateway.accounts.set_user_policy(FRANK, True)

    await site.query(add)


@asynccontextmanager
async def chosen_address_site(
    tmp_path: Path, simulator: RunningSimulator, mail: SmtpServer
) -> AsyncIterator[Site]:
    """`email_site` on SQLite with users choosing their address and `frank`, who has none."""
    async with sqlite_database(tmp_path) as url, email_site(url, simulator, mail) as site:
        await add_frank_without_an_address(site)
        await let_users_choose(site)
        yield site


async def enrol_erin(site: Site, client: httpx.AsyncClient | None = None) -> None:
    """Erin's first sign-in: she sets up codes by e-mail, typing the mailed code. Ends
    signed in."""
    client = client or site.client
    assert (await sign_in(client, ERIN, ERIN_PASSWORD)).headers["location"] == "/2fa"
    intro = await client.get("/2fa")
    assert 'href="/2fa/m/email_otp/enrol"' in intro.text
    page = await client.get("/2fa/m/email_otp/enrol")
    assert page.status_code == 200, page.text
    answer = await submit_code(client, "/2fa/m/email_otp/enrol", page, site.latest_code())
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/2fa/after?new=1"


async def password_step(site: Site, client: httpx.AsyncClient | None = None) -> None:
    """A later sign-in's first step; the e-mail code page is next."""
    client = client or site.client
    assert (await sign_in(client, ERIN, ERIN_PASSWORD)).headers["location"] == "/2fa"
    assert (await client.get("/2fa")).headers["location"] == "/2fa/m/email_otp"
