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
_PRUNE: Final = delete(_outbox).where(_outbox.c.id <= bindparam("through_id"))


def add_in(session: Session, at: datetime, payload: str) -> None:
    """In the committing transaction (a before-commit listener's synchronous session)."""
    session.execute(_ADD, {"at": at, "body": payload})


async def newest_id(db: AsyncSession) -> int:
    return int(await db.scalar(_NEWEST) or 0)


async def after(db: AsyncSession, floor: int) -> list[tuple[int, str]]:
    """The rows above `floor`, oldest first."""
    rows = await db.execute(_AFTER, {"after_id": floor})
    return [(int(row_id), str(payload)) for row_id, payload in rows]


async def prune_through(db: AsyncSession, last_id: int) -> None:
    await db.execute(_PRUNE, {"through_id": last_id})
