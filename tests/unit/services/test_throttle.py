"""Failure counters: a key locks at the limit within its window, the lock ends after the
lock-out, an old window starts afresh, and a success resets the key."""

from __future__ import annotations

from datetime import datetime, timedelta

from twofa.clock import FrozenClock
from twofa.services import throttle
from twofa.services.runtime import Gateway
from twofa.storage.repositories import Throttles

RULE = throttle.ThrottleRule(limit=3, window=timedelta(minutes=10), lockout=timedelta(minutes=15))
KEY = "login-user:alice"


async def fail(gateway: Gateway, now: datetime, key: str = KEY) -> datetime | None:
    async with gateway.db.begin() as db:
        return await throttle.record_failure(db, key, RULE, now)


async def locked(gateway: Gateway, now: datetime, key: str = KEY) -> datetime | None:
    async with gateway.db.begin() as db:
        return await throttle.locked_until(db, key, now)


async def test_unknown_key_is_not_locked(gateway: Gateway, clock: FrozenClock) -> None:
    assert await locked(gateway, clock.now()) is None


async def test_locks_at_the_limit(gateway: Gateway, clock: FrozenClock) -> None:
    assert await fail(gateway, clock.now()) is None
    assert await fail(gateway, clock.now()) is None
    assert await locked(gateway, clock.now()) is None
    until = await fail(gateway, clock.now())
    assert until == clock.now() + RULE.lockout
    assert await locked(gateway, clock.now()) == until


async def test_lock_ends_after_the_lockout(gateway: Gateway, clock: FrozenClock) -> None:
    for _ in range(RULE.limit):
        await fail(gateway, clock.now())
    clock.advance(RULE.lockout - timedelta(seconds=1))
    assert await locked(gateway, clock.now()) is not None
    clock.advance(timedelta(seconds=1))
    assert await locked(gateway, clock.now()) is None


async def test_counting_starts_again_after_a_lock(gateway: Gateway, clock: FrozenClock) -> None:
    for _ in range(RULE.limit):
        await fail(gateway, clock.now())
    clock.advance(RULE.lockout)
    assert await fail(gateway, clock.now()) is None
    assert await locked(gateway, clock.now()) is None


async def test_failures_outside_the_window_are_forgotten(
    gateway: Gateway, clock: FrozenClock
) -> None:
    await fail(gateway, clock.now())
    await fail(gateway, clock.now())
    clock.advance(RULE.window + timedelta(seconds=1))
    assert await fail(gateway, clock.now()) is None
    assert await fail(gateway, clock.now()) is None
    assert await locked(gateway, clock.now()) is None
    assert await fail(gateway, clock.now()) is not None


async def test_failures_spread_inside_the_window_still_lock(
    gateway: Gateway, clock: FrozenClock
) -> None:
    await fail(gateway, clock.now())
    clock.advance(timedelta(minutes=5))
    await fail(gateway, clock.now())
    clock.advance(timedelta(minutes=5))
    assert await fail(gateway, clock.now()) is not None


async def test_reset_clears_the_count(gateway: Gateway, clock: FrozenClock) -> None:
    await fail(gateway, clock.now())
    await fail(gateway, clock.now())
    async with gateway.db.begin() as db:
        await throttle.reset(db, KEY)
        assert await Throttles(db).get(KEY) is None
    assert await fail(gateway, clock.now()) is None
    assert await fail(gateway, clock.now()) is None
    assert await locked(gateway, clock.now()) is None


async def test_reset_lifts_a_lock(gateway: Gateway, clock: FrozenClock) -> None:
    for _ in range(RULE.limit):
        await fail(gateway, clock.now())
    async with gateway.db.begin() as db:
        await throttle.reset(db, KEY)
    assert await locked(gateway, clock.now()) is None


async def test_keys_are_independent(gateway: Gateway, clock: FrozenClock) -> None:
    for _ in range(RULE.limit):
        await fail(gateway, clock.now(), key="login-user:bob")
    assert await locked(gateway, clock.now(), key="login-user:bob") is not None
    assert await locked(gateway, clock.now()) is None
