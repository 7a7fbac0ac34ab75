"""What a unit of work announces after it commits (storage.change_notes): the sessions it
ended, a user's sessions, a settings save, an access-rules change; nothing when it rolls back,
and nothing from another gateway's sessions in the same process."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.storage.access_rules import AccessRules
from twofa.storage.change_notes import Changes, announce_commits, before_each_commit
from twofa.storage.database import create_engine, session_factory
from twofa.storage.oidc_refresh_tokens import end_grants_with_sessions
from twofa.storage.repositories import ConsoleSettings
from twofa.storage.sessions import Sessions

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


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


async def test_a_session_that_never_signed_in_is_announced_but_not_searched_for_grants(
    factory: async_sessionmaker[AsyncSession],
) -> None:
    """A sign-in's own step replacing its password-level session ends a session that could
    not have signed in to any application: caches hear of it, and no grant is looked for.
    A session that was signed in is still searched, whatever else the commit ended."""
    heard = announced_by(factory)
    end_grants_with_sessions(factory, lambda: NOW, lambda ended: None)
    statements: list[tuple[str, object]] = []
    engine = factory.kw["bind"].sync_engine
    event.listen(engine, "before_cursor_execute", lambda *a: statements.append((a[2], a[3])))

    async with factory.begin() as db:
        await Sessions(db).remove("half-way", signed_in=False)
    assert heard[-1].ended_sessions == {"half-way"}
    assert not [sql for sql, _ in statements if "oidc_" in sql]

    async with factory.begin() as db:
        await Sessions(db).remove("half-way-2", signed_in=False)
        await Sessions(db).remove("signed-in")
    searched = [values for sql, values in statements if "oidc_codes" in sql]
    assert len(searched) == 1
    searched_ids = list(searched[0])  # type: ignore[call-overload]
    assert "signed-in" in searched_ids
    assert "half-way-2" not in searched_ids
    assert heard[-1].ended_sessions == {"half-way-2", "signed-in"}


async def test_other_processes_hear_of_signed_in_sessions_only(
    factory: async_sessionmaker[AsyncSession],
) -> None:
    """Each sign-in replaces a session that never signed in; telling every node of that,
    once per sign-in, would cost a NOTIFY or a publish and change nothing they answer."""
    sent: list[Changes] = []
    before_each_commit(factory, lambda session, changes: sent.append(changes))
    heard = announced_by(factory)

    async with factory.begin() as db:
        await Sessions(db).remove("half-way", signed_in=False)
    assert sent == []
    assert heard[-1].ended_sessions == {"half-way"}  # this process's own caches still hear

    async with factory.begin() as db:
        await Sessions(db).remove("half-way-2", signed_in=False)
        await Sessions(db).remove("signed-in")
    assert sent == [Changes(ended_sessions=frozenset({"signed-in"}))]
    assert heard[-1].shared() == sent[-1]


def test_a_session_noted_once_as_signed_in_stays_signed_in_when_notes_merge() -> None:
    signed_in = Changes(ended_sessions=frozenset({"s"}))
    half_way = Changes(ended_sessions=frozenset({"s", "h"}), never_signed_in=frozenset({"s", "h"}))
    for merged in (signed_in | half_way, half_way | signed_in):
        assert merged.never_signed_in == {"h"}
        assert merged.shared().ended_sessions == {"s"}
