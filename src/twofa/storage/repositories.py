"""Queries over the tables, one small class per aggregate (sessions are in storage.sessions,
challenges in storage.challenges, the audit log in storage.audit_log, second factors in
storage.credentials).
Repositories never commit: the service that uses them owns the transaction
(`async with sessions.begin()`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    ColumnElement,
    bindparam,
    delete,
    exists,
    func,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import QueryableAttribute
from sqlalchemy.sql.dml import Update
from sqlalchemy.sql.selectable import ScalarSelect

from twofa.storage.change_notes import (
    note_changed_user,
    note_ended_user_sessions,
    note_settings_saved,
)
from twofa.storage.json_arrays import JsonArray, json_array_values
from twofa.storage.oidc_refresh_tokens import keep_sign_ins_of_removed_user
from twofa.storage.tables import (
    ApiTokenRow,
    ConsoleSettingRow,
    CredentialRow,
    DuoEnrolmentRow,
    GroupRow,
    MembershipRow,
    UserRow,
)

DUO_PUSH: Final = "duo_push"
_UserId = ColumnElement[int] | QueryableAttribute[int]


# What "enrolled" means, in one place: Duo Push set up (activated and approved once), or a
# credential of any local method. As two expressions on a user id (a bound value, or the
# users row of the statement around them) and one way to list them (`_listed`).
def _duo_set_up(user_id: _UserId) -> ColumnElement[bool]:
    return exists().where(
        DuoEnrolmentRow.user_id == user_id, DuoEnrolmentRow.configured_at.is_not(None)
    )


def _local_methods(user_id: _UserId) -> ScalarSelect[str]:
    return (
        select(JsonArray(CredentialRow.method))
        .where(CredentialRow.user_id == user_id)
        .scalar_subquery()
    )


def _listed(duo_set_up: bool, local_methods: object) -> list[str]:
    """Duo Push first when set up, then the others by code, each once."""
    codes = {str(code) for code in json_array_values(local_methods)}
    if duo_set_up:
        codes.add(DUO_PUSH)
    return sorted(codes, key=lambda code: (code != DUO_PUSH, code))


# Built once, values bound at execution: every second-factor page and answer reads these.
_USER_BY_ID = select(UserRow).where(UserRow.id == bindparam("user_id"))
_METHODS_OF = select(_duo_set_up(bindparam("user_id")), _local_methods(bindparam("user_id")))
_USER_WITH_METHODS = select(UserRow, _duo_set_up(UserRow.id), _local_methods(UserRow.id)).where(
    UserRow.id == bindparam("user_id")
)


def _taken(user_id: int) -> Update:
    """The no-op write that takes a user's row (`Users.lock`)."""
    return update(UserRow).where(UserRow.id == user_id).values(id=UserRow.id)


class Users:
    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    async def by_name(self, username: str) -> UserRow | None:
        return await self._db.scalar(select(UserRow).where(UserRow.username == username))

    async def by_id(self, user_id: int) -> UserRow | None:
        return await self._db.scalar(_USER_BY_ID, {"user_id": user_id})

    async def with_methods(self, user_id: int) -> tuple[UserRow, list[str]] | None:
        """The user and the methods they are enrolled in (`Enrolments.methods_of`), in one
        statement: what the second-factor gate reads on every page and answer."""
        found = (await self._db.execute(_USER_WITH_METHODS, {"user_id": user_id})).one_or_none()
        if found is None:
            return None
        user, duo_set_up, local_methods = found
        return user, _listed(bool(duo_set_up), local_methods)

    async def lock(self, user_id: int) -> None:
        """Takes the user's row for the rest of the transaction: a no-op write, which holds
        PostgreSQL's row lock and SQLite's write lock alike (FOR UPDATE is no lock on
        SQLite), so a second transaction doing the same waits here, then sees the first."""
        await self._db.execute(_taken(user_id))

    async def locked(self, user_id: int) -> UserRow | None:
        """The user's row as it is now, taken for the rest of the transaction as `lock` takes
        it, in the same statement (the no-op write returns the row)."""
        query = _taken(user_id).returning(UserRow).execution_options(populate_existing=True)
        return (await self._db.scalars(query)).one_or_none()

    async def all(self) -> Sequence[UserRow]:
        return (await self._db.scalars(select(UserRow).order_by(UserRow.username))).all()

    def add(self, user: UserRow) -> None:
        self._db.add(user)

    async def remove(self, user_id: int) -> None:
        # The row as the DELETE takes it (FOR UPDATE: a code's foreign key check waits), and
        # SQLite's write lock (`lock`), before the sign-ins are read for the back-channel logout.
        await self._db.execute(select(UserRow.id).where(UserRow.id == user_id).with_for_update())
        await self.lock(user_id)
        await keep_sign_ins_of_removed_user(self._db, user_id)
        await self._db.execute(delete(UserRow).where(UserRow.id == user_id))
        note_ended_user_sessions(self._db, user_id)  # its sessions go with it (cascade)

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
        note_changed_user(self._db, user_id)
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

    async def active_children(self, parent_ids: Sequence[str]) -> Sequence[ApiTokenRow]:
        query = select(ApiTokenRow).where(
            ApiTokenRow.parent_id.in_(parent_ids), ApiTokenRow.revoked_at.is_(None)
        )
        return (await self._db.scalars(query)).all()


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

    async def required(self, *, everyone: bool, admins: bool) -> int:
        query = select(func.count()).where(*_required_conditions(everyone, admins))
        return int(await self._db.scalar(query) or 0)

    async def enrolled(self) -> int:
        query = select(func.count()).where(UserRow.enabled.is_(True), Enrolments.is_enrolled())
        return int(await self._db.scalar(query) or 0)

    async def pending(self, *, everyone: bool, admins: bool) -> int:
        """Required but with no method set up: they set one up at the next sign-in."""
        query = select(func.count()).where(
            *_required_conditions(everyone, admins), ~Enrolments.is_enrolled()
        )
        return int(await self._db.scalar(query) or 0)


def _required_conditions(everyone: bool, admins: bool) -> list[ColumnElement[bool]]:
    """domain.policy.second_factor_policy as a condition on users, for counts (`admins`:
    administrators need a second factor, as everywhere but the demo)."""
    conditions: list[ColumnElement[bool]] = [UserRow.enabled.is_(True)]
    if not everyone:
        via_group = (
            select(MembershipRow.user_id)
            .join(GroupRow, GroupRow.id == MembershipRow.group_id)
            .where(GroupRow.twofa_enabled.is_(True))
        )
        required = UserRow.twofa_enabled.is_(True) | UserRow.id.in_(via_group)
        if admins:
            required = required | UserRow.is_admin.is_(True)
        conditions.append(required)
    return conditions


class Enrolments:
    """Who is enrolled, and in what (the definition is `_duo_set_up` and `_local_methods`):
    per user for the gateway, as a condition for counts."""

    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    async def methods_of(self, user_id: int) -> list[str]:
        """The user's methods, Duo Push first when set up, then the others by code."""
        duo_set_up, local_methods = (
            await self._db.execute(_METHODS_OF, {"user_id": user_id})
        ).one()
        return _listed(bool(duo_set_up), local_methods)

    @classmethod
    def is_enrolled(cls) -> ColumnElement[bool]:
        """As a condition on the users row of the statement around it."""
        local = exists().where(CredentialRow.user_id == UserRow.id)
        return _duo_set_up(UserRow.id) | local


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
