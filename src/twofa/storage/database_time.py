"""The database server's own clock, for what must not depend on a gateway node's: the change
outbox's rows (nodes' clocks may be minutes apart) and `twofa doctor`'s check of how far this
node's clock is from it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import FunctionElement

from twofa.storage.tables import UtcDateTime


class database_time(FunctionElement[Any]):  # noqa: N801 (an SQL function's name)
    """The database server's clock when the statement runs, `seconds_ago` earlier. Not
    PostgreSQL's now(), which is the transaction's start: a long transaction's INSERT would
    look older than rows written before it."""

    type = UtcDateTime()
    inherit_cache = False  # `seconds_ago` is in the SQL text: statements with it are not cached

    def __init__(self, seconds_ago: float = 0.0) -> None:
        self.seconds_ago = seconds_ago
        super().__init__()


@compiles(database_time, "postgresql")
def _postgresql_time(element: database_time, compiler: SQLCompiler, **_: Any) -> str:
    return f"(clock_timestamp() - interval '{float(element.seconds_ago)} seconds')"


@compiles(database_time, "sqlite")
def _sqlite_time(element: database_time, compiler: SQLCompiler, **_: Any) -> str:
    # The text SQLAlchemy stores SQLite's datetimes as, so rows written either way compare.
    return f"strftime('%Y-%m-%d %H:%M:%f000', 'now', '-{float(element.seconds_ago)} seconds')"


async def server_time(db: AsyncSession) -> datetime:
    found = await db.scalar(select(database_time()))
    assert isinstance(found, datetime)
    return found
