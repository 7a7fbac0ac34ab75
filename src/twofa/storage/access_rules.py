"""Queries over the console's access rules and their version row. Like every repository it
never commits; `lock_and_bump` is the first statement of every change, so on both databases a
second admin's change waits for the first one's transaction instead of interleaving with it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from twofa.storage.change_notes import note_access_rules_changed
from twofa.storage.tables import AccessRuleRow, AccessRulesVersionRow

VERSION_ROW_ID = 1


class AccessRules:
    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    async def lock_and_bump(self, now: datetime) -> None:
        """Raises the version in one atomic upsert. It write-locks the version row on
        PostgreSQL and the database on SQLite until the transaction ends: changes serialise."""
        dialect = self._db.get_bind().dialect.name
        insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
        statement = insert(AccessRulesVersionRow).values(
            id=VERSION_ROW_ID, version=1, updated_at=now
        )
        statement = statement.on_conflict_do_update(
            index_elements=[AccessRulesVersionRow.id],
            set_={
                "version": AccessRulesVersionRow.version + 1,
                "updated_at": statement.excluded.updated_at,
            },
        )
        await self._db.execute(statement)
        note_access_rules_changed(self._db)

    async def version(self) -> int:
        found = await self._db.scalar(
            select(AccessRulesVersionRow.version).where(AccessRulesVersionRow.id == VERSION_ROW_ID)
        )
        return int(found or 0)

    async def in_order(self) -> Sequence[AccessRuleRow]:
        query = select(AccessRuleRow).order_by(AccessRuleRow.position, AccessRuleRow.id)
        return (await self._db.scalars(query)).all()

    async def get(self, rule_id: int) -> AccessRuleRow | None:
        return await self._db.get(AccessRuleRow, rule_id)

    async def last_position(self) -> int:
        return int(await self._db.scalar(select(func.max(AccessRuleRow.position))) or 0)

    def add(self, row: AccessRuleRow) -> None:
        self._db.add(row)

    async def flush(self) -> None:
        await self._db.flush()

    async def remove(self, rule_id: int) -> None:
        await self._db.execute(delete(AccessRuleRow).where(AccessRuleRow.id == rule_id))
