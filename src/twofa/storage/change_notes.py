"""What a unit of work changed that other gateway processes keep copies of: sessions ended,
console settings saved, access rules changed. Repositories note it on the database session as
they write; once the transaction commits, the notes go to whoever listens (the Redis change
feed, `services.state.change_feed`); a transaction rolled back announces nothing.

Noting is by construction: every path that ends a session goes through `Sessions`, every
settings save through `ConsoleSettings.upsert`, every rule change through
`AccessRules.lock_and_bump`, so no service can forget to tell the other nodes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

NOTES_KEY: Final = "twofa.change_notes"


@dataclass(frozen=True)
class Changes:
    ended_sessions: frozenset[str] = frozenset()  # session ids (token digests)
    ended_users: frozenset[int] = frozenset()  # every session of these users ended
    settings: bool = False
    access_rules: bool = False

    def __bool__(self) -> bool:
        return bool(self.ended_sessions or self.ended_users or self.settings or self.access_rules)

    def __or__(self, other: Changes) -> Changes:
        return Changes(
            self.ended_sessions | other.ended_sessions,
            self.ended_users | other.ended_users,
            self.settings or other.settings,
            self.access_rules or other.access_rules,
        )


def _note(db: AsyncSession, change: Changes) -> None:
    noted = db.info.get(NOTES_KEY)
    db.info[NOTES_KEY] = noted | change if isinstance(noted, Changes) else change


def note_ended_session(db: AsyncSession, session_id: str) -> None:
    _note(db, Changes(ended_sessions=frozenset({session_id})))


def note_ended_user_sessions(db: AsyncSession, user_id: int) -> None:
    _note(db, Changes(ended_users=frozenset({user_id})))


def note_settings_saved(db: AsyncSession) -> None:
    _note(db, Changes(settings=True))


def note_access_rules_changed(db: AsyncSession) -> None:
    _note(db, Changes(access_rules=True))


def announce_commits(
    factory: async_sessionmaker[AsyncSession], announce: Callable[[Changes], None]
) -> None:
    """Calls `announce` (in the event loop's thread, so it must not block) after each commit
    of a session from `factory` that noted something. Only this factory's sessions: its class
    is its own (`storage.database.session_factory`)."""
    session_class = factory.kw["sync_session_class"]

    def committed(session: Session) -> None:
        changes = session.info.pop(NOTES_KEY, None)
        if isinstance(changes, Changes) and changes:
            announce(changes)

    def rolled_back(session: Session, *_: Any) -> None:
        session.info.pop(NOTES_KEY, None)

    event.listen(session_class, "after_commit", committed)
    event.listen(session_class, "after_rollback", rolled_back)
