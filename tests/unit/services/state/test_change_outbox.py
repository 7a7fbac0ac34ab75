"""The Redis feed's backstop (services.state.change_outbox): what one process writes in its
committing transaction, the others read from the database, each change once, their own never;
a row that becomes visible below one already read (PostgreSQL takes ids at INSERT and shows
rows at COMMIT) is still read, however late, and an id is given up only once every transaction
that could hold it has ended; a rolled-back change is never heard; rows are pruned once the
pruning process has known of them for the keeping time, by its own clock, and nothing below
is still on its way; the Redis feed is live only while the outbox is read."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.support.databases import postgres_database
from twofa.clock import FrozenClock
from twofa.services.state.change_feed import decoded, encoded
from twofa.services.state.change_outbox import KEEP_FOR_S, ChangeOutbox
from twofa.services.state.feed_state import OUTBOX_SILENCE_LIMIT_S, FeedState
from twofa.storage.change_notes import Changes, before_each_commit
from twofa.storage.database import create_engine, session_factory
from twofa.storage.sessions import Sessions
from twofa.storage.tables import ChangeOutboxRow

NOW = datetime(2026, 12, 6, 20, 0, tzinfo=UTC)


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


async def test_an_id_missing_on_sqlite_is_given_up_at_once(
    factory: async_sessionmaker[AsyncSession],
) -> None:
    """SQLite's writers take turns: an id below a committed one is never still on its way."""
    reader, heard = outbox_of(factory, "node-b", FrozenClock(NOW))
    await reader.prime()
    body = encoded(Changes(ended_sessions=frozenset({"s"})), "node-a")
    async with factory.begin() as db:  # ids 1 and 2 were taken by transactions rolled back
        await db.execute(insert(ChangeOutboxRow), {"id": 3, "created_at": NOW, "payload": body})
    await reader.read_once()

    assert reader.waiting_for() == set()
    assert len(heard) == 1


# --- PostgreSQL: ids taken at INSERT, rows shown at COMMIT --------------------------------------


@pytest.fixture
async def pg(tmp_path: Path) -> AsyncIterator[Postgres]:
    async with postgres_database() as url:
        engine = create_engine(url)
        try:
            yield Postgres(session_factory(engine), url.replace("+asyncpg", ""))
        finally:
            await engine.dispose()


@dataclass(frozen=True)
class Postgres:
    factory: async_sessionmaker[AsyncSession]
    dsn: str

    async def committed(self, *row_ids: int) -> None:
        """Another node's sign-outs under these outbox ids (`s<id>`), committed."""
        async with self.factory.begin() as db:
            await db.execute(insert(ChangeOutboxRow), [row_of(row_id) for row_id in row_ids])

    @asynccontextmanager
    async def on_its_way(self, row_id: int) -> AsyncIterator[asyncpg.Transaction]:
        """A transaction that wrote row `row_id` and has not committed: the test commits or
        rolls back the transaction it is given, or it rolls back at the end."""
        connection = await asyncpg.connect(self.dsn)
        try:
            transaction = connection.transaction()
            await transaction.start()
            values = row_of(row_id)
            await connection.execute(
                "INSERT INTO change_outbox (id, created_at, payload) VALUES ($1, $2, $3)",
                row_id,
                values["created_at"],
                values["payload"],
            )
            yield transaction
        finally:
            await connection.close()


def row_of(row_id: int) -> dict[str, object]:
    body = encoded(Changes(ended_sessions=frozenset({f"s{row_id}"})), "node-a")
    return {"id": row_id, "created_at": datetime.now(UTC), "payload": body}


def ended(heard: list[Changes]) -> list[str]:
    return [session for changes in heard for session in sorted(changes.ended_sessions)]


async def read_until_settled(reader: ChangeOutbox, within_s: float = 10.0) -> None:
    """Reads until no id is awaited: every transaction that was running when one was missed
    has ended (other tests' transactions on the same server may hold the horizon a moment)."""
    deadline = time.monotonic() + within_s
    await reader.read_once()
    while reader.waiting_for() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        await reader.read_once()
    assert reader.waiting_for() == set()


async def test_a_row_whose_commit_comes_late_is_read_however_long_it_takes(pg: Postgres) -> None:
    """Id 5's transaction is still running while 151 later ids commit and the reader's clock
    runs on for an hour: it is awaited for as long as that transaction runs, and read when it
    commits. The ids nobody holds are given up once it has ended."""
    clock = FrozenClock(NOW)
    reader, heard = outbox_of(pg.factory, "node-b", clock)
    await reader.prime()
    async with pg.on_its_way(5) as slow:
        await pg.committed(500)
        await reader.read_once()
        for row_id in range(300, 450):
            await pg.committed(row_id)
            await reader.read_once()
        clock.advance(timedelta(hours=1))
        await reader.read_once()
        assert 5 in reader.waiting_for()
        await slow.commit()
    await read_until_settled(reader)

    assert ended(heard)[0] == "s500"
    assert ended(heard)[-1] == "s5"
    assert len(ended(heard)) == len(set(ended(heard))) == 152  # each once


async def test_an_id_whose_transaction_rolled_back_is_given_up_once_it_ended(
    pg: Postgres, caplog: pytest.LogCaptureFixture
) -> None:
    reader, heard = outbox_of(pg.factory, "node-b", FrozenClock(NOW))
    await reader.prime()
    async with pg.on_its_way(2) as doomed:
        await pg.committed(1, 3)
        await reader.read_once()
        assert reader.waiting_for() == {2}
        await doomed.rollback()
    await read_until_settled(reader)

    assert ended(heard) == ["s1", "s3"]
    assert "below the oldest row" not in caplog.text  # a rollback above it: nothing to say


async def test_a_process_started_while_a_change_is_on_its_way_still_hears_it(
    pg: Postgres,
) -> None:
    """A transaction took id 2 and has not committed when the process starts, while 1,500
    later ids have: the start-up awaits 2 and reads it when it commits."""
    await pg.committed(1)
    async with pg.on_its_way(2) as slow:
        await pg.committed(*range(3, 1503))
        reader, heard = outbox_of(pg.factory, "node-b", FrozenClock(NOW))
        await reader.prime()
        assert 2 in reader.waiting_for()
        await reader.read_once()  # still running: still awaited
        await slow.commit()
    await read_until_settled(reader)

    assert ended(heard) == ["s2"]


async def test_pruning_waits_for_the_transactions_running_when_it_read_that_far(
    pg: Postgres,
) -> None:
    """Rows below the pruning point may still be on their way (id 1 here): the pruner keeps
    everything until every transaction running when it read that far has ended."""
    clock = FrozenClock(NOW)
    pruner, heard = outbox_of(pg.factory, "node-b", clock)
    await pruner.prime()
    async with pg.on_its_way(1) as slow:
        await pg.committed(2, 3)
        await pruner.read_once()  # notes what it knows of now
        await pg.committed(4)
        clock.advance(timedelta(seconds=KEEP_FOR_S + 1))
        await pruner.read_once()
        assert await remaining(pg.factory) == ["s2", "s3", "s4"]
        await slow.commit()
    await read_until_settled(pruner)
    deadline = time.monotonic() + 10  # other tests' transactions on the server may run on
    while await remaining(pg.factory) != ["s3", "s4"] and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        await pruner.read_once()

    assert await remaining(pg.factory) == ["s3", "s4"]  # "s3", the newest at the point, stays
    assert sorted(ended(heard)) == ["s1", "s2", "s3", "s4"]
