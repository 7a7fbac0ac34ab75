"""What a unit of work announces after it commits (storage.change_notes): the sessions it
ended, a user's sessions, a settings save, an access-rules change; nothing when it rolls back,
and nothing from another gateway's sessions in the same process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.support.databases import sqlite_database
from twofa.storage.access_rules import AccessRules
from twofa.storage.change_notes import Changes, announce_commits
from twofa.storage.database import create_engine, session_factory
from twofa.storage.repositories import ConsoleSettings
from twofa.storage.sessions import Sessions

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


@pytest.fixture
async def factory(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    async with sqlite_database(tmp_path) as url:
        engine = create_engine(url)
        try:
            yield session_factory(engine)
        finally:
            await engine.dispose()


def announced_by(factory: async_sessionmaker[AsyncSession]) -> list[Changes]:
    heard: list[Changes] = []
    announce_commits(factory, heard.append)
    return heard


async def test_a_commit_announces_what_it_ended_and_saved(
    factory: async_sessionmaker[AsyncSession],
) -> None:
    heard = announced_by(factory)
    async with factory.begin() as db:
        await Sessions(db).remove("session-1")
        await Sessions(db).remove("session-2")
        await Sessions(db).remove_for_user(7)
        await ConsoleSettings(db).upsert("two_factor", {"methods": []}, NOW, "admin")
        await AccessRules(db).lock_and_bump(NOW)

    assert heard == [Changes(frozenset({"session-1", "session-2"}), frozenset({7}), True, True)]


async def test_a_rolled_back_transaction_announces_nothing(
    factory: async_sessionmaker[AsyncSession],
) -> None:
    heard = announced_by(factory)

    async def fail_half_way() -> None:
        async with factory.begin() as db:
            await Sessions(db).remove("session-1")
            raise RuntimeError("the rest of the change failed")

    with pytest.raises(RuntimeError):
        await fail_half_way()
    async with factory.begin() as db:  # and its notes do not ride on the next commit
        await Sessions(db).remove("session-2")

    assert heard == [Changes(ended_sessions=frozenset({"session-2"}))]


async def test_a_commit_that_changed_nothing_others_keep_is_silent(
    factory: async_sessionmaker[AsyncSession],
) -> None:
    heard = announced_by(factory)
    async with factory.begin() as db:
        await ConsoleSettings(db).all()
    assert heard == []


async def test_another_factorys_commits_are_not_announced(
    factory: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    heard = announced_by(factory)
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'twofa.db'}")
    try:
        async with session_factory(engine).begin() as db:
            await Sessions(db).remove("someone-elses")
    finally:
        await engine.dispose()
    assert heard == []
