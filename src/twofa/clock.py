"""The one place twofa reads the time. Everything else is given a `Clock`, so tests can move
time forward (TOTP steps, expiries, lockouts) without sleeping.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """An aware UTC datetime."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary start that never go back, for caches and timers: the
        wall clock can jump (NTP, an admin), and a cache must not live on because it did."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Waits without blocking the event loop (a sign-in slowed down under attack), so a
        test's clock can note the wait and move on instead."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class FrozenClock:
    """A clock that moves only when told to (tests, benchmarks)."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("FrozenClock needs an aware datetime")
        self._now = start.astimezone(UTC)
        self._monotonic = 0.0
        self.slept: list[float] = []  # every wait asked of `sleep`, in seconds

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, by: timedelta) -> None:
        """Moves both readings; the monotonic one never goes back, even when `now` does."""
        self._now += by
        self._monotonic += max(by.total_seconds(), 0.0)

    async def sleep(self, seconds: float) -> None:
        """Notes the wait and moves the time on by it, at once."""
        self.slept.append(seconds)
        self.advance(timedelta(seconds=seconds))
        await asyncio.sleep(0)
