"""Attacks on the Redis feed's change outbox (services.state.change_outbox): a node cut off
from Redis alone commits a revocation, and every other node must still hear it within about a
second through the database. Each test is one attack and asserts the secure outcome. Two of
them broke the first version and shaped the present one: a row whose commit comes after many
others (ids are looked for again until they appear, not in a fixed window) and a node whose
first read is slow (it notes where the outbox stands before it serves)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from tests.support.feed_attacks import redis_via, via
from tests.support.redis_server import own_channel, reachable_redis
from tests.support.revocation import (
    all_live,
    database,
    lets_in,
    node_settings,
    seeded,
    sign_out,
    signed_in,
    started,
    state_of,
    until,
    verdict,
    watch,
)
from tests.support.tcp_proxy import TcpProxy, tcp_proxy
from twofa.config import Settings
from twofa.domain.client import NO_CLIENT
from twofa.services.access.forward_auth import Verdict
from twofa.services.runtime import Gateway
from twofa.services.state.sessions import Level
from twofa.storage.repositories import Users

STRONG_PASSWORD = "a-new-and-long-passphrase-7"


@dataclass
class Cluster:
    """Nodes a and b on one database and one Redis channel, both live. a reaches Redis through
    `a_redis` (cut it: a partition between a and Redis alone); the node named by `db_proxy`
    reaches PostgreSQL through `db` (cut, stall or slow it)."""

    settings: Settings  # the direct paths, for fresh nodes
    db_url: str
    a: Gateway
    b: Gateway
    a_redis: TcpProxy
    db: TcpProxy | None


@asynccontextmanager
async def cluster(kind: str, tmp_path: Path, *, db_proxy: str = "") -> AsyncIterator[Cluster]:
    url, channel = await reachable_redis(), own_channel()
    async with AsyncExitStack() as stack:
        db_url = await stack.enter_async_context(database(kind, tmp_path))
        a_redis = await stack.enter_async_context(tcp_proxy("127.0.0.1", 6379))
        db = await stack.enter_async_context(tcp_proxy("127.0.0.1", 5432)) if db_proxy else None
        settings = await seeded(node_settings(db_url, "redis", redis_url=url, channel=channel))

        def database_of(name: str) -> str:
            return via(db_url, db.port) if db is not None and db_proxy == name else db_url

        settings_a = node_settings(
            database_of("a"), "redis", redis_url=redis_via(a_redis.port), channel=channel
        )
        settings_b = node_settings(database_of("b"), "redis", redis_url=url, channel=channel)
        a = await stack.enter_async_context(started(settings_a))
        b = await stack.enter_async_context(started(settings_b))
        await all_live(a, b)
        yield Cluster(settings, db_url, a, b, a_redis, db)


async def refuses_within(node: Gateway, tokens: list[str], within_s: float) -> list[str]:
    """The tokens `node` still lets in `within_s` from now (asked over and over till then)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    left = list(tokens)
    while left and loop.time() < deadline:
        answers = await asyncio.gather(*(lets_in(node, token)() for token in left))
        left = [token for token, allowed in zip(left, answers, strict=True) if allowed]
        await asyncio.sleep(0.02)
    return left


async def promoted_sessions(node: Gateway, username: str, count: int) -> list[str]:
    """`count` signed-in sessions of `username` (no password hashing per session)."""
    async with node.db() as db:
        user = await Users(db).by_name(username)
        assert user is not None
        user_id = user.id
    tokens = []
    for _ in range(count):
        _, anonymous = await node.sessions.open(NO_CLIENT)
        async with node.db.begin() as db:
            token, _ = await node.sessions.promote(
                db, anonymous, user_id, Level.SIGNED_IN, NO_CLIENT
            )
        tokens.append(token)
    return tokens


def asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def one_value(url: str, sql: str) -> object:
    admin = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return await admin.fetchval(sql)
    finally:
        await admin.close()


def pending_outbox_insert(url: str) -> Callable[[], Awaitable[bool]]:
    """Whether a transaction has INSERTed its outbox row (its id taken) and not yet committed."""

    async def check() -> bool:
        found = await one_value(
            url,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND state = 'idle in transaction' AND query LIKE 'INSERT INTO change_outbox%'",
        )
        return bool(found)

    return check


# --- 1. PostgreSQL + Redis -------------------------------------------------------------------


async def test_postgresql_a_node_cut_off_from_redis_signs_out_and_b_hears_it(
    tmp_path: Path,
) -> None:
    async with cluster("postgresql", tmp_path) as nodes:
        a, b, a_redis = nodes.a, nodes.b, nodes.a_redis
        token = await signed_in(b)
        assert await lets_in(b, token)()
        await a_redis.cut()
        ended = await sign_out(a, token)
        seen = await watch(lets_in(b, token), ended, until_s=1.5)
        assert state_of(b).live_generation is not None  # b trusted its copies all along
        seen.keep_promise("PostgreSQL: a sign-out on a node cut off from Redis")


# --- 2. Other revocations through the partitioned node ---------------------------------------

REVOCATIONS: dict[str, Callable[[Gateway], Awaitable[None]]] = {
    "end_sessions": lambda node: node.accounts.end_sessions("bob"),
    "password_change": lambda node: node.accounts.set_password("bob", STRONG_PASSWORD),
    "disable": lambda node: node.accounts.set_enabled("bob", False),
}


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_admin_revocations_through_a_node_cut_off_from_redis_are_heard(
    kind: str, tmp_path: Path
) -> None:
    """An admin's "end sessions", a new password and a disabled account, each committed on a
    node cut off from Redis, each on a fresh session of bob's that b holds a copy of."""
    async with cluster(kind, tmp_path) as nodes:
        a, b = nodes.a, nodes.b
        await nodes.a_redis.cut()
        for name, revoke in REVOCATIONS.items():
            (token,) = await promoted_sessions(b, "bob", 1)
            assert await lets_in(b, token)(), name
            await revoke(a)
            ended = asyncio.get_running_loop().time()
            seen = await watch(lets_in(b, token), ended, until_s=1.3)
            seen.keep_promise(f"{kind}: {name} on a node cut off from Redis")


# --- 3. A burst ------------------------------------------------------------------------------


async def test_a_burst_of_150_sign_outs_through_a_node_cut_off_from_redis_is_all_heard(
    tmp_path: Path,
) -> None:
    """150 signed-in sessions ended concurrently through a (PostgreSQL: ids taken in one order,
    committed in another); b holds a copy of every one and must refuse them all."""
    async with cluster("postgresql", tmp_path) as nodes:
        a, b = nodes.a, nodes.b
        tokens = await promoted_sessions(b, "alice", 150)
        # Each a cold read, 150 at once: given time (a busy machine), not the watch's 0.3 s.
        answers = await asyncio.gather(*(verdict(b.forward_auth, t, within_s=10) for t in tokens))
        assert set(answers) == {Verdict.ALLOW}, "b did not let every session in before the burst"
        await nodes.a_redis.cut()
        await asyncio.gather(*(sign_out(a, token) for token in tokens))
        still_in = await refuses_within(b, tokens, 2.0)
        assert not still_in, f"b still lets in {len(still_in)} of 150 ended sessions after 2 s"


async def test_a_sign_out_whose_commit_is_slow_is_heard_after_100_faster_ones(
    tmp_path: Path,
) -> None:
    """a (cut off from Redis) signs bob out, but its COMMIT takes 3 s to reach PostgreSQL (a
    slow or lossy link: its outbox id is taken, its row not yet visible). Meanwhile 150 other
    sessions end through b. bob's row appears more than 100 ids below the newest b has read.
    (The COMMIT is held 5 s: on a loaded machine the 150 took over 3 s once. Every COMMIT on
    a's path is held, its outbox reads' too, so the INSERT may come late.)"""
    async with cluster("postgresql", tmp_path, db_proxy="a") as nodes:
        a, b, a_db = nodes.a, nodes.b, nodes.db
        assert a_db is not None
        token = await signed_in(b)
        others = await promoted_sessions(b, "alice", 150)
        assert await lets_in(b, token)()
        await nodes.a_redis.cut()
        a_db.hold_up_pattern, a_db.hold_up_seconds = b"COMMIT", 5.0
        signing_out = asyncio.create_task(sign_out(a, token))
        assert await until(pending_outbox_insert(nodes.db_url), 20), "a's INSERT never came"
        await asyncio.gather(*(sign_out(b, other) for other in others))
        await asyncio.sleep(0.6)  # b reads them all before a's row shows
        assert not signing_out.done(), "a's commit came before the 150 others"
        ended = await signing_out
        a_db.hold_up_pattern = None
        seen = await watch(lets_in(b, token), ended, until_s=1.5)
        seen.keep_promise("a sign-out whose commit reached PostgreSQL after 150 others")


# --- 4. b's database path fails for a moment -------------------------------------------------


async def test_b_hears_a_sign_out_made_while_its_database_path_was_cut(tmp_path: Path) -> None:
    async with cluster("postgresql", tmp_path, db_proxy="b") as nodes:
        a, b, b_db = nodes.a, nodes.b, nodes.db
        assert b_db is not None
        first, second = await signed_in(a), await signed_in(a)
        assert await lets_in(b, first)()
        assert await lets_in(b, second)()
        await nodes.a_redis.cut()
        await b_db.cut()
        await sign_out(a, first)
        await asyncio.sleep(1.2)  # b's outbox reads fail meanwhile
        await b_db.restore()
        restored = asyncio.get_running_loop().time()
        seen = await watch(lets_in(b, first), restored, until_s=2.0)
        seen.keep_promise("a sign-out made while b's path to PostgreSQL was cut", 1.5)
        ended = await sign_out(a, second)  # b's reader kept going
        seen = await watch(lets_in(b, second), ended, until_s=1.3)
        seen.keep_promise("a sign-out after b's path to PostgreSQL came back")


async def retried(action: Callable[[], Awaitable[float]]) -> float:
    """A client retries what failed on a connection the server ended."""
    for _ in range(4):
        try:
            return await action()
        except Exception:
            await asyncio.sleep(0.05)
    return await action()


async def test_b_hears_a_sign_out_after_the_server_ended_every_connection(
    tmp_path: Path,
) -> None:
    """A failover: the server ends every connection of a and b (pg_terminate_backend)."""
    async with cluster("postgresql", tmp_path) as nodes:
        a, b = nodes.a, nodes.b
        token = await signed_in(a)
        assert await lets_in(b, token)()
        await nodes.a_redis.cut()
        ended_count = await one_value(
            nodes.db_url,
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        assert isinstance(ended_count, int)
        assert ended_count > 0
        ended = await retried(lambda: sign_out(a, token))
        seen = await watch(lets_in(b, token), ended, until_s=2.0)
        seen.keep_promise("a sign-out after the server ended every connection", 1.5)


# --- 5. Fresh processes ----------------------------------------------------------------------


async def test_a_node_started_after_the_sign_out_refuses_the_session(tmp_path: Path) -> None:
    async with cluster("postgresql", tmp_path) as nodes:
        token = await signed_in(nodes.b)
        await nodes.a_redis.cut()
        await sign_out(nodes.a, token)
        async with started(nodes.settings) as fresh:
            assert not await lets_in(fresh, token)()


async def test_a_node_whose_first_outbox_read_is_slow_hears_a_sign_out_made_meanwhile(
    tmp_path: Path,
) -> None:
    """c starts (a rolling restart) and its first outbox read, which only notes the newest id,
    takes 1.5 s to reach PostgreSQL. Meanwhile c answers for bob (its copy) and a, cut off from
    Redis, signs bob out: the newest id c notes is that sign-out's."""
    async with (
        cluster("postgresql", tmp_path) as nodes,
        tcp_proxy("127.0.0.1", 5432) as c_db,
    ):
        token = await signed_in(nodes.b)
        await nodes.a_redis.cut()
        c_db.hold_up_pattern, c_db.hold_up_seconds = b"ORDER BY change_outbox.id DESC", 1.5
        settings_c = nodes.settings.model_copy(
            update={"database_url": via(nodes.db_url, c_db.port)}
        )
        async with started(settings_c) as c:
            await all_live(c)
            assert await lets_in(c, token)()
            assert c_db.held_up == 1, "c's first outbox read was not the slow one"
            ended = await sign_out(nodes.a, token)
            seen = await watch(lets_in(c, token), ended, until_s=2.5)
            seen.keep_promise("a sign-out during a node's slow first outbox read")
