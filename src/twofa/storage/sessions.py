"""The browser sessions table: the one-statement reads every request with a cookie makes
(forward-auth's with the user and groups), and the writes that end sessions, each noting
what it ended for the change feed (storage.change_notes)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import bindparam, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from twofa.storage.change_notes import note_ended_session, note_ended_user_sessions
from twofa.storage.json_arrays import JsonArray, json_array_values
from twofa.storage.tables import (
    GroupRow,
    MembershipRow,
    SessionRow,
    UserRow,
    UtcDateTime,
    insert_now,
    table_of,
)


@dataclass(frozen=True)
class StoredSession:
    """A session row as read on every request: plain values, no ORM identity to track."""

    id: str
    user_id: int | None
    level: int
    csrf_token: str
    next_url: str
    second_factor_at: datetime | None
    last_seen_at: datetime
    expires_at: datetime

    def live(self, now: datetime, idle: timedelta) -> bool:
        return self.expires_at > now and self.last_seen_at + idle > now


_TOUCH_BATCH = 500  # ids per UPDATE: well inside every driver's limit on parameters
# Sessions deleted per sweep (a minute apart): a burst of expiries is worked off over a few
# sweeps, each commit's grant search and feed message kept small.
SWEEP_BATCH: Final = 1000
# The statements of every request are on the Core tables: no ORM bookkeeping to pay for.
_sessions = table_of(SessionRow).c
_users = table_of(UserRow).c
_STORED_SESSION_COLUMNS = (
    _sessions.id,
    _sessions.user_id,
    _sessions.level,
    _sessions.csrf_token,
    _sessions.next_url,
    _sessions.second_factor_at,
    _sessions.last_seen_at,
    _sessions.expires_at,
)


@dataclass(frozen=True)
class SessionUser:
    """The user of a session as forward-auth hands it on, read with the session."""

    username: str
    display_name: str
    email: str
    enabled: bool
    directory: str
    groups_synced_at: datetime | None
    groups: tuple[str, ...]  # sorted


_groups, _memberships = table_of(GroupRow), table_of(MembershipRow)
_GROUPS_OF_SESSION_USER = (
    select(JsonArray(_groups.c.name))
    .join(_memberships, _memberships.c.group_id == _groups.c.id)
    .where(_memberships.c.user_id == _sessions.user_id)
    .scalar_subquery()
)
_SESSION_USER_COLUMNS = (
    _users.username,
    _users.display_name,
    _users.email,
    _users.enabled,
    _users.directory,
    _users.groups_synced_at,
    _GROUPS_OF_SESSION_USER,
)


# Built once, values bound at execution: these run on every page and every cold forward-auth
# read, and building a statement costs more than running it.
_READ = select(*_STORED_SESSION_COLUMNS).where(_sessions.id == bindparam("session_id"))
_READ_WITH_USER = (
    select(*_STORED_SESSION_COLUMNS, *_SESSION_USER_COLUMNS)
    .select_from(table_of(SessionRow).outerjoin(table_of(UserRow), _users.id == _sessions.user_id))
    .where(_sessions.id == bindparam("session_id"))
)
_SEEN_NOW = bindparam("seen_now", type_=UtcDateTime())
_TOUCH = (
    update(table_of(SessionRow))
    .where(_sessions.id.in_(bindparam("ids", expanding=True)), _sessions.last_seen_at < _SEEN_NOW)
    .values(last_seen_at=_SEEN_NOW)
)
_REMOVE = delete(table_of(SessionRow)).where(_sessions.id == bindparam("session_id"))


class Sessions:
    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    async def get(self, session_id: str) -> SessionRow | None:
        return await self._db.get(SessionRow, session_id)

    async def read(self, session_id: str) -> StoredSession | None:
        """One statement, Core columns (a row of values, not a tracked ORM object)."""
        row = (await self._db.execute(_READ, {"session_id": session_id})).one_or_none()
        return None if row is None else StoredSession(*row)

    async def read_with_user(
        self, session_id: str
    ) -> tuple[StoredSession, SessionUser | None] | None:
        """The session, its user and the user's groups in one statement: forward-auth's
        cold read."""
        row = (await self._db.execute(_READ_WITH_USER, {"session_id": session_id})).one_or_none()
        if row is None:
            return None
        stored = StoredSession(*row[: len(_STORED_SESSION_COLUMNS)])
        username, display_name, email, enabled, directory, synced_at, groups = row[
            len(_STORED_SESSION_COLUMNS) :
        ]
        if username is None:
            return stored, None
        names = json_array_values(groups)
        user = SessionUser(
            username, display_name, email, enabled, directory, synced_at, tuple(sorted(names))
        )
        return stored, user

    async def touch(self, session_ids: Sequence[str], now: datetime) -> None:
        """Marks sessions as seen now (their idle window starts again); never backwards."""
        for start in range(0, len(session_ids), _TOUCH_BATCH):
            batch = session_ids[start : start + _TOUCH_BATCH]
            await self._db.execute(_TOUCH, {"ids": list(batch), "seen_now": now})

    async def add(self, row: SessionRow) -> None:
        await insert_now(self._db, row)

    async def remove(self, session_id: str, *, signed_in: bool = True) -> None:
        """`signed_in=False` when the session is known never to have been signed in (a
        sign-in's own step replacing it), so nothing it could have granted is looked for."""
        await self._db.execute(_REMOVE, {"session_id": session_id})
        note_ended_session(self._db, session_id, signed_in=signed_in)

    async def remove_for_user(self, user_id: int) -> None:
        await self._db.execute(delete(SessionRow).where(SessionRow.user_id == user_id))
        note_ended_user_sessions(self._db, user_id)

    async def remove_expired(
        self, now: datetime, idle_since: datetime, signed_in_level: int
    ) -> int:
        """Deletes up to `SWEEP_BATCH` sessions that ended by themselves and were never read
        again: past their absolute lifetime, or unused since `idle_since`. Those that had
        signed in are noted as ended, as at a sign-out: their grants end with them and their
        applications are told (back-channel logout). Sign-in pages left open are not."""
        ended = select(_sessions.id).where(
            or_(_sessions.expires_at < now, _sessions.last_seen_at < idle_since)
        )
        removed = await self._db.execute(
            delete(table_of(SessionRow))
            .where(_sessions.id.in_(ended.limit(SWEEP_BATCH).scalar_subquery()))
            .returning(_sessions.id, _sessions.level)
        )
        rows = removed.all()
        for session_id, level in rows:
            if level == signed_in_level:
                note_ended_session(self._db, session_id)
        return len(rows)
