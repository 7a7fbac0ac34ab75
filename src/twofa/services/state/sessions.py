"""Server-side browser sessions. The cookie holds a random token; the database holds its
SHA-256, the user, how far they got (`Level`), the CSRF token and where they were going.

A new token is issued at every privilege change (password accepted, second factor passed,
sign-out), so a token seen before sign-in is worthless after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import IntEnum

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.config import Settings
from twofa.domain.client import ClientInfo
from twofa.security.tokens import new_token, token_digest
from twofa.storage.repositories import Sessions
from twofa.storage.tables import SessionRow

_TOUCH_EVERY = timedelta(seconds=30)
_SWEEP_EVERY = timedelta(minutes=1)


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

    def signed_in_until(self, now: datetime) -> datetime:
        """When a session signed in at `now` ends, whatever happens in between."""
        return now + self._absolute

    async def open(self, client: ClientInfo, next_url: str = "/") -> tuple[str, SessionView]:
        """An anonymous session: it carries the CSRF token of the sign-in form."""
        async with self._sessions.begin() as db:
            await self._sweep(db)
            return self._insert(db, None, Level.ANONYMOUS, client, next_url)

    async def _sweep(self, db: AsyncSession) -> None:
        """Deletes expired sessions, at most once a minute per process: every sign-in page
        view creates a row, so without this the table only grows."""
        now = self._clock.now()
        if self._swept_at is None or now - self._swept_at >= _SWEEP_EVERY:
            self._swept_at = now
            await Sessions(db).remove_expired(now)

    async def load(self, token: str | None) -> SessionView | None:
        """The live session for a cookie value, or None if unknown, idle too long or too old."""
        if not token or len(token) > 100:
            return None
        now = self._clock.now()
        async with self._single_statements() as db:
            row = await Sessions(db).read(token_digest(token))
            if row is not None and row.live(now, self._idle):
                if now - row.last_seen_at >= _TOUCH_EVERY:  # at most one write in 30 s
                    await Sessions(db).touch(row.id, now)
                return SessionView(
                    row.id,
                    row.user_id,
                    Level(row.level),
                    row.csrf_token,
                    row.next_url,
                    row.second_factor_at,
                )
        if row is not None:  # idle too long or too old: gone, and other nodes are told
            async with self._sessions.begin() as db:
                await Sessions(db).remove(row.id)
        return None

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
        await Sessions(db).remove(old.id)
        passed_at = self._clock.now() if second_factor else None
        return self._insert(db, user_id, level, client, old.next_url, passed_at)

    async def set_next_url(self, session: SessionView, next_url: str) -> None:
        async with self._sessions.begin() as db:
            row = await Sessions(db).get(session.id)
            if row is not None:
                row.next_url = next_url

    async def end(self, session: SessionView) -> None:
        async with self._sessions.begin() as db:
            await Sessions(db).remove(session.id)

    def _insert(
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
        Sessions(db).add(row)
        return token, _view(row)
