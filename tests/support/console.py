"""A running gateway with two admins (`admin`, `admin2`) and the demo-style users, with a
client signed in as `admin` (password and Duo Push, as the console requires), plus helpers that
read the console's pages and the database back. Shared by the console settings tests and the
admin console's end-to-end test."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from sqlalchemy import select

from tests.conftest import RunningSimulator
from tests.support.admin_sign_in import sign_in_admin, sign_in_admin_with_app
from tests.support.databases import sqlite_database
from tests.support.gateway import csrf_from, running_gateway, sign_in
from twofa.config import Settings
from twofa.domain.client import NO_CLIENT
from twofa.services.runtime import Gateway
from twofa.services.settings.duo import DuoConsoleConfig
from twofa.services.settings.two_factor import TwoFactorConfig
from twofa.storage.tables import AuditRow

ADVANCED = "/admin/settings/advanced"
TWO_FACTOR = "/admin/settings/two-factor"
ADMIN_PASSWORDS = {"admin": "admin-password-1", "admin2": "admin2-password-1"}
T = TypeVar("T")


@dataclass(frozen=True)
class Console:
    """A running gateway with admins `admin` and `admin2`; `client` is signed in as admin."""

    client: httpx.AsyncClient
    settings: Settings
    base_url: str
    simulator: RunningSimulator

    def duo_form(self, **changes: str) -> dict[str, str]:
        """The Advanced Settings form filled with the simulator's (valid) keys."""
        return {
            "ikey": self.simulator.ikey,
            "skey": self.simulator.skey,
            "api_hostname": self.simulator.base_url,
            "failmode": "secure",
            "autopush": "on",
            "push_type": "Login request",
            "application_name": "Console app",
            "pushes_per_minute": "3",
            "pushes_per_day": "20",
            "fraud_pause_minutes": "60",
            **changes,
        }

    async def post(
        self, path: str, form: dict[str, str], client: httpx.AsyncClient | None = None
    ) -> httpx.Response:
        client = client or self.client
        page = await client.get(ADVANCED)
        return await client.post(path, data={**form, "csrf_token": csrf_from(page.text)})

    async def query(self, action: Callable[[Gateway], Awaitable[T]]) -> T:
        gateway = await Gateway.start(self.settings)
        try:
            return await action(gateway)
        finally:
            await gateway.close()

    async def saved_duo(self) -> DuoConsoleConfig | None:
        return await self.query(lambda gateway: gateway.console.duo())

    async def saved_two_factor(self) -> TwoFactorConfig:
        return await self.query(lambda gateway: gateway.console.two_factor())

    async def audit(self, kind: str) -> list[AuditRow]:
        async def read(gateway: Gateway) -> list[AuditRow]:
            async with gateway.db() as db:
                query = select(AuditRow).where(AuditRow.kind == kind).order_by(AuditRow.id)
                return list((await db.scalars(query)).all())

        return await self.query(read)

    @asynccontextmanager
    async def signed_in(self, username: str, password: str) -> AsyncIterator[httpx.AsyncClient]:
        """A client of `username`: an admin passes Duo Push too, as the console requires."""
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30) as client:
            if username in ADMIN_PASSWORDS:
                await sign_in_admin(client, self.simulator, username, password)
            else:
                await sign_in(client, username, password)
            yield client


async def add_admins(settings: Settings) -> None:
    gateway = await Gateway.start(settings)
    try:
        for username, password in ADMIN_PASSWORDS.items():
            await gateway.accounts.add_user(username, password, is_admin=True)
    finally:
        await gateway.close()


async def save_two_factor(settings: Settings, config: TwoFactorConfig) -> None:
    gateway = await Gateway.start(settings)
    try:
        await gateway.console.save_two_factor(config, "test-admin", NO_CLIENT)
    finally:
        await gateway.close()


async def start_console(
    stack: AsyncExitStack,
    tmp_path: Path,
    simulator: RunningSimulator,
    mode: str = "dev",
    extra: dict[str, Any] | None = None,
    two_factor: TwoFactorConfig | None = None,
    admin_method: str | None = None,
    **duo: Any,
) -> Console:
    """Starts a gateway on a fresh SQLite file (`duo` are its settings-file Duo values) whose
    servers and client close with `stack`, with `two_factor` saved before anyone signs in
    (the running gateway keeps its copy of the settings for a moment). The admin passes Duo
    Push, or with `admin_method` "totp" (the default when Duo Push is not allowed; the way in
    while Duo cannot answer) sets up an authenticator app."""
    url = await stack.enter_async_context(sqlite_database(tmp_path))
    base_url, settings = await stack.enter_async_context(
        running_gateway(url, simulator, mode, extra=extra, **duo)
    )
    await add_admins(settings)
    client = await stack.enter_async_context(httpx.AsyncClient(base_url=base_url, timeout=30))
    if two_factor is not None:
        await save_two_factor(settings, two_factor)
    if admin_method is None:
        allowed = two_factor.methods if two_factor else ("duo_push",)
        admin_method = "duo_push" if "duo_push" in allowed else "totp"
    if admin_method == "totp":
        await sign_in_admin_with_app(client, "admin", ADMIN_PASSWORDS["admin"])
    else:
        await sign_in_admin(client, simulator, "admin", ADMIN_PASSWORDS["admin"])
    return Console(client, settings, base_url, simulator)


def field_problem(page: str, field: str) -> str:
    """The problem shown right under a field, or "" when there is none."""
    found = re.search(rf'<p class="field-error" id="{field}-problem"[^>]*>(.*?)</p>', page, re.S)
    return html.unescape(found.group(1)) if found else ""


def field_value(page: str, field: str) -> str:
    found = re.search(rf'<input id="{field}" name="{field}"[^>]*? value="([^"]*)"', page)
    assert found, f"no input {field} on the page"
    return html.unescape(found.group(1))


def two_factor_form(**changes: str | list[str]) -> dict[str, str | list[str]]:
    return {
        "methods": ["duo_push"],
        "first_method": "duo_push",
        "backup": "none",
        "enforcement": "selected",
        "grace_postponements": "2",
        "grace_days": "7",
        "remember_device_days": "30",
        **changes,
    }


async def post_two_factor(
    console: Console, client: httpx.AsyncClient | None = None, **changes: str | list[str]
) -> httpx.Response:
    client = client or console.client
    page = await client.get(TWO_FACTOR)
    form = {**two_factor_form(**changes), "csrf_token": csrf_from(page.text)}
    return await client.post(TWO_FACTOR, data=form)
