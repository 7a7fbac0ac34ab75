"""Server-side browser sessions. The cookie holds a random token; the database holds its
SHA-256, the user, how far they got (`Level`), the CSRF token and where they were going.

A new token is issued at every privilege change (password accepted, second factor passed,
sign-out), so a token seen before sign-in is worthless after it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import IntEnum
from typing import Final

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.config import Settings
from twofa.domain.client import ClientInfo
from twofa.security.tokens import new_token, token_digest
from twofa.storage.sessions import Sessions, SessionUser, StoredSession
from twofa.storage.tables import SessionRow

TOUCH_EVERY: Final = timedelta(seconds=30)
SEEN_FLUSH_SECONDS: Final = 5.0
log = logging.getLogger("twofa.sessions")
_SWEEP_EVERY = timedelta(minutes=1)
# A use answered from memory reaches the row's last_seen_at up to TOUCH_EVERY and a flush late
# (and as the earliest use of its batch), and nodes' clocks differ a little: the sweep leaves a
# session idle by its row this much longer alone. A read still ends it on the minute.
SWEEP_IDLE_GRACE: Final = timedelta(minutes=2)


class Level(IntEnum):
    ANONYMOUS = 0
    AWAITING_SECOND_FACTOR = 1  # the password passed; a second factor is still owed
    SIGNED_IN = 2


@dataclass(frozen=True)
class SessionView:
    id: str
    user_id: int | None
    level: Level
    csrf_token: str
    next_url: str
    second_factor_at: datetime | None = None  # when this session last passed a second factor


@dataclass(frozen=True)
class LiveSession:
    view: SessionView
    seen_at: datetime  # when the database last marked it used (this read included)
    expires_at: datetime
    user: SessionUser | None = None  # read with it (`load_with_user`); None: not asked, or none


def _stored_view(row: StoredSession) -> SessionView:
    return SessionView(
        row.id, row.user_id, Level(row.level), row.csrf_token, row.next_url, row.second_factor_at
    )


def _view(row: SessionRow) -> SessionView:
    return SessionView(
        row.id, row.user_id, Level(row.level), row.csrf_token, row.next_url, row.second_factor_at
    )


class SessionService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        settings: Settings,
        single_statements: async_sessionmaker[AsyncSession] | None = None,
    ) -> None:
        """`single_statements` (storage.database.single_statement_factory): where `load` reads
        a session in one round trip; every request with a cookie does."""
        self._sessions = sessions
        self._single_statements = single_statements or sessions
        self._clock = clock
        self._idle = timedelta(minutes=settings.session_idle_minutes)
        self._absolute = timedelta(hours=settings.session_absolute_hours)
        self._pending = timedelta(minutes=settings.pending_login_minutes)
        self._swept_at: datetime | None = None
        self._seen: dict[str, datetime] = {}
        self._flushing: asyncio.Task[None] | None = None

    def signed_in_until(self, now: datetime) -> datetime:
        """When a session signed in at `now` ends, whatever happens in between."""
        return now + self._absolute

    async def open(self, client: ClientInfo, next_url: str = "/") -> tuple[str, SessionView]:
        """An anonymous session: it carries the CSRF token of the sign-in form."""
        async with self._sessions.begin() as db:
            await self._sweep(db)
            return await self._insert(db, None, Level.ANONYMOUS, client, next_url)

    async def _sweep(self, db: AsyncSession) -> None:
        """Deletes sessions that ended by themselves, at most once a minute per process: every
        sign-in page view creates a row, so without this the table only grows; and a signed-in
        session that expires unread ends here, as at a sign-out (storage.sessions)."""
        now = self._clock.now()
        if self._swept_at is None or now - self._swept_at >= _SWEEP_EVERY:
            self._swept_at = now
            idle_since = now - self._idle - SWEEP_IDLE_GRACE
            await Sessions(db).remove_expired(now, idle_since, Level.SIGNED_IN)

    async def load(self, token: str | None) -> SessionView | None:
        """The live session for a cookie value, or None if unknown, idle too long or too old."""
        live = await self._live(token, with_user=False)
        return None if live is None else live.view

    async def load_with_user(self, token: str | None) -> LiveSession | None:
        """`load`, with the session's user and groups read in the same statement (forward-auth
        reads nothing else)."""
        return await self._live(token, with_user=True)

    async def _live(self, token: str | None, *, with_user: bool) -> LiveSession | None:
        if not token or len(token) > 100:
            return None
        now = self._clock.now()
        session_id = token_digest(token)
        async with self._single_statements() as db:
            sessions = Sessions(db)
            user: SessionUser | None = None
            if with_user:
                found = await sessions.read_with_user(session_id)
                stored, user = found if found else (None, None)
            else:
                stored = await sessions.read(session_id)
            if stored is not None and stored.live(now, self._idle):
                seen_at = stored.last_seen_at
                if now - seen_at >= TOUCH_EVERY:  # at most one write in 30 s
                    await sessions.touch([stored.id], now)
                    seen_at = now
                return LiveSession(_stored_view(stored), seen_at, stored.expires_at, user)
        if stored is not None:  # idle too long or too old: gone, and other nodes are told
            async with self._sessions.begin() as db:
                await Sessions(db).remove(stored.id)
        return None

    def live_until(self, seen_at: datetime, expires_at: datetime) -> datetime:
        """When a session last seen at `seen_at` ends if it is not seen again."""
        return min(expires_at, seen_at + self._idle)

    def seen(self, session_id: str, now: datetime) -> None:
        """A session answered from memory was used: its idle window starts again. Written in
        batches, one statement per `SEEN_FLUSH_SECONDS` for every session seen meanwhile."""
        self._seen[session_id] = now
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush_seen_later())

    async def _flush_seen_later(self) -> None:
        await asyncio.sleep(SEEN_FLUSH_SECONDS)
        await self.flush_seen()

    async def flush_seen(self) -> None:
        """Writes the sessions seen since the last flush (closing does it too). A failure is
        logged and forgotten: a session whose touch was lost may end early elsewhere."""
        seen, self._seen = self._seen, {}
        if not seen:
            return
        try:
            async with self._sessions.begin() as db:
                # The earliest use of the batch for all: a session may end early on another
                # node by up to a flush, never late.
                await Sessions(db).touch(list(seen), min(seen.values()))
        except Exception:
            log.warning("could not mark %d sessions as seen", len(seen), exc_info=True)

    async def close(self) -> None:
        if self._flushing is not None and not self._flushing.done():
            self._flushing.cancel()
            await asyncio.gather(self._flushing, return_exceptions=True)
        await self.flush_seen()

    async def promote(
        self,
        db: AsyncSession,
        old: SessionView,
        user_id: int,
        level: Level,
        client: ClientInfo,
        *,
        second_factor: bool = False,
    ) -> tuple[str, SessionView]:
        """Replaces `old` by a new session at `level` (inside the caller's transaction).
        `second_factor` records that a second factor was just passed: sensitive changes
        (removing a method, new backup codes) ask for one that is recent."""
        await Sessions(db).remove(old.id, signed_in=old.level is Level.SIGNED_IN)
        passed_at = self._clock.now() if second_factor else None
        return await self._insert(db, user_id, level, client, old.next_url, passed_at)

    async def set_next_url(self, session: SessionView, next_url: str) -> None:
        async with self._sessions.begin() as db:
            row = await Sessions(db).get(session.id)
            if row is not None:
                row.next_url = next_url

    async def end(self, session: SessionView) -> None:
        async with self._sessions.begin() as db:
            await Sessions(db).remove(session.id)

    async def _insert(
        self,
        db: AsyncSession,
        user_id: int | None,
        level: Level,
        client: ClientInfo,
        next_url: str,
        second_factor_at: datetime | None = None,
    ) -> tuple[str, SessionView]:
        now = self._clock.now()
        token = new_token()
        lifetime = self._absolute if level is Level.SIGNED_IN else self._pending
        row = SessionRow(
            id=token_digest(token),
            user_id=user_id,
            level=int(level),
            csrf_token=new_token(),
            next_url=next_url,
            created_at=now,
            last_seen_at=now,
            expires_at=now + lifetime,
            client_ip=client.ip,
            user_agent=client.user_agent[:300],
            second_factor_at=second_factor_at,
        )
        await Sessions(db).add(row)
        return token, _view(row)
