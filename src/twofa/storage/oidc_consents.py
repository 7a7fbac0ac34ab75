"""What users agreed to share with OpenID Connect applications (services.idp.consent): one row
per user and application, replaced whole when the user agrees to more. Like every repository
these never commit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from twofa.storage.oidc_tables import OidcConsentRow
from twofa.storage.tables import ApplicationRow, UserRow


@dataclass(frozen=True)
class ConsentListing:
    """A consent with the name of the application it was given to."""

    application_id: int
    application_name: str
    scope: str
    granted_at: datetime


class OidcConsents:
    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    async def scope_of(self, user_id: int, application_id: int) -> str | None:
        """The scopes (space-separated) the user agreed to share; None: never asked or revoked."""
        query = select(OidcConsentRow.scope).where(
            OidcConsentRow.user_id == user_id, OidcConsentRow.application_id == application_id
        )
        return await self._db.scalar(query)

    async def put(self, user_id: int, application_id: int, scope: str, now: datetime) -> None:
        """One statement, insert or replace: two tabs allowing at once cannot collide."""
        insert = (
            postgresql_insert if self._db.get_bind().dialect.name == "postgresql" else sqlite_insert
        )
        statement = insert(OidcConsentRow).values(
            user_id=user_id, application_id=application_id, scope=scope, granted_at=now
        )
        await self._db.execute(
            statement.on_conflict_do_update(
                index_elements=[OidcConsentRow.user_id, OidcConsentRow.application_id],
                set_={
                    "scope": statement.excluded.scope,
                    "granted_at": statement.excluded.granted_at,
                },
            )
        )

    async def remove(self, user_id: int, application_id: int) -> bool:
        """Whether there was a consent to remove."""
        removed = await self._db.execute(
            delete(OidcConsentRow)
            .where(
                OidcConsentRow.user_id == user_id,
                OidcConsentRow.application_id == application_id,
            )
            .execution_options(synchronize_session=False)
        )
        return bool(removed.rowcount)  # type: ignore[attr-defined]

    async def of_user(self, user_id: int) -> list[ConsentListing]:
        """The user's consents, by application name."""
        query = (
            select(
                OidcConsentRow.application_id,
                ApplicationRow.name,
                OidcConsentRow.scope,
                OidcConsentRow.granted_at,
            )
            .join(ApplicationRow, ApplicationRow.id == OidcConsentRow.application_id)
            .where(OidcConsentRow.user_id == user_id)
            .order_by(ApplicationRow.name)
        )
        return [ConsentListing(*row) for row in (await self._db.execute(query)).all()]

    async def names_of(self, user_id: int, application_id: int) -> tuple[str, str]:
        """The user's and the application's names, for the audit log ("" when gone)."""
        user = await self._db.scalar(select(UserRow.username).where(UserRow.id == user_id))
        application = await self._db.scalar(
            select(ApplicationRow.name).where(ApplicationRow.id == application_id)
        )
        return user or "", application or ""
