"""The rows that hold sealed values (security.sealing), read in batches in key order and
rewritten only if unchanged since they were read: a conditional UPDATE, so that sealing them
again with a new key (services.admin.key_rotation) never overwrites what a running gateway
wrote meanwhile. Where inside a row the sealed values are is the services' business; these
classes move rows. Like every repository they never commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Text, case, cast, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from twofa.storage.change_notes import note_settings_saved
from twofa.storage.tables import ChallengeRow, ConsoleSettingRow, CredentialRow


@dataclass(frozen=True)
class SealedColumn:
    """One credential's sealed secret as read."""

    id: int
    sealed: str


@dataclass(frozen=True)
class SettingDocument:
    """A console setting's JSON document as read; `version` guards its rewrite."""

    key: str
    version: int
    value: dict[str, Any]


@dataclass(frozen=True)
class ChallengePayload:
    """An open challenge's payload as read; `stored` (its exact text in the database)
    guards its rewrite, since JSON documents cannot be compared on PostgreSQL."""

    id: str
    stored: str


class CredentialSecrets:
    """`credentials.secret_sealed`: the TOTP seeds and any other method's secret."""

    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    async def batch(
        self, after: int, limit: int, *, skip_head: str | None = None
    ) -> list[SealedColumn]:
        """The next `limit` sealed secrets with an id above `after`, in id order; those that
        begin with `skip_head` (sealed by the newest key already) are passed over."""
        column = CredentialRow.secret_sealed
        query = select(CredentialRow.id, column).where(
            column.is_not(None), CredentialRow.id > after
        )
        if skip_head is not None:
            query = query.where(func.substr(column, 1, len(skip_head)) != skip_head)
        rows = await self._db.execute(query.order_by(CredentialRow.id).limit(limit))
        return [SealedColumn(row_id, str(sealed)) for row_id, sealed in rows]

    async def replace(self, credential_id: int, old: str, new: str) -> bool:
        """Stores `new` if the secret is still `old`; the credential's version (which guards
        its verification state) is left alone, so no sign-in racing this one fails."""
        result = await self._db.execute(
            update(CredentialRow)
            .where(CredentialRow.id == credential_id, CredentialRow.secret_sealed == old)
            .values(secret_sealed=new)
        )
        return result.rowcount == 1  # type: ignore[attr-defined,no-any-return]

    async def count_by_head(self, versioned: str, head_length: int) -> dict[str, int]:
        """How many secrets begin with each head: the first `head_length` characters of a
        value that starts with `versioned`, the first `len(versioned)` of any other. One
        grouped query, so a monitor asking often reads counts, not every secret."""
        column = CredentialRow.secret_sealed
        head = case(
            (
                func.substr(column, 1, len(versioned)) == versioned,
                func.substr(column, 1, head_length),
            ),
            else_=func.substr(column, 1, len(versioned)),
        )
        query = select(head, func.count()).where(column.is_not(None)).group_by(head)
        return {str(value): int(count) for value, count in await self._db.execute(query)}


class SettingDocuments:
    """`console_settings`: a handful of JSON documents, some with a sealed field inside."""

    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    async def batch(self, after: str, limit: int) -> list[SettingDocument]:
        query = (
            select(ConsoleSettingRow)
            .where(ConsoleSettingRow.key > after)
            .order_by(ConsoleSettingRow.key)
            .limit(limit)
        )
        rows = (await self._db.scalars(query)).all()
        return [SettingDocument(row.key, row.version, dict(row.value)) for row in rows]

    async def replace(self, document: SettingDocument, value: dict[str, Any]) -> bool:
        """Stores `value` if nobody saved the setting since `document` was read. The version
        moves on, so every node's copy of the settings reloads (services.settings.cache); who
        saved it last and when stay, since nothing an admin chose changed."""
        result = await self._db.execute(
            update(ConsoleSettingRow)
            .where(
                ConsoleSettingRow.key == document.key,
                ConsoleSettingRow.version == document.version,
            )
            .values(value=value, version=document.version + 1)
        )
        replaced: bool = result.rowcount == 1  # type: ignore[attr-defined]
        if replaced:
            note_settings_saved(self._db)
        return replaced


class ChallengePayloads:
    """`challenges.payload` of challenges still open: a sealed draft secret and a sealed
    page. Used or expired ones are never opened again, so they are left as they are."""

    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    async def batch(self, after: str, limit: int, now: datetime) -> list[ChallengePayload]:
        stored = cast(ChallengeRow.payload, Text)
        query = (
            select(ChallengeRow.id, stored)
            .where(
                ChallengeRow.id > after,
                ChallengeRow.payload.is_not(None),
                ChallengeRow.consumed_at.is_(None),
                ChallengeRow.expires_at > now,
            )
            .order_by(ChallengeRow.id)
            .limit(limit)
        )
        rows = await self._db.execute(query)
        return [ChallengePayload(row_id, text) for row_id, text in rows if text is not None]

    async def replace(self, payload: ChallengePayload, value: dict[str, Any]) -> bool:
        """Stores `value` if the challenge is still open with the payload read."""
        result = await self._db.execute(
            update(ChallengeRow)
            .where(
                ChallengeRow.id == payload.id,
                ChallengeRow.consumed_at.is_(None),
                cast(ChallengeRow.payload, Text) == payload.stored,
            )
            .values(payload=value)
        )
        return result.rowcount == 1  # type: ignore[attr-defined,no-any-return]
