"""The engine runs without `pool_pre_ping`: connections the PostgreSQL server closed (a
restart, `pg_terminate_backend`) must still be replaced at checkout, so the next request after
the server dropped them works."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg  # type: ignore[import-untyped]
import pytest

from tests.support.databases import POSTGRES_DSN, postgres_database
from twofa.config import Mode, Settings
from twofa.domain.client import ClientInfo
from twofa.services.runtime import Gateway
from twofa.services.state.sessions import Level

BROWSER = ClientInfo(ip="203.0.113.7", user_agent="pytest-browser")


@pytest.fixture
async def postgres_gateway() -> AsyncIterator[Gateway]:
    async with postgres_database() as url:
        gateway = await Gateway.start(Settings(mode=Mode.DEV, database_url=url))
        try:
            yield gateway
        finally:
            await gateway.close()


async def terminate_backends(database: str) -> None:
    """Kills every server process of `database` and waits until they are gone."""
    admin = await asyncpg.connect(POSTGRES_DSN, timeout=3)
    try:
        query = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()"
        )
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            database,
        )
        for _ in range(100):
            if await admin.fetchval(query, database) == 0:
                return
            await asyncio.sleep(0.02)
        raise AssertionError("the backends did not go away")
    finally:
        await admin.close()


async def test_terminated_connections_are_replaced_on_the_next_request(
    postgres_gateway: Gateway,
) -> None:
    gateway = postgres_gateway
    opened = await asyncio.gather(*(gateway.sessions.open(BROWSER) for _ in range(5)))
    assert gateway.engine.pool.checkedin() >= 1  # type: ignore[attr-defined]

    await terminate_backends(str(gateway.engine.url.database))
    await asyncio.sleep(0.05)  # the event loop sees the sockets close

    loaded = await asyncio.gather(*(gateway.sessions.load(token) for token, _ in opened))
    assert [view.id if view else None for view in loaded] == [view.id for _, view in opened]
    assert all(view is not None and view.level is Level.ANONYMOUS for view in loaded)


async def test_a_second_termination_is_recovered_as_well(postgres_gateway: Gateway) -> None:
    gateway = postgres_gateway
    token, view = await gateway.sessions.open(BROWSER)
    for _ in range(2):
        await terminate_backends(str(gateway.engine.url.database))
        await asyncio.sleep(0.05)
        assert await gateway.sessions.load(token) == view
