"""A gateway on a fresh migrated SQLite database with a frozen clock, and helpers to sign users
in and read the audit log. Duo-backed gateways point at the real simulator over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr

from tests.conftest import RunningSimulator
from tests.support.databases import sqlite_database
from twofa.clock import FrozenClock
from twofa.config import DuoSettings, FailMode, Mode, Settings
from twofa.domain.client import ClientInfo
from twofa.services.duo.push import DuoPushService
from twofa.services.runtime import Gateway
from twofa.services.signin.login import LoginOutcome
from twofa.services.state.sessions import SessionView
from twofa.storage.audit_log import AuditLog
from twofa.storage.repositories import Users
from twofa.storage.tables import AuditRow

START = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
BROWSER = ClientInfo(ip="203.0.113.7", user_agent="pytest-browser")
PASSWORD = "correct horse battery staple"


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(START)


@pytest.fixture
async def database_url(tmp_path: Path) -> AsyncIterator[str]:
    async with sqlite_database(tmp_path) as url:
        yield url


@pytest.fixture
async def gateway(database_url: str, clock: FrozenClock) -> AsyncIterator[Gateway]:
    running = await Gateway.start(Settings(mode=Mode.DEV, database_url=database_url), clock=clock)
    try:
        yield running
    finally:
        await running.close()


def duo_settings(
    database_url: str,
    simulator: RunningSimulator,
    *,
    failmode: FailMode = FailMode.SECURE,
    skey: str | None = None,
) -> Settings:
    duo = DuoSettings(
        ikey=simulator.ikey,
        skey=SecretStr(skey or simulator.skey),
        api_hostname=simulator.base_url,
        failmode=failmode,
        timeout_s=5.0,
        long_poll_s=5.0,
    )
    return Settings(mode=Mode.DEV, database_url=database_url, duo=duo)


async def start_duo_gateway(settings: Settings) -> Gateway:
    # The simulator keeps real time; a frozen clock at the real "now" keeps the gateway's
    # own decisions (push rate, challenge expiry) deterministic.
    return await Gateway.start(settings, clock=FrozenClock(datetime.now(UTC)))


@pytest.fixture
async def duo_gateway(database_url: str, simulator: RunningSimulator) -> AsyncIterator[Gateway]:
    running = await start_duo_gateway(duo_settings(database_url, simulator))
    try:
        yield running
    finally:
        await running.close()


def duo_of(gateway: Gateway) -> DuoPushService:
    assert gateway.duo is not None, "Duo is configured in these settings"
    return gateway.duo


async def add_user(
    gateway: Gateway, username: str, password: str | None = PASSWORD, *, twofa: bool = False
) -> int:
    await gateway.accounts.add_user(username, password, display_name=username.title())
    if twofa:
        await gateway.accounts.set_user_policy(username, True)
    async with gateway.db.begin() as db:
        user = await Users(db).by_name(username)
        assert user is not None
        return user.id


async def sign_in(
    gateway: Gateway, username: str, password: str = PASSWORD, client: ClientInfo = BROWSER
) -> LoginOutcome:
    _, anonymous = await gateway.sessions.open(client, next_url="/app")
    return await gateway.login.sign_in(anonymous, username, password, client)


async def password_session(gateway: Gateway, username: str) -> SessionView:
    """A session that passed the password and waits for the second factor."""
    outcome = await sign_in(gateway, username)
    assert outcome.session is not None, outcome
    return outcome.session


async def audit_rows(
    gateway: Gateway, kind: str | None = None, username: str | None = None
) -> Sequence[AuditRow]:
    async with gateway.db.begin() as db:
        rows = await AuditLog(db).recent(limit=1000, username=username)
    return [row for row in reversed(rows) if kind is None or row.kind == kind]
