"""Attempt counters with lock-outs, kept in the database so every gateway process shares them.

Count, then check: an attempt first takes its number on a key (`user:alice`,
`ip:203.0.113.5`, `duo-passcode:alice`) in ONE statement, and the caller commits that before
it looks at the secret, so concurrent attempts see each other's numbers. Attempt n of a window
is evaluated only when n <= limit; the attempt whose number reaches the limit sets the
lock-out in that same statement, so if it fails the key is locked, and if it succeeds the
caller's reset (or refund, for a shared key) lifts it. Nothing reads a count to write it back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from twofa.clock import Clock
from twofa.domain.client import ClientInfo
from twofa.services.state import audit
from twofa.storage.throttles import Throttles


@dataclass(frozen=True)
class ThrottleRule:
    limit: int  # attempts evaluated per window
    window: timedelta
    lockout: timedelta


@dataclass(frozen=True)
class Attempt:
    """One attempt, counted: whether it may be evaluated, and what a failure means."""

    key: str
    number: int  # in the key's window, this attempt included
    limit: int
    window_started_at: datetime
    locked_until: datetime | None  # the key's lock-out after this count, if any

    @property
    def allowed(self) -> bool:
        """Within the limit: evaluate it. Otherwise refuse it as locked, unseen."""
        return self.number <= self.limit

    @property
    def just_locked(self) -> bool:
        """The last attempt the window allows: it set the lock-out, so when it fails the key
        is locked from now (audit the lock-out then, once), and when it succeeds the reset or
        refund lifts it."""
        return self.number == self.limit


@dataclass(frozen=True)
class LockState:
    counted: bool  # the key has a row
    locked_until: datetime | None


async def take_attempt(db: AsyncSession, key: str, rule: ThrottleRule, now: datetime) -> Attempt:
    """Counts one attempt on `key` (one INSERT … ON CONFLICT DO UPDATE … RETURNING). Call it
    first in a short transaction of its own and commit before verifying anything: until the
    commit, other attempts on the key wait for this one (and on SQLite, a transaction that
    writes first takes the write lock at once instead of failing to upgrade a read)."""
    counted = await Throttles(db).count_attempt(key, rule.limit, rule.window, rule.lockout, now)
    return Attempt(
        key, counted.failures, rule.limit, counted.window_started_at, counted.locked_until
    )


async def refund(db: AsyncSession, attempt: Attempt) -> None:
    """Gives back an attempt that was allowed but must not count: a right password on a key
    that others share (the client's address: one valid account must not clear everyone's
    failures, so it only takes back its own attempt), or one refused before anything secret
    was checked. Only in the attempt's window; lifts the lock-out when the count drops below
    the limit again."""
    await Throttles(db).give_back(attempt.key, attempt.window_started_at, attempt.limit)


async def reset(db: AsyncSession, key: str) -> None:
    """A success on a key of one user and one method: the count starts afresh."""
    await Throttles(db).remove(key)


def audit_lockout(
    db: AsyncSession, clock: Clock, attempt: Attempt, *, username: str, client: ClientInfo
) -> None:
    """Call when `attempt` failed: records the lock-out (kind `lockout`, outcome `locked`)
    when this failure is the one that locks the key, and nothing otherwise."""
    if attempt.just_locked and attempt.locked_until is not None:
        audit.record(
            db,
            clock,
            "lockout",
            "locked",
            username=username,
            client=client,
            key=attempt.key,
            until=attempt.locked_until.isoformat(),
        )


async def lock_state(db: AsyncSession, key: str, now: datetime) -> LockState:
    """A look without counting, for what evaluates nothing (opening a challenge, the console's
    "locked until"). Never use it to decide that an answer may be checked."""
    row = await Throttles(db).get(key)
    if row is not None and row.locked_until is not None and row.locked_until > now:
        return LockState(True, row.locked_until)
    return LockState(row is not None, None)


async def locked_until(db: AsyncSession, key: str, now: datetime) -> datetime | None:
    return (await lock_state(db, key, now)).locked_until
