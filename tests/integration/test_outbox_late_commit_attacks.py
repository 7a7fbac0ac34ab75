"""Attacks on the change outbox's late commits, gaps, start-up and pruning (adversary pass of
1555335). The promise under attack: with Redis, after a session ends (sign-out) on any node, no
node answers forward-auth ALLOW for it more than about a second after the sign-out returned;
and no node crashes, stops hearing the others for good, or loops hot because of the outbox.

1555335 judged lateness by clocks: a commit landing over 30 s after its outbox INSERT (by the
writer's monotonic clock) wrote its row again from an after-commit listener; readers waited 60 s
for a missing id (by theirs); a starting node awaited ids above the newest row the database
wrote a minute before. Seven of these attacks broke it (each docstring says how). Since, a
missing id is awaited until every transaction running when it was first missed has ended, by
PostgreSQL's own account (storage.change_outbox.Horizon), at start-up too; pruning waits for
the same; no row is written twice; at most MOST_AWAITED ids are awaited.

Each test is one attack and asserts the guarantee. A test marked xfail(strict) still breaks
it, for the reason its mark gives; the others are regression tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

import pytest
from sqlalchemy import delete, event, func, insert, select, text
from sqlalchemy.orm import Session

from tests.integration.test_change_outbox_attacks import one_value, promoted_sessions
from tests.integration.test_feed_outbox_sweep_attacks import (
    LeapingClock,
    Pair,
    newest_outbox_id,
    outbox_of,
    outbox_row_gone,
    redis_pair,
)
from tests.support.feed_attacks import redis_via, via
from tests.support.revocation import (
    all_live,
    feed_live,
    lets_in,
    node_settings,
    sign_out,
    signed_in,
    started,
    state_of,
    until,
    watch,
)
from tests.support.tcp_proxy import TcpProxy, tcp_proxy
from twofa.clock import Clock
from twofa.security.tokens import token_digest
from twofa.services.runtime import Gateway
from twofa.services.state.change_feed import encoded
from twofa.services.state.change_outbox import (
    KEEP_FOR_S,
    MOST_AWAITED,
)
from twofa.storage.change_notes import NOTES_KEY, Changes
from twofa.storage.tables import ChangeOutboxRow, table_of

A_MINUTE_S: Final = 61.0  # what 1555335's readers waited for an id, and a second


class FeedStuck(AssertionError):
    """A node's change outbox reads never succeed again: its feed stays lost for good."""


class SpuriousGeneration(AssertionError):
    """A node started a new feed generation although no row it had not read was pruned."""


# --- helpers --------------------------------------------------------------------------------


@asynccontextmanager
async def writer_node(
    nodes: Pair, clock: Clock | None = None, **extra: Any
) -> AsyncIterator[tuple[Gateway, TcpProxy]]:
    """A third node w on the pair's database and channel, reaching PostgreSQL through the
    proxy it yields (hold its COMMITs, cut it) and already cut off from Redis (a partition
    between w and Redis alone): what it commits reaches the others only through the outbox."""
    async with AsyncExitStack() as stack:
        w_db = await stack.enter_async_context(tcp_proxy("127.0.0.1", 5432))
        w_redis = await stack.enter_async_context(tcp_proxy("127.0.0.1", 6379))
        settings = node_settings(
            via(nodes.db_url, w_db.port),
            "redis",
            redis_url=redis_via(w_redis.port),
            channel=nodes.settings.redis_channel,
            **extra,
        )
        w = await stack.enter_async_context(started(settings, clock))
        await all_live(w)
        await w_redis.cut()
        yield w, w_db


async def pending_outbox_inserts(url: str) -> int:
    """Transactions that have INSERTed their outbox row (its id taken) and not committed."""
    found = await one_value(
        url,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND state = 'idle in transaction' AND query LIKE 'INSERT INTO change_outbox%'",
    )
    return int(str(found))


async def outbox_row_count(node: Gateway) -> int:
    async with node.db() as db:
        return int(await db.scalar(select(func.count()).select_from(ChangeOutboxRow)) or 0)


async def another_nodes_row(node: Gateway, *, row_id: int | None = None, age_s: float = 0) -> None:
    """A row of another node's change naming a user nobody has: under `row_id` if given (the
    sequence set forward to it: ids jumped), written `age_s` ago by its writer's clock (an
    older version wrote the node's clock)."""
    body = encoded(Changes(changed_users=frozenset({10**9})), "other-node")
    row: dict[str, Any] = {"created_at": node.clock.now() - timedelta(seconds=age_s)}
    row["payload"] = body
    if row_id is not None:
        row["id"] = row_id
    async with node.db.begin() as db:
        await db.execute(insert(table_of(ChangeOutboxRow)), row)
        if row_id is not None and node.engine.dialect.name == "postgresql":  # as nextval would
            sequence = "pg_get_serial_sequence('change_outbox', 'id')"
            await db.execute(text(f"SELECT setval({sequence}, :id)"), {"id": row_id})


def anyone_in(node: Gateway, tokens: list[str]) -> Any:
    """A watch check: whether the node lets any of `tokens` in."""

    async def check() -> bool:
        return any(await asyncio.gather(*(lets_in(node, token)() for token in tokens)))

    return check


async def stuck_for_a_minute(
    w: Gateway,
    w_db: TcpProxy,
    w_clock: LeapingClock,
    w_counts_s: float,
    reader: Gateway,
    reader_clock: LeapingClock,
    tokens: list[str],
    db_url: str,
) -> list[asyncio.Task[float]]:
    """w signs `tokens` out, each COMMIT stuck on w's path (held 4 s); meanwhile the reader
    commits the next outbox id and reads it, so it awaits w's ids; then a minute passes on the
    reader's clock and `w_counts_s` on w's: the reader still awaits w's ids (their transactions
    run on), and still lets every token in (right: nothing has committed). Returns the
    sign-outs, still running."""
    (other,) = await promoted_sessions(reader, "alice", 1)
    for token in tokens:
        assert await lets_in(reader, token)()
    w_db.hold_up_pattern, w_db.hold_up_seconds = b"COMMIT;", 4.0
    signing_out = [asyncio.create_task(sign_out(w, token)) for token in tokens]

    async def all_pending() -> bool:
        return await pending_outbox_inserts(db_url) >= len(tokens)

    assert await until(all_pending, 3), "w's INSERTs never came"
    await sign_out(reader, other)  # the next id, committed at once
    await asyncio.sleep(0.6)
    assert len(outbox_of(reader).waiting_for()) >= len(tokens), "the reader awaits no id of w's"
    w_clock.leap(w_counts_s)
    reader_clock.leap(A_MINUTE_S)
    await asyncio.sleep(0.6)  # reads on the reader's new time
    assert len(outbox_of(reader).waiting_for()) >= len(tokens), "the reader gave w's ids up"
    assert await until(feed_live(reader), 3)
    for token in tokens:
        assert await lets_in(reader, token)()  # read again: not signed out yet
    assert not any(task.done() for task in signing_out), "w's sign-outs committed too early"
    return signing_out


# --- 1. The writer's clock decides alone whether a commit was late ------------------------------


@pytest.mark.parametrize(
    "w_counts_s",
    [
        pytest.param(0.0, id="writer-suspended"),
        pytest.param(24.5, id="writer-counts-29s"),  # and the 4 s the COMMIT is held
        pytest.param(31.0, id="writer-counts-31s"),
    ],
)
async def test_attack_a_commit_late_for_the_reader_but_not_for_the_writer(
    tmp_path: Path, w_counts_s: float
) -> None:
    """w, cut off from Redis, signs bob out; its COMMIT is stuck while a minute passes on the
    reader's clock. w's monotonic clock counts only `w_counts_s` of that minute: its machine
    was suspended between its INSERT and its COMMIT (a suspended machine's monotonic clock
    stops), or only its last 31 s. Then the COMMIT lands. b must refuse bob within the second.
    (Broke 1555335 but for 31 s: lateness was the writer's clock's call, giving up the
    reader's.)"""
    w_clock, b_clock = LeapingClock(), LeapingClock()
    async with (
        redis_pair("postgresql", tmp_path, clock_b=b_clock) as nodes,
        writer_node(nodes, w_clock) as (w, w_db),
    ):
        b = nodes.b
        token = await signed_in(b)
        signing_out = await stuck_for_a_minute(
            w, w_db, w_clock, w_counts_s, b, b_clock, [token], nodes.db_url
        )
        (ended,) = await asyncio.wait_for(asyncio.gather(*signing_out), 10)
        w_db.hold_up_pattern = None
        seen = await watch(lets_in(b, token), ended, until_s=2.0)
        seen.keep_promise(f"a COMMIT late by a minute, {w_counts_s:.0f} s by the writer's clock")


async def test_attack_a_starting_node_and_a_commit_late_by_the_database_clock_only(
    tmp_path: Path,
) -> None:
    """w, cut off from Redis, signs bob out; its COMMIT is stuck while a minute passes by the
    database's clock (the row above w's id, another node's, is made to look 61 s old: the
    database's clock passed the minute; w's machine was suspended, its clock counted none of
    it). c starts then: it awaits only ids above that row, so not w's; the COMMIT lands, not
    late by w's clock, so not written again. c must refuse bob within the second. (Broke
    1555335: its start-up judged by the database's clock, lateness by the writer's.)"""
    async with (
        redis_pair("postgresql", tmp_path) as nodes,
        writer_node(nodes) as (w, w_db),
    ):
        b = nodes.b
        token = await signed_in(b)
        w_db.hold_up_pattern, w_db.hold_up_seconds = b"COMMIT;", 4.0
        signing_out = asyncio.create_task(sign_out(w, token))

        async def pending() -> bool:
            return await pending_outbox_inserts(nodes.db_url) >= 1

        assert await until(pending, 3), "w's INSERT never came"
        await another_nodes_row(b, age_s=A_MINUTE_S)
        async with started(nodes.settings) as c:
            await all_live(c)
            assert await lets_in(c, token)()
            assert not signing_out.done(), "w's sign-out committed before c was up"
            ended = await asyncio.wait_for(signing_out, 10)
            w_db.hold_up_pattern = None
            seen = await watch(lets_in(c, token), ended, until_s=2.0)
            seen.keep_promise("a commit a minute late by the database's clock, not the writer's")


# --- 2. The rewrite itself fails ----------------------------------------------------------------


def cut_right_after_the_commit(node: Gateway, proxy: TcpProxy, session_id: str) -> None:
    """Once the commit that ends `session_id` on `node` has landed, its path to the database is
    cut before anything else is sent (first of the after-commit listeners)."""
    session_class = node.db.kw["sync_session_class"]
    cutting: list[asyncio.Future[None]] = []

    def cut(session: Session) -> None:
        changes = session.info.get(NOTES_KEY)
        if isinstance(changes, Changes) and session_id in changes.ended_sessions:
            cutting.append(asyncio.ensure_future(proxy.cut()))  # before the rewrite is sent

    event.listen(session_class, "after_commit", cut, insert=True)


async def test_attack_a_late_commit_whose_writer_is_cut_off_right_after_it_is_heard(
    tmp_path: Path,
) -> None:
    """w's sign-out of bob is stuck in COMMIT for a minute on every clock; w's path to
    PostgreSQL is cut right after the COMMIT landed (a flapping link; or w's process dies
    there). The sign-out returns all the same. b must refuse bob within the second. (Broke
    1555335, where b had given the id up and w's rewrite of its row failed.)"""
    w_clock, b_clock = LeapingClock(), LeapingClock()
    async with (
        redis_pair("postgresql", tmp_path, clock_b=b_clock) as nodes,
        writer_node(nodes, w_clock) as (w, w_db),
    ):
        b = nodes.b
        token = await signed_in(b)
        cut_right_after_the_commit(w, w_db, token_digest(token))
        signing_out = await stuck_for_a_minute(
            w, w_db, w_clock, A_MINUTE_S, b, b_clock, [token], nodes.db_url
        )
        (ended,) = await asyncio.wait_for(asyncio.gather(*signing_out), 10)
        seen = await watch(lets_in(b, token), ended, until_s=2.0)
        seen.keep_promise("a late commit whose rewrite failed")


# --- 3. Several late commits at once, and the pool the rewrite needs ---------------------------


@pytest.mark.parametrize(
    ("pool_size", "sign_outs"),
    [
        pytest.param(20, 5, id="pool-20-five-at-once"),
        pytest.param(1, 1, id="pool-1"),
    ],
)
async def test_attack_late_commits_need_a_second_connection_each(
    tmp_path: Path, pool_size: int, sign_outs: int
) -> None:
    """w (database_pool_size as given) signs out `sign_outs` sessions at once, each COMMIT
    stuck for a minute on every clock. The pool's wait for a connection (30 s) is shortened to
    2 s here, as the clocks' minute is a leap. b must refuse every session within the second.
    (Broke 1555335 on a pool of 1: each late commit wrote its row again on a second connection
    while its session held the first.)"""
    w_clock, b_clock = LeapingClock(), LeapingClock()
    async with (
        redis_pair("postgresql", tmp_path, clock_b=b_clock) as nodes,
        writer_node(nodes, w_clock, database_pool_size=pool_size) as (w, w_db),
    ):
        w.engine.sync_engine.pool._timeout = 2.0  # type: ignore[attr-defined]
        b = nodes.b
        tokens = await promoted_sessions(b, "bob", sign_outs)
        signing_out = await stuck_for_a_minute(
            w, w_db, w_clock, A_MINUTE_S, b, b_clock, tokens, nodes.db_url
        )
        ended = max(await asyncio.wait_for(asyncio.gather(*signing_out), 15))
        w_db.hold_up_pattern = None
        seen = await watch(anyone_in(b, tokens), ended, until_s=2.0, step_s=0.02)
        seen.keep_promise(f"{sign_outs} late commits on a pool of {pool_size}")


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_attack_a_commit_slow_by_the_writers_clock_is_written_once_and_heard(
    kind: str, tmp_path: Path
) -> None:
    """a, cut off from Redis, signs bob out; between its outbox INSERT and its COMMIT its
    clock leaps 31 s (SQLite: a slow fsync). One row, and b refuses bob within the second."""
    clock_a = LeapingClock()
    async with redis_pair(kind, tmp_path, clock_a=clock_a) as nodes:
        a, b = nodes.a, nodes.b
        token = await signed_in(b)
        assert await lets_in(b, token)()
        await nodes.a_redis.cut()
        session_class = a.db.kw["sync_session_class"]

        def slow_commit(session: Session) -> None:  # after the outbox's INSERT
            changes = session.info.get(NOTES_KEY)
            if isinstance(changes, Changes) and token_digest(token) in changes.ended_sessions:
                clock_a.leap(31.0)

        event.listen(session_class, "before_commit", slow_commit)
        rows = await outbox_row_count(a)
        ended = await asyncio.wait_for(sign_out(a, token), 10)
        assert await outbox_row_count(a) == rows + 1
        seen = await watch(lets_in(b, token), ended, until_s=1.5)
        seen.keep_promise(f"{kind}: a commit slow by the writer's clock")


# --- 4. A starting node ------------------------------------------------------------------------


async def test_attack_a_start_up_gap_pruned_while_the_starting_node_was_paused(
    tmp_path: Path,
) -> None:
    """c starts while a's sign-out of bob (a cut off from Redis) has taken its outbox id and
    waits for its COMMIT, and b's next id has committed: c awaits a's id (a gap from its
    start-up) and holds a copy of bob. Then c is paused (its database path stalls; its machine
    suspended, so its clock counts none of it, as in test_feed_outbox_sweep_attacks'
    paused-reader test), a's COMMIT lands, and a prunes its row (a's clock leaps twice the
    keeping time; the row above it, b's, stays as the marker). c resumes; bob asks. c must
    refuse him: it never read the row, so it must not trust its copy. (Broke 1555335: gaps
    from the start-up were exempt from the pruned-unread check.)"""
    clock_a = LeapingClock()
    async with (
        redis_pair("postgresql", tmp_path, db_proxy="a", clock_a=clock_a) as nodes,
        tcp_proxy("127.0.0.1", 5432) as c_db,
    ):
        a, b, a_db = nodes.a, nodes.b, nodes.db
        assert a_db is not None
        token = await signed_in(b)
        (other,) = await promoted_sessions(b, "alice", 1)
        await nodes.a_redis.cut()
        a_db.hold_up_pattern, a_db.hold_up_seconds = b"COMMIT;", 3.0
        signing_out = asyncio.create_task(sign_out(a, token))

        async def pending() -> bool:
            return await pending_outbox_inserts(nodes.db_url) >= 1

        assert await until(pending, 3), "a's INSERT never came"
        await sign_out(b, other)  # the next id, committed at once
        url = direct_redis_url(nodes)
        settings_c = node_settings(
            via(nodes.db_url, c_db.port),
            "redis",
            redis_url=url,
            channel=nodes.settings.redis_channel,
        )
        async with started(settings_c) as c:
            await all_live(c)
            assert await lets_in(c, token)()
            awaited = outbox_of(c).waiting_for()
            assert awaited, "c awaits no id from its start-up"
            written = max(awaited)
            c_db.stall()
            try:
                ended = await asyncio.wait_for(signing_out, 10)
                a_db.hold_up_pattern = None
                for _ in range(2):  # a reads the row, notes it, then prunes it
                    await asyncio.sleep(0.6)
                    clock_a.leap(KEEP_FOR_S + 1)
                assert await until(outbox_row_gone(a, written), 5), "a never pruned the row"
            finally:
                c_db.resume()
            assert await until(feed_live(c), 3), "c's feed never came back"
            loop = asyncio.get_running_loop()
            seen = await watch(lets_in(c, token), ended, until_s=loop.time() - ended + 0.6)
            seen.keep_promise("a start-up gap pruned while c was paused")


def direct_redis_url(nodes: Pair) -> str:
    """The direct Redis URL of the pair (the settings' own)."""
    assert nodes.settings.redis_url is not None
    return nodes.settings.redis_url.get_secret_value()


async def test_attack_a_node_starting_above_a_row_dated_by_a_slow_node_clock(
    tmp_path: Path,
) -> None:
    """A rolling upgrade: w (this version, cut off from Redis) signs bob out, its COMMIT on its
    way for 3 s; meanwhile a node still on the previous version, whose clock is 2 minutes
    slow, commits the next id with its own time as created_at (1555335's readers see a row
    written 2 minutes ago). c starts then, and bob asks it after the sign-out returned.
    (Broke 1555335, whose start-up trusted created_at to be the database's clock.)"""
    async with (
        redis_pair("postgresql", tmp_path) as nodes,
        writer_node(nodes) as (w, w_db),
    ):
        b = nodes.b
        token = await signed_in(b)
        w_db.hold_up_pattern, w_db.hold_up_seconds = b"COMMIT;", 4.0
        signing_out = asyncio.create_task(sign_out(w, token))

        async def pending() -> bool:
            return await pending_outbox_insert_count_at_least(nodes.db_url, 1)

        assert await until(pending, 3), "w's INSERT never came"
        await another_nodes_row(b, age_s=120)  # the old version's add_in, by its slow clock
        async with started(nodes.settings) as c:
            await all_live(c)
            assert await lets_in(c, token)()
            assert not signing_out.done(), "w's sign-out committed before c was up"
            ended = await asyncio.wait_for(signing_out, 10)
            w_db.hold_up_pattern = None
            seen = await watch(lets_in(c, token), ended, until_s=2.0)
            seen.keep_promise("a sign-out on its way below a row dated by a slow node's clock")


async def pending_outbox_insert_count_at_least(url: str, count: int) -> bool:
    return await pending_outbox_inserts(url) >= count


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_attack_a_node_starting_with_ten_thousand_ids_to_await_refuses_in_time(
    kind: str, tmp_path: Path
) -> None:
    """The outbox's ids jumped (a sequence set forward after a restore): the newest row's id is
    20,001 above the one before, all rows young. c starts: it awaits at most the highest
    10,000 missing ids, and only while a transaction that was running at its start runs on,
    asking for them by name (SQLite's and PostgreSQL's parameter limits, the statement's
    size). A sign-out through a node cut off from Redis is refused by c within the second all
    the same. (At 1555335 such reads cost 60-300 ms of PostgreSQL and the event loop, four
    times a second for a minute.)"""
    async with redis_pair(kind, tmp_path) as nodes:
        a, b = nodes.a, nodes.b
        newest = await newest_outbox_id(b)
        await another_nodes_row(b, row_id=newest + 20_001)
        async with started(nodes.settings) as c:
            await all_live(c)
            assert len(outbox_of(c).waiting_for()) <= MOST_AWAITED
            token = await signed_in(c)
            assert await lets_in(c, token)()
            await nodes.a_redis.cut()
            ended = await sign_out(a, token)
            seen = await watch(lets_in(c, token), ended, until_s=1.5)
            seen.keep_promise(f"{kind}: a sign-out while c awaited 10,000 ids")
            assert await until(feed_live(c), 3), "c's feed never live while it awaited"


# --- 5. Awaited ids beyond a statement's parameters ---------------------------------------------


async def test_attack_an_id_jump_beyond_the_parameter_limit_while_nodes_run(
    tmp_path: Path,
) -> None:
    """While a and b run, the outbox's ids jump by 40,001 (a sequence set forward after a
    restore, an operator's setval): b awaits at most MOST_AWAITED of the 40,000 missing ids,
    its reads go on succeeding, and it gives them up once the transactions running then have
    ended. (Broke 1555335: every missing id was awaited by name, above 32,767 asyncpg refused
    the statement, and no read ever succeeded again: every node's feed was lost for good.)"""
    async with redis_pair("postgresql", tmp_path) as nodes:
        b = nodes.b
        newest = await newest_outbox_id(b)
        await another_nodes_row(b, row_id=newest + 40_001)
        await asyncio.sleep(0.6)
        assert len(outbox_of(b).waiting_for()) <= MOST_AWAITED
        if not await until(lambda: not outbox_of(b).waiting_for(), 10):
            raise FeedStuck("b still awaits ids 10 s on: its reads fail")
        assert await until(feed_live(b), 3)


# --- 6. Generations ------------------------------------------------------------------------------


@pytest.mark.xfail(
    strict=True,
    raises=SpuriousGeneration,
    reason="a node primed on an empty outbox reads from id 0: the first row committed after "
    "(the sequence goes on from where it was) makes `oldest > read_above + 1` "
    "(ChangeOutbox._pruned_above) true though nothing was pruned; its caches stop trusting "
    "their copies (a cost, not a breach). The same on a fresh database when id 1 is still on "
    "its way as id 2 commits",
)
async def test_attack_an_emptied_outbox_starts_no_generation(tmp_path: Path) -> None:
    """The outbox's rows were all deleted (an operator's TRUNCATE, a restore without them:
    the sequence goes on). c starts on the empty outbox; then b signs alice out, the first row
    since. Nothing was pruned that c had not read: c must not start a new feed generation."""
    async with redis_pair("postgresql", tmp_path) as nodes:
        b = nodes.b
        (session,) = await promoted_sessions(b, "alice", 1)
        async with b.db.begin() as db:
            await db.execute(delete(table_of(ChangeOutboxRow)))
        async with started(nodes.settings) as c:
            await all_live(c)
            generation = state_of(c).generation
            await sign_out(b, session)
            await asyncio.sleep(0.6)
            if state_of(c).generation != generation:
                raise SpuriousGeneration(f"c's generation {generation} -> {state_of(c).generation}")


async def test_attack_two_pruners_at_different_points_keep_a_marker_for_a_paused_reader(
    tmp_path: Path,
) -> None:
    """Two pruners, a and c, whose clocks leap by different amounts, prune at different points
    while b's path to PostgreSQL stalls and a (cut off from Redis) signs bob out and later
    alice: the pruning of one must not remove the marker the other kept, so b, resumed, sees
    rows were pruned that it never read and refuses bob."""
    clock_a, clock_c = LeapingClock(), LeapingClock()
    async with redis_pair("postgresql", tmp_path, db_proxy="b", clock_a=clock_a) as nodes:
        a, b, b_db = nodes.a, nodes.b, nodes.db
        assert b_db is not None
        async with started(nodes.settings, clock_c) as c:
            await all_live(c)
            token = await signed_in(a)
            later = await promoted_sessions(a, "alice", 3)
            assert await lets_in(b, token)()
            generation = state_of(b).live_generation
            await nodes.a_redis.cut()
            b_db.stall()
            try:
                ended = await sign_out(a, token)
                written = await newest_outbox_id(a)
                for step, session in enumerate(later):
                    await sign_out(a, session)
                    await asyncio.sleep(0.6)
                    clock_a.leap(KEEP_FOR_S + 1)
                    if step % 2:
                        clock_c.leap(KEEP_FOR_S + 1)
                await asyncio.sleep(0.6)
                clock_c.leap(KEEP_FOR_S + 1)
                await asyncio.sleep(0.6)
                assert await until(outbox_row_gone(a, written), 5), "never pruned"
            finally:
                b_db.resume()
            assert await until(feed_live(b), 3), "b's feed never came back"
            loop = asyncio.get_running_loop()
            seen = await watch(lets_in(b, token), ended, until_s=loop.time() - ended + 0.6)
            seen.keep_promise("a sign-out pruned by two pruners while b was paused")
            assert state_of(b).live_generation != generation
