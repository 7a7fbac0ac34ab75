"""What a unit of work changed that gateway processes keep copies of: sessions ended, users
changed (groups, profile, enabled), console settings saved, access rules changed. Repositories
note it on the database session as they write; once the transaction commits, the notes go to
this process's caches and to the other processes (the change feeds of `services.state`); a
transaction rolled back announces nothing.

Noting is by construction: every path that ends a session goes through `Sessions`, every
settings save through `ConsoleSettings.upsert`, every rule change through
`AccessRules.lock_and_bump`, and every change to a user or a membership row is seen at flush
(`_note_row_changes`), so no service can forget to tell the other nodes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Final

from sqlalchemy import event, inspect
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from twofa.storage.tables import MembershipRow, UserRow

NOTES_KEY: Final = "twofa.change_notes"


@dataclass(frozen=True)
class Changes:
    ended_sessions: frozenset[str] = frozenset()  # session ids (token digests)
    ended_users: frozenset[int] = frozenset()  # every session of these users ended
    settings: bool = False
    access_rules: bool = False
    changed_users: frozenset[int] = frozenset()  # name, groups or profile changed: re-read them
    # Of `ended_sessions`, those that never got past the password: no application was signed
    # in from them, so they granted nothing to revoke. This process's own; no feed carries it.
    never_signed_in: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(
            self.ended_sessions
            or self.ended_users
            or self.settings
            or self.access_rules
            or self.changed_users
        )

    def __or__(self, other: Changes) -> Changes:
        return Changes(
            self.ended_sessions | other.ended_sessions,
            self.ended_users | other.ended_users,
            self.settings or other.settings,
            self.access_rules or other.access_rules,
            self.changed_users | other.changed_users,
            # Noted once as signed in is signed in, whatever else noted it: never dropped.
            (self.never_signed_in | other.never_signed_in)
            - (self.ended_sessions - self.never_signed_in)
            - (other.ended_sessions - other.never_signed_in),
        )

    def shared(self) -> Changes:
        """What the other processes need to hear. A session that never signed in answered
        no forward-auth request with a user and granted nothing, so whatever another process
        kept of it refuses as the session's absence would: its end, one per sign-in, stays
        here (no NOTIFY or publish per sign-in, to every node)."""
        if not self.never_signed_in:
            return self
        ended = self.ended_sessions - self.never_signed_in
        return replace(self, ended_sessions=ended, never_signed_in=frozenset())


def _note(db: AsyncSession | Session, change: Changes) -> None:
    noted = db.info.get(NOTES_KEY)
    db.info[NOTES_KEY] = noted | change if isinstance(noted, Changes) else change


def note_ended_session(db: AsyncSession, session_id: str, *, signed_in: bool = True) -> None:
    """`signed_in=False` only for a session known never to have passed its sign-in."""
    ended = frozenset({session_id})
    _note(db, Changes(ended_sessions=ended, never_signed_in=frozenset() if signed_in else ended))


def note_ended_user_sessions(db: AsyncSession | Session, user_id: int) -> None:
    _note(db, Changes(ended_users=frozenset({user_id})))


def note_changed_user(db: AsyncSession | Session, user_id: int) -> None:
    _note(db, Changes(changed_users=frozenset({user_id})))


def note_settings_saved(db: AsyncSession) -> None:
    _note(db, Changes(settings=True))


def note_access_rules_changed(db: AsyncSession) -> None:
    _note(db, Changes(access_rules=True))


def noted(session: Session) -> Changes:
    """What `session` noted so far (flushed first, so changed rows are seen)."""
    session.flush()
    changes = session.info.get(NOTES_KEY)
    return changes if isinstance(changes, Changes) else Changes()


# What forward-auth hands to the applications and decides on; a change to any other column
# (a sign-in's bookkeeping) leaves cached identities as they are.
_IDENTITY_COLUMNS: Final = (
    "username",
    "display_name",
    "email",
    "enabled",
    "is_admin",
    "directory",
    "groups_synced_at",  # a refresh of directory groups: re-read, so it is not due again
)


def _note_row_changes(session: Session, *_: Any) -> None:
    """A user's identity changed or the user was removed, a membership added or removed:
    whoever caches the identity (forward-auth) must read it again. Seen at flush, so ORM
    writes need no call; Core statements note for themselves (storage.repositories)."""
    for row in (*session.new, *session.deleted):
        if isinstance(row, MembershipRow):
            note_changed_user(session, row.user_id)
    for row in session.deleted:
        if isinstance(row, UserRow):
            note_ended_user_sessions(session, row.id)
    for row in session.dirty:
        if isinstance(row, UserRow) and _identity_changed(row):
            note_changed_user(session, row.id)


def _identity_changed(row: UserRow) -> bool:
    attributes = inspect(row).attrs
    return any(attributes[name].history.has_changes() for name in _IDENTITY_COLUMNS)


def before_each_commit(
    factory: async_sessionmaker[AsyncSession], send: Callable[[Session, Changes], None]
) -> None:
    """Calls `send` inside each committing transaction of `factory` that noted something the
    other processes need to hear (`Changes.shared`), so what it writes (PostgreSQL's NOTIFY)
    goes out if and only if the commit does."""
    session_class = factory.kw["sync_session_class"]

    def committing(session: Session) -> None:
        changes = noted(session).shared()
        if changes:
            send(session, changes)

    event.listen(session_class, "before_commit", committing)


def announce_commits(
    factory: async_sessionmaker[AsyncSession], announce: Callable[[Changes], None]
) -> None:
    """Calls `announce` (in the event loop's thread, so it must not block) after each commit
    of a session from `factory` that noted something. Only this factory's sessions: its class
    is its own (`storage.database.session_factory`)."""
    session_class = factory.kw["sync_session_class"]
    event.listen(session_class, "before_flush", _note_row_changes)

    def committed(session: Session) -> None:
        changes = session.info.pop(NOTES_KEY, None)
        if isinstance(changes, Changes) and changes:
            announce(changes)

    def rolled_back(session: Session, *_: Any) -> None:
        session.info.pop(NOTES_KEY, None)

    event.listen(session_class, "after_commit", committed)
    event.listen(session_class, "after_rollback", rolled_back)
