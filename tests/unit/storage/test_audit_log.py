"""The audit log's records are written as their transaction commits, in one INSERT, in the
order they were made; a transaction rolled back writes none of them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import FrozenClock
from twofa.domain.client import ClientInfo
from twofa.services.state import audit
from twofa.storage.tables import AuditRow

NOW = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)
CLOCK = FrozenClock(NOW)


async def kinds(factory: async_sessionmaker[AsyncSession]) -> list[tuple[str, str, str]]:
    async with factory() as db:
        rows = (await db.scalars(select(AuditRow).order_by(AuditRow.id))).all()
    return [(row.kind, row.outcome, row.username) for row in rows]


async def test_records_are_written_at_the_commit_in_the_order_made(
    factory: async_sessionmaker[AsyncSession],
) -> None:
    client = ClientInfo(ip="192.0.2.7", user_agent="x" * 400)
    async with factory.begin() as db:
        audit.record(db, CLOCK, "sign_in", "refused", username="bob", client=client, why="pw")
        audit.record(db, CLOCK, "lockout", "locked", username="bob")
        async with factory() as other:  # not before the commit
            assert (await other.scalars(select(AuditRow))).all() == []

    assert await kinds(factory) == [("sign_in", "refused", "bob"), ("lockout", "locked", "bob")]
    async with factory() as db:
        first = (await db.scalars(select(AuditRow).order_by(AuditRow.id))).first()
    assert first is not None
    assert (first.at, first.client_ip, first.detail) == (NOW, "192.0.2.7", {"why": "pw"})
    assert first.user_agent == "x" * 300


async def test_a_transaction_rolled_back_writes_none_and_the_next_writes_its_own(
    factory: async_sessionmaker[AsyncSession],
) -> None:
    async def fail_half_way() -> None:
        async with factory.begin() as db:
            audit.record(db, CLOCK, "sign_in", "ok", username="never")
            raise RuntimeError("the change failed")

    with pytest.raises(RuntimeError):
        await fail_half_way()
    async with factory() as db:  # one session, two transactions
        async with db.begin():
            audit.record(db, CLOCK, "sign_in", "ok", username="rolled-back")
            await db.rollback()
        async with db.begin():
            audit.record(db, CLOCK, "sign_in", "ok", username="kept")

    assert await kinds(factory) == [("sign_in", "ok", "kept")]
