"""The change outbox's statements (tables.ChangeOutboxRow): one INSERT inside the committing
transaction, the rows a reader has not read yet, and the pruning of old ones.

PostgreSQL takes a row's id at its INSERT and shows the row at its COMMIT, so an id below one
already read may still appear. A read that misses an id takes a transaction id of its own
(`take_transaction_id`): the writer of the missing row took its own before the row's id
(`add_in`), so below this one. Each read also says, from the same snapshot as its rows, which
transactions may still be running (`Horizon`): once every transaction id below the one taken
has ended, a row still missing was rolled back, and is never waited for again. No clock is
involved. On SQLite writers take turns, so an id below a committed one is never still on its
way (no transaction ids: None)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import BigInteger, Text, bindparam, delete, func, insert, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import FunctionElement

from twofa.storage.database_time import database_time
from twofa.storage.tables import ChangeOutboxRow, table_of


@dataclass(frozen=True)
class Horizon:
    """Of one snapshot (pg_snapshot_xmin, _xmax): no transaction id below `xmin` is running;
    `xmax` is one past the newest that had ended. A running transaction whose id is above
    every ended one counts in neither, hence `passed`'s two conditions."""

    xmin: int
    xmax: int

    def passed(self, taken: int) -> bool:
        """Whether every transaction whose id is below `taken` had ended at this snapshot
        (`taken` itself had ended by then, so each one below it counts in `xmin`)."""
        return self.xmax > taken and self.xmin >= taken


class _SnapshotBound(FunctionElement[Any]):
    """pg_snapshot_xmin or _xmax of the statement's own snapshot, as a number."""

    type = BigInteger()
    inherit_cache = True

    def __init__(self, which: str) -> None:
        self.which = which
        super().__init__()


class _SnapshotXmin(_SnapshotBound):
    inherit_cache = True

    def __init__(self) -> None:
        super().__init__("xmin")


class _SnapshotXmax(_SnapshotBound):
    inherit_cache = True

    def __init__(self) -> None:
        super().__init__("xmax")


@compiles(_SnapshotBound, "postgresql")
def _postgresql_bound(element: _SnapshotBound, compiler: SQLCompiler, **_: Any) -> str:
    return f"pg_snapshot_{element.which}(pg_current_snapshot())::text::bigint"


@compiles(_SnapshotBound, "sqlite")
def _sqlite_bound(element: _SnapshotBound, compiler: SQLCompiler, **_: Any) -> str:
    return "NULL"


_outbox = table_of(ChangeOutboxRow)
_TRANSACTION_ID: Final = select(func.pg_current_xact_id().cast(Text).cast(BigInteger))
_ADD: Final = insert(_outbox).values(created_at=database_time(), payload=bindparam("body"))
_OLDEST: Final = select(func.min(_outbox.c.id)).scalar_subquery()
# One row per unread outbox row, or one with no row: the snapshot's horizon and oldest id ride
# along, so all of it is of one snapshot (PostgreSQL takes one per statement).
_snapshot = select(
    _SnapshotXmin().label("xmin"), _SnapshotXmax().label("xmax"), _OLDEST.label("oldest")
).subquery()
_UNREAD: Final = (
    select(_snapshot.c.xmin, _snapshot.c.xmax, _snapshot.c.oldest, _outbox.c.id, _outbox.c.payload)
    .select_from(
        _snapshot.outerjoin(
            _outbox,
            or_(
                _outbox.c.id > bindparam("after_id"),
                _outbox.c.id.in_(bindparam("awaited", expanding=True)),
            ),
        )
    )
    .order_by(_outbox.c.id)
)
_NEWEST_IDS: Final = (
    select(_snapshot.c.xmin, _snapshot.c.xmax, _snapshot.c.oldest, _outbox.c.id)
    .select_from(_snapshot.outerjoin(_outbox, true()))
    .order_by(_outbox.c.id.desc())
    .limit(bindparam("most"))
)
_NEWEST_AT_OR_BELOW: Final = (
    select(func.max(_outbox.c.id)).where(_outbox.c.id <= bindparam("through_id")).scalar_subquery()
)
# The newest row at or below the pruning point stays, whatever its age: with it, a reader can
# tell rows were pruned before it read them. It is the newest row of all at times.
_PRUNE: Final = delete(_outbox).where(
    _outbox.c.id <= bindparam("through_id"), _outbox.c.id < _NEWEST_AT_OR_BELOW
)


@dataclass(frozen=True)
class Unread:
    rows: list[tuple[int, str]]  # oldest first
    oldest: int | None  # the oldest row kept
    horizon: Horizon | None


@dataclass(frozen=True)
class Standing:
    newest_ids: list[int]  # newest first
    oldest: int | None
    horizon: Horizon | None


def add_in(session: Session, payload: str) -> None:
    """In the committing transaction (a before-commit listener's synchronous session). On
    PostgreSQL the transaction's id is taken first: a reader that misses the row's id judges
    by the transaction ids running then (`Horizon`), so this one's must be below them before
    the row's id exists (taken at its first write, it could come just after the id)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(_TRANSACTION_ID)
    session.execute(_ADD, {"body": payload})


async def take_transaction_id(db: AsyncSession) -> int | None:
    """A transaction id for `db`'s transaction (PostgreSQL hands them out in order; None on
    SQLite)."""
    if db.get_bind().dialect.name != "postgresql":
        return None
    return int(await db.scalar(_TRANSACTION_ID) or 0)


async def unread(db: AsyncSession, after_id: int, awaited: set[int]) -> Unread:
    """The rows above `after_id` and those among `awaited` (ids below it not seen yet)."""
    found = (await db.execute(_UNREAD, {"after_id": after_id, "awaited": sorted(awaited)})).all()
    rows = [(int(row.id), str(row.payload)) for row in found if row.id is not None]
    first = found[0]
    return Unread(rows, _id_or_none(first.oldest), _horizon(first.xmin, first.xmax))


async def standing(db: AsyncSession, most: int) -> Standing:
    """The `most` newest ids, in one snapshot with its horizon."""
    found = (await db.execute(_NEWEST_IDS, {"most": most})).all()
    ids = [int(row.id) for row in found if row.id is not None]
    first = found[0]
    return Standing(ids, _id_or_none(first.oldest), _horizon(first.xmin, first.xmax))


async def prune_through(db: AsyncSession, last_id: int) -> None:
    await db.execute(_PRUNE, {"through_id": last_id})


def _id_or_none(value: object) -> int | None:
    return None if value is None else int(str(value))


def _horizon(xmin: object, xmax: object) -> Horizon | None:
    if xmin is None or xmax is None:
        return None
    return Horizon(int(str(xmin)), int(str(xmax)))
