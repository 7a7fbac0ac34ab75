"""Attacks on the change outbox's pruning and feed generations (third adversary pass, of
18c198b). The promise under attack: with Redis, after a session ends (sign-out) on any node, no
node answers forward-auth ALLOW for it more than about a second after the sign-out returned;
and no node crashes, loops hot, grows without bound or stops hearing the others for good
because of the outbox.

The rule attacked: once a minute a node notes (its monotonic time, the newest id it read, a
transaction id R taken at that read); it deletes rows up to a noted id once it has known it
ten minutes and a read's snapshot has ended every transaction below R; the newest row at or
below the pruning point stays (the marker). A reader that finds rows above what it read pruned
(oldest kept > read_above + 1), or gives up an awaited id below the oldest row kept (unless the
id was below the oldest row at its start-up), starts a new feed generation. Each test is one
attack and asserts the guarantee; the breaks are strict xfails whose reason says why."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

import pytest
from sqlalchemy import delete

from tests.integration.test_change_outbox_attacks import promoted_sessions
from tests.integration.test_feed_outbox_sweep_attacks import (
    LeapingClock,
    newest_outbox_id,
    outbox_of,
    outbox_row_gone,
    redis_pair,
)
from tests.integration.test_outbox_horizon_attacks import harmless_body, raw, row_count
from tests.integration.test_outbox_late_commit_attacks import (
    direct_redis_url,
    pending_outbox_inserts,
    writer_node,
)
from tests.support.feed_attacks import via
from tests.support.revocation import (
    PromiseBroken,
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
from tests.support.tcp_proxy import tcp_proxy
from twofa.services.state.change_outbox import KEEP_FOR_S, PRIME_SCAN
from twofa.storage.tables import ChangeOutboxRow, table_of

LEAP_S: Final = KEEP_FOR_S + 1


def held_insert_count_at_least(url: str, count: int) -> Callable[[], Awaitable[bool]]:
    """Whether `count` transactions hold an outbox INSERT uncommitted."""

    async def check() -> bool:
        return await pending_outbox_inserts(url) >= count

    return check


async def leap_and_read(*clocks: LeapingClock, times: int = 2) -> None:
    """Each clock leaps the keeping time `times` times, with reads in between: the node notes
    where it has read, then may prune there."""
    for _ in range(times):
        await asyncio.sleep(0.6)
        for clock in clocks:
            clock.leap(LEAP_S)
    await asyncio.sleep(0.6)


# --- 1. Start-up: an id below the oldest row that is still on its way ---------------------------


@pytest.mark.xfail(
    strict=True,
    raises=PromiseBroken,
    reason="ChangeOutbox.prime (services/state/change_outbox.py:113-114) takes every id missing "
    "below the oldest row at start-up for pruned or never written (_below_oldest_at_start), and "
    "_settle_gaps (:190-193) gives it up without a new generation. On a fresh or emptied outbox "
    "the oldest row is not a pruning marker: an id below it may belong to a sign-out still "
    "committing. Pruned by another node while c was paused, it is never read and c trusts its "
    "copy of bob for REDIS_TRUST_SECONDS",
)
async def test_attack_a_fresh_outboxs_first_sign_out_pruned_while_a_starting_node_paused(
    tmp_path: Path,
) -> None:
    """The outbox is fresh (no row yet: a new deployment, or emptied by an operator). a, cut
    off from Redis, signs bob out: it takes the first outbox id k and its COMMIT is held up; b
    commits k + 1 at once. c starts: its oldest row is k + 1, so k is "below the oldest row at
    start-up". c holds a copy of bob; c is paused (its database path stalls), a's COMMIT lands
    and a prunes k (its clock leaps; k + 1 stays as the marker). c resumes; bob asks c. c never
    read k: it must not trust its copy (a new generation), and refuse bob within a second."""
    clock_a = LeapingClock()
    async with (
        redis_pair("postgresql", tmp_path, db_proxy="a", clock_a=clock_a) as nodes,
        tcp_proxy("127.0.0.1", 5432) as c_db,
    ):
        a, b, a_db = nodes.a, nodes.b, nodes.db
        assert a_db is not None
        token = await signed_in(b)
        (other,) = await promoted_sessions(b, "alice", 1)
        async with b.db.begin() as db:  # a fresh outbox (a no-op on a new database)
            await db.execute(delete(table_of(ChangeOutboxRow)))
        await nodes.a_redis.cut()
        a_db.hold_up_pattern, a_db.hold_up_seconds = b"COMMIT;", 3.0
        signing_out = asyncio.create_task(sign_out(a, token))
        assert await until(held_insert_count_at_least(nodes.db_url, 1), 3), "no INSERT of a's"
        await sign_out(b, other)  # k + 1, committed at once: the oldest row there is
        settings_c = node_settings(
            via(nodes.db_url, c_db.port),
            "redis",
            redis_url=direct_redis_url(nodes),
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
                await leap_and_read(clock_a)
                assert await until(outbox_row_gone(a, written), 5), "a never pruned the row"
            finally:
                c_db.resume()
            assert await until(feed_live(c), 3), "c's feed never came back"
            loop = asyncio.get_running_loop()
            seen = await watch(lets_in(c, token), ended, until_s=loop.time() - ended + 0.6)
            seen.keep_promise("a fresh outbox's first sign-out, pruned while c was paused")


# --- 2. Start-up: an id below the scanned window --------------------------------------------------


@pytest.mark.xfail(
    strict=True,
    raises=PromiseBroken,
    reason="ChangeOutbox.prime (services/state/change_outbox.py:110-111) looks for missing ids "
    "only among the newest PRIME_SCAN ids (low = the 20,000th newest): an id below that window "
    "whose transaction still runs is neither read (read_once asks for ids above newest_seen "
    "and awaited ones) nor awaited. No pruning needed: when it commits c never reads it and "
    "trusts its copy of bob for REDIS_TRUST_SECONDS",
)
async def test_attack_a_sign_out_held_below_the_start_up_window_is_never_read(
    tmp_path: Path,
) -> None:
    """a, cut off from Redis, signs bob out: its outbox id k is taken and its COMMIT held up.
    Meanwhile PRIME_SCAN (20,000) newer rows commit (a busy cluster within the keeping time;
    written here in one statement). c starts, holds a copy of bob; a's COMMIT lands. c must
    read it (or not trust its copy) and refuse bob within a second."""
    async with redis_pair("postgresql", tmp_path, db_proxy="a") as nodes:
        a, b, a_db = nodes.a, nodes.b, nodes.db
        assert a_db is not None
        token = await signed_in(b)
        await nodes.a_redis.cut()
        a_db.hold_up_pattern, a_db.hold_up_seconds = b"COMMIT;", 8.0
        signing_out = asyncio.create_task(sign_out(a, token))
        assert await until(held_insert_count_at_least(nodes.db_url, 1), 3), "no INSERT of a's"
        async with raw(nodes.db_url) as writer:
            await writer.execute(
                "INSERT INTO change_outbox (created_at, payload) "
                "SELECT now(), $1 FROM generate_series(1, $2)",
                harmless_body(),
                PRIME_SCAN,
            )
        async with started(nodes.settings) as c:
            await all_live(c)
            assert await lets_in(c, token)()
            assert not signing_out.done(), "a's sign-out committed before c was up"
            ended = await asyncio.wait_for(signing_out, 15)
            a_db.hold_up_pattern = None
            seen = await watch(lets_in(c, token), ended, until_s=2.0)
            seen.keep_promise("a sign-out held below c's start-up window")


# --- 3. A late commit of a low id and the prune right after it ------------------------------------


@pytest.mark.parametrize("reader_paused", [True, False], ids=["reader-paused", "reader-live"])
async def test_attack_a_late_low_id_commits_right_before_a_due_prune(
    tmp_path: Path, reader_paused: bool
) -> None:
    """w (cut off from Redis) signs bob out; its id k is taken and its COMMIT held up; a
    commits k + 1. a's clock leaps: it notes k + 1 (with a transaction id above w's) and its
    prune of k's range is due, held only by w's running transaction. w's COMMIT lands; a
    prunes k at its very next read, perhaps before b reads k (b paused across it, or live and
    racing it). b awaited k from a running read: it must read k, or find it pruned (a new
    generation), and refuse bob within a second either way."""
    clock_a = LeapingClock()
    async with (
        redis_pair("postgresql", tmp_path, db_proxy="b", clock_a=clock_a) as nodes,
        writer_node(nodes) as (w, w_db),
    ):
        a, b, b_db = nodes.a, nodes.b, nodes.db
        assert b_db is not None
        token = await signed_in(b)
        (other,) = await promoted_sessions(a, "alice", 1)
        assert await lets_in(b, token)()
        w_db.hold_up_pattern, w_db.hold_up_seconds = b"COMMIT;", 4.0
        signing_out = asyncio.create_task(sign_out(w, token))
        assert await until(held_insert_count_at_least(nodes.db_url, 1), 3), "no INSERT of w's"
        await sign_out(a, other)  # k + 1
        written = await newest_outbox_id(a) - 1
        await leap_and_read(clock_a)  # noted k + 1; the prune waits for w only
        assert written in outbox_of(b).waiting_for(), "b does not await w's id"
        assert not await outbox_row_gone(a, written + 1)(), "a pruned its marker"
        if reader_paused:
            b_db.stall()
        try:
            ended = await asyncio.wait_for(signing_out, 10)
            w_db.hold_up_pattern = None
            clock_a.leap(LEAP_S)
            assert await until(outbox_row_gone(a, written), 5), "a never pruned w's row"
        finally:
            b_db.resume()
        assert await until(feed_live(b), 3), "b's feed never came back"
        loop = asyncio.get_running_loop()
        seen = await watch(lets_in(b, token), ended, until_s=max(loop.time() - ended, 0) + 1.5)
        seen.keep_promise("a late low id pruned right after its commit")


async def test_attack_a_late_commit_right_after_a_prune_through_the_id_below_it(
    tmp_path: Path,
) -> None:
    """a prunes through j (the newest it had read; j stays as the marker) at the moment w's
    held sign-out of bob, id j + 1, commits; b is paused across both. The marker is the row
    right below the late one; b resumed must read j + 1 (it is above the pruning point) and
    refuse bob within a second."""
    clock_a = LeapingClock()
    async with (
        redis_pair("postgresql", tmp_path, db_proxy="b", clock_a=clock_a) as nodes,
        writer_node(nodes) as (w, w_db),
    ):
        a, b, b_db = nodes.a, nodes.b, nodes.db
        assert b_db is not None
        token = await signed_in(b)
        firsts = await promoted_sessions(a, "alice", 2)
        await sign_out(a, firsts[0])
        await sign_out(a, firsts[1])
        marker = await newest_outbox_id(a)
        await leap_and_read(clock_a, times=1)  # a notes `marker`
        assert await lets_in(b, token)()
        w_db.hold_up_pattern, w_db.hold_up_seconds = b"COMMIT;", 2.0
        b_db.stall()
        try:
            signing_out = asyncio.create_task(sign_out(w, token))
            assert await until(held_insert_count_at_least(nodes.db_url, 1), 3)
            clock_a.leap(LEAP_S)  # the prune through `marker` is due now
            assert await until(outbox_row_gone(a, marker - 1), 5), "a never pruned"
            ended = await asyncio.wait_for(signing_out, 10)
            w_db.hold_up_pattern = None
            await asyncio.sleep(0.6)
        finally:
            b_db.resume()
        assert await until(feed_live(b), 3), "b's feed never came back"
        loop = asyncio.get_running_loop()
        seen = await watch(lets_in(b, token), ended, until_s=loop.time() - ended + 0.6)
        seen.keep_promise("a late commit right above a fresh marker")


# --- 4. Several pruners, a paused reader ----------------------------------------------------------


async def test_attack_three_pruners_on_three_clocks_across_a_paused_readers_sign_outs(
    tmp_path: Path,
) -> None:
    """Three pruners (a, c, d) whose clocks leap at different times, so their marks (and the
    markers they keep) differ, prune one after another while b is paused (its path stalled and
    its clock leaping past the keeping time too, as a suspended machine that counts the pause):
    a (cut off from Redis) signs bob out among other sign-outs. b resumed must not trust its
    copy of bob (a new generation) and must not prune a row another node has not read through
    its own stale marks before it reads: it refuses bob within a second."""
    clock_a, clock_b, clock_c, clock_d = (LeapingClock() for _ in range(4))
    async with redis_pair(
        "postgresql", tmp_path, db_proxy="b", clock_a=clock_a, clock_b=clock_b
    ) as nodes:
        a, b, b_db = nodes.a, nodes.b, nodes.db
        assert b_db is not None
        async with started(nodes.settings, clock_c) as c, started(nodes.settings, clock_d) as d:
            await all_live(c, d)
            token = await signed_in(a)
            later = await promoted_sessions(a, "alice", 4)
            assert await lets_in(b, token)()
            generation = state_of(b).generation
            await nodes.a_redis.cut()
            b_db.stall()
            try:
                ended = await sign_out(a, token)
                written = await newest_outbox_id(a)
                for step, session in enumerate(later):
                    await sign_out(a, session)
                    await asyncio.sleep(0.6)
                    (clock_a, clock_c, clock_d)[step % 3].leap(LEAP_S)
                    if step % 2:
                        clock_c.leap(LEAP_S)
                await leap_and_read(clock_a, clock_c, clock_d)
                assert await until(outbox_row_gone(a, written), 5), "never pruned"
                clock_b.leap(3 * LEAP_S)
            finally:
                b_db.resume()
            assert await until(feed_live(b), 3), "b's feed never came back"
            loop = asyncio.get_running_loop()
            seen = await watch(lets_in(b, token), ended, until_s=loop.time() - ended + 0.6)
            seen.keep_promise("a sign-out pruned by three pruners while b was paused")
            assert state_of(b).generation > generation
            assert await row_count(b) >= 1, "the marker went"


# --- 5. Rolled-back ids and ordinary users --------------------------------------------------------


async def test_attack_a_rolled_back_id_given_up_then_pruned_past_starts_no_generation(
    tmp_path: Path,
) -> None:
    """An outbox id is taken and rolled back between two committed ones; b gives it up, then
    a (and b itself) prune past it, leaping their clocks. Nothing b had not read was pruned:
    no new generation, b's feed stays live, and a later sign-out through a node cut off from
    Redis is refused within the second."""
    clock_a, clock_b = LeapingClock(), LeapingClock()
    async with redis_pair("postgresql", tmp_path, clock_a=clock_a, clock_b=clock_b) as nodes:
        a, b = nodes.a, nodes.b
        token = await signed_in(b)
        sessions = await promoted_sessions(a, "alice", 3)
        await sign_out(a, sessions[0])
        async with raw(nodes.db_url) as writer:
            rolled = writer.transaction()
            await rolled.start()
            await writer.fetchval("SELECT pg_current_xact_id()")
            await writer.fetchval(
                "INSERT INTO change_outbox (created_at, payload) VALUES (now(), $1) RETURNING id",
                harmless_body(),
            )
            await sign_out(a, sessions[1])
            await asyncio.sleep(0.6)
            assert outbox_of(b).waiting_for(), "b awaits nothing"
            await rolled.rollback()
        assert await until(lambda: not outbox_of(b).waiting_for(), 1.5), "never given up"
        generation = state_of(b).generation
        await sign_out(a, sessions[2])
        await leap_and_read(clock_a, clock_b, times=3)
        assert await row_count(b) <= 2, "nothing pruned"
        assert state_of(b).generation == generation, "a new generation for a rolled-back id"
        assert await until(feed_live(b), 3)
        assert await lets_in(b, token)()
        await nodes.a_redis.cut()
        ended = await sign_out(a, token)
        seen = await watch(lets_in(b, token), ended, until_s=1.5)
        seen.keep_promise("a sign-out after a rolled-back id was pruned past")


async def test_attack_an_ordinary_user_signing_in_and_out_never_starts_a_generation(
    tmp_path: Path,
) -> None:
    """An ordinary user signs in and out over and over, on both nodes (each sign-out also
    written to the outbox), while both nodes' clocks leap so that each prunes again and again,
    and a third node starts mid-way. No node starts a new feed generation (which would
    make every node's caches stop trusting their copies), and the last sign-out is refused
    within the second."""
    clock_a, clock_b = LeapingClock(), LeapingClock()
    async with redis_pair("postgresql", tmp_path, clock_a=clock_a, clock_b=clock_b) as nodes:
        a, b = nodes.a, nodes.b
        generations = (state_of(a).generation, state_of(b).generation)
        token = ""
        for round_ in range(6):
            node = (a, b)[round_ % 2]
            token = await signed_in(node)
            assert await lets_in(b, token)()
            await sign_out(node, token)
            (clock_a, clock_b)[round_ % 2].leap(LEAP_S)
            await asyncio.sleep(0.4)
        async with started(nodes.settings) as c:
            await all_live(c)
            generation_c = state_of(c).generation
            for _ in range(3):
                token = await signed_in(a)
                assert await lets_in(c, token)()
                await sign_out(b, token)
                await leap_and_read(clock_a, clock_b, times=1)
            assert state_of(c).generation == generation_c, "c started a new generation"
        assert (state_of(a).generation, state_of(b).generation) == generations
        assert await row_count(b) < 9, "nothing was pruned"
        token = await signed_in(b)
        assert await lets_in(b, token)()
        await nodes.a_redis.cut()
        ended = await sign_out(a, token)
        seen = await watch(lets_in(b, token), ended, until_s=1.5)
        seen.keep_promise("the last of an ordinary user's sign-outs")
