"""Attacks on the change outbox's horizon rule (adversary pass of 45e942c). The promise under
attack: with Redis, after a session ends (sign-out) on any node, no node answers forward-auth
ALLOW for it more than about a second after the sign-out returned; and no node crashes, loops
hot, grows without bound or stops hearing the others for good because of the outbox.

45e942c awaits an id missing below one read until a later read's snapshot has
pg_snapshot_xmin >= the pg_snapshot_xmax recorded when the id was first missed
(storage.change_outbox.Horizon: "every transaction running then has an id below next_id");
a starting node awaits missing ids only while xmin < xmax. PostgreSQL's snapshot xmax is
latestCompletedXid + 1, not the next transaction id to be assigned: a transaction still
running whose xid is above every completed one is neither below xmax nor counted in xmin.

Three of these attacks broke 45e942c (their docstrings say how). Since, a read that misses an
id takes a transaction id of its own, and the id is given up only once a later snapshot has
ended every transaction below that one (xmax above it, xmin at or above it); the writer takes
its transaction id before the row's id. Each test is one attack and asserts the guarantee."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

import asyncpg
import pytest
from sqlalchemy import func, select

from tests.integration.test_change_outbox_attacks import asyncpg_dsn, promoted_sessions
from tests.integration.test_feed_outbox_sweep_attacks import (
    LeapingClock,
    Pair,
    newest_outbox_id,
    outbox_of,
    redis_pair,
)
from tests.integration.test_outbox_late_commit_attacks import (
    pending_outbox_inserts,
    writer_node,
)
from tests.support.revocation import (
    all_live,
    feed_live,
    lets_in,
    sign_out,
    signed_in,
    started,
    state_of,
    until,
    watch,
)
from tests.support.tcp_proxy import TcpProxy
from twofa.services.runtime import Gateway
from twofa.services.state.change_feed import encoded
from twofa.services.state.change_outbox import KEEP_FOR_S, MOST_AWAITED
from twofa.storage import change_outbox
from twofa.storage.change_notes import Changes
from twofa.storage.tables import ChangeOutboxRow

ATTEMPTS: Final = 6  # other work on the shared cluster may complete a higher xid in the window
_OTHER_ROW: Final = (
    "INSERT INTO change_outbox (created_at, payload) VALUES (now(), $1) RETURNING id"
)


class NotSetUp(AssertionError):
    """Every attempt was spoiled by other transactions of the cluster (the attack needs no
    transaction with a higher xid to complete in a window of about a quarter second)."""


class FirstMissedBelowItsXid(AssertionError):
    """A reader gave an id up while the transaction that took it still ran."""


# --- helpers ---------------------------------------------------------------------------------


def harmless_body() -> str:
    """Another node's change naming a user nobody has."""
    return encoded(Changes(changed_users=frozenset({10**9})), "other-node")


@asynccontextmanager
async def raw(url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        yield connection
    finally:
        await connection.close()


async def pending_insert_xid(url: str) -> int | None:
    """The xid of the (one) transaction that INSERTed its outbox row and has not committed."""
    async with raw(url) as admin:
        found = await admin.fetchval(
            "SELECT backend_xid::text::bigint FROM pg_stat_activity "
            "WHERE datname = current_database() AND state = 'idle in transaction' "
            "AND query LIKE 'INSERT INTO change_outbox%'"
        )
    return None if found is None else int(found)


async def inverted_sign_out(
    nodes: Pair, w: Gateway, w_db: TcpProxy, token: str, hold_s: float
) -> tuple[asyncio.Task[float], int, int]:
    """The xid order against the id order: an earlier transaction (xid X2) is writing; then w,
    cut off from Redis, signs `token` out (xid X1 > X2) and takes outbox id k, its COMMIT held
    `hold_s` on w's path; then the earlier transaction takes k + 1 and commits. No completed
    xid is >= X1 now, so every snapshot's xmax is <= X1. Returns the sign-out, k and X1."""
    w_db.hold_up_pattern, w_db.hold_up_seconds = b"COMMIT;", hold_s
    async with raw(nodes.db_url) as earlier:
        transaction = earlier.transaction()
        await transaction.start()
        await earlier.fetchval("SELECT pg_current_xact_id()")  # its first write: an xid
        signing_out = asyncio.create_task(sign_out(w, token))

        async def pending() -> bool:
            return await pending_outbox_inserts(nodes.db_url) >= 1

        assert await until(pending, 3), "w's INSERT never came"
        above = int(await earlier.fetchval(_OTHER_ROW, harmless_body()))
        await transaction.commit()
    xid = await pending_insert_xid(nodes.db_url)
    assert xid is not None
    return signing_out, above - 1, xid


# --- 1. The xid order against the id order -------------------------------------------------------


async def test_attack_a_sign_out_whose_xid_is_above_every_completed_one(tmp_path: Path) -> None:
    """Two sign-outs at a quiet moment: transaction E (another node's) began writing first
    (lower xid), w's (cut off from Redis) began later but took its outbox id first, and its
    COMMIT is held up on w's path; E commits the next id. b reads: it misses w's id and
    records the snapshot's xmax, which is latestCompletedXid + 1 = E's xid + 1, not above w's.
    b's next read has xmin >= that (w's xid is not below its xmax, so not counted). Then w's
    COMMIT lands. b must await the id while w's transaction runs, and refuse bob within a
    second of the sign-out returning. (Broke 45e942c, which gave the id up on that xmin.)"""
    async with (
        redis_pair("postgresql", tmp_path) as nodes,
        writer_node(nodes) as (w, w_db),
    ):
        b = nodes.b
        tokens = await promoted_sessions(b, "bob", ATTEMPTS)
        for attempt, token in enumerate(tokens):
            assert await lets_in(b, token)()
            signing_out, missing, xid = await inverted_sign_out(nodes, w, w_db, token, 2.5)
            await asyncio.sleep(0.8)  # b's reads: the first misses `missing`, the next settle
            given_up = missing not in outbox_of(b).waiting_for()
            assert not given_up, f"b gave id {missing} up while w's transaction (xid {xid}) ran"
            assert not signing_out.done(), "w's sign-out committed too early"
            ended = await asyncio.wait_for(signing_out, 10)
            w_db.hold_up_pattern = None
            if given_up or attempt == len(tokens) - 1:
                seen = await watch(lets_in(b, token), ended, until_s=2.0)
                seen.keep_promise(f"a sign-out with xid {xid} above every completed one")
                return
            await asyncio.sleep(0.6)  # spoiled (a higher xid completed): read it, try again


async def test_attack_a_node_starting_while_a_sign_out_with_the_highest_xid_runs(
    tmp_path: Path,
) -> None:
    """As above, but c starts after E committed, while w's COMMIT is held up: c's start-up
    snapshot has xmin == xmax (nothing running below latestCompletedXid + 1), so c thinks no
    transaction runs and awaits none of the missing ids. c holds a copy of bob; w's COMMIT
    lands. c must await the id, and refuse bob within a second of the sign-out returning.
    (Broke 45e942c, whose start-up took xmin == xmax for "nothing runs".)"""
    async with (
        redis_pair("postgresql", tmp_path) as nodes,
        writer_node(nodes) as (w, w_db),
    ):
        b = nodes.b
        tokens = await promoted_sessions(b, "bob", 3)
        for attempt, token in enumerate(tokens):
            signing_out, missing, _ = await inverted_sign_out(nodes, w, w_db, token, 6.0)
            async with started(nodes.settings) as c:
                await all_live(c)
                assert await lets_in(c, token)()
                awaited = missing in outbox_of(c).waiting_for()
                assert awaited, f"c's start-up does not await id {missing}"
                assert not signing_out.done(), "w's sign-out committed before c was up"
                ended = await asyncio.wait_for(signing_out, 10)
                w_db.hold_up_pattern = None
                if not awaited or attempt == len(tokens) - 1:
                    seen = await watch(lets_in(c, token), ended, until_s=2.0)
                    seen.keep_promise("a node started while the highest xid's sign-out ran")
                    return


async def test_attack_an_outbox_insert_that_is_its_transactions_first_write(
    tmp_path: Path,
) -> None:
    """A transaction whose outbox INSERT is its first write: its backend descheduled between
    taking the row's id and writing it (emulated: nextval, then the INSERT with that id), b
    commits the next id and reads twice. b must still await the id while the transaction runs.
    (Broke 45e942c, where nextval came before the transaction's id; storage.change_outbox.add_in
    now takes the transaction's id first, and so does this emulation.)"""
    async with redis_pair("postgresql", tmp_path) as nodes:
        b = nodes.b
        (other,) = await promoted_sessions(b, "alice", 1)
        async with raw(nodes.db_url) as writer:
            sequence = "pg_get_serial_sequence('change_outbox', 'id')"
            await writer.fetchval(f"SELECT nextval({sequence})")  # WAL-logs: 32 without an xid
            transaction = writer.transaction()
            await transaction.start()
            await writer.fetchval("SELECT pg_current_xact_id()")  # as add_in does, first
            taken = int(await writer.fetchval(f"SELECT nextval({sequence})"))
            await sign_out(b, other)  # the next id, committed at once
            await asyncio.sleep(0.8)
            await writer.execute(
                "INSERT INTO change_outbox (id, created_at, payload) VALUES ($1, now(), $2)",
                taken,
                harmless_body(),
            )
            await asyncio.sleep(0.6)
            still = taken in outbox_of(b).waiting_for()
            await transaction.commit()
        if not still:
            raise FirstMissedBelowItsXid(f"b gave id {taken} up while its transaction ran")


# --- 2. Unrelated long transactions hold the horizon back -----------------------------------------


async def test_attack_a_long_transaction_in_another_database_holds_gaps_and_pruning(
    tmp_path: Path,
) -> None:
    """A transaction with an xid left open in another database of the same cluster (xmin is
    cluster-wide), while an id is rolled back and ids jump (10,000 missing in all): b awaits
    the ids and does not prune, however long its clock leaps, and keeps refusing a sign-out
    of a node cut off from Redis within the second; its reads stay cheap enough (measured:
    about 60 ms for 10,000 awaited ids) and its feed live. Once the transaction ends, b gives
    every id up within a second, without a new generation, and prunes again."""
    clock_b = LeapingClock()
    async with redis_pair("postgresql", tmp_path, clock_b=clock_b) as nodes:
        a, b = nodes.a, nodes.b
        token = await signed_in(b)
        generation = state_of(b).generation
        admin_url = nodes.db_url.rsplit("/", 1)[0] + "/postgres"
        async with raw(admin_url) as unrelated, raw(nodes.db_url) as writer:
            held = unrelated.transaction()
            await held.start()
            await unrelated.fetchval("SELECT pg_current_xact_id()")
            rolled = writer.transaction()
            await rolled.start()
            await writer.fetchval(_OTHER_ROW, harmless_body())
            await rolled.rollback()
            newest = await newest_outbox_id(b)
            sequence = "pg_get_serial_sequence('change_outbox', 'id')"
            await writer.fetchval(f"SELECT setval({sequence}, $1)", newest + MOST_AWAITED)
            await writer.fetchval(_OTHER_ROW, harmless_body())
            await asyncio.sleep(0.6)
            awaited = outbox_of(b).waiting_for()
            assert len(awaited) == MOST_AWAITED, len(awaited)
            rows_before = await row_count(b)
            for _ in range(3):
                clock_b.leap(KEEP_FOR_S + 1)
                await asyncio.sleep(0.6)
            assert await row_count(b) == rows_before, "pruned past a running transaction"
            assert outbox_of(b).waiting_for() == awaited
            took = await timed_read(b, awaited)
            assert took < 0.25, f"a read awaiting {len(awaited)} ids took {took:.3f} s"
            assert await until(feed_live(b), 3)
            assert await lets_in(b, token)()
            await nodes.a_redis.cut()
            ended = await sign_out(a, token)
            seen = await watch(lets_in(b, token), ended, until_s=1.5)
            seen.keep_promise("a sign-out while a long transaction held the horizon")
            await held.commit()
        assert await until(lambda: not outbox_of(b).waiting_for(), 1.5), "ids still awaited"
        assert state_of(b).generation == generation, "a new generation for ids never written"
        clock_b.leap(KEEP_FOR_S + 1)
        await asyncio.sleep(0.6)
        clock_b.leap(KEEP_FOR_S + 1)
        assert await until(lambda: row_count_at_most(b, 1), 3), "pruning never came back"


async def row_count(node: Gateway) -> int:
    async with node.db() as db:
        return int(await db.scalar(select(func.count()).select_from(ChangeOutboxRow)) or 0)


async def row_count_at_most(node: Gateway, most: int) -> bool:
    return await row_count(node) <= most


async def timed_read(node: Gateway, awaited: set[int]) -> float:
    """The wall time of one of the node's reads (the statement and its rows), median of 5."""
    times = []
    for _ in range(5):
        began = time.perf_counter()
        async with node.db.begin() as db:
            await change_outbox.unread(db, await newest_outbox_id(node), awaited)
        times.append(time.perf_counter() - began)
    return sorted(times)[2]


# --- 3. SQLite with Redis ---------------------------------------------------------------------


async def test_attack_sqlite_gives_a_rolled_back_id_up_and_hears_the_next(tmp_path: Path) -> None:
    """SQLite (several processes on one machine, Redis between them): a sign-out rolled back
    after its outbox INSERT, then one committed through a node cut off from Redis. No id is
    awaited, no new generation, and the committed sign-out is refused within the second."""
    async with redis_pair("sqlite", tmp_path) as nodes:
        a, b = nodes.a, nodes.b
        token = await signed_in(b)
        generation = state_of(b).generation
        await nodes.a_redis.cut()
        with pytest.raises(RuntimeError):
            await outbox_row_rolled_back(a)
        assert await lets_in(b, token)()
        ended = await sign_out(a, token)
        seen = await watch(lets_in(b, token), ended, until_s=1.5)
        seen.keep_promise("sqlite: a sign-out after a rolled-back outbox id")
        assert not outbox_of(b).waiting_for()
        assert state_of(b).generation == generation


async def outbox_row_rolled_back(node: Gateway) -> None:
    """An outbox INSERT in a transaction that then rolls back (raises RuntimeError)."""
    async with node.db.begin() as db:
        body = encoded(Changes(ended_sessions=frozenset({"x"})), "a")
        await db.run_sync(change_outbox.add_in, body)
        raise RuntimeError("rolled back after its INSERT")
