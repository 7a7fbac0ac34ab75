"""A whole gateway on a loopback port, wired to the test simulator, with demo-style users:
alice (2FA through group engineering), bob (no 2FA)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from sqlalchemy import select

from tests.conftest import RunningSimulator
from tests.support.servers import free_port, serve_in_thread
from twofa.clock import Clock
from twofa.config import Settings, load_settings
from twofa.security.tokens import token_digest
from twofa.services.runtime import Gateway
from twofa.storage.repositories import DuoEnrolments, Enrolments, Users
from twofa.storage.tables import ChallengeRow, SessionRow
from twofa.web.app import create_app

SECRET = "test-secret-key-test-secret-key-test-secret"
PASSWORDS = {"alice": "alice-password-1", "bob": "bob-password-1"}


def gateway_settings(
    database_url: str,
    simulator: RunningSimulator,
    port: int,
    mode: str = "dev",
    extra: dict[str, Any] | None = None,
    public_url: str | None = None,
    **duo: Any,
) -> Settings:
    """`extra` are more settings (e.g. `access`); `duo` overrides the Duo ones; `public_url`
    is the gateway on `port` by the name browsers use (default: 127.0.0.1)."""
    return load_settings(
        **(extra or {}),
        environ={},
        mode=mode,
        secret_key=SECRET,
        database_url=database_url,
        public_url=public_url or f"http://127.0.0.1:{port}",
        duo={
            "ikey": simulator.ikey,
            "skey": simulator.skey,
            "api_hostname": simulator.base_url,
            "application_name": "Test app",
            **duo,
        },
    )


async def seed_users(settings: Settings) -> None:
    gateway = await Gateway.start(settings)
    try:
        accounts = gateway.accounts
        await accounts.add_user("alice", PASSWORDS["alice"], display_name="Alice Liddell")
        await accounts.add_user("bob", PASSWORDS["bob"], display_name="Bob Builder")
        await accounts.add_group("engineering")
        await accounts.set_membership("engineering", "alice", True)
        await accounts.set_group_policy("engineering", True)
    finally:
        await gateway.close()


@asynccontextmanager
async def running_gateway(
    database_url: str,
    simulator: RunningSimulator,
    mode: str = "dev",
    *,
    seed: bool = True,
    extra: dict[str, Any] | None = None,
    clock: Clock | None = None,
    **duo: Any,
) -> AsyncIterator[tuple[str, Settings]]:
    port = free_port()
    settings = gateway_settings(database_url, simulator, port, mode, extra, **duo)
    if seed:
        await seed_users(settings)
    with serve_in_thread(create_app(settings, clock=clock), port=port) as base_url:
        yield base_url, settings


def csrf_from(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html) or re.search(
        r'data-csrf="([^"]+)"', html
    )
    assert found, "no CSRF token on the page"
    return found.group(1)


async def csrf_token_of(settings: Settings, cookie: str) -> str:
    """A session's CSRF token, as every page of it carries it, read from the database: for a
    session whose pages all answer with something else (a redirect, a lock-out)."""
    gateway = await Gateway.start(settings)
    try:
        async with gateway.db.begin() as db:
            row = await db.get(SessionRow, token_digest(cookie))
        assert row is not None, "no such session"
        return row.csrf_token
    finally:
        await gateway.close()


async def second_factor_state(
    settings: Settings, username: str
) -> tuple[list[str], str | None, list[tuple[str, str]]]:
    """What an attack on `username`'s second factor could have changed: their methods, the
    Duo activation code handed out for them if any, and every challenge opened for them
    (method, purpose)."""
    gateway = await Gateway.start(settings)
    try:
        async with gateway.db.begin() as db:
            user = await Users(db).by_name(username)
            assert user is not None
            duo = await DuoEnrolments(db).get(user.id)
            rows = await db.scalars(select(ChallengeRow).where(ChallengeRow.user_id == user.id))
            challenges = [(row.method, row.purpose) for row in rows]
            methods = await Enrolments(db).methods_of(user.id)
        return methods, duo.activation_code if duo else None, challenges
    finally:
        await gateway.close()


async def sign_in(
    client: httpx.AsyncClient, username: str, password: str | None = None
) -> httpx.Response:
    page = await client.get("/login")
    return await client.post(
        "/login",
        data={
            "username": username,
            "password": password if password is not None else PASSWORDS[username],
            "csrf_token": csrf_from(page.text),
        },
    )
