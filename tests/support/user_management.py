"""The User Management, Audit Log and Overview tabs over real HTTP: a seeded gateway (alice
with 2FA through group engineering, bob without) plus an admin, `root`, who signs in with a
password and Duo Push, and helpers to post console forms and read the database back."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

import httpx
from sqlalchemy import select

from tests.conftest import RunningSimulator
from tests.support.admin_sign_in import sign_in_admin
from tests.support.gateway import csrf_from, running_gateway
from twofa.config import Settings
from twofa.services.runtime import Gateway
from twofa.storage.tables import AuditRow

ADMIN = "root"
ADMIN_PASSWORD = "root-password-1"
T = TypeVar("T")


@dataclass(frozen=True)
class AdminBrowser:
    """A signed-in admin's HTTP client on a running gateway, and that gateway's settings."""

    client: httpx.AsyncClient
    settings: Settings
    base_url: str

    async def csrf(self, page: str = "/admin/users") -> str:
        answer = await self.client.get(page)
        assert answer.status_code == 200, answer.text
        return csrf_from(answer.text)

    async def post(
        self, path: str, data: dict[str, str], *, page: str = "/admin/users"
    ) -> httpx.Response:
        return await self.client.post(path, data={**data, "csrf_token": await self.csrf(page)})

    async def query(self, action: Callable[[Gateway], Awaitable[T]]) -> T:
        gateway = await Gateway.start(self.settings)
        try:
            return await action(gateway)
        finally:
            await gateway.close()

    async def audit_rows(self, kind: str | None = None) -> Sequence[AuditRow]:
        async def read(gateway: Gateway) -> Sequence[AuditRow]:
            query = select(AuditRow).order_by(AuditRow.id)
            if kind is not None:
                query = query.where(AuditRow.kind == kind)
            async with gateway.db.begin() as db:
                return (await db.scalars(query)).all()

        return await self.query(read)


async def add_admin(settings: Settings) -> None:
    gateway = await Gateway.start(settings)
    try:
        await gateway.accounts.add_user(
            ADMIN, ADMIN_PASSWORD, display_name="Root Admin", is_admin=True
        )
    finally:
        await gateway.close()


@asynccontextmanager
async def signed_in_admin(
    database_url: str, simulator: RunningSimulator
) -> AsyncIterator[AdminBrowser]:
    async with running_gateway(database_url, simulator) as (base_url, settings):
        await add_admin(settings)
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            await sign_in_admin(client, simulator, ADMIN, ADMIN_PASSWORD)
            yield AdminBrowser(client, settings, base_url)


def user_row_html(page: str, username: str) -> str:
    """The table row of one user on the User Management page."""
    found = re.search(rf'<tr data-username="{re.escape(username)}">(.*?)</tr>', page, re.S)
    assert found, f"no row for {username!r} on the page"
    return found.group(1)


def status_phrases(page: str, username: str) -> list[str]:
    row = user_row_html(page, username)
    status = re.search(r'<ul class="status">(.*?)</ul>', row, re.S)
    assert status, f"no status for {username!r}"
    return re.findall(r"<li>(.*?)</li>", status.group(1))
