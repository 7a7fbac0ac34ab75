"""Failure counters with lock-outs, kept in the database so every gateway process shares them.

A key (`user:alice`, `ip:203.0.113.5`, `duo-passcode:alice`) counts failures in a window; at
the limit it is locked until the lock-out ends. A success resets the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from twofa.storage.repositories import Throttles
from twofa.storage.tables import ThrottleRow


@dataclass(frozen=True)
class ThrottleRule:
    limit: int
    window: timedelta
    lockout: timedelta


@dataclass(frozen=True)
class LockState:
    counted: bool  # the key has a row: a success must reset it
    locked_until: datetime | None


async def lock_state(db: AsyncSession, key: str, now: datetime) -> LockState:
    row = await Throttles(db).get(key)
    if row is not None and row.locked_until is not None and row.locked_until > now:
        return LockState(True, row.locked_until)
    return LockState(row is not None, None)


async def locked_until(db: AsyncSession, key: str, now: datetime) -> datetime | None:
    return (await lock_state(db, key, now)).locked_until


async def record_failure(
    db: AsyncSession, key: str, rule: ThrottleRule, now: datetime
) -> datetime | None:
    """Counts one failure; returns the lock-out end when this failure reached the limit."""
    throttles = Throttles(db)
    row = await throttles.get(key)
    if row is None:
        row = ThrottleRow(key=key, failures=0, window_started_at=now)
        throttles.add(row)
    if now - row.window_started_at > rule.window:
        row.failures, row.window_started_at, row.locked_until = 0, now, None
    row.failures += 1
    if row.failures >= rule.limit:
        row.locked_until = now + rule.lockout
        row.failures, row.window_started_at = 0, now
        return row.locked_until
    return None


async def reset(db: AsyncSession, key: str) -> None:
    await Throttles(db).remove(key)
