"""Attacks on the Redis feed's change outbox and on the session sweep (adversary pass of
bfa8ae6). Promises under attack:

1. With Redis, after a session ends on any node, no node answers forward-auth 200 for it more
   than a second later: a node whose database path is slow or stalls (its outbox reads late
   or hung while Redis stays live), a node cut off from Redis alone, a node that starts while
   a sign-out's commit is still on its way.
2. Pruning the outbox never deletes a row that a process still trusting its feed has not read
   (a reader paused while the pruner's clock runs on).
3. The sweep: a signed-in session that runs out unread has its grants ended and its
   applications told; one still in use (answered from memory, its uses flushed in batches) is
   never swept while it is live; anonymous and password-level sessions swept send nothing; a
   burst of more than 1000 is worked off without error.
4. Deleting a user tells the applications their sessions signed in to; a deletion rolled back
   tells nobody.

Each test is one attack and asserts the guarantee. A test whose attack broke bfa8ae6 (or a
later tree it names) and is fixed since says so in its docstring."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from tests.integration.test_change_outbox_attacks import (
    pending_outbox_insert,
    promoted_sessions,
)
from tests.support.backchannel_receiver import Receiver, backchannel_receiver
from tests.support.feed_attacks import redis_via, user_id, via
from tests.support.gateway import PASSWORDS
from tests.support.redis_server import own_channel, reachable_redis
from tests.support.revocation import (
    all_live,
    database,
    feed_live,
    lets_in,
    node_settings,
    seeded,
    sign_out,
    signed_in,
    started,
    state_of,
    until,
    watch,
)
from tests.support.tcp_proxy import TcpProxy, tcp_proxy
from twofa.clock import Clock, FrozenClock
from twofa.config import Settings
from twofa.domain.client import NO_CLIENT
from twofa.security.tokens import token_digest
from twofa.services.idp.applications import IssuedApplication, NewApplication
from twofa.services.idp.claims import session_sid
from twofa.services.idp.errors import InvalidGrant
from twofa.services.idp.provider import AuthorizeRequest, RedirectToClient
from twofa.services.runtime import Gateway
from twofa.services.signin.login import LoginResult
from twofa.services.state.change_feed import encoded
from twofa.services.state.change_outbox import (
    KEEP_FOR_S,
    ChangeOutbox,
)
from twofa.services.state.sessions import SWEEP_IDLE_GRACE, Level
from twofa.storage import change_outbox
from twofa.storage.change_notes import Changes
from twofa.storage.oidc_tables import OidcCodeRow, OidcRefreshTokenRow
from twofa.storage.repositories import Users
from twofa.storage.tables import ChangeOutboxRow, SessionRow, table_of

A_MINUTE_S = 61.0  # what 88c5aba's readers waited for an id, and a second

CALLBACK = "http://127.0.0.1:9/oidc/callback"  # never fetched: the redirect is only read


class SweptWhileLive(AssertionError):
    """The sweep deleted a session that the node answering for it still held live."""


class NotTold(AssertionError):
    """An application a session signed in to was not told that the session ended."""


# --- clocks and nodes --------------------------------------------------------------------


class LeapingClock:
    """The system's clock, whose monotonic reading can leap ahead: a process resumed after a
    pause that its monotonic clock counted (a VM suspended, then resumed)."""

    def __init__(self) -> None:
        self._leapt = 0.0

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic() + self._leapt

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def leap(self, seconds: float) -> None:
        self._leapt += seconds


@dataclass
class Pair:
    """Nodes a and b on one database and one Redis channel, both live. a reaches Redis through
    `a_redis` (cut it: a partition between a and Redis alone); the node named by `db_proxy`
    reaches PostgreSQL through `db`."""

    settings: Settings  # the direct paths, for fresh nodes
    db_url: str
    a: Gateway
    b: Gateway
    a_redis: TcpProxy
    db: TcpProxy | None


@asynccontextmanager
async def redis_pair(
    kind: str,
    tmp_path: Path,
    *,
    db_proxy: str = "",
    clock_a: Clock | None = None,
    clock_b: Clock | None = None,
    **extra: Any,
) -> AsyncIterator[Pair]:
    url, channel = await reachable_redis(), own_channel()
    async with AsyncExitStack() as stack:
        db_url = await stack.enter_async_context(database(kind, tmp_path))
        a_redis = await stack.enter_async_context(tcp_proxy("127.0.0.1", 6379))
        db = await stack.enter_async_context(tcp_proxy("127.0.0.1", 5432)) if db_proxy else None
        settings = await seeded(
            node_settings(db_url, "redis", redis_url=url, channel=channel, **extra)
        )

        def database_of(name: str) -> str:
            return via(db_url, db.port) if db is not None and db_proxy == name else db_url

        settings_a = node_settings(
            database_of("a"), "redis", redis_url=redis_via(a_redis.port), channel=channel, **extra
        )
        settings_b = node_settings(
            database_of("b"), "redis", redis_url=url, channel=channel, **extra
        )
        a = await stack.enter_async_context(started(settings_a, clock_a))
        b = await stack.enter_async_context(started(settings_b, clock_b))
        await all_live(a, b)
        yield Pair(settings, db_url, a, b, a_redis, db)


def outbox_of(node: Gateway) -> ChangeOutbox:
    assert node.change_outbox is not None, "the node has no change outbox (no Redis feed)"
    return node.change_outbox


def completed_reads(node: Gateway) -> list[float]:
    """The loop times at which the node's outbox reads complete from now on (observed only:
    the read itself is the node's own)."""
    outbox, loop, times = outbox_of(node), asyncio.get_running_loop(), []
    read = outbox.read_once

    async def observed() -> None:
        await read()
        times.append(loop.time())

    outbox.read_once = observed  # type: ignore[method-assign]
    return times


async def next_completion(times: list[float], within_s: float = 3.0) -> float:
    count = len(times)
    assert await until(lambda: len(times) > count, within_s), "no outbox read completed"
    return times[-1]


async def newest_outbox_id(node: Gateway) -> int:
    async with node.db() as db:
        standing = await change_outbox.standing(db, 1)
    return standing.newest_ids[0] if standing.newest_ids else 0


def outbox_row_gone(node: Gateway, row_id: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        async with node.db() as db:
            rows = table_of(ChangeOutboxRow)
            found = await db.scalar(select(func.count()).where(rows.c.id == row_id))
            return found == 0

    return check


async def outbox_rows(node: Gateway) -> int:
    async with node.db() as db:
        return int(await db.scalar(select(func.count()).select_from(ChangeOutboxRow)) or 0)


@asynccontextmanager
async def two_nodes_on_one_clock(
    kind: str, tmp_path: Path, clock: Clock, **extra: Any
) -> AsyncIterator[tuple[Gateway, Gateway]]:
    """Two processes on one database, hearing each other (SQLite: the local feed; PostgreSQL:
    LISTEN/NOTIFY), whose every reading of the time is `clock`'s."""
    feed = "local" if kind == "sqlite" else "postgresql"
    async with database(kind, tmp_path) as db_url:
        settings = await seeded(node_settings(db_url, feed, **extra))
        async with started(settings, clock) as a, started(settings, clock) as b:
            await all_live(a, b)
            yield a, b


async def answered_from_memory(node: Gateway, token: str) -> bool:
    """Whether the node lets the session in, asked once its feed is live again after the test
    moved the clock (a moved clock makes any feed look silent until its next heartbeat)."""
    assert await until(feed_live(node), 3), "the node's feed did not come back"
    return await lets_in(node, token)()


# --- OpenID Connect sign-ins, in-process -------------------------------------------------


async def application(node: Gateway, name: str, receiver: Receiver | None) -> IssuedApplication:
    uri = receiver.uri(name) if receiver is not None else None
    new = NewApplication(name, [CALLBACK], second_factor_required=False, backchannel_logout_uri=uri)
    return await node.applications.add(new, actor="test")


@dataclass(frozen=True)
class Grant:
    app: IssuedApplication
    session_id: str
    refresh_token: str


async def sign_in_to(node: Gateway, token: str, app: IssuedApplication) -> Grant:
    """The session's user signs in to `app` (single sign-on) and the application redeems its
    code, as its server would."""
    outcome = await try_sign_in_to(node, token, app)
    assert isinstance(outcome, Grant), outcome
    return outcome


async def try_sign_in_to(node: Gateway, token: str, app: IssuedApplication) -> Grant | str:
    """`sign_in_to`, or the error the application was sent back instead of a code."""
    session = await node.sessions.load(token)
    assert session is not None
    client_id = app.application.client_id
    request = AuthorizeRequest(client_id, CALLBACK, "code", "openid", nonce="n")
    outcome = await node.oidc.authorize(request, session, NO_CLIENT)
    assert isinstance(outcome, RedirectToClient), outcome
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(outcome.url).query))
    if "code" not in query:
        return query.get("error", outcome.url)
    form = {"grant_type": "authorization_code", "code": query["code"], "redirect_uri": CALLBACK}
    tokens = await node.oidc.tokens.token(form, (client_id, app.client_secret or ""), NO_CLIENT)
    return Grant(app, session.id, str(tokens["refresh_token"]))


async def refresh_works(node: Gateway, grant: Grant) -> bool:
    basic = (grant.app.application.client_id, grant.app.client_secret or "")
    form = {"grant_type": "refresh_token", "refresh_token": grant.refresh_token}
    try:
        await node.oidc.tokens.token(form, basic, NO_CLIENT)
    except InvalidGrant:
        return False
    return True


def claims_of(logout_token: str) -> dict[str, Any]:
    """The claims of a logout token (its signature is checked by test_oidc_backchannel_logout)."""
    payload = logout_token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


async def told(receiver: Receiver, party: str, count: int, within_s: float = 10.0) -> list[str]:
    """The `sid`s `party` was told of once it has received `count` logout tokens (or what it
    has after `within_s`), then after a moment for any stray duplicate."""
    await until(lambda: len(receiver.tokens(party)) >= count, within_s)
    await asyncio.sleep(0.3)
    return sorted(claims_of(token)["sid"] for token in receiver.tokens(party))


# --- 1. Redis: a reading node whose database path is slow or stalls -------------------------


async def test_attack_a_reader_whose_commits_are_slow_refuses_within_the_second(
    tmp_path: Path,
) -> None:
    """b's path to PostgreSQL is slow for COMMITs (0.55 s: a congested link, a busy server
    fsyncing): every outbox read of b completes within the second of the previous one, but its
    rows are 0.55 s old by then. a, cut off from Redis, signs bob out right after one of b's
    reads took its snapshot. (Broke at bfa8ae6, 1.33 s: a read counted as fresh when it
    completed, not when it began.)"""
    async with redis_pair("postgresql", tmp_path, db_proxy="b") as nodes:
        a, b, b_db = nodes.a, nodes.b, nodes.db
        assert b_db is not None
        token = await signed_in(a)
        assert await lets_in(b, token)()  # b's copy, trusted while its feed is live
        await nodes.a_redis.cut()
        reads = completed_reads(b)
        b_db.hold_up_pattern, b_db.hold_up_seconds = b"COMMIT;", 0.55
        await next_completion(reads)  # the slow commits have begun
        done = await next_completion(reads)
        loop = asyncio.get_running_loop()
        await asyncio.sleep(done + 0.35 - loop.time())  # just after b's next SELECT
        ended = await sign_out(a, token)
        seen = await watch(lets_in(b, token), ended, until_s=2.2)
        b_db.hold_up_pattern = None
        assert seen.refused > 0, "b never heard of the sign-out"
        seen.keep_promise("a sign-out while b's commits took 0.55 s to reach PostgreSQL")


async def test_attack_a_reader_stalled_mid_read_refuses_when_its_path_returns(
    tmp_path: Path,
) -> None:
    """b's path to PostgreSQL stalls for 2 s while its outbox read waits for its COMMIT's
    answer (its SELECT answered); a, cut off from Redis, signs bob out meanwhile. Nobody asks b
    about bob during the stall (bob is reading a page); his next request comes as the path
    returns. (Broke at bfa8ae6: 2.25 s, and up to REDIS_TRUST_SECONDS for a longer stall.)"""
    async with redis_pair("postgresql", tmp_path, db_proxy="b") as nodes:
        a, b, b_db = nodes.a, nodes.b, nodes.db
        assert b_db is not None
        token = await signed_in(a)
        assert await lets_in(b, token)()
        await nodes.a_redis.cut()
        b_db.hold_down_pattern = b"COMMIT"  # the server's answer to COMMIT, and all after it
        await asyncio.wait_for(b_db.held_down.wait(), 3)
        await asyncio.sleep(0.4)  # b's outbox reader is held, its SELECT answered
        ended = await sign_out(a, token)
        await asyncio.sleep(2.0)
        assert state_of(b).live_generation is None  # b knew it was not reading meanwhile
        b_db.hold_down_pattern = None
        b_db.release_down()
        assert await until(feed_live(b), 3), "b's feed never came back"
        loop = asyncio.get_running_loop()
        seen = await watch(lets_in(b, token), ended, until_s=loop.time() - ended + 0.6)
        assert not await lets_in(b, token)()  # its next read brings the sign-out
        seen.keep_promise("bob's first request after b's database path stalled mid-read")


async def test_attack_a_node_started_during_a_slow_sign_out_hears_it(
    tmp_path: Path,
) -> None:
    """A rolling restart: c starts while a's sign-out of bob (a cut off from Redis) has taken
    its outbox id and waits for its COMMIT (3 s on a slow path), and a quicker change on b takes
    the next id and commits. c primes past bob's id and answers for bob from the database,
    where the sign-out has not committed yet. (Broke at bfa8ae6: c never read the row and let
    bob in 12 s after the sign-out, until its copy's background re-read.)"""
    async with redis_pair("postgresql", tmp_path, db_proxy="a") as nodes:
        a, b, a_db = nodes.a, nodes.b, nodes.db
        assert a_db is not None
        token = await signed_in(b)
        (other,) = await promoted_sessions(b, "alice", 1)
        await nodes.a_redis.cut()
        a_db.hold_up_pattern, a_db.hold_up_seconds = b"COMMIT", 3.0
        signing_out = asyncio.create_task(sign_out(a, token))
        assert await until(pending_outbox_insert(nodes.db_url), 8), "a's INSERT never came"
        await sign_out(b, other)  # the next outbox id, committed at once
        async with started(nodes.settings) as c:
            await all_live(c)
            assert await lets_in(c, token)()
            assert not signing_out.done(), "a's sign-out committed before c was up"
            ended = await asyncio.wait_for(signing_out, 10)
            a_db.hold_up_pattern = None
            seen = await watch(lets_in(c, token), ended, until_s=2.0)
            assert state_of(c).live_generation is not None
            seen.keep_promise("a sign-out whose commit was on its way while c started")


async def test_attack_a_node_started_after_a_burst_during_a_slow_sign_out_hears_it(
    tmp_path: Path,
) -> None:
    """As above, but 1001 changes of other nodes commit after a's sign-out took its outbox id
    and before c starts (a burst: an admin's bulk changes, a directory sync, a busy cluster
    while a's commit is stuck on its path; written here in one go, as 1001 quick commits
    would leave them).

    Broke 88c5aba: the start-up looked for missing ids only 1,000 below the newest, so c never
    read a's sign-out and trusted its copy for up to REDIS_TRUST_SECONDS. It now awaits the
    missing ids (up to MOST_AWAITED) until every transaction running at its start has ended."""
    async with redis_pair("postgresql", tmp_path, db_proxy="a") as nodes:
        a, b, a_db = nodes.a, nodes.b, nodes.db
        assert a_db is not None
        token = await signed_in(b)
        await nodes.a_redis.cut()
        a_db.hold_up_pattern, a_db.hold_up_seconds = b"COMMIT;", 4.0
        signing_out = asyncio.create_task(sign_out(a, token))
        assert await until(pending_outbox_insert(nodes.db_url), 8), "a's INSERT never came"
        await burst_of_changes(b, 1001)
        async with started(nodes.settings) as c:
            await all_live(c)
            assert await lets_in(c, token)()
            assert not signing_out.done(), "a's sign-out committed before c was up"
            ended = await asyncio.wait_for(signing_out, 10)
            a_db.hold_up_pattern = None
            seen = await watch(lets_in(c, token), ended, until_s=2.0)
            seen.keep_promise("a sign-out on its way while 1001 changes committed and c started")


async def burst_of_changes(node: Gateway, count: int) -> None:
    """`count` outbox rows of another node's changes, each naming a user nobody has."""
    body = encoded(Changes(changed_users=frozenset({10**9})), "burst-node")
    rows = [{"created_at": node.clock.now(), "payload": body} for _ in range(count)]
    async with node.db.begin() as db:
        await db.execute(insert(table_of(ChangeOutboxRow)), rows)


async def test_attack_a_sign_out_whose_commit_lands_after_the_gap_wait_is_still_heard(
    tmp_path: Path,
) -> None:
    """a, cut off from Redis, signs bob out; its INSERT took an outbox id but its COMMIT is
    stuck on the path to PostgreSQL for over a minute (b's clock leaps the minute; the hold is
    4 s), while alice's sign-out through b commits the next id. bob asks b meanwhile (the
    sign-out has not committed: 200 is right), then the commit lands. The minute passes for
    both nodes: their monotonic clocks leap it together.

    Broke 88c5aba: b gave the id up after a minute and never read the row when it landed,
    trusting its copy for up to REDIS_TRUST_SECONDS. An id is now awaited until every
    transaction running when it was first missed has ended, whatever the clocks say."""
    clock_a, clock_b = LeapingClock(), LeapingClock()
    async with redis_pair(
        "postgresql", tmp_path, db_proxy="a", clock_a=clock_a, clock_b=clock_b
    ) as nodes:
        a, b, a_db = nodes.a, nodes.b, nodes.db
        assert a_db is not None
        token = await signed_in(b)
        (other,) = await promoted_sessions(b, "alice", 1)
        assert await lets_in(b, token)()
        await nodes.a_redis.cut()
        a_db.hold_up_pattern, a_db.hold_up_seconds = b"COMMIT;", 4.0
        signing_out = asyncio.create_task(sign_out(a, token))
        assert await until(pending_outbox_insert(nodes.db_url), 8), "a's INSERT never came"
        await sign_out(b, other)  # the next id, committed at once
        await asyncio.sleep(0.6)  # b reads it: a's id is missing below it
        assert outbox_of(b).waiting_for(), "b is not waiting for a's id"
        clock_a.leap(A_MINUTE_S)
        clock_b.leap(A_MINUTE_S)
        await asyncio.sleep(0.6)  # b reads on its new time
        assert outbox_of(b).waiting_for(), "b gave a's id up while a's transaction runs"
        assert await until(feed_live(b), 3)
        assert await lets_in(b, token)()  # read again: not signed out yet
        assert not signing_out.done(), "a's sign-out committed too early"
        ended = await asyncio.wait_for(signing_out, 10)
        a_db.hold_up_pattern = None
        seen = await watch(lets_in(b, token), ended, until_s=2.0)
        seen.keep_promise("a sign-out whose commit reached PostgreSQL a minute after its INSERT")


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_attack_a_reader_cut_off_from_redis_alone_refuses_within_the_second(
    kind: str, tmp_path: Path
) -> None:
    """b loses Redis (reset, and refused from then on) but keeps reading the outbox; a, which
    reaches Redis, signs bob out. b's feed is lost, so its copy answers a second at most; and
    a second sign-out later, with b still cut off, is refused within the second too."""
    url, channel = await reachable_redis(), own_channel()
    async with (
        database(kind, tmp_path) as db_url,
        tcp_proxy("127.0.0.1", 6379) as b_redis,
    ):
        settings = await seeded(node_settings(db_url, "redis", redis_url=url, channel=channel))
        settings_b = node_settings(
            db_url, "redis", redis_url=redis_via(b_redis.port), channel=channel
        )
        async with started(settings) as a, started(settings_b) as b:
            await all_live(a, b)
            first, second = await signed_in(a), await signed_in(a)
            assert await lets_in(b, first)()
            assert await lets_in(b, second)()
            await b_redis.cut()
            ended = await sign_out(a, first)
            seen = await watch(lets_in(b, first), ended, until_s=1.3)
            seen.keep_promise(f"{kind}: a sign-out while b was cut off from Redis")
            await asyncio.sleep(1.0)
            assert await lets_in(b, second)()  # read again, every second, while cut off
            ended = await sign_out(a, second)
            seen = await watch(lets_in(b, second), ended, until_s=1.3)
            seen.keep_promise(f"{kind}: a sign-out after b was cut off from Redis for 2 s")


# --- 2. Pruning while a reader is paused ------------------------------------------------------


@pytest.mark.parametrize("reader_clock_counts_the_pause", [True, False])
async def test_attack_rows_pruned_while_a_reader_was_paused_are_never_trusted_past(
    tmp_path: Path, reader_clock_counts_the_pause: bool
) -> None:
    """b's outbox reads stop (its path to PostgreSQL stalls: b is paused, as far as the outbox
    goes); a, cut off from Redis, signs bob out, and more than twice the keeping time goes by
    on a's clock: a prunes the sign-out's row. Then b reads again; bob's next request comes to
    b right then."""
    clock_a, clock_b = LeapingClock(), LeapingClock()
    async with redis_pair(
        "postgresql", tmp_path, db_proxy="b", clock_a=clock_a, clock_b=clock_b
    ) as nodes:
        a, b, b_db = nodes.a, nodes.b, nodes.db
        assert b_db is not None
        token = await signed_in(a)
        (later,) = await promoted_sessions(a, "alice", 1)
        assert await lets_in(b, token)()
        generation = state_of(b).live_generation
        await nodes.a_redis.cut()
        b_db.stall()
        try:
            ended = await sign_out(a, token)
            written = await newest_outbox_id(a)
            await sign_out(a, later)  # the newest row, which pruning keeps
            for _ in range(2):  # a reads the row, notes it, then prunes it
                await asyncio.sleep(0.6)
                clock_a.leap(KEEP_FOR_S + 1)
            assert await until(outbox_row_gone(a, written), 5), "a never pruned the row"
            if reader_clock_counts_the_pause:
                clock_b.leap(2 * KEEP_FOR_S + 2)
        finally:
            b_db.resume()
        assert await until(feed_live(b), 3), "b's feed never came back"
        loop = asyncio.get_running_loop()
        seen = await watch(lets_in(b, token), ended, until_s=loop.time() - ended + 0.6)
        seen.keep_promise("a sign-out whose outbox row was pruned while b was paused")
        now = state_of(b).live_generation
        assert now is not None
        assert generation is not None
        assert now > generation  # nothing b read before is trusted long again


async def test_attack_two_pruners_leaping_ahead_lose_no_row_a_live_reader_needs(
    tmp_path: Path,
) -> None:
    """Both pruners' monotonic clocks leap ahead by more than the keeping time, again and again
    (VMs resumed after long pauses), while a, cut off from Redis, ends 8 sessions one after
    another: b, reading all along, refuses each within the second, and the pruners delete
    only what b has read."""
    clock_a, clock_c = LeapingClock(), LeapingClock()
    async with redis_pair("postgresql", tmp_path, clock_a=clock_a) as nodes:
        a, b = nodes.a, nodes.b
        async with started(nodes.settings, clock_c) as c:
            await all_live(c)
            tokens = await promoted_sessions(a, "bob", 8)
            for token in tokens:
                assert await lets_in(b, token)()
            await nodes.a_redis.cut()
            for token in tokens:
                clock_a.leap(KEEP_FOR_S + 1)
                clock_c.leap(KEEP_FOR_S + 1)
                ended = await sign_out(a, token)
                seen = await watch(lets_in(b, token), ended, until_s=1.1, step_s=0.02)
                seen.keep_promise("a sign-out while two pruners leapt ahead")
            assert state_of(b).live_generation is not None
            assert await outbox_rows(b) < 8  # they did prune


# --- 3. The sweep ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_attack_a_use_not_yet_flushed_does_not_save_a_session_from_the_sweep(
    kind: str, tmp_path: Path
) -> None:
    """Bob comes back 59 s into his 60 s idle window: a answers from memory and passes the use
    on, to be written within 5 s. 2 s later, inside that flush, someone opens the sign-in page
    (a's sweep, due once a minute, runs) and bob's next request comes. (Broke at bfa8ae6: the
    sweep judged idleness by the row's last_seen_at, which lags a use answered from memory.)"""
    clock = FrozenClock(datetime.now(UTC))
    async with two_nodes_on_one_clock(kind, tmp_path, clock, session_idle_minutes=1) as (a, _):
        token = await signed_in(a)  # its sign-in page swept at 0 s
        assert await lets_in(a, token)()
        clock.advance(timedelta(seconds=59))
        assert await answered_from_memory(a, token)  # a use at 59 s: live until 119 s
        clock.advance(timedelta(seconds=2))
        assert await answered_from_memory(a, token)  # a holds it live
        await a.sessions.open(NO_CLIENT)  # a sign-in page: the sweep
        if not await lets_in(a, token)():
            raise SweptWhileLive("bob, last seen 2 s ago with a 60 s idle window, was swept")


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_attack_a_use_late_in_a_flushed_batch_does_not_save_a_session_from_the_sweep(
    kind: str, tmp_path: Path
) -> None:
    """Two sessions used from memory in one 5 s batch: alice's at 40 s, bob's at 44.9 s; the
    batch is written as seen at 40 s. At 100.5 s bob has been idle 55.6 s of his 60, and b
    sweeps. (Broke at bfa8ae6, as the use not yet flushed did.)"""
    clock = FrozenClock(datetime.now(UTC))
    async with two_nodes_on_one_clock(kind, tmp_path, clock, session_idle_minutes=1) as (a, b):
        (early,), late = await promoted_sessions(a, "alice", 1), await signed_in(a)
        assert await lets_in(a, early)()
        assert await lets_in(a, late)()
        clock.advance(timedelta(seconds=40))
        assert await answered_from_memory(a, early)
        clock.advance(timedelta(seconds=4.9))
        assert await answered_from_memory(a, late)
        await a.sessions.flush_seen()  # what the 5 s timer does
        clock.advance(timedelta(seconds=100.5 - 44.9))
        assert await answered_from_memory(a, late)  # a holds it live until 104.9 s
        await b.sessions.open(NO_CLIENT)  # the other node's sweep
        if not await lets_in(a, late)():
            raise SweptWhileLive("bob, last seen 55.6 s ago with a 60 s idle window, was swept")


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_attack_a_session_kept_busy_from_memory_outlives_every_sweep(
    kind: str, tmp_path: Path
) -> None:
    """Bob's session used every 20 s for 6 minutes (idle window 1 minute), only ever answered
    from memory on a, its uses flushed as the timer does, while both nodes sweep at every step:
    never swept; then left alone, it is swept once its window and the sweep's grace have
    passed."""
    clock = FrozenClock(datetime.now(UTC))
    async with two_nodes_on_one_clock(kind, tmp_path, clock, session_idle_minutes=1) as (a, b):
        token = await signed_in(a)
        assert await lets_in(a, token)()
        for step in range(18):
            clock.advance(timedelta(seconds=20))
            assert await answered_from_memory(a, token), f"refused at step {step}"
            await a.sessions.flush_seen()
            await a.sessions.open(NO_CLIENT)
            await b.sessions.open(NO_CLIENT)
            assert await lets_in(a, token)(), f"swept at step {step}"
            assert await lets_in(b, token)(), f"b refused at step {step}"
        clock.advance(timedelta(minutes=1) + SWEEP_IDLE_GRACE + timedelta(seconds=1))
        await b.sessions.open(NO_CLIENT)
        async with a.db() as db:
            still_there = await db.get(SessionRow, token_digest(token))
        assert still_there is None, "the session idle past its window and the grace not swept"
        assert not await lets_in(a, token)()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_attack_two_nodes_sweeping_at_once_tell_each_application_once_and_nothing_more(
    kind: str, tmp_path: Path
) -> None:
    """Bob signed in to an application, then left; twenty sign-in pages were left open and
    alice stopped at her second factor. Once the idle window (one minute) and the sweep's
    grace have passed, both nodes sweep at the same moment: the application is told once of
    bob's session, his grant ends, and the sessions that never signed in cost no message to
    the other nodes (no outbox row)."""
    clock = FrozenClock(datetime.now(UTC))
    with backchannel_receiver() as receiver:
        async with redis_pair(
            kind, tmp_path, clock_a=clock, clock_b=clock, session_idle_minutes=1
        ) as nodes:
            a, b = nodes.a, nodes.b
            app = await application(a, "one", receiver)
            grant = await sign_in_to(a, await signed_in(a), app)
            for _ in range(20):
                await a.sessions.open(NO_CLIENT)
            _, pending = await b.sessions.open(NO_CLIENT)
            outcome = await b.login.sign_in(pending, "alice", PASSWORDS["alice"], NO_CLIENT)
            assert outcome.result is LoginResult.SECOND_FACTOR  # password level
            clock.advance(timedelta(minutes=1) + SWEEP_IDLE_GRACE + timedelta(seconds=1))
            rows_before = await outbox_rows(a)
            await asyncio.gather(a.sessions.open(NO_CLIENT), b.sessions.open(NO_CLIENT))
            assert await told(receiver, "one", 1) == [session_sid(grant.session_id)]
            assert not await refresh_works(a, grant)
            assert await outbox_rows(a) == rows_before + 1  # bob's session's end, once
            async with a.db() as db:
                left = await db.scalar(select(func.count()).select_from(SessionRow))
            assert left == 2  # the two sign-in pages the sweeps were opened with


@pytest.mark.parametrize(
    ("kind", "feed"), [("sqlite", "redis"), ("postgresql", "postgresql"), ("postgresql", "redis")]
)
async def test_attack_a_burst_of_2500_expired_sessions_is_worked_off_1000_per_sweep(
    kind: str, feed: str, tmp_path: Path
) -> None:
    """2400 signed-in sessions and 100 sign-in pages ran out unread at once (a morning after a
    lifetime change); 1100 of them had signed in to an application without a back-channel URI
    (refresh tokens outstanding), three to one with a URI. Each sweep deletes 1000 in one
    commit (its grant search over 1000 ids, its feed message naming them all); three sweeps
    work them off, the three applications told, every grant ended, bob's live session kept."""
    clock = FrozenClock(datetime.now(UTC))
    redis: dict[str, Any] = {}
    if feed == "redis":
        redis = {"redis_url": await reachable_redis(), "channel": own_channel()}
    with backchannel_receiver() as receiver:
        async with database(kind, tmp_path) as db_url:
            settings = await seeded(node_settings(db_url, feed, **redis))
            async with started(settings, clock) as a:
                told_app = await application(a, "told", receiver)
                quiet = await application(a, "quiet", None)
                live = await signed_in(a)
                grant = await sign_in_to(a, live, told_app)  # bob's subject, made for real
                ids = [f"{n:064x}" for n in range(2500)]
                told_sessions = [ids[5], ids[1500], ids[2300]]
                await expired_burst(a, ids, quiet.application.id, told_app.application.id)
                left = []
                for _ in range(4):
                    clock.advance(timedelta(seconds=61))
                    await a.sessions.open(NO_CLIENT)
                    left.append(await sessions_among(a, ids))
                assert left == [1500, 500, 0, 0]
                sids = await told(receiver, "told", len(told_sessions))
                assert sids == sorted(session_sid(s) for s in told_sessions)
                async with a.db() as db:
                    outstanding = await db.scalar(
                        select(func.count())
                        .select_from(OidcRefreshTokenRow)
                        .where(
                            OidcRefreshTokenRow.session_id.in_(ids[:1100]),
                            OidcRefreshTokenRow.revoked_at.is_(None),
                        )
                    )
                assert outstanding == 0
                assert await lets_in(a, live)()
                assert await refresh_works(a, grant)


async def expired_burst(node: Gateway, ids: list[str], quiet_app: int, told_app: int) -> None:
    """Sessions `ids` (the last 100 anonymous), all ended an hour ago; the first 1100 signed in
    to `quiet_app` (a code and a refresh token each), three to `told_app` (a code)."""
    bob = await user_id(node, "bob")
    past = node.clock.now() - timedelta(hours=13)
    sessions = [
        {
            "id": session_id,
            "user_id": bob if n < 2400 else None,
            "level": int(Level.SIGNED_IN if n < 2400 else Level.ANONYMOUS),
            "csrf_token": f"csrf-{n}",
            "next_url": "/",
            "created_at": past,
            "last_seen_at": past,
            "expires_at": past + timedelta(hours=12),
            "client_ip": "192.0.2.1",
            "user_agent": "burst",
            "second_factor_at": None,
        }
        for n, session_id in enumerate(ids)
    ]

    def code(n: int, app: int) -> dict[str, Any]:
        return {
            "code_hash": f"{app:08x}{n:056x}",
            "application_id": app,
            "user_id": bob,
            "redirect_uri": CALLBACK,
            "scope": "openid",
            "nonce": None,
            "code_challenge": None,
            "code_challenge_method": None,
            "auth_time": past,
            "amr": ["pwd"],
            "created_at": past,
            "expires_at": past + timedelta(minutes=1),
            "redeemed_at": past,
            "issued_jti": f"jti-{app}-{n}",
            "session_id": ids[n],
        }

    codes = [code(n, quiet_app) for n in range(1100)]
    codes += [code(n, told_app) for n in (5, 1500, 2300)]
    refresh_tokens = [
        {
            "token_hash": f"{n:064x}",
            "family_id": f"family-{n}",
            "application_id": quiet_app,
            "user_id": bob,
            "scope": "openid",
            "auth_time": past,
            "amr": ["pwd"],
            "issued_jti": f"jti-{quiet_app}-{n}",
            "created_at": past,
            "expires_at": past + timedelta(days=30),
            "used_at": None,
            "revoked_at": None,
            "session_id": ids[n],
        }
        for n in range(1100)
    ]
    async with node.db.begin() as db:
        await db.execute(insert(table_of(SessionRow)), sessions)
        await db.execute(insert(table_of(OidcCodeRow)), codes)
        await db.execute(insert(table_of(OidcRefreshTokenRow)), refresh_tokens)


async def sessions_among(node: Gateway, ids: list[str]) -> int:
    async with node.db() as db:
        query = select(func.count()).select_from(SessionRow).where(SessionRow.id.in_(ids))
        return int(await db.scalar(query) or 0)


# --- 4. Deleting a user ---------------------------------------------------------------------


class Abandoned(Exception):
    pass


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_attack_deleting_a_user_on_another_node_tells_every_application_of_theirs(
    kind: str, tmp_path: Path
) -> None:
    """Bob signed in to app one in one browser five minutes ago (its code long expired, and
    the codes of others cleared since: kept, as its session is there) and to app two in
    another; alice to app one. An admin deletes bob through the other node: app one is told of
    bob's first session, app two of his second, nobody of alice's."""
    clock = FrozenClock(datetime.now(UTC))
    with backchannel_receiver() as receiver:
        async with two_nodes_on_one_clock(kind, tmp_path, clock) as (a, b):
            one, two = await application(a, "one", receiver), await application(a, "two", receiver)
            first = await sign_in_to(a, await signed_in(a), one)
            clock.advance(timedelta(minutes=5))
            (alice,) = await promoted_sessions(a, "alice", 1)
            alices = await sign_in_to(a, alice, one)  # clears expired codes of sessions gone
            second = await sign_in_to(a, await signed_in(a), two)
            await b.accounts.delete_user("bob")
            assert await told(receiver, "one", 1) == [session_sid(first.session_id)]
            assert await told(receiver, "two", 1) == [session_sid(second.session_id)]
            assert await refresh_works(a, alices)


async def remove_then_fail(node: Gateway, user: int) -> None:
    """A unit of work that deletes the user (their sign-ins read, the row gone), then fails
    before its commit."""
    async with node.db.begin() as db:
        await Users(db).remove(user)
        await db.flush()
        raise Abandoned


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_attack_a_deletion_rolled_back_tells_nobody_and_ends_nothing(
    kind: str, tmp_path: Path
) -> None:
    """Bob, signed in to app one, is deleted on node b by a unit of work that then fails. Nobody
    is told, then or at b's next commit; his grant and session go on, on both nodes."""
    clock = FrozenClock(datetime.now(UTC))
    with backchannel_receiver() as receiver:
        async with two_nodes_on_one_clock(kind, tmp_path, clock) as (a, b):
            one = await application(a, "one", receiver)
            token = await signed_in(a)
            grant = await sign_in_to(a, token, one)
            bob = await user_id(b, "bob")
            with pytest.raises(Abandoned):
                await remove_then_fail(b, bob)
            await b.accounts.set_enabled("alice", False)  # b's next commit carries nothing over
            assert await told(receiver, "one", 0, within_s=0.5) == []
            assert await refresh_works(a, grant)
            assert await lets_in(a, token)()
            assert await lets_in(b, token)()


async def test_attack_a_sign_in_racing_the_users_deletion_is_refused_or_told(
    tmp_path: Path,
) -> None:
    """An admin deletes bob through node d (the CLI), whose DELETE is slow to reach PostgreSQL
    (1.5 s); meanwhile bob, signed in already, signs in to app one through node a. Either the
    sign-in is refused (the user is going) or app one is told when bob goes; and the deletion
    goes through. (Broke at bfa8ae6: the code was issued and redeemed between the deletion's
    read of bob's sign-ins and its DELETE, whose cascade removed it unseen: app one was never
    told.)"""
    with backchannel_receiver() as receiver:
        async with (
            database("postgresql", tmp_path) as db_url,
            tcp_proxy("127.0.0.1", 5432) as d_db,
        ):
            settings = await seeded(node_settings(db_url, "postgresql"))
            async with (
                started(settings) as a,
                started(node_settings(via(db_url, d_db.port), "postgresql")) as d,
            ):
                await all_live(a, d)
                one = await application(a, "one", receiver)
                token = await signed_in(a)
                d_db.hold_up_pattern, d_db.hold_up_seconds = b"DELETE FROM users", 1.5
                deleting = asyncio.create_task(d.accounts.delete_user("bob"))
                assert await until(lambda: d_db.held_up == 1, 5), "d's DELETE never came"
                signing_in = asyncio.create_task(try_sign_in_to(a, token, one))
                await asyncio.wait_for(deleting, 10)  # no deadlock, no error
                outcome = await asyncio.wait_for(signing_in, 10)
                async with a.db() as db:
                    assert await Users(db).by_name("bob") is None
                if isinstance(outcome, str):
                    assert outcome == "login_required", outcome
                    assert await told(receiver, "one", 0, within_s=0.5) == []
                    return
                assert not await refresh_works(a, outcome)  # the grant went with the user
                sids = await told(receiver, "one", 1, within_s=3)
                if sids != [session_sid(outcome.session_id)]:
                    raise NotTold(f"app one was told of {sids} after bob was deleted")
