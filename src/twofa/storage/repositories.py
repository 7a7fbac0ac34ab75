"""Queries over the tables, one small class per aggregate (challenges are in
storage.challenges, the audit log in storage.audit_log, second factors in storage.credentials).
Repositories never commit: the service that uses them owns the transaction
(`async with sessions.begin()`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Delete,
    Insert,
    Integer,
    String,
    Update,
    and_,
    bindparam,
    case,
    delete,
    func,
    literal,
    or_,
    select,
    union,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from twofa.storage.change_notes import (
    note_ended_session,
    note_ended_user_sessions,
    note_settings_saved,
)
from twofa.storage.tables import (
    ApiTokenRow,
    ConsoleSettingRow,
    CredentialRow,
    DuoEnrolmentRow,
    GroupRow,
    MembershipRow,
    SessionRow,
    ThrottleRow,
    UserRow,
    UtcDateTime,
)


class Users:
    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    async def by_name(self, username: str) -> UserRow | None:
        return await self._db.scalar(select(UserRow).where(UserRow.username == username))

    async def by_id(self, user_id: int) -> UserRow | None:
        return await self._db.get(UserRow, user_id)

    async def lock(self, user_id: int) -> None:
        """Takes the user's row for the rest of the transaction: a no-op write, which holds
        PostgreSQL's row lock and SQLite's write lock alike (FOR UPDATE is no lock on
        SQLite), so a second transaction doing the same waits here, then sees the first."""
        await self._db.execute(update(UserRow).where(UserRow.id == user_id).values(id=UserRow.id))

    async def all(self) -> Sequence[UserRow]:
        return (await self._db.scalars(select(UserRow).order_by(UserRow.username))).all()

    def add(self, user: UserRow) -> None:
        self._db.add(user)

    async def remove(self, user_id: int) -> None:
        await self._db.execute(delete(UserRow).where(UserRow.id == user_id))

    async def search(self, text: str, *, offset: int, limit: int) -> tuple[Sequence[UserRow], int]:
        query = select(UserRow)
        if text:
            pattern = "%" + _like_escaped(text.lower()) + "%"
            query = query.where(
                func.lower(UserRow.username).like(pattern, escape="\\")
                | func.lower(UserRow.display_name).like(pattern, escape="\\")
                | func.lower(UserRow.email).like(pattern, escape="\\")
            )
        total = int(await self._db.scalar(select(func.count()).select_from(query.subquery())) or 0)
        page = query.order_by(UserRow.username).offset(offset).limit(limit)
        return (await self._db.scalars(page)).all(), total

    async def group_names(self, user_id: int, *, twofa_only: bool = False) -> list[str]:
        query = (
            select(GroupRow.name)
            .join(MembershipRow, MembershipRow.group_id == GroupRow.id)
            .where(MembershipRow.user_id == user_id)
            .order_by(GroupRow.name)
        )
        if twofa_only:
            query = query.where(GroupRow.twofa_enabled.is_(True))
        return list((await self._db.scalars(query)).all())


class Groups:
    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    async def by_name(self, name: str) -> GroupRow | None:
        return await self._db.scalar(select(GroupRow).where(GroupRow.name == name))

    async def all(self) -> Sequence[GroupRow]:
        return (await self._db.scalars(select(GroupRow).order_by(GroupRow.name))).all()

    def add(self, group: GroupRow) -> None:
        self._db.add(group)

    async def members(self, group_id: int) -> list[str]:
        query = (
            select(UserRow.username)
            .join(MembershipRow, MembershipRow.user_id == UserRow.id)
            .where(MembershipRow.group_id == group_id)
            .order_by(UserRow.username)
        )
        return list((await self._db.scalars(query)).all())

    async def add_member(self, group_id: int, user_id: int) -> bool:
        if await self._db.get(MembershipRow, (user_id, group_id)) is not None:
            return False
        self._db.add(MembershipRow(user_id=user_id, group_id=group_id))
        return True

    async def remove_member(self, group_id: int, user_id: int) -> bool:
        result = await self._db.execute(
            delete(MembershipRow).where(
                MembershipRow.group_id == group_id, MembershipRow.user_id == user_id
            )
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


class DuoEnrolments:
    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    async def get(self, user_id: int) -> DuoEnrolmentRow | None:
        return await self._db.get(DuoEnrolmentRow, user_id)

    async def get_or_create(self, user_id: int) -> DuoEnrolmentRow:
        row = await self.get(user_id)
        if row is None:
            row = DuoEnrolmentRow(user_id=user_id)
            self._db.add(row)
        return row

    async def remove(self, user_id: int) -> None:
        await self._db.execute(delete(DuoEnrolmentRow).where(DuoEnrolmentRow.user_id == user_id))


class Sessions:
    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    async def get(self, session_id: str) -> SessionRow | None:
        return await self._db.get(SessionRow, session_id)

    def add(self, row: SessionRow) -> None:
        self._db.add(row)

    async def remove(self, session_id: str) -> None:
        await self._db.execute(delete(SessionRow).where(SessionRow.id == session_id))
        note_ended_session(self._db, session_id)

    async def remove_for_user(self, user_id: int) -> None:
        await self._db.execute(delete(SessionRow).where(SessionRow.user_id == user_id))
        note_ended_user_sessions(self._db, user_id)

    async def remove_expired(self, now: datetime) -> int:
        result = await self._db.execute(delete(SessionRow).where(SessionRow.expires_at < now))
        return int(result.rowcount)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class CountedAttempt:
    """A key's row as one counting statement left it."""

    failures: int  # attempts counted in the window, this one included
    window_started_at: datetime
    locked_until: datetime | None


class Throttles:
    """Attempt counters (services.throttle). Each count is one atomic statement, so
    concurrent requests on one key see each other's numbers; none reads a row to write it."""

    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    async def get(self, key: str) -> ThrottleRow | None:
        return await self._db.get(ThrottleRow, key)

    async def count_attempt(
        self, key: str, limit: int, window: timedelta, lockout: timedelta, now: datetime
    ) -> CountedAttempt:
        statement = self.counting_statement(self._db.get_bind().dialect.name)
        params = self.counting_params(key, limit, window, lockout, now)
        row = (await self._db.execute(statement, params)).one()
        return CountedAttempt(int(row.failures), row.window_started_at, row.locked_until)

    @staticmethod
    def counting_statement(dialect: str) -> Insert:
        """INSERT … ON CONFLICT (key) DO UPDATE … RETURNING: the row's count after this
        attempt. A new key, an ended lock-out or a window that has passed starts again at 1;
        an active lock-out counts on from at least `limit + 1`, so it is never an allowed
        number; the attempt whose number reaches `limit` sets the lock-out (`lock_end`)
        in the same statement. Every SET expression reads the row as it was before."""
        now = bindparam("t_now", type_=UtcDateTime())
        limit = bindparam("t_limit", type_=Integer())
        first_lock = bindparam("t_first_lock", type_=UtcDateTime())  # lock_end when limit is 1
        row = ThrottleRow
        insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
        statement = insert(ThrottleRow).values(
            key=bindparam("t_key", type_=String()),
            failures=1,
            window_started_at=now,
            locked_until=first_lock,
        )
        afresh = or_(
            and_(row.locked_until.is_not(None), row.locked_until <= now),
            and_(
                row.locked_until.is_(None),
                row.window_started_at < bindparam("t_window_floor", type_=UtcDateTime()),
            ),
        )
        return statement.on_conflict_do_update(
            index_elements=[ThrottleRow.key],
            set_={
                "failures": case(
                    (afresh, 1),
                    (and_(row.locked_until.is_not(None), row.failures < limit), limit + 1),
                    else_=row.failures + 1,
                ),
                "window_started_at": case((afresh, now), else_=row.window_started_at),
                "locked_until": case(
                    (afresh, first_lock),
                    (
                        and_(row.locked_until.is_(None), row.failures + 1 >= limit),
                        bindparam("t_lock_end", type_=UtcDateTime()),
                    ),
                    else_=row.locked_until,
                ),
            },
        ).returning(ThrottleRow.failures, ThrottleRow.window_started_at, ThrottleRow.locked_until)

    @staticmethod
    def counting_params(
        key: str, limit: int, window: timedelta, lockout: timedelta, now: datetime
    ) -> dict[str, Any]:
        lock_end = now + lockout
        return {
            "t_key": key,
            "t_now": now,
            "t_limit": limit,
            "t_window_floor": now - window,
            "t_lock_end": lock_end,
            "t_first_lock": lock_end if limit <= 1 else None,
        }

    async def give_back(self, key: str, window_started_at: datetime, limit: int) -> None:
        params = self.give_back_params(key, window_started_at, limit)
        for statement in self.give_back_statements():
            await self._db.execute(statement, params)

    @staticmethod
    def give_back_params(key: str, window_started_at: datetime, limit: int) -> dict[str, Any]:
        return {"t_key": key, "t_window_started_at": window_started_at, "t_limit": limit}

    @staticmethod
    def give_back_statements() -> tuple[Update, Delete]:
        """Takes back one attempt counted in this window (not in a later one), and lifts the
        lock-out when the count falls below the limit again; then drops the row if nothing is
        left in it (a shared key every right password gives back would otherwise stay)."""
        row = ThrottleRow
        emptied = delete(ThrottleRow).where(
            row.key == bindparam("t_key", type_=String()),
            row.failures <= 0,
            row.locked_until.is_(None),
        )
        return (
            update(ThrottleRow)
            .where(
                row.key == bindparam("t_key", type_=String()),
                row.window_started_at == bindparam("t_window_started_at", type_=UtcDateTime()),
                row.failures > 0,
            )
            .values(
                failures=row.failures - 1,
                locked_until=case(
                    (row.failures - 1 < bindparam("t_limit", type_=Integer()), None),
                    else_=row.locked_until,
                ),
            )
        ), emptied

    async def remove(self, key: str) -> None:
        await self._db.execute(delete(ThrottleRow).where(ThrottleRow.key == key))


class ConsoleSettings:
    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    async def get(self, key: str) -> ConsoleSettingRow | None:
        return await self._db.get(ConsoleSettingRow, key)

    async def all(self) -> Sequence[ConsoleSettingRow]:
        return (await self._db.scalars(select(ConsoleSettingRow))).all()

    def add(self, row: ConsoleSettingRow) -> None:
        self._db.add(row)

    async def upsert(self, key: str, value: dict[str, Any], now: datetime, actor: str) -> None:
        """One atomic statement: the first save inserts, later ones replace the value and bump
        the version in the database, so concurrent saves neither collide nor share a version."""
        dialect = self._db.get_bind().dialect.name
        insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
        statement = insert(ConsoleSettingRow).values(
            key=key, value=value, version=1, updated_at=now, updated_by=actor
        )
        statement = statement.on_conflict_do_update(
            index_elements=[ConsoleSettingRow.key],
            set_={
                "value": statement.excluded.value,
                "version": ConsoleSettingRow.version + 1,
                "updated_at": statement.excluded.updated_at,
                "updated_by": statement.excluded.updated_by,
            },
        )
        await self._db.execute(statement)
        note_settings_saved(self._db)

    async def version_sum(self) -> int:
        return int(
            await self._db.scalar(select(func.coalesce(func.sum(ConsoleSettingRow.version), 0)))
            or 0
        )


class ApiTokens:
    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    def add(self, row: ApiTokenRow) -> None:
        self._db.add(row)

    async def by_hash(self, token_hash: str) -> ApiTokenRow | None:
        return await self._db.scalar(
            select(ApiTokenRow).where(ApiTokenRow.token_hash == token_hash)
        )

    async def get(self, token_id: str) -> ApiTokenRow | None:
        return await self._db.get(ApiTokenRow, token_id)

    async def all(self) -> Sequence[ApiTokenRow]:
        return (await self._db.scalars(select(ApiTokenRow).order_by(ApiTokenRow.created_at))).all()


class UserCounts:
    """How many accounts need, have and still lack a second factor (enabled accounts only:
    a disabled account cannot sign in, so it needs nothing)."""

    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    async def total(self) -> int:
        return int(await self._db.scalar(select(func.count()).select_from(UserRow)) or 0)

    async def disabled(self) -> int:
        query = select(func.count()).where(UserRow.enabled.is_(False))
        return int(await self._db.scalar(query) or 0)

    async def required(self, *, everyone: bool) -> int:
        query = select(func.count()).where(*_required_conditions(everyone))
        return int(await self._db.scalar(query) or 0)

    async def enrolled(self) -> int:
        query = select(func.count()).where(UserRow.enabled.is_(True), Enrolments.is_enrolled())
        return int(await self._db.scalar(query) or 0)

    async def pending(self, *, everyone: bool) -> int:
        """Required but with no method set up: they set one up at the next sign-in."""
        query = select(func.count()).where(
            *_required_conditions(everyone), ~Enrolments.is_enrolled()
        )
        return int(await self._db.scalar(query) or 0)


def _required_conditions(everyone: bool) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [UserRow.enabled.is_(True)]
    if not everyone:
        via_group = (
            select(MembershipRow.user_id)
            .join(GroupRow, GroupRow.id == MembershipRow.group_id)
            .where(GroupRow.twofa_enabled.is_(True))
        )
        conditions.append(UserRow.twofa_enabled.is_(True) | UserRow.id.in_(via_group))
    return conditions


class Enrolments:
    """What "enrolled" means, in one place: Duo Push set up (activated and approved once), or
    a credential of any local method. Per user for the gateway, as a condition for counts."""

    DUO_PUSH = "duo_push"

    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    async def methods_of(self, user_id: int) -> list[str]:
        """The user's methods, Duo Push first when set up, then the others by code."""
        duo = select(literal(self.DUO_PUSH).label("method")).where(
            DuoEnrolmentRow.user_id == user_id, DuoEnrolmentRow.configured_at.is_not(None)
        )
        local = select(CredentialRow.method).where(CredentialRow.user_id == user_id)
        codes = set(await self._db.scalars(union(duo, local)))
        return [code for code in (self.DUO_PUSH,) if code in codes] + sorted(
            codes - {self.DUO_PUSH}
        )

    @staticmethod
    def is_enrolled() -> ColumnElement[bool]:
        duo = select(DuoEnrolmentRow.user_id).where(DuoEnrolmentRow.configured_at.is_not(None))
        return UserRow.id.in_(duo) | UserRow.id.in_(select(CredentialRow.user_id))


class GroupSearch:
    """Groups by name with their member counts, a page at a time."""

    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    async def search(
        self, text: str, *, offset: int, limit: int
    ) -> tuple[list[tuple[GroupRow, int]], int]:
        """A page of (group, member count) whose name contains `text`, and the total."""
        query = select(GroupRow)
        if text:
            pattern = "%" + _like_escaped(text.lower()) + "%"
            query = query.where(func.lower(GroupRow.name).like(pattern, escape="\\"))
        total = int(await self._db.scalar(select(func.count()).select_from(query.subquery())) or 0)
        members = (
            select(func.count())
            .where(MembershipRow.group_id == GroupRow.id)
            .correlate(GroupRow)
            .scalar_subquery()
        )
        page = query.add_columns(members).order_by(GroupRow.name).offset(offset).limit(limit)
        rows = (await self._db.execute(page)).all()
        return [(group, int(count)) for group, count in rows], total


def _like_escaped(text: str) -> str:
    """`text` matched literally inside a LIKE pattern: its % and _ are not wildcards."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
