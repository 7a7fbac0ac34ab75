"""The gateway while its PostgreSQL database cannot be reached, over real HTTP: pages answer
503 with a plain "try again in a moment" page and Retry-After, the API its one error shape
with 503, forward-auth 503 (never an allow), and /healthz/ready says not ready while
/healthz (liveness) stays 200. When the database is back, everything answers again by
itself."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest

from tests.conftest import RunningSimulator
from tests.integration.test_api import issue_token
from tests.integration.test_database_reconnect import terminate_backends
from tests.support.databases import POSTGRES_DSN, postgres_database
from tests.support.gateway import running_gateway

pytestmark = pytest.mark.integration
APP = "app.example.test"


async def allow_connections(database: str, allowed: bool) -> None:
    admin = await asyncpg.connect(POSTGRES_DSN, timeout=3)
    try:
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {str(allowed).lower()}')
    finally:
        await admin.close()


@pytest.fixture
async def site(simulator: RunningSimulator) -> AsyncIterator[tuple[httpx.AsyncClient, str, str]]:
    async with postgres_database() as url:
        extra = {"access": {"domains": [APP], "rules": [{"domain": APP, "policy": "one_factor"}]}}
        async with running_gateway(url, simulator, extra=extra) as (base_url, settings):
            token = await issue_token(settings, "ops")
            async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
                yield client, token, url.rsplit("/", 1)[1]


async def test_database_away_answers_503_everywhere_then_recovers(
    site: tuple[httpx.AsyncClient, str, str],
) -> None:
    client, token, database = site
    assert (await client.get("/healthz/ready")).status_code == 200
    await allow_connections(database, False)
    await terminate_backends(database)
    try:
        page = await client.get("/login")
        api = await client.get("/api/v1/users", headers={"Authorization": f"Bearer {token}"})
        check = await client.get(
            "/authz/nginx",
            headers={"X-Original-URL": f"http://{APP}/x", "Cookie": "twofa_session=whatever"},
        )
        ready = await client.get("/healthz/ready")
        alive = await client.get("/healthz")
    finally:
        await allow_connections(database, True)

    assert page.status_code == 503
    assert "temporarily unavailable" in page.text
    assert page.headers["retry-after"] == "5"
    assert api.status_code == 503
    assert api.json()["error"]["code"] == "unavailable"
    assert check.status_code == 503  # never 200 while it cannot tell
    assert ready.status_code == 503
    assert alive.status_code == 200

    for _ in range(50):  # back by itself
        if (await client.get("/healthz/ready")).status_code == 200:
            break
        await asyncio.sleep(0.1)
    assert (await client.get("/login")).status_code == 200
    assert (await client.get("/healthz/ready")).status_code == 200
