"""Refresh tokens of the OpenID Connect provider (services.idp.refresh) and the revocations
that reach past them to access tokens. A refresh token is used by one conditional UPDATE,
never read-then-written, so of two redemptions racing only one wins. Like every repository
these never commit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from twofa.storage.tables import OidcAccessTokenRow, OidcRefreshTokenRow


@dataclass(frozen=True)
class RefreshUse:
    """What one attempt to use a refresh token found: the token (None: unknown, or another
    client's) and whether this attempt is the one that used it."""

    token: OidcRefreshTokenRow | None
    won: bool


class OidcRefreshTokens:
    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    def add(self, row: OidcRefreshTokenRow) -> None:
        self._db.add(row)

    async def use(self, token_hash: str, application_id: int, now: datetime) -> RefreshUse:
        """Marks the client's token used, in one statement that succeeds for one caller only
        and only while the token is unused, unrevoked and unexpired. Another client's token is
        neither touched nor shown."""
        won = await self._db.execute(
            update(OidcRefreshTokenRow)
            .where(
                OidcRefreshTokenRow.token_hash == token_hash,
                OidcRefreshTokenRow.application_id == application_id,
                OidcRefreshTokenRow.used_at.is_(None),
                OidcRefreshTokenRow.revoked_at.is_(None),
                OidcRefreshTokenRow.expires_at > now,
            )
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )
        row = await self._db.scalar(
            select(OidcRefreshTokenRow)
            .where(
                OidcRefreshTokenRow.token_hash == token_hash,
                OidcRefreshTokenRow.application_id == application_id,
            )
            .execution_options(populate_existing=True)
        )
        return RefreshUse(row, won.rowcount == 1)  # type: ignore[attr-defined]

    async def of_client(self, token_hash: str, application_id: int) -> OidcRefreshTokenRow | None:
        query = select(OidcRefreshTokenRow).where(
            OidcRefreshTokenRow.token_hash == token_hash,
            OidcRefreshTokenRow.application_id == application_id,
        )
        return await self._db.scalar(query)

    async def family_of_jti(self, jti: str) -> str | None:
        """The family whose token was issued with this access token (a code's first)."""
        query = select(OidcRefreshTokenRow.family_id).where(OidcRefreshTokenRow.issued_jti == jti)
        return await self._db.scalar(query.limit(1))

    async def revoke_family(self, family_id: str, now: datetime) -> None:
        """Every refresh token of the family, and every access token issued with one."""
        issued = select(OidcRefreshTokenRow.issued_jti).where(
            OidcRefreshTokenRow.family_id == family_id,
            OidcRefreshTokenRow.issued_jti.is_not(None),
        )
        await self._db.execute(
            update(OidcAccessTokenRow)
            .where(OidcAccessTokenRow.jti.in_(issued), OidcAccessTokenRow.revoked_at.is_(None))
            .values(revoked_at=now)
            .execution_options(synchronize_session=False)
        )
        await self._db.execute(
            update(OidcRefreshTokenRow)
            .where(
                OidcRefreshTokenRow.family_id == family_id,
                OidcRefreshTokenRow.revoked_at.is_(None),
            )
            .values(revoked_at=now)
            .execution_options(synchronize_session=False)
        )

    async def remove_expired(self, before: datetime) -> None:
        """A family's tokens share its expiry, so a family goes as a whole: a used token stays
        for as long as presenting it again could still be told apart from an unknown one."""
        query = delete(OidcRefreshTokenRow).where(OidcRefreshTokenRow.expires_at < before)
        await self._db.execute(query)


async def revoke_access_token(
    db: AsyncSession, token_hash: str, application_id: int, now: datetime
) -> bool:
    """Revokes the client's access token; False when it has none by this hash (unknown,
    another client's, or revoked already)."""
    result = await db.execute(
        update(OidcAccessTokenRow)
        .where(
            OidcAccessTokenRow.token_hash == token_hash,
            OidcAccessTokenRow.application_id == application_id,
            OidcAccessTokenRow.revoked_at.is_(None),
        )
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1  # type: ignore[attr-defined,no-any-return]
