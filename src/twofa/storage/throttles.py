"""Attempt counters (services.state.throttle): one row per key (`2fa-totp:alice`,
`login-ip:203.0.113.5`), each count one atomic statement, so concurrent requests on one key
see each other's numbers and none reads a row to write it. Like every repository it never
commits: the service owns the transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Final

from sqlalchemy import Integer, and_, bindparam, case, delete, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import ReturningInsert
from sqlalchemy.sql.elements import BindParameter

from twofa.storage.tables import ThrottleRow, UtcDateTime, table_of


@dataclass(frozen=True)
class CountedAttempt:
    """A key's row as one counting statement left it."""

    failures: int  # attempts counted in the window, this one included
    window_started_at: datetime
    locked_until: datetime | None


class Throttles:
    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    async def get(self, key: str) -> ThrottleRow | None:
        return await self._db.scalar(_GET, {"of_key": key})

    async def count_attempt(
        self, key: str, limit: int, window: timedelta, lockout: timedelta, now: datetime
    ) -> CountedAttempt:
        """INSERT … ON CONFLICT (key) DO UPDATE … RETURNING: the row's count after this
        attempt. A new key, an ended lock-out or a window that has passed starts again at 1;
        an active lock-out counts on from at least `limit + 1`, so it is never an allowed
        number; the attempt whose number reaches `limit` sets the lock-out in the same
        statement. Every SET expression reads the row as it was before."""
        dialect = self._db.get_bind().dialect.name
        lock_end = now + lockout
        counted = (
            await self._db.execute(
                _counting_statement(dialect),
                {
                    "of_key": key,
                    "now": now,
                    "stale_before": now - window,
                    "lock_end": lock_end,
                    "first_lock": lock_end if limit <= 1 else None,
                    "limit": limit,
                    "over_limit": limit + 1,
                },
            )
        ).one()
        return CountedAttempt(
            int(counted.failures), counted.window_started_at, counted.locked_until
        )

    async def give_back(self, key: str, window_started_at: datetime, limit: int) -> None:
        """Takes back one attempt counted in this window (not in a later one), and lifts the
        lock-out when the count falls below the limit again; then drops the row if nothing is
        left in it (a shared key every right password gives back would otherwise stay)."""
        values = {"of_key": key, "counted_since": window_started_at, "limit": limit}
        await self._db.execute(_GIVE_BACK, values)
        await self._db.execute(_DROP_EMPTY, {"of_key": key})

    async def remove(self, key: str) -> None:
        await self._db.execute(_REMOVE, {"of_key": key})

    async def starting_with(self, prefix: str) -> Sequence[ThrottleRow]:
        """The rows whose key starts with `prefix`, taken literally (`%` and `_` are no
        wildcards): one user's keys of every client network at once."""
        query = select(ThrottleRow).where(ThrottleRow.key.startswith(prefix, autoescape=True))
        # SQLite's LIKE ignores case: keep the exact matches only.
        return [row for row in await self._db.scalars(query) if row.key.startswith(prefix)]


# The statements on every attempt of every sign-in and second factor are built once, with
# their values bound at execution: building SQLAlchemy expressions costs more than running
# them (bench/README.md, the sign-in path).
def _time(name: str) -> BindParameter[datetime]:
    # Times carry the column's type (the stored form SQLite compares as text).
    return bindparam(name, type_=UtcDateTime())


@cache
def _counting_statement(dialect: str) -> ReturningInsert[int, datetime, datetime | None]:
    table = table_of(ThrottleRow)  # a Core statement: no ORM bulk-insert bookkeeping
    row = table.c
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    now, lock_end, first_lock = _time("now"), _time("lock_end"), _time("first_lock")
    limit = bindparam("limit", type_=Integer())
    afresh = or_(
        and_(row.locked_until.is_not(None), row.locked_until <= now),
        and_(row.locked_until.is_(None), row.window_started_at < _time("stale_before")),
    )
    return (
        insert(table)
        .values(key=bindparam("of_key"), failures=1, window_started_at=now, locked_until=first_lock)
        .on_conflict_do_update(
            index_elements=[row.key],
            set_={
                "failures": case(
                    (afresh, 1),
                    (
                        and_(row.locked_until.is_not(None), row.failures < limit),
                        bindparam("over_limit", type_=Integer()),
                    ),
                    else_=row.failures + 1,
                ),
                "window_started_at": case((afresh, now), else_=row.window_started_at),
                "locked_until": case(
                    (afresh, first_lock),
                    (and_(row.locked_until.is_(None), row.failures + 1 >= limit), lock_end),
                    else_=row.locked_until,
                ),
            },
        )
        .returning(row.failures, row.window_started_at, row.locked_until)
    )


_GIVE_BACK: Final = (
    update(ThrottleRow)
    .where(
        ThrottleRow.key == bindparam("of_key"),
        ThrottleRow.window_started_at == _time("counted_since"),
        ThrottleRow.failures > 0,
    )
    .values(
        failures=ThrottleRow.failures - 1,
        locked_until=case(
            (ThrottleRow.failures - 1 < bindparam("limit", type_=Integer()), None),
            else_=ThrottleRow.locked_until,
        ),
    )
)
_DROP_EMPTY: Final = delete(ThrottleRow).where(
    ThrottleRow.key == bindparam("of_key"),
    ThrottleRow.failures <= 0,
    ThrottleRow.locked_until.is_(None),
)
_GET: Final = select(ThrottleRow).where(ThrottleRow.key == bindparam("of_key"))
_throttle = table_of(ThrottleRow)
_REMOVE: Final = delete(_throttle).where(_throttle.c.key == bindparam("of_key"))
