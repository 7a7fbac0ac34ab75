"""Refresh tokens of the OpenID Connect provider (services.idp.refresh) and the revocations
that reach past them to access tokens. A refresh token is used by one conditional UPDATE,
never read-then-written, so of two redemptions racing only one wins. Like every repository
these never commit.

Grants end with the twofa session that made them: `end_grants_with_sessions` makes every
commit that ends sessions (storage.change_notes) also revoke, in that same transaction, the
grants made in those sessions (or by those users), so a sign-out can never commit without
them."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import delete, event, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from twofa.storage.change_notes import noted
from twofa.storage.oidc_tables import (
    OidcAccessTokenRow,
    OidcCodeRow,
    OidcRefreshTokenRow,
    OidcSubjectRow,
)
from twofa.storage.tables import SessionRow, UserRow

_ENDED_KEY: Final = "twofa.ended_sign_ins"


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

    async def lock_grant_owner(self, token_hash: str, application_id: int) -> None:
        """Takes a shared lock on the session the token's grant was made in or, when that
        session is gone (expired) or unknown, on its user (PostgreSQL; SQLite runs one writer
        at a time anyway): what ending sessions deletes or updates first. A sign-out or a
        disabled account racing this refresh then either commits first, and the token is
        found revoked, or waits for it, and its revocation sees the successor this refresh
        adds. One lock only, so no order of two can deadlock with those writers."""
        owner = (
            await self._db.execute(
                select(OidcRefreshTokenRow.user_id, OidcRefreshTokenRow.session_id).where(
                    OidcRefreshTokenRow.token_hash == token_hash,
                    OidcRefreshTokenRow.application_id == application_id,
                )
            )
        ).first()
        if owner is None:
            return
        user_id, session_id = owner
        if session_id is not None and await session_locked(self._db, session_id):
            return
        await self._db.execute(
            select(UserRow.id).where(UserRow.id == user_id).with_for_update(read=True)
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


async def session_locked(db: AsyncSession, session_id: str) -> bool:
    """Whether the session still exists, holding a shared lock on its row until the
    transaction ends (PostgreSQL), so it cannot end before what this transaction grants in
    its name is committed and seen by the revocation that ending it makes."""
    query = select(SessionRow.id).where(SessionRow.id == session_id).with_for_update(read=True)
    return (await db.scalar(query)) is not None


@dataclass(frozen=True)
class EndedSignIn:
    """An application a twofa session signed in to (a code was issued for it), found as the
    session ended, with who it was, read in that transaction: a user deleted by it is gone
    when the applications are told."""

    session_id: str
    application_id: int
    user_id: int
    username: str
    subject: str | None  # the `sub` the application knows the user by (None: never made)


def end_grants(
    db: Session, session_ids: Collection[str], user_ids: Collection[int], now: datetime
) -> list[EndedSignIn]:
    """Ends what the sessions `session_ids`, and every session of `user_ids`, granted: their
    codes are deleted (a code not yet redeemed gives nothing now), their refresh token
    families and the access tokens issued with them are revoked. The codes go first: a
    redemption racing this holds the code's row, so this waits for it and then revokes the
    family it started. Returns the applications the sessions signed in to."""
    codes = or_(
        OidcCodeRow.session_id.in_(list(session_ids)), OidcCodeRow.user_id.in_(list(user_ids))
    )
    removed = db.execute(
        delete(OidcCodeRow)
        .where(codes)
        .returning(
            OidcCodeRow.session_id,
            OidcCodeRow.application_id,
            OidcCodeRow.user_id,
            OidcCodeRow.issued_jti,
        )
        .execution_options(synchronize_session=False)
    ).all()
    families = or_(
        OidcRefreshTokenRow.session_id.in_(list(session_ids)),
        OidcRefreshTokenRow.user_id.in_(list(user_ids)),
    )
    revoked = db.execute(
        update(OidcRefreshTokenRow)
        .where(families, OidcRefreshTokenRow.revoked_at.is_(None))
        .values(revoked_at=now)
        .returning(OidcRefreshTokenRow.issued_jti)
        .execution_options(synchronize_session=False)
    ).all()
    jtis = {jti for *_, jti in removed if jti} | {jti for (jti,) in revoked if jti}
    db.execute(
        update(OidcAccessTokenRow)
        .where(
            or_(OidcAccessTokenRow.jti.in_(jtis), OidcAccessTokenRow.user_id.in_(list(user_ids))),
            OidcAccessTokenRow.revoked_at.is_(None),
        )
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )
    return _identified(db, {(sid, app, user) for sid, app, user, _ in removed if sid is not None})


def _identified(db: Session, sign_ins: set[tuple[str, int, int]]) -> list[EndedSignIn]:
    """`(session id, application id, user id)` with the user's name and subject."""
    if not sign_ins:
        return []
    users = {user_id for *_, user_id in sign_ins}
    who = {
        user_id: (username, subject)
        for user_id, username, subject in db.execute(
            select(UserRow.id, UserRow.username, OidcSubjectRow.subject)
            .outerjoin(OidcSubjectRow, OidcSubjectRow.user_id == UserRow.id)
            .where(UserRow.id.in_(users))
        )
    }
    return sorted(
        (EndedSignIn(sid, app, user, *who.get(user, ("", None))) for sid, app, user in sign_ins),
        key=lambda e: (e.session_id, e.application_id),
    )


async def keep_sign_ins_of_removed_user(db: AsyncSession, user_id: int) -> None:
    """Called before a user's row is deleted, with the row locked as the DELETE locks it (a
    code being issued, whose foreign key holds the row, has committed and is read here, or
    waits and then fails): their codes, subject and
    grants go with it (the database's cascade), so the applications their sessions signed in
    to are read now and told after the commit, as `end_grants_with_sessions` tells them of
    any other ended session."""

    def read(session: Session) -> None:
        codes = session.execute(
            select(OidcCodeRow.session_id, OidcCodeRow.application_id, OidcCodeRow.user_id)
            .where(OidcCodeRow.user_id == user_id, OidcCodeRow.session_id.is_not(None))
            .distinct()
        )
        found = _identified(session, {(sid, app, user) for sid, app, user in codes if sid})
        if found:
            session.info[_ENDED_KEY] = session.info.get(_ENDED_KEY, []) + found

    await db.run_sync(read)


def end_grants_with_sessions(
    factory: async_sessionmaker[AsyncSession],
    now: Callable[[], datetime],
    ended: Callable[[list[EndedSignIn]], None],
) -> None:
    """Inside each committing transaction of `factory` that ends sessions (or every session
    of users), ends their grants (`end_grants`): the revocation commits if and only if the
    sign-out does. After the commit, `ended` is called (in the event loop's thread; it must
    not block) with the applications those sessions signed in to. Only this factory's own
    commits: another process hearing of them through a change feed does nothing here."""
    session_class = factory.kw["sync_session_class"]

    def committing(session: Session) -> None:
        changes = noted(session)
        signed_in = changes.ended_sessions - changes.never_signed_in
        if signed_in or changes.ended_users:
            found = end_grants(session, signed_in, changes.ended_users, now())
            if found:
                session.info[_ENDED_KEY] = session.info.get(_ENDED_KEY, []) + found

    def committed(session: Session) -> None:
        found = session.info.pop(_ENDED_KEY, None)
        if found:
            ended(found)

    def rolled_back(session: Session, *_: Any) -> None:
        session.info.pop(_ENDED_KEY, None)

    event.listen(session_class, "before_commit", committing)
    event.listen(session_class, "after_commit", committed)
    event.listen(session_class, "after_rollback", rolled_back)
