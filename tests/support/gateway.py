"""A whole gateway on a loopback port, wired to the test simulator, with demo-style users:
alice (2FA through group engineering), bob (no 2FA)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from tests.conftest import RunningSimulator
from tests.support.servers import free_port, serve_in_thread
from twofa.config import Settings, load_settings
from twofa.services.runtime import Gateway
from twofa.web.app import create_app

SECRET = "test-secret-key-test-secret-key-test-secret"
PASSWORDS = {"alice": "alice-password-1", "bob": "bob-password-1"}


def gateway_settings(
    database_url: str,
    simulator: RunningSimulator,
    port: int,
    mode: str = "dev",
    extra: dict[str, Any] | None = None,
    **duo: Any,
) -> Settings:
    """`extra` are more settings (e.g. `access`); `duo` overrides the Duo ones."""
    return load_settings(
        **(extra or {}),
        environ={},
        mode=mode,
        secret_key=SECRET,
        database_url=database_url,
        public_url=f"http://127.0.0.1:{port}",
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
    **duo: Any,
) -> AsyncIterator[tuple[str, Settings]]:
    port = free_port()
    settings = gateway_settings(database_url, simulator, port, mode, extra, **duo)
    if seed:
        await seed_users(settings)
    with serve_in_thread(create_app(settings), port=port) as base_url:
        yield base_url, settings


def csrf_from(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html) or re.search(
        r'data-csrf="([^"]+)"', html
    )
    assert found, "no CSRF token on the page"
    return found.group(1)


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
