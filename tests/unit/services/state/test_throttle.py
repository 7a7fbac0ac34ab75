"""Attempt counters, on SQLite and PostgreSQL: each attempt takes the next number of its key
in one statement; numbers up to the limit are allowed and the one at the limit sets the
lock-out; a lock-out ends, an old window starts afresh; a reset clears a key, a refund gives
back one attempt; and concurrent attempts never share a number."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tests.support.databases import postgres_database, sqlite_database
from twofa.clock import FrozenClock
from twofa.services.runtime import Gateway
from twofa.services.state import throttle
from twofa.storage.tables import ThrottleRow
from twofa.storage.throttles import Throttles

RULE = throttle.ThrottleRule(limit=3, window=timedelta(minutes=10), lockout=timedelta(minutes=15))
KEY = "login-user:alice"


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """Overrides the services' SQLite-only database: the statement differs per dialect."""
    factory = sqlite_database(tmp_path) if request.param == "sqlite" else postgres_database()
    async with factory as url:
        yield url


async def attempt(
    gateway: Gateway, now: datetime, key: str = KEY, rule: throttle.ThrottleRule = RULE
) -> throttle.Attempt:
    async with gateway.db.begin() as db:
        return await throttle.take_attempt(db, key, rule, now)


async def locked(gateway: Gateway, now: datetime, key: str = KEY) -> datetime | None:
    async with gateway.db.begin() as db:
        return await throttle.locked_until(db, key, now)


async def failures(gateway: Gateway, key: str = KEY) -> int | None:
    async with gateway.db.begin() as db:
        row = await Throttles(db).get(key)
        return None if row is None else row.failures


async def test_unknown_key_is_not_locked(gateway: Gateway, clock: FrozenClock) -> None:
    assert await locked(gateway, clock.now()) is None


async def test_attempts_up_to_the_limit_are_allowed_and_the_last_sets_the_lock(
    gateway: Gateway, clock: FrozenClock
) -> None:
    first, second = await attempt(gateway, clock.now()), await attempt(gateway, clock.now())
    assert (first.number, first.allowed, first.just_locked, first.locked_until) == (
        1,
        True,
        False,
        None,
    )
    assert (second.number, second.allowed, second.just_locked) == (2, True, False)
    assert await locked(gateway, clock.now()) is None
    last = await attempt(gateway, clock.now())
    assert (last.number, last.allowed, last.just_locked) == (3, True, True)
    assert last.locked_until == clock.now() + RULE.lockout
    assert await locked(gateway, clock.now()) == last.locked_until


async def test_an_attempt_over_the_limit_is_refused_and_the_lock_stays(
    gateway: Gateway, clock: FrozenClock
) -> None:
    for _ in range(RULE.limit):
        until = (await attempt(gateway, clock.now())).locked_until
    clock.advance(timedelta(minutes=5))
    over = await attempt(gateway, clock.now())
    assert (over.number, over.allowed, over.just_locked) == (4, False, False)
    assert over.locked_until == until  # refused attempts do not extend the lock-out


async def test_lock_ends_after_the_lockout_and_counting_starts_again(
    gateway: Gateway, clock: FrozenClock
) -> None:
    for _ in range(RULE.limit + 2):
        await attempt(gateway, clock.now())
    clock.advance(RULE.lockout - timedelta(seconds=1))
    assert await locked(gateway, clock.now()) is not None
    assert not (await attempt(gateway, clock.now())).allowed
    clock.advance(timedelta(seconds=1))
    assert await locked(gateway, clock.now()) is None
    again = await attempt(gateway, clock.now())
    assert (again.number, again.allowed, again.locked_until) == (1, True, None)
    assert again.window_started_at == clock.now()


async def test_attempts_outside_the_window_are_forgotten(
    gateway: Gateway, clock: FrozenClock
) -> None:
    await attempt(gateway, clock.now())
    await attempt(gateway, clock.now())
    clock.advance(RULE.window + timedelta(seconds=1))
    assert (await attempt(gateway, clock.now())).number == 1
    assert (await attempt(gateway, clock.now())).number == 2
    assert await locked(gateway, clock.now()) is None
    assert (await attempt(gateway, clock.now())).just_locked


async def test_attempts_spread_inside_the_window_still_lock(
    gateway: Gateway, clock: FrozenClock
) -> None:
    await attempt(gateway, clock.now())
    clock.advance(timedelta(minutes=5))
    await attempt(gateway, clock.now())
    clock.advance(timedelta(minutes=5))  # the window's last instant
    assert (await attempt(gateway, clock.now())).just_locked


async def test_a_lock_written_before_counting_began_is_never_an_allowed_number(
    gateway: Gateway, clock: FrozenClock
) -> None:
    """A row as the former read-check-write code left it when it locked: no failures."""
    async with gateway.db.begin() as db:
        db.add(
            ThrottleRow(
                key=KEY,
                failures=0,
                window_started_at=clock.now(),
                locked_until=clock.now() + RULE.lockout,
            )
        )
    refused = await attempt(gateway, clock.now())
    assert (refused.number, refused.allowed) == (RULE.limit + 1, False)
    assert (await attempt(gateway, clock.now())).number == RULE.limit + 2


async def test_a_limit_of_one_locks_at_the_first_attempt(
    gateway: Gateway, clock: FrozenClock
) -> None:
    once = throttle.ThrottleRule(1, timedelta(minutes=10), timedelta(minutes=10))
    first = await attempt(gateway, clock.now(), rule=once)
    assert (first.allowed, first.just_locked) == (True, True)
    assert first.locked_until == clock.now() + once.lockout
    assert not (await attempt(gateway, clock.now(), rule=once)).allowed
    clock.advance(once.lockout)
    assert (await attempt(gateway, clock.now(), rule=once)).allowed


async def test_reset_clears_the_count_and_lifts_a_lock(
    gateway: Gateway, clock: FrozenClock
) -> None:
    for _ in range(RULE.limit):
        await attempt(gateway, clock.now())
    async with gateway.db.begin() as db:
        await throttle.reset(db, KEY)
    assert await failures(gateway) is None
    assert await locked(gateway, clock.now()) is None
    assert (await attempt(gateway, clock.now())).number == 1


async def test_a_refund_gives_back_one_attempt_and_lifts_the_lock_below_the_limit(
    gateway: Gateway, clock: FrozenClock
) -> None:
    await attempt(gateway, clock.now())
    await attempt(gateway, clock.now())
    last = await attempt(gateway, clock.now())
    assert await locked(gateway, clock.now()) is not None
    async with gateway.db.begin() as db:
        await throttle.refund(db, last)  # the last allowed attempt was right
    assert await failures(gateway) == 2
    assert await locked(gateway, clock.now()) is None
    assert (await attempt(gateway, clock.now())).just_locked


async def test_a_refund_leaves_a_lock_that_later_attempts_keep(
    gateway: Gateway, clock: FrozenClock
) -> None:
    for _ in range(RULE.limit - 1):
        await attempt(gateway, clock.now())
    last = await attempt(gateway, clock.now())
    await attempt(gateway, clock.now())  # refused, counted while the last one was checked
    async with gateway.db.begin() as db:
        await throttle.refund(db, last)
    assert await failures(gateway) == RULE.limit
    assert await locked(gateway, clock.now()) is not None


async def test_a_refund_to_nothing_drops_the_row(gateway: Gateway, clock: FrozenClock) -> None:
    only = await attempt(gateway, clock.now())
    async with gateway.db.begin() as db:
        await throttle.refund(db, only)
    assert await failures(gateway) is None


async def test_a_refund_from_an_earlier_window_changes_nothing(
    gateway: Gateway, clock: FrozenClock
) -> None:
    old = await attempt(gateway, clock.now())
    clock.advance(RULE.window + timedelta(seconds=1))
    await attempt(gateway, clock.now())
    async with gateway.db.begin() as db:
        await throttle.refund(db, old)
    assert await failures(gateway) == 1


async def test_keys_are_independent(gateway: Gateway, clock: FrozenClock) -> None:
    for _ in range(RULE.limit):
        await attempt(gateway, clock.now(), key="login-user:bob")
    assert await locked(gateway, clock.now(), key="login-user:bob") is not None
    assert await locked(gateway, clock.now()) is None
    assert (await attempt(gateway, clock.now())).number == 1


async def test_concurrent_attempts_never_share_a_number(
    gateway: Gateway, clock: FrozenClock
) -> None:
    """Fifty at once, each in its own transaction: the numbers 1 to 50, the limit allowed."""
    taken = await asyncio.gather(*(attempt(gateway, clock.now()) for _ in range(50)))
    assert sorted(a.number for a in taken) == list(range(1, 51))
    assert sum(a.allowed for a in taken) == RULE.limit
    assert sum(a.just_locked for a in taken) == 1
    assert await failures(gateway) == 50
