"""The change outbox's statements (tables.ChangeOutboxRow): one INSERT inside the committing
transaction, the rows after an id, and the pruning of old ones."""

from __future__ import annotations

from datetime import datetime
from typing import Final

from sqlalchemy import bindparam, delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from twofa.storage.tables import ChangeOutboxRow, UtcDateTime, table_of

_outbox = table_of(ChangeOutboxRow)
_ADD: Final = insert(_outbox).values(
    created_at=bindparam("at", type_=UtcDateTime()), payload=bindparam("body")
)
_AFTER: Final = (
    select(_outbox.c.id, _outbox.c.payload)
    .where(_outbox.c.id > bindparam("after_id"))
    .order_by(_outbox.c.id)
)
_NEWEST: Final = select(func.max(_outbox.c.id))
_OLDEST: Final = select(func.min(_outbox.c.id))
_IDS_AFTER: Final = select(_outbox.c.id).where(_outbox.c.id > bindparam("after_id"))
# The newest row stays, whatever its age: with it, a reader can tell rows were pruned unread.
_PRUNE: Final = delete(_outbox).where(
    _outbox.c.id <= bindparam("through_id"), _outbox.c.id < _NEWEST.scalar_subquery()
)


def add_in(session: Session, at: datetime, payload: str) -> None:
    """In the committing transaction (a before-commit listener's synchronous session)."""
    session.execute(_ADD, {"at": at, "body": payload})


async def newest_id(db: AsyncSession) -> int:
    return int(await db.scalar(_NEWEST) or 0)


async def oldest_id(db: AsyncSession) -> int | None:
    found = await db.scalar(_OLDEST)
    return None if found is None else int(found)


async def ids_after(db: AsyncSession, floor: int) -> list[int]:
    return [int(row_id) for row_id in await db.scalars(_IDS_AFTER, {"after_id": floor})]


async def after(db: AsyncSession, floor: int) -> list[tuple[int, str]]:
    """The rows above `floor`, oldest first."""
    rows = await db.execute(_AFTER, {"after_id": floor})
    return [(int(row_id), str(payload)) for row_id, payload in rows]


async def prune_through(db: AsyncSession, last_id: int) -> None:
    await db.execute(_PRUNE, {"through_id": last_id})
