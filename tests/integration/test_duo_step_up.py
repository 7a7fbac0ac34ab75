"""Duo Push beyond the first sign-in: confirming a sensitive change on My 2FA with a push
(step-up), "Remember this device" on the push page, and failmode safe never confirming."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from html import unescape
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from tests.conftest import RunningSimulator
from tests.integration.test_gateway_flow import follow, start_push
from tests.support.databases import sqlite_database
from tests.support.gateway import running_gateway, sign_in
from tests.support.totp_flow import sign_out
from tests.support.two_factor import allow_methods
from twofa.config import Settings
from twofa.services.runtime import Gateway
from twofa.storage.tables import SessionRow


@pytest.fixture
async def site(
    tmp_path: Path, simulator: RunningSimulator
) -> AsyncIterator[tuple[httpx.AsyncClient, Settings]]:
    async with (
        sqlite_database(tmp_path) as url,
        running_gateway(url, simulator) as (base_url, settings),
        httpx.AsyncClient(base_url=base_url, timeout=30) as client,
    ):
        await allow_methods(settings, ("duo_push", "totp"), "duo_push", remember_device_days=30)
        yield client, settings


async def push_approved(
    client: httpx.AsyncClient, simulator: RunningSimulator, page: str, remember: bool = False
) -> dict[str, str]:
    challenge = await start_push(client, page)
    [pending] = simulator.pending("alice")
    simulator.settle(str(pending["txid"]), "approve")
    if not remember:
        return await follow(client, challenge)
    answer = await client.get(
        f"/2fa/duo/push/{challenge}",
        params={"remember": "on"},
        headers={"Accept": "application/json"},
    )
    return dict(answer.json())


async def age_second_factor(settings: Settings) -> None:
    """Moves every session's second factor 11 minutes into the past (no longer fresh)."""
    gateway = await Gateway.start(settings)
    try:
        async with gateway.db.begin() as db:
            for row in (await db.scalars(select(SessionRow))).all():
                if row.second_factor_at is not None:
                    row.second_factor_at -= timedelta(minutes=11)
    finally:
        await gateway.close()


async def test_adding_a_method_later_is_confirmed_with_a_push(
    site: tuple[httpx.AsyncClient, Settings], simulator: RunningSimulator
) -> None:
    client, settings = site
    simulator.add_user("alice")
    await sign_in(client, "alice")
    assert (await push_approved(client, simulator, "/2fa/duo/setup"))["state"] == "allow"
    await age_second_factor(settings)

    answer = await client.get("/2fa/m/totp/enrol")
    assert answer.headers["location"] == "/2fa/use?step_up=1"
    choices = await client.get("/2fa/use?step_up=1")
    assert "Confirm it's you" in unescape(choices.text)
    assert 'data-method="duo_push"' in choices.text
    result = await push_approved(client, simulator, "/2fa/validate")
    assert result["state"] == "allow"
    after = await client.get(result["redirect"])
    assert after.headers["location"] == "/2fa/m/totp/enrol"
    page = await client.get("/2fa/m/totp/enrol")
    assert page.status_code == 200
    assert "Set up an authenticator app" in page.text


async def test_remember_this_device_with_duo_push(
    site: tuple[httpx.AsyncClient, Settings], simulator: RunningSimulator
) -> None:
    client, _ = site
    simulator.add_user("alice")
    await sign_in(client, "alice")
    await push_approved(client, simulator, "/2fa/duo/setup")
    await sign_out(client)
    await sign_in(client, "alice")
    validate = await client.get("/2fa/validate")
    assert "Remember this device for 30 days" in validate.text

    result = await push_approved(client, simulator, "/2fa/validate", remember=True)
    assert result["state"] == "allow"
    assert client.cookies.get("twofa_device")
    await sign_out(client)
    answer = await sign_in(client, "alice")
    assert answer.headers["location"].startswith("/2fa/after")
    assert simulator.pending("alice") == []


async def test_failmode_safe_never_confirms_a_change(
    tmp_path: Path, simulator: RunningSimulator
) -> None:
    async with (
        sqlite_database(tmp_path) as url,
        running_gateway(url, simulator, failmode="safe") as (base_url, settings),
        httpx.AsyncClient(base_url=base_url, timeout=30) as client,
    ):
        simulator.add_user("alice")
        await sign_in(client, "alice")
        await push_approved(client, simulator, "/2fa/duo/setup")
        await age_second_factor(settings)
        simulator.control.post(
            "/_sim/faults", json={"endpoints": ["preauth"], "status": 503}
        ).raise_for_status()
        page = await client.get("/2fa/validate")
        assert page.status_code == 400
        assert "cannot confirm it" in page.text
        simulator.control.delete("/_sim/faults").raise_for_status()
        assert (await client.get("/my-2fa")).status_code == 200  # still signed in, as before
