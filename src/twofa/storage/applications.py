"""The applications registry and the OpenID Connect provider's rows (services.idp): clients,
authorization codes, access tokens, signing keys. A code is redeemed by one conditional
UPDATE, never read-then-written, so two redemptions racing cannot both win. Like every
repository these never commit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from sqlalchemy import delete, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from twofa.storage.oidc_tables import (
    OidcAccessTokenRow,
    OidcCodeRow,
    OidcSigningKeyRow,
    OidcSubjectRow,
)
from twofa.storage.tables import ApplicationRow, ChallengeRow, SessionRow

# What a signing key's private half is sealed for (security.sealing's associated data): here,
# below both the service that seals it and the key rotation that seals it again.
SIGNING_KEY_PURPOSE: Final = "oidc-signing-key"


class Applications:
    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    async def all(self) -> Sequence[ApplicationRow]:
        return (await self._db.scalars(select(ApplicationRow).order_by(ApplicationRow.name))).all()

    async def by_client_id(self, client_id: str) -> ApplicationRow | None:
        query = select(ApplicationRow).where(ApplicationRow.client_id == client_id)
        return await self._db.scalar(query)

    async def by_name(self, name: str) -> ApplicationRow | None:
        return await self._db.scalar(select(ApplicationRow).where(ApplicationRow.name == name))

    def add(self, row: ApplicationRow) -> None:
        self._db.add(row)

    async def remove(self, application_id: int) -> None:
        await self._db.execute(delete(ApplicationRow).where(ApplicationRow.id == application_id))


@dataclass(frozen=True)
class Redemption:
    """What one attempt to redeem a code found: the code (None: unknown) and whether this
    attempt is the one that redeemed it."""

    code: OidcCodeRow | None
    won: bool


class OidcCodes:
    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    def add(self, row: OidcCodeRow) -> None:
        self._db.add(row)

    async def redeem(self, code_hash: str, jti: str, now: datetime) -> Redemption:
        """Marks the code redeemed, in one statement that succeeds for one caller only, and
        records the access token it is about to issue (`jti`) for a replay to revoke."""
        won = await self._db.execute(
            update(OidcCodeRow)
            .where(OidcCodeRow.code_hash == code_hash, OidcCodeRow.redeemed_at.is_(None))
            .values(redeemed_at=now, issued_jti=jti)
            .execution_options(synchronize_session=False)
        )
        row = await self._db.scalar(
            select(OidcCodeRow)
            .where(OidcCodeRow.code_hash == code_hash)
            .execution_options(populate_existing=True)
        )
        return Redemption(row, won.rowcount == 1)  # type: ignore[attr-defined]

    async def remove_expired(self, before: datetime) -> None:
        """Codes that expired before `before`, but for those of a session still there: they
        are the record of which applications that session signed in to, read when it ends
        (storage.oidc_refresh_tokens.end_grants) to tell them (back-channel logout)."""
        session_gone = (
            ~select(SessionRow.id).where(SessionRow.id == OidcCodeRow.session_id).exists()
        )
        await self._db.execute(
            delete(OidcCodeRow).where(
                OidcCodeRow.expires_at < before,
                or_(OidcCodeRow.session_id.is_(None), session_gone),
            )
        )

    async def remove_superseded(
        self, session_id: str, application_id: int, before: datetime
    ) -> None:
        """A session's expired codes for an application it was just issued a new code for: one
        code per session and application is record enough."""
        await self._db.execute(
            delete(OidcCodeRow).where(
                OidcCodeRow.session_id == session_id,
                OidcCodeRow.application_id == application_id,
                OidcCodeRow.expires_at < before,
            )
        )


class OidcAccessTokens:
    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    def add(self, row: OidcAccessTokenRow) -> None:
        self._db.add(row)

    async def by_hash(self, token_hash: str) -> OidcAccessTokenRow | None:
        return await self._db.get(OidcAccessTokenRow, token_hash)

    async def revoke_jti(self, jti: str, now: datetime) -> None:
        await self._db.execute(
            update(OidcAccessTokenRow)
            .where(OidcAccessTokenRow.jti == jti, OidcAccessTokenRow.revoked_at.is_(None))
            .values(revoked_at=now)
        )

    async def remove_expired(self, before: datetime) -> None:
        query = delete(OidcAccessTokenRow).where(OidcAccessTokenRow.expires_at < before)
        await self._db.execute(query)


class OidcSigningKeys:
    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    def add(self, row: OidcSigningKeyRow) -> None:
        self._db.add(row)

    async def published(self, retired_after: datetime) -> Sequence[OidcSigningKeyRow]:
        """Every key in use or retired after `retired_after`, newest first."""
        query = (
            select(OidcSigningKeyRow)
            .where(
                or_(
                    OidcSigningKeyRow.retired_at.is_(None),
                    OidcSigningKeyRow.retired_at > retired_after,
                )
            )
            .order_by(OidcSigningKeyRow.created_at.desc(), OidcSigningKeyRow.kid)
        )
        return (await self._db.scalars(query)).all()

    async def retire_all(self, now: datetime) -> None:
        await self._db.execute(
            update(OidcSigningKeyRow)
            .where(OidcSigningKeyRow.retired_at.is_(None))
            .values(retired_at=now)
        )


class SignInFacts:
    """What an ID token says about how the user signed in, read from the session and the
    challenge that passed its second factor (both written by the sign-in services)."""

    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    async def session_started_at(self, session_id: str) -> datetime | None:
        query = select(SessionRow.created_at).where(SessionRow.id == session_id)
        return await self._db.scalar(query)

    async def method_consumed_near(
        self, user_id: int, earliest: datetime, latest: datetime
    ) -> str | None:
        """The method of the user's challenge consumed between the two moments, if any."""
        query = (
            select(ChallengeRow.method)
            .where(
                ChallengeRow.user_id == user_id,
                ChallengeRow.consumed_at.is_not(None),
                ChallengeRow.consumed_at >= earliest,
                ChallengeRow.consumed_at <= latest,
            )
            .order_by(ChallengeRow.consumed_at.desc())
            .limit(1)
        )
        return await self._db.scalar(query)


class OidcSubjects:
    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    async def subject_of(self, user_id: int, candidate: str, now: datetime) -> str:
        """The user's subject, `candidate` stored as it if they have none yet: one INSERT
        … ON CONFLICT DO NOTHING, then one read, so two first sign-ins agree."""
        dialect = self._db.get_bind().dialect.name
        insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
        await self._db.execute(
            insert(OidcSubjectRow)
            .values(user_id=user_id, subject=candidate, created_at=now)
            .on_conflict_do_nothing(index_elements=[OidcSubjectRow.user_id])
        )
        query = select(OidcSubjectRow.subject).where(OidcSubjectRow.user_id == user_id)
        subject = await self._db.scalar(query)
        assert subject is not None
        return subject


@dataclass(frozen=True)
class SealedSigningKey:
    kid: str
    sealed: str


class SealedSigningKeys:
    """The sealed private halves of a table of signing keys (`oidc_signing_keys` for ID
    tokens, `saml_signing_keys` for SAML assertions), for `twofa keys rotate` to seal again
    with the newest secret key (services.admin.sealed_places), rewritten only if unchanged."""

    def __init__(
        self, db: AsyncSession, kid: InstrumentedAttribute[str], sealed: InstrumentedAttribute[str]
    ) -> None:
        self._db = db
        self._kid = kid
        self._sealed = sealed

    async def batch(self, after: str, limit: int) -> list[SealedSigningKey]:
        """The next `limit` sealed keys with a kid above `after`, in kid order."""
        query = (
            select(self._kid, self._sealed)
            .where(self._kid > after)
            .order_by(self._kid)
            .limit(limit)
        )
        return [SealedSigningKey(kid, sealed) for kid, sealed in await self._db.execute(query)]

    async def replace(self, kid: str, old: str, new: str) -> bool:
        result = await self._db.execute(
            update(self._kid.class_)
            .where(self._kid == kid, self._sealed == old)
            .values({self._sealed.key: new})
        )
        return result.rowcount == 1  # type: ignore[attr-defined,no-any-return]


async def subject_of_user(db: AsyncSession, user_id: int) -> str | None:
    """The user's subject if one was made (a first sign-in to an application), else None."""
    query = select(OidcSubjectRow.subject).where(OidcSubjectRow.user_id == user_id)
    return await db.scalar(query)
