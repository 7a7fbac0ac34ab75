"""Queries over enrolled second factors, their hashed items and remembered devices. Every
change that must happen at most once (an item used, a new credential state) is a conditional
UPDATE that reports whether it applied."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, bindparam, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from twofa.storage.tables import (
    CredentialItemRow,
    CredentialRow,
    RememberedDeviceRow,
    UtcDateTime,
    table_of,
)


@dataclass(frozen=True, slots=True)
class CheckedCredential:
    """What checking an answer needs of a credential: plain values, no ORM identity."""

    id: int
    label: str
    secret_sealed: str | None
    state: dict[str, Any] | None
    version: int


# Built once, values bound at execution: every second-factor page and answer runs these
# (bench/README.md: building SQLAlchemy expressions costs more than running them).
_credentials = table_of(CredentialRow).c
_CHECKED_OF_METHOD = (
    select(
        _credentials.id,
        _credentials.label,
        _credentials.secret_sealed,
        _credentials.state,
        _credentials.version,
    )
    .where(_credentials.user_id == bindparam("user_id"), _credentials.method == bindparam("method"))
    .order_by(_credentials.id)
)
_APPLY_STATE = (
    update(table_of(CredentialRow))
    .where(_credentials.id == bindparam("of_credential"))
    .where(_credentials.version == bindparam("expected_version"))
    .values(  # (bound names apart from the columns': an UPDATE keeps those for SET values)
        state=bindparam("new_state", type_=JSON()),
        version=bindparam("new_version"),
        last_used_at=bindparam("now", type_=UtcDateTime()),
    )
)


class Credentials:
    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    def add(self, row: CredentialRow) -> None:
        self._db.add(row)

    async def flush(self) -> None:
        await self._db.flush()

    async def get(self, credential_id: int) -> CredentialRow | None:
        return await self._db.get(CredentialRow, credential_id)

    async def of_user(self, user_id: int, method: str | None = None) -> Sequence[CredentialRow]:
        query = select(CredentialRow).where(CredentialRow.user_id == user_id)
        if method is not None:
            query = query.where(CredentialRow.method == method)
        return (await self._db.scalars(query.order_by(CredentialRow.id))).all()

    async def to_check(self, user_id: int, method: str) -> list[CheckedCredential]:
        """The user's credentials of `method`, oldest first, as an answer is checked."""
        values = {"user_id": user_id, "method": method}
        rows = await self._db.execute(_CHECKED_OF_METHOD, values)
        return [CheckedCredential(*row) for row in rows]

    async def methods_of(self, user_id: int) -> list[str]:
        query = select(CredentialRow.method).where(CredentialRow.user_id == user_id).distinct()
        return sorted(await self._db.scalars(query))

    async def apply_state(
        self,
        credential_id: int,
        expected_version: int,
        state: dict[str, Any],
        now: datetime,
    ) -> bool:
        """Stores the state a verification computed, if nobody changed the credential since
        it was read; True for exactly one of two racing verifications."""
        values = {
            "of_credential": credential_id,
            "expected_version": expected_version,
            "new_state": state,
            "new_version": expected_version + 1,
            "now": now,
        }
        result = await self._db.execute(_APPLY_STATE, values)
        return result.rowcount == 1  # type: ignore[attr-defined,no-any-return]

    async def touch(self, credential_id: int, now: datetime) -> None:
        await self._db.execute(
            update(CredentialRow).where(CredentialRow.id == credential_id).values(last_used_at=now)
        )

    async def rename(self, credential_id: int, label: str) -> None:
        await self._db.execute(
            update(CredentialRow).where(CredentialRow.id == credential_id).values(label=label)
        )

    async def remove(self, credential_id: int) -> None:
        await self._db.execute(delete(CredentialRow).where(CredentialRow.id == credential_id))

    async def remove_of_user(self, user_id: int, method: str | None = None) -> None:
        query = delete(CredentialRow).where(CredentialRow.user_id == user_id)
        if method is not None:
            query = query.where(CredentialRow.method == method)
        await self._db.execute(query)


class CredentialItems:
    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    def add(self, row: CredentialItemRow) -> None:
        self._db.add(row)

    async def of_credentials(self, credential_ids: Sequence[int]) -> Sequence[CredentialItemRow]:
        if not credential_ids:
            return []
        query = select(CredentialItemRow).where(CredentialItemRow.credential_id.in_(credential_ids))
        return (await self._db.scalars(query.order_by(CredentialItemRow.id))).all()

    async def unused_count(self, credential_id: int) -> int:
        query = select(func.count()).where(
            CredentialItemRow.credential_id == credential_id, CredentialItemRow.used_at.is_(None)
        )
        return int(await self._db.scalar(query) or 0)

    async def use(self, item_id: int, now: datetime) -> bool:
        """Marks a single-use item used; True for exactly one caller, however many race."""
        result = await self._db.execute(
            update(CredentialItemRow)
            .where(CredentialItemRow.id == item_id, CredentialItemRow.used_at.is_(None))
            .values(used_at=now)
        )
        return result.rowcount == 1  # type: ignore[attr-defined,no-any-return]


class RememberedDevices:
    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    def add(self, row: RememberedDeviceRow) -> None:
        self._db.add(row)

    async def get(self, device_id: str) -> RememberedDeviceRow | None:
        return await self._db.get(RememberedDeviceRow, device_id)

    async def of_user(self, user_id: int) -> Sequence[RememberedDeviceRow]:
        query = select(RememberedDeviceRow).where(RememberedDeviceRow.user_id == user_id)
        return (await self._db.scalars(query.order_by(RememberedDeviceRow.created_at))).all()

    async def remove(self, device_id: str, user_id: int | None = None) -> bool:
        query = delete(RememberedDeviceRow).where(RememberedDeviceRow.id == device_id)
        if user_id is not None:
            query = query.where(RememberedDeviceRow.user_id == user_id)
        result = await self._db.execute(query)
        return result.rowcount == 1  # type: ignore[attr-defined,no-any-return]

    async def remove_of_user(self, user_id: int) -> int:
        result = await self._db.execute(
            delete(RememberedDeviceRow).where(RememberedDeviceRow.user_id == user_id)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]
