"""Repositories of the SAML identity provider's rows (storage.saml_tables). An AuthnRequest ID
is answered by one conditional UPDATE, never read-then-written, so two answers racing cannot
both win; a NameID is made by INSERT … ON CONFLICT DO NOTHING, then read, so two first
sign-ins agree. Like every repository these never commit."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Final

from sqlalchemy import delete, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from twofa.storage.saml_tables import (
    SamlRequestRow,
    SamlServiceProviderRow,
    SamlSigningKeyRow,
    SamlSubjectRow,
)
from twofa.storage.tables import ApplicationRow

# What a SAML signing key's private half is sealed for (security.sealing's associated data).
SAML_KEY_PURPOSE: Final = "saml-signing-key"


def _insert(db: AsyncSession):  # type: ignore[no-untyped-def]
    return postgresql_insert if db.get_bind().dialect.name == "postgresql" else sqlite_insert


class ServiceProviders:
    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    def add(self, row: SamlServiceProviderRow) -> None:
        self._db.add(row)

    async def all(self) -> Sequence[tuple[SamlServiceProviderRow, ApplicationRow]]:
        query = (
            select(SamlServiceProviderRow, ApplicationRow)
            .join(ApplicationRow, ApplicationRow.id == SamlServiceProviderRow.application_id)
            .order_by(ApplicationRow.name)
        )
        return [(sp, app) for sp, app in (await self._db.execute(query)).all()]

    async def by_entity_id(
        self, entity_id: str
    ) -> tuple[SamlServiceProviderRow, ApplicationRow] | None:
        query = (
            select(SamlServiceProviderRow, ApplicationRow)
            .join(ApplicationRow, ApplicationRow.id == SamlServiceProviderRow.application_id)
            .where(SamlServiceProviderRow.entity_id == entity_id)
        )
        found = (await self._db.execute(query)).first()
        return None if found is None else (found[0], found[1])

    async def by_application(self, application_id: int) -> SamlServiceProviderRow | None:
        query = select(SamlServiceProviderRow).where(
            SamlServiceProviderRow.application_id == application_id
        )
        return await self._db.scalar(query)


class SamlSigningKeys:
    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    def add(self, row: SamlSigningKeyRow) -> None:
        self._db.add(row)

    async def published(self, retired_after: datetime) -> Sequence[SamlSigningKeyRow]:
        """Every key in use or retired after `retired_after`, newest first."""
        query = (
            select(SamlSigningKeyRow)
            .where(
                or_(
                    SamlSigningKeyRow.retired_at.is_(None),
                    SamlSigningKeyRow.retired_at > retired_after,
                )
            )
            .order_by(SamlSigningKeyRow.created_at.desc(), SamlSigningKeyRow.kid)
        )
        return (await self._db.scalars(query)).all()

    async def retire_all(self, at: datetime) -> None:
        """Every key not retired yet stops signing at `at` (now, or when its successor
        starts)."""
        await self._db.execute(
            update(SamlSigningKeyRow)
            .where(SamlSigningKeyRow.retired_at.is_(None))
            .values(retired_at=at)
        )


class SamlSubjects:
    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    async def name_id_of(
        self, service_provider_id: int, user_id: int, candidate: str, now: datetime
    ) -> str:
        """The user's persistent NameID at this provider, `candidate` kept as it if none."""
        await self._db.execute(
            _insert(self._db)(SamlSubjectRow)
            .values(
                service_provider_id=service_provider_id,
                user_id=user_id,
                name_id=candidate,
                created_at=now,
            )
            .on_conflict_do_nothing(
                index_elements=[SamlSubjectRow.service_provider_id, SamlSubjectRow.user_id]
            )
        )
        query = select(SamlSubjectRow.name_id).where(
            SamlSubjectRow.service_provider_id == service_provider_id,
            SamlSubjectRow.user_id == user_id,
        )
        name_id = await self._db.scalar(query)
        assert name_id is not None
        return name_id


class SamlRequests:
    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    async def first_seen(
        self,
        service_provider_id: int,
        request_id: str,
        now: datetime,
        expires_at: datetime,
        posted: tuple[str, str | None] | None = None,
    ) -> SamlRequestRow:
        """The request's row, made now if this is its first sight; `posted`: the message and
        RelayState of a request that came by HTTP-POST."""
        await self._db.execute(
            _insert(self._db)(SamlRequestRow)
            .values(
                service_provider_id=service_provider_id,
                request_id=request_id,
                first_seen_at=now,
                expires_at=expires_at,
                posted_message=None if posted is None else posted[0],
                relay_state=None if posted is None else posted[1],
            )
            .on_conflict_do_nothing(
                index_elements=[SamlRequestRow.service_provider_id, SamlRequestRow.request_id]
            )
        )
        row = await self._db.get(
            SamlRequestRow, (service_provider_id, request_id), populate_existing=True
        )
        assert row is not None
        return row

    async def posted(self, service_provider_id: int, request_id: str) -> SamlRequestRow | None:
        return await self._db.get(SamlRequestRow, (service_provider_id, request_id))

    async def answer(self, service_provider_id: int, request_id: str, now: datetime) -> bool:
        """Marks the request answered; False when it was answered already."""
        won = await self._db.execute(
            update(SamlRequestRow)
            .where(
                SamlRequestRow.service_provider_id == service_provider_id,
                SamlRequestRow.request_id == request_id,
                SamlRequestRow.answered_at.is_(None),
            )
            .values(answered_at=now)
            .execution_options(synchronize_session=False)
        )
        return won.rowcount == 1  # type: ignore[attr-defined,no-any-return]

    async def remove_expired(self, before: datetime) -> None:
        await self._db.execute(delete(SamlRequestRow).where(SamlRequestRow.expires_at < before))
