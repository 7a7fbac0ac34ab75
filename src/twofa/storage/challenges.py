"""Queries over challenges, the rows the server owns for each second-factor attempt. Using a
challenge is a conditional UPDATE, so it succeeds for exactly one caller however many race.
Like every repository it never commits: the service owns the transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import bindparam, delete, exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from twofa.storage.tables import ChallengeRow, UserRow, UtcDateTime, insert_now, table_of

# Built once, values bound at execution: every second-factor page and answer runs these.
_GET = select(ChallengeRow).where(ChallengeRow.id == bindparam("challenge_id"))
_challenges = table_of(ChallengeRow).c
_users = table_of(UserRow).c
_USED_NOW = bindparam("now", type_=UtcDateTime())
# The user's row, taken before the challenge's: a consumed challenge signs in, whose session
# row's foreign key takes the user's row anyway. Taken last, it deadlocked with a deletion of
# the user (the user's row, then the cascade over the challenge): PostgreSQL failed one side.
# Taken first, one waits for the other; a challenge whose user went meanwhile is not consumed.
_USER_TAKEN = exists(
    select(_users.id)
    .where(_users.id == bindparam("of_user"))
    .with_for_update(read=True, key_share=True)
)
_CONSUMABLE = (
    # (named apart from the columns: an UPDATE keeps a column's own name for its SET value)
    _USER_TAKEN,
    _challenges.id == bindparam("of_challenge"),
    _challenges.user_id == bindparam("of_user"),
    _challenges.session_id == bindparam("of_session"),
    _challenges.consumed_at.is_(None),
    _challenges.expires_at > _USED_NOW,
)
_CONSUME = (
    update(table_of(ChallengeRow)).where(*_CONSUMABLE).values(consumed_at=_USED_NOW, status="allow")
)
_CONSUME_AND_FORGET = _CONSUME.values(payload=None)


class Challenges:
    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    async def add(self, row: ChallengeRow) -> None:
        await insert_now(self._db, row)

    async def get(self, challenge_id: str) -> ChallengeRow | None:
        return await self._db.scalar(_GET, {"challenge_id": challenge_id})

    async def unanswered(
        self, user_id: int, methods: Sequence[str], since: datetime, most: int
    ) -> Sequence[ChallengeRow]:
        """The user's newest challenges of `methods` sent to a phone since `since` whose
        answer nobody has read yet (still pending here, whatever the phone did)."""
        query = (
            select(ChallengeRow)
            .where(
                ChallengeRow.user_id == user_id,
                ChallengeRow.method.in_(methods),
                ChallengeRow.status == "pending",
                ChallengeRow.consumed_at.is_(None),
                ChallengeRow.external_id.is_not(None),
                ChallengeRow.created_at >= since,
            )
            .order_by(ChallengeRow.created_at.desc())
            .limit(most)
        )
        return (await self._db.scalars(query)).all()

    async def latest_created(self, user_id: int, method: str) -> datetime | None:
        query = select(func.max(ChallengeRow.created_at)).where(
            ChallengeRow.user_id == user_id, ChallengeRow.method == method
        )
        value = await self._db.scalar(query)
        # SQLite hands back a naive datetime from an aggregate: it is UTC like every column.
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value

    async def latest_open(
        self,
        method: str,
        purpose: str,
        now: datetime,
        *,
        session_id: str | None = None,
        user_id: int | None = None,
    ) -> ChallengeRow | None:
        """The newest challenge still answerable, of one session or of one user."""
        owner = (
            ChallengeRow.session_id == session_id
            if session_id is not None
            else ChallengeRow.user_id == user_id
        )
        query = (
            select(ChallengeRow)
            .where(
                owner,
                ChallengeRow.method == method,
                ChallengeRow.purpose == purpose,
                ChallengeRow.consumed_at.is_(None),
                ChallengeRow.expires_at > now,
            )
            .order_by(ChallengeRow.created_at.desc())
            .limit(1)
        )
        return await self._db.scalar(query)

    async def remove_expired(self, before: datetime) -> int:
        """Rows another transaction holds (a deletion of their user, another sweep) are left
        for the next sweep rather than waited for: a wait here, with this transaction's own
        locks held, is what deadlocks."""
        expired = (
            select(_challenges.id)
            .where(_challenges.expires_at < before)
            .with_for_update(skip_locked=True)
        )
        result = await self._db.execute(delete(ChallengeRow).where(ChallengeRow.id.in_(expired)))
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def set_status(self, challenge_id: str, status: str) -> None:
        await self._db.execute(
            update(ChallengeRow)
            .where(ChallengeRow.id == challenge_id, ChallengeRow.consumed_at.is_(None))
            .values(status=status)
        )

    async def settle(self, challenge_id: str, status: str) -> bool:
        """Records the answer to a pending push or call; True for exactly one caller however
        many polls race, so what follows an answer (its audit, a fraud report's pause) happens
        once."""
        result = await self._db.execute(
            update(ChallengeRow)
            .where(
                ChallengeRow.id == challenge_id,
                ChallengeRow.consumed_at.is_(None),
                ChallengeRow.status == "pending",
            )
            .values(status=status)
        )
        return result.rowcount == 1  # type: ignore[attr-defined,no-any-return]

    async def consume(
        self,
        challenge_id: str,
        user_id: int,
        session_id: str,
        now: datetime,
        *,
        forget_payload: bool = False,
    ) -> bool:
        """Marks the challenge used; True for exactly one caller, however many race.
        `forget_payload` clears its draft, code hash and page in the same statement."""
        statement = _CONSUME_AND_FORGET if forget_payload else _CONSUME
        values = {
            "of_challenge": challenge_id,
            "of_user": user_id,
            "of_session": session_id,
            "now": now,
        }
        result = await self._db.execute(statement, values)
        return result.rowcount == 1  # type: ignore[attr-defined,no-any-return]
