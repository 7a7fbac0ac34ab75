"""The Redis feed's backstop (services.state.change_outbox): what one process writes in its
committing transaction, the others read from the database, each change once, their own never;
a row that becomes visible below one already read (PostgreSQL takes ids at INSERT and shows
rows at COMMIT) is still read; a rolled-back change is never heard; rows are pruned once the
pruning process has known of them for the keeping time, by its own clock; the Redis feed is
live only while the outbox is read."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import event, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from tests.support.databases import sqlite_database
from twofa.clock import FrozenClock
from twofa.services.state.change_feed import decoded, encoded
from twofa.services.state.change_outbox import (
    GAP_WAIT_S,
    KEEP_FOR_S,
    LATE_COMMIT_S,
    PRIME_LOOK_BACK_S,
    ChangeOutbox,
)
from twofa.services.state.feed_state import OUTBOX_SILENCE_LIMIT_S, FeedState
from twofa.storage.change_notes import Changes, after_each_end, before_each_commit, noted
from twofa.storage.database import create_engine, session_factory
from twofa.storage.sessions import Sessions
from twofa.storage.tables import ChangeOutboxRow

NOW = datetime(2026, 12, 6, 20, 0, tzinfo=UTC)


@pytest.fixture
async def factory(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    async with sqlite_database(tmp_path) as url:
        engine = create_engine(url)
        try:
            yield session_factory(engine)
        finally:
            await engine.dispose()


def outbox_of(
    factory: async_sessionmaker[AsyncSession], node: str, clock: FrozenClock
) -> tuple[ChangeOutbox, list[Changes]]:
    heard: list[Changes] = []
    return ChangeOutbox(factory, clock, node, heard.append, FeedState("redis", clock)), heard


async def test_what_one_process_commits_the_others_read_once_and_it_skips_its_own(
    factory: async_sessionmaker[AsyncSession],
) -> None:
    clock = FrozenClock(NOW)
    writer, heard_by_writer = outbox_of(factory, "node-a", clock)
    reader, heard_by_reader = outbox_of(factory, "node-b", clock)
    before_each_commit(factory, writer.write_in)
    await writer.prime()
    await reader.prime()  # where the outbox stands when they start

    async with factory.begin() as db:
        await Sessions(db).remove("signed-in")
    await reader.read_once()
    await reader.read_once()  # the rows read again (the rescan) are not applied twice
    await writer.read_once()

    assert heard_by_reader == [Changes(ended_sessions=frozenset({"signed-in"}))]
    assert heard_by_writer == []  # it applied its own change at its commit already


async def test_a_rolled_back_change_and_a_sign_in_s_own_session_are_never_written(
    factory: async_sessionmaker[AsyncSession],
) -> None:
    clock = FrozenClock(NOW)
    writer, _ = outbox_of(factory, "node-a", clock)
    before_each_commit(factory, writer.write_in)

    async def fail_half_way() -> None:
        async with factory.begin() as db:
            await Sessions(db).remove("signed-in")
            raise RuntimeError("the rest of the change failed")

    with pytest.raises(RuntimeError):
        await fail_half_way()
    async with factory.begin() as db:
        await Sessions(db).remove("half-way", signed_in=False)

    async with factory() as db:
        assert await db.scalar(select(func.count()).select_from(ChangeOutboxRow)) == 0


def committer(
    factory: async_sessionmaker[AsyncSession],
) -> Callable[..., Awaitable[None]]:
    """Commits another node's sign-out of `session_id` under outbox id `row_id`, as if that
    id had been taken whenever the test says; written `seconds_ago` by the database's clock
    (the real one: the database knows no other)."""

    async def committed(row_id: int, session_id: str, seconds_ago: float = 0.0) -> None:
        body = encoded(Changes(ended_sessions=frozenset({session_id})), "node-a")
        written_at = datetime.now(UTC) - timedelta(seconds=seconds_ago)
        async with factory.begin() as db:
            await db.execute(
                insert(ChangeOutboxRow), {"id": row_id, "created_at": written_at, "payload": body}
            )

    return committed


async def test_a_row_that_appears_below_one_already_read_is_still_read(
    factory: async_sessionmaker[AsyncSession],
) -> None:
    reader, heard = outbox_of(factory, "node-b", FrozenClock(NOW))
    await reader.prime()

    committed = committer(factory)

    await committed(500, "late-id-first")
    await reader.read_once()
    for row_id in range(300, 450):  # many more commits meanwhile, no fixed window holds
        await committed(row_id, f"other-{row_id}")
        await reader.read_once()
    await committed(5, "early-id-committed-later")  # its id was taken first
    await reader.read_once()
    await reader.read_once()

    ended = [next(iter(c.ended_sessions)) for c in heard]
    assert ended[0] == "late-id-first"
    assert ended[-1] == "early-id-committed-later"
    assert len(ended) == len(set(ended)) == 152  # each once


async def test_an_id_that_never_appears_is_given_up_after_a_while(
    factory: async_sessionmaker[AsyncSession], caplog: pytest.LogCaptureFixture
) -> None:
    clock = FrozenClock(NOW)
    reader, heard = outbox_of(factory, "node-b", clock)
    await reader.prime()
    body = encoded(Changes(ended_sessions=frozenset({"s"})), "node-a")
    async with factory.begin() as db:  # ids 1 and 2 were taken by transactions rolled back
        await db.execute(insert(ChangeOutboxRow), {"id": 3, "created_at": NOW, "payload": body})
    await reader.read_once()
    assert reader.waiting_for() == {1, 2}

    clock.advance(timedelta(seconds=GAP_WAIT_S + 1))
    await reader.read_once()

    assert reader.waiting_for() == set()
    assert "id 1 never appeared" in caplog.text
    assert len(heard) == 1


async def test_pruning_keeps_the_newest_row_and_ids_go_on_from_it(
    factory: async_sessionmaker[AsyncSession],
) -> None:
    """The newest row stays, however old: without it a reader could not tell that rows were
    pruned before it read them (and SQLite could hand its id out again)."""
    clock = FrozenClock(NOW)
    writer, _ = outbox_of(factory, "node-a", clock)
    before_each_commit(factory, writer.write_in)
    async with factory.begin() as db:
        await Sessions(db).remove("first")
    async with factory() as db:
        first = await db.scalar(select(func.max(ChangeOutboxRow.id)))
    assert first is not None
    reader, heard = outbox_of(factory, "node-b", clock)
    await reader.prime()
    await reader.read_once()  # notes what it knows of now
    clock.advance(timedelta(seconds=KEEP_FOR_S + 1))
    await reader.read_once()  # may prune what it has known that long, but not the newest
    assert await remaining(factory) == ["first"]
    async with factory.begin() as db:
        await Sessions(db).remove("second")
    await reader.read_once()

    async with factory() as db:
        assert await db.scalar(select(func.max(ChangeOutboxRow.id))) == first + 1
    assert [set(c.ended_sessions) for c in heard] == [{"second"}]


async def remaining(factory: async_sessionmaker[AsyncSession]) -> list[str]:
    async with factory() as db:
        payloads = (await db.scalars(select(ChangeOutboxRow.payload))).all()
    return [next(iter(c.ended_sessions)) for c in map(decoded_changes, payloads)]


def decoded_changes(payload: str) -> Changes:
    found = decoded(payload)
    assert found is not None
    return found[1]


async def test_rows_the_pruner_has_known_for_the_keeping_time_are_pruned_and_no_others(
    factory: async_sessionmaker[AsyncSession],
) -> None:
    clock = FrozenClock(NOW)
    writer, _ = outbox_of(factory, "node-a", clock)
    before_each_commit(factory, writer.write_in)
    reader, _ = outbox_of(factory, "node-b", clock)
    await reader.prime()
    async with factory.begin() as db:
        await Sessions(db).remove("long-ago")
    await reader.read_once()
    clock.advance(timedelta(seconds=KEEP_FOR_S / 2))
    async with factory.begin() as db:
        await Sessions(db).remove("half-way")
    await reader.read_once()
    assert await remaining(factory) == ["long-ago", "half-way"]

    clock.advance(timedelta(seconds=KEEP_FOR_S / 2 + 1))
    async with factory.begin() as db:
        await Sessions(db).remove("just-now")
    await reader.read_once()
    # Known that long: "long-ago" alone, which stays as the newest row at the pruning point.
    assert await remaining(factory) == ["long-ago", "half-way", "just-now"]

    clock.advance(timedelta(seconds=KEEP_FOR_S / 2))
    await reader.read_once()

    assert await remaining(factory) == ["half-way", "just-now"]


async def test_attack_a_writer_whose_clock_is_an_hour_behind_loses_no_row(
    factory: async_sessionmaker[AsyncSession],
) -> None:
    """Rows carry the writer's time, but pruning never compares it with the pruner's: a node
    whose clock is far behind would otherwise have its sign-outs pruned before anyone read
    them."""
    pruner_clock = FrozenClock(NOW)
    writer, _ = outbox_of(factory, "node-a", FrozenClock(NOW - timedelta(hours=1)))
    before_each_commit(factory, writer.write_in)
    pruner, _ = outbox_of(factory, "node-b", pruner_clock)
    await pruner.prime()
    async with factory.begin() as db:
        await Sessions(db).remove("signed-out-by-a-slow-clock")
    for _ in range(5):  # five pruning rounds, well inside the keeping time
        pruner_clock.advance(timedelta(seconds=61))
        await pruner.read_once()

    assert await remaining(factory) == ["signed-out-by-a-slow-clock"]


async def live_reader(
    factory: async_sessionmaker[AsyncSession], clock: FrozenClock
) -> tuple[ChangeOutbox, FeedState, int]:
    """An outbox reader beside a Redis feed that is live; the feed's generation."""
    state = FeedState("redis", clock)
    reader = ChangeOutbox(factory, clock, "node-b", lambda _: None, state)
    await reader.prime()
    state.connected()
    live = state.live_generation
    assert live is not None
    return reader, state, live


async def test_the_redis_feed_is_live_only_while_the_outbox_is_read(
    factory: async_sessionmaker[AsyncSession],
) -> None:
    """A node whose Redis is fine but whose outbox reads fail (its database path stalls)
    would otherwise trust its copies while another node's sign-out waits in the outbox."""
    clock = FrozenClock(NOW)
    reader, state, live = await live_reader(factory, clock)

    clock.advance(timedelta(seconds=OUTBOX_SILENCE_LIMIT_S + 0.1))
    state.heard()  # Redis itself still answers
    assert state.live_generation is None
    report = state.report()
    assert not report.live
    assert "change outbox has not been read" in report.problem

    await reader.read_once()  # what was missed is applied: the copies may be trusted again
    assert state.live_generation == live
    assert state.report().live


async def test_a_reader_that_finds_rows_pruned_unread_starts_a_new_generation(
    factory: async_sessionmaker[AsyncSession], caplog: pytest.LogCaptureFixture
) -> None:
    """A process paused for minutes (a suspended VM, whose monotonic clock may not count the
    pause) finds rows pruned that it never read: judged by the ids, nothing it cached before is
    trusted long again, and the log says why."""
    clock = FrozenClock(NOW)
    reader, state, live = await live_reader(factory, clock)
    writer, _ = outbox_of(factory, "node-a", clock)
    before_each_commit(factory, writer.write_in)
    pruner, _ = outbox_of(factory, "node-c", clock)
    await pruner.prime()
    for name in ("one", "two"):
        async with factory.begin() as db:
            await Sessions(db).remove(name)
    await pruner.read_once()
    clock.advance(timedelta(seconds=KEEP_FOR_S + 1))
    async with factory.begin() as db:
        await Sessions(db).remove("three")
    await pruner.read_once()  # "one" goes; "two" stays, the newest at the pruning point
    assert await remaining(factory) == ["two", "three"]

    state.heard()
    await reader.read_once()

    assert state.live_generation == live + 1
    assert "pruned before this process read them" in caplog.text


async def test_a_process_started_while_a_change_is_on_its_way_still_hears_it(
    factory: async_sessionmaker[AsyncSession],
) -> None:
    """A transaction took id 2 and has not committed when the process starts, while id 3
    has: the start-up notes 2 as missing and reads it when it appears."""
    clock = FrozenClock(NOW)

    committed = committer(factory)

    await committed(1, "long-ago")
    await committed(3, "quick")
    reader, heard = outbox_of(factory, "node-b", clock)
    await reader.prime()
    assert reader.waiting_for() == {2}
    await committed(2, "slow-sign-out")
    await reader.read_once()

    assert [set(c.ended_sessions) for c in heard] == [{"slow-sign-out"}]
    assert reader.waiting_for() == set()


async def test_a_process_started_after_a_burst_still_hears_an_id_taken_before_it(
    factory: async_sessionmaker[AsyncSession],
) -> None:
    """Id 2 was taken, then 1,500 changes committed above it in the same minute: however many,
    the start-up looks for every id taken since the newest row written a minute ago."""
    committed = committer(factory)
    await committed(1, "long-ago", seconds_ago=PRIME_LOOK_BACK_S + 5)
    for row_id in range(3, 1503):
        await committed(row_id, f"burst-{row_id}")
    reader, heard = outbox_of(factory, "node-b", FrozenClock(NOW))
    await reader.prime()
    assert reader.waiting_for() == {2}

    await committed(2, "slow-sign-out")
    await reader.read_once()

    assert [set(c.ended_sessions) for c in heard] == [{"slow-sign-out"}]


async def test_the_start_up_does_not_look_below_the_newest_row_written_a_minute_ago(
    factory: async_sessionmaker[AsyncSession],
) -> None:
    """Ids below it were taken before it, over a minute ago: should one commit now, its
    writer writes it again (below), so the start-up need not wait for every id ever lost."""
    committed = committer(factory)
    await committed(1, "long-ago", seconds_ago=PRIME_LOOK_BACK_S + 60)
    await committed(3, "a-minute-ago", seconds_ago=PRIME_LOOK_BACK_S + 5)
    await committed(5, "just-now")
    reader, _ = outbox_of(factory, "node-b", FrozenClock(NOW))
    await reader.prime()

    assert reader.waiting_for() == {4}


def slow_commits(factory: async_sessionmaker[AsyncSession], clock: FrozenClock) -> list[float]:
    """Each commit of `factory`'s sessions takes as long as the list's last entry says, on
    `clock` (registered after the outbox's own listener, so after its row is written)."""
    delays = [0.0]

    def taking_long(_: Session) -> None:
        clock.advance(timedelta(seconds=delays[-1]))

    event.listen(factory.kw["sync_session_class"], "before_commit", taking_long)
    return delays


async def test_a_commit_that_lands_late_writes_its_row_again_under_a_new_id(
    factory: async_sessionmaker[AsyncSession], caplog: pytest.LogCaptureFixture
) -> None:
    """A reader gives up an id after GAP_WAIT_S; a commit that took over LATE_COMMIT_S since
    its row took that id writes the row again before the committing call returns, so a reader
    that stopped waiting reads the copy."""
    clock = FrozenClock(NOW)
    writer, _ = outbox_of(factory, "node-a", clock)
    before_each_commit(factory, writer.write_in)
    after_each_end(factory, writer.transaction_ended)
    delays = slow_commits(factory, clock)
    reader, heard = outbox_of(factory, "node-b", FrozenClock(NOW))
    await reader.prime()

    async with factory.begin() as db:
        await Sessions(db).remove("quick")
    delays.append(LATE_COMMIT_S + 1)
    async with factory.begin() as db:
        await Sessions(db).remove("slow")
    await reader.read_once()

    assert await remaining(factory) == ["quick", "slow", "slow"]
    async with factory() as db:
        ids = (await db.scalars(select(ChangeOutboxRow.id).order_by(ChangeOutboxRow.id))).all()
    assert len(set(ids)) == 3
    assert "written again" in caplog.text
    assert [set(c.ended_sessions) for c in heard] == [{"quick"}, {"slow"}, {"slow"}]


async def test_a_rolled_back_transaction_leaves_nothing_to_write_again(
    factory: async_sessionmaker[AsyncSession],
) -> None:
    clock = FrozenClock(NOW)
    writer, _ = outbox_of(factory, "node-a", clock)
    before_each_commit(factory, writer.write_in)
    after_each_end(factory, writer.transaction_ended)

    async def fail_at_commit() -> None:
        async with factory() as db:
            await Sessions(db).remove("signed-in")
            # As the commit would, then it fails:
            await db.run_sync(lambda session: writer.write_in(session, noted(session)))
            clock.advance(timedelta(seconds=LATE_COMMIT_S + 1))
            await db.rollback()

    await fail_at_commit()
    async with factory.begin() as db:
        await Sessions(db).remove("next")

    assert await remaining(factory) == ["next"]
