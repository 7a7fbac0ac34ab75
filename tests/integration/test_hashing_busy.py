"""A full hashing pool over real HTTP (SQLite and PostgreSQL): the backup code a user types
while every argon2 thread and queue place is taken gets the same 503 "busy, try again" page
a password sign-in gets then, its attempt does not count, and nothing is written (the
challenge stays open, no code is used, nothing is audited as refused); once the pool is
free the very same answer signs in.

The gateway is served on this test's own event loop (uvicorn in a task, not a thread), so
the test fills the gateway's one pool on the loop that uses it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from html import unescape
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import func, select

from tests.conftest import RunningSimulator
from tests.integration.test_backup_codes import VERIFY, enrol_app_then_codes
from tests.support.databases import postgres_database, sqlite_database
from tests.support.gateway import gateway_settings, seed_users, sign_in
from tests.support.hashing import pool_full
from tests.support.servers import free_port
from tests.support.totp_flow import sign_out, submit_code
from tests.support.two_factor import allow_methods
from twofa.security.hashing_pool import HashingPool
from twofa.services.runtime import Gateway
from twofa.services.second_factor.failures import failure_key
from twofa.services.settings.two_factor import BackupPolicy
from twofa.storage.tables import AuditRow, ChallengeRow, CredentialItemRow, ThrottleRow
from twofa.web.app import create_app

BUSY = "Many people are signing in right now. Please try again in a moment."


@asynccontextmanager
async def served_here(app: Any, port: int) -> AsyncIterator[str]:
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", loop="asyncio", proxy_headers=False
    )
    server = uvicorn.Server(config)
    serving = asyncio.ensure_future(server.serve())
    while not server.started:
        if serving.done():
            serving.result()  # raises why it stopped
            raise RuntimeError(f"uvicorn did not start on port {port}")
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving


@pytest.fixture(params=["sqlite", "postgresql"])
async def site(
    request: pytest.FixtureRequest, tmp_path: Path, simulator: RunningSimulator
) -> AsyncIterator[tuple[httpx.AsyncClient, Gateway]]:
    factory = sqlite_database(tmp_path) if request.param == "sqlite" else postgres_database()
    async with factory as url:
        port = free_port()
        settings = gateway_settings(url, simulator, port)
        await seed_users(settings)
        await allow_methods(
            settings,
            ("totp",),
            first_method="totp",
            backup=BackupPolicy.OPTIONAL,
            backup_methods=("backup_codes",),
        )
        app = create_app(settings)
        async with (
            served_here(app, port) as base_url,
            httpx.AsyncClient(base_url=base_url, timeout=30) as client,
        ):
            yield client, app.state.gateway


def pool_of(gateway: Gateway) -> HashingPool:
    assert gateway.hashing is not None
    return gateway.hashing


async def written(gateway: Gateway) -> dict[str, Any]:
    """What an answer to a backup-code challenge could have changed."""
    async with gateway.db.begin() as db:
        throttle = await db.get(ThrottleRow, failure_key("backup_codes", "alice"))
        used = await db.scalar(
            select(func.count())
            .select_from(CredentialItemRow)
            .where(CredentialItemRow.used_at.is_not(None))
        )
        consumed = await db.scalar(
            select(func.count())
            .select_from(ChallengeRow)
            .where(ChallengeRow.purpose == "validate", ChallengeRow.consumed_at.is_not(None))
        )
        audited = await db.scalars(
            select(AuditRow.outcome).where(
                AuditRow.kind == "second_factor", AuditRow.username == "alice"
            )
        )
        return {
            "failures": throttle.failures if throttle is not None else 0,
            "codes used": used,
            "challenges consumed": consumed,
            "second factor audited": sorted(audited),
        }


async def test_a_backup_code_typed_while_hashing_is_full_is_busy_then_works(
    site: tuple[httpx.AsyncClient, Gateway],
) -> None:
    client, gateway = site
    _, codes = await enrol_app_then_codes(client)
    await sign_out(client)
    client.cookies.clear()
    assert (await sign_in(client, "alice")).headers["location"] == "/2fa"
    page = await client.get(VERIFY)
    assert page.status_code == 200, page.text
    before = await written(gateway)

    async with pool_full(pool_of(gateway)):
        busy = await submit_code(client, VERIFY, page, codes[0])
        async with httpx.AsyncClient(base_url=str(client.base_url), timeout=30) as other:
            password = await sign_in(other, "bob")

    assert busy.status_code == 503, busy.text
    assert BUSY in unescape(busy.text)
    assert password.status_code == 503  # the same answer a password sign-in gets
    assert BUSY in unescape(password.text)
    assert await written(gateway) == before  # not counted, not consumed, not audited
    assert (await client.get("/")).status_code != 200  # still waiting for the second factor

    accepted = await submit_code(client, VERIFY, page, codes[0])  # the same form again
    assert accepted.status_code == 303, accepted.text
    assert accepted.headers["location"] == "/2fa/after"
    after = await written(gateway)
    assert (after["codes used"], after["challenges consumed"]) == (
        1,
        before["challenges consumed"] + 1,
    )
    assert after["second factor audited"] == sorted([*before["second factor audited"], "allow"])
