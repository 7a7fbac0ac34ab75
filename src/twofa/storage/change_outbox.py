"""The change outbox's statements (tables.ChangeOutboxRow): one INSERT inside the committing
transaction, the rows a reader has not read yet, and the pruning of old ones.

Rows carry the database's own time of their INSERT, never a node's: a starting reader finds by
it which ids may still belong to transactions on their way (`newest_ids`), and the
nodes' clocks may be minutes apart."""

from __future__ import annotations

from typing import Final

from sqlalchemy import Engine, bindparam, delete, func, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from twofa.storage.database_time import database_time
from twofa.storage.tables import ChangeOutboxRow, table_of

_outbox = table_of(ChangeOutboxRow)
_ADD: Final = insert(_outbox).values(created_at=database_time(), payload=bindparam("body"))
_UNREAD: Final = (
    select(_outbox.c.id, _outbox.c.payload)
    .where(
        or_(
            _outbox.c.id > bindparam("after_id"),
            _outbox.c.id.in_(bindparam("awaited", expanding=True)),
        )
    )
    .order_by(_outbox.c.id)
)
_NEWEST: Final = select(func.max(_outbox.c.id))
_OLDEST: Final = select(func.min(_outbox.c.id))
_IDS_AFTER: Final = select(_outbox.c.id).where(_outbox.c.id > bindparam("after_id"))
_NEWEST_AT_OR_BELOW: Final = (
    select(func.max(_outbox.c.id)).where(_outbox.c.id <= bindparam("through_id")).scalar_subquery()
)
# The newest row at or below the pruning point stays, whatever its age: with it, a reader can
# tell rows were pruned before it read them, and a starting reader knows how far down it need
# not look (everything below it was written before it). It is the newest row of all at times.
_PRUNE: Final = delete(_outbox).where(
    _outbox.c.id <= bindparam("through_id"), _outbox.c.id < _NEWEST_AT_OR_BELOW
)


def add_in(session: Session, payload: str) -> None:
    """In the committing transaction (a before-commit listener's synchronous session)."""
    session.execute(_ADD, {"body": payload})


def add_apart(session: Session, payload: str) -> None:
    """After `session` committed (an after-commit listener, which may not use the session
    itself): in a transaction of its own, on a connection of its own."""
    bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    with engine.connect() as connection:
        connection.execute(_ADD, {"body": payload})
        connection.commit()


async def newest_id(db: AsyncSession) -> int:
    return int(await db.scalar(_NEWEST) or 0)


async def oldest_id(db: AsyncSession) -> int | None:
    found = await db.scalar(_OLDEST)
    return None if found is None else int(found)


async def newest_ids(db: AsyncSession, older_than_s: float) -> tuple[int, int]:
    """The newest id, and the newest whose row was written `older_than_s` ago or earlier by
    the database's clock (0: none), in one statement. Ids are taken in order, so an id taken
    since is above the second."""
    older = select(func.max(_outbox.c.id)).where(_outbox.c.created_at < database_time(older_than_s))
    found = (await db.execute(select(_NEWEST.scalar_subquery(), older.scalar_subquery()))).one()
    return int(found[0] or 0), int(found[1] or 0)


async def ids_after(db: AsyncSession, floor: int) -> list[int]:
    return [int(row_id) for row_id in await db.scalars(_IDS_AFTER, {"after_id": floor})]


async def unread(db: AsyncSession, after_id: int, awaited: set[int]) -> list[tuple[int, str]]:
    """The rows above `after_id` and those among `awaited` (ids below it not seen yet), oldest
    first."""
    rows = await db.execute(_UNREAD, {"after_id": after_id, "awaited": sorted(awaited)})
    return [(int(row_id), str(payload)) for row_id, payload in rows]


async def prune_through(db: AsyncSession, last_id: int) -> None:
    await db.execute(_PRUNE, {"through_id": last_id})
