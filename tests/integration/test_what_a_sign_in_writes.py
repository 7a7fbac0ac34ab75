"""What one sign-in with the authenticator app writes, row by row, on SQLite and PostgreSQL:
the password-level session replaced by a signed-in one, the challenge used up and its payload
forgotten, the credential's step stored, the audit records, and no failure counter left
behind. Both databases must leave the same rows (the express lane's comparison with the
general path, kept as a check of the one path now that the lane is gone)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tests.conftest import RunningSimulator
from tests.support.authenticator_totp import code_for
from tests.support.databases import postgres_database, sqlite_database
from tests.support.gateway import gateway_settings, seed_users, sign_in
from tests.support.servers import free_port, serve_in_thread
from tests.support.totp_flow import enrol_alice, post_code, sign_out
from tests.support.two_factor import allow_methods
from twofa.clock import FrozenClock
from twofa.config import Settings
from twofa.methods.totp import time_step
from twofa.services.runtime import Gateway
from twofa.storage.tables import AuditRow, ChallengeRow, CredentialRow, SessionRow, ThrottleRow
from twofa.web.app import create_app

VERIFY = "/2fa/m/totp"


@asynccontextmanager
async def database(settings: Settings) -> AsyncIterator[AsyncSession]:
    """One transaction on the site's database, from outside the running gateway."""
    gateway = await Gateway.start(settings)
    try:
        async with gateway.db.begin() as db:
            yield db
    finally:
        await gateway.close()


async def rows(settings: Settings) -> dict[str, list[Any]]:
    """What the database holds, without what differs by nature between two runs (ids, random
    tokens, times), but with how the times relate."""
    async with database(settings) as db:
        sessions = (await db.scalars(select(SessionRow).order_by(SessionRow.level))).all()
        challenges = (
            await db.scalars(select(ChallengeRow).order_by(ChallengeRow.created_at))
        ).all()
        credentials = (await db.scalars(select(CredentialRow))).all()
        audit = (await db.scalars(select(AuditRow).order_by(AuditRow.id))).all()
        throttle = (await db.scalars(select(ThrottleRow))).all()
    return {
        "sessions": [
            {
                "level": s.level,
                "next_url": s.next_url,
                "lifetime": s.expires_at - s.created_at,
                "second_factor_at_start": s.second_factor_at is not None
                and abs(s.second_factor_at - s.created_at) < timedelta(seconds=1),
            }
            for s in sessions
        ],
        "challenges": [
            {
                "method": c.method,
                "purpose": c.purpose,
                "used": c.consumed_at is not None,
                "payload": c.payload if c.consumed_at is not None else sorted(c.payload or {}),
                "lifetime": c.expires_at - c.created_at,
            }
            for c in challenges
        ],
        "credentials": [
            {"method": c.method, "state_keys": sorted(c.state), "version": c.version}
            for c in credentials
        ],
        "audit": [(a.kind, a.outcome, a.username, a.detail) for a in audit],
        "throttle": [(t.key, t.failures) for t in throttle],
    }


async def one_sign_in(database_url: str, simulator: RunningSimulator) -> dict[str, Any]:
    """Alice sets up the app, signs out, and signs in with a code: what that sign-in wrote."""
    port = free_port()
    settings = gateway_settings(database_url, simulator, port)
    await seed_users(settings)
    await allow_methods(settings, ("totp",), first_method="totp")
    clock = FrozenClock(datetime.now(UTC))
    with serve_in_thread(create_app(settings, clock=clock), port=port) as base_url:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as browser:
            secret = await enrol_alice(browser)
            await sign_out(browser)
            before = await rows(settings)
            await sign_in(browser, "alice")
            clock.advance(timedelta(seconds=60))  # a step the set-up did not use
            answer = await post_code(browser, VERIFY, code_for(secret, time_step(clock.now())))
            assert (answer.status_code, answer.headers["location"]) == (303, "/2fa/after")
            after = await rows(settings)
    return {table: after[table][len(before[table]) :] for table in after} | {
        "credentials": after["credentials"],
        "sessions": after["sessions"],
    }


async def test_one_sign_in_writes_the_same_rows_on_sqlite_and_postgresql(
    simulator: RunningSimulator, tmp_path: Path
) -> None:
    async with sqlite_database(tmp_path) as url:
        on_sqlite = await one_sign_in(url, simulator)
    simulator.control.post("/_sim/reset").raise_for_status()
    async with postgres_database() as url:
        on_postgresql = await one_sign_in(url, simulator)

    for table, written in on_sqlite.items():
        assert written == on_postgresql[table], table
    signed_in = [s for s in on_sqlite["sessions"] if s["second_factor_at_start"]]
    assert len(signed_in) == 1  # the sign-in's session, rotated, with its second factor
    [challenge] = on_sqlite["challenges"]  # the code page's, used up, its payload forgotten
    assert (challenge["method"], challenge["purpose"], challenge["used"]) == (
        "totp",
        "validate",
        True,
    )
    assert not challenge["payload"]
    [credential] = on_sqlite["credentials"]
    assert credential["method"] == "totp"
    assert credential["version"] == 2  # stored at set-up, then this sign-in's step
    assert [(kind, outcome) for kind, outcome, _, _ in on_sqlite["audit"]] == [
        ("login", "password_ok"),
        ("second_factor", "allow"),
    ]
    assert on_sqlite["throttle"] == []  # counted first, cleared by the success
