"""Admin actions on the local directory and the 2FA policy: users, groups, memberships,
per-user and per-group 2FA switches. Each action is one transaction with its audit record.
The CLI calls these today; the admin console and REST API call the same functions later."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.domain.client import CLI, ClientInfo
from twofa.domain.policy import PolicyDecision, second_factor_policy
from twofa.errors import TwofaError
from twofa.security.passwords import hash_password
from twofa.services import audit
from twofa.storage.repositories import DuoEnrolments, Groups, Sessions, Users
from twofa.storage.tables import GroupRow, UserRow


class AccountError(TwofaError):
    """An admin action that cannot be done as asked (unknown user, duplicate name …)."""


@dataclass(frozen=True)
class UserSummary:
    username: str
    display_name: str
    email: str
    enabled: bool
    is_admin: bool
    groups: tuple[str, ...]
    policy: PolicyDecision
    duo_configured: bool


@dataclass(frozen=True)
class GroupSummary:
    name: str
    twofa_enabled: bool
    members: tuple[str, ...]


class AccountService:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], clock: Clock, actor: str = "cli"
    ) -> None:
        self._db = sessions
        self._clock = clock
        self._actor = actor

    async def add_user(
        self,
        username: str,
        password: str | None,
        *,
        display_name: str = "",
        email: str = "",
        is_admin: bool = False,
        client: ClientInfo = CLI,
    ) -> None:
        username = username.strip()
        if not username or len(username) > 150 or any(c.isspace() for c in username):
            raise AccountError(f"invalid username {username!r}: 1-150 characters, no spaces")
        try:
            async with self._db.begin() as db:
                if await Users(db).by_name(username) is not None:
                    raise AccountError(f"user {username!r} already exists")
                Users(db).add(
                    UserRow(
                        username=username,
                        display_name=display_name or username,
                        email=email,
                        password_hash=hash_password(password) if password else None,
                        enabled=True,
                        is_admin=is_admin,
                        twofa_enabled=False,
                        created_at=self._clock.now(),
                    )
                )
                self._audit(db, "user_add", username, client, is_admin=is_admin)
        except IntegrityError:
            raise AccountError(f"user {username!r} already exists") from None

    async def set_password(self, username: str, password: str, client: ClientInfo = CLI) -> None:
        async with self._db.begin() as db:
            user = await self._user(db, username)
            user.password_hash = hash_password(password)
            await Sessions(db).remove_for_user(user.id)  # a new password ends every session
            self._audit(db, "user_password", username, client)

    async def set_enabled(self, username: str, enabled: bool, client: ClientInfo = CLI) -> None:
        async with self._db.begin() as db:
            user = await self._user(db, username)
            user.enabled = enabled
            if not enabled:
                await Sessions(db).remove_for_user(user.id)
            self._audit(db, "user_enable" if enabled else "user_disable", username, client)

    async def reset_second_factor(self, username: str, client: ClientInfo = CLI) -> None:
        async with self._db.begin() as db:
            user = await self._user(db, username)
            await DuoEnrolments(db).remove(user.id)
            await Sessions(db).remove_for_user(user.id)
            self._audit(db, "user_reset_2fa", username, client)

    async def users(self) -> list[UserSummary]:
        async with self._db.begin() as db:
            return [await self._summary(db, user) for user in await Users(db).all()]

    async def user(self, username: str) -> UserSummary:
        async with self._db.begin() as db:
            return await self._summary(db, await self._user(db, username))

    async def add_group(self, name: str, client: ClientInfo = CLI) -> None:
        name = name.strip()
        if not name or len(name) > 150:
            raise AccountError(f"invalid group name {name!r}")
        async with self._db.begin() as db:
            if await Groups(db).by_name(name) is not None:
                raise AccountError(f"group {name!r} already exists")
            Groups(db).add(GroupRow(name=name, twofa_enabled=False))
            self._audit(db, "group_add", "", client, group=name)

    async def set_membership(
        self, group: str, username: str, member: bool, client: ClientInfo = CLI
    ) -> bool:
        """Adds or removes; False when nothing changed."""
        async with self._db.begin() as db:
            group_row = await self._group(db, group)
            user = await self._user(db, username)
            groups = Groups(db)
            if member:
                changed = await groups.add_member(group_row.id, user.id)
            else:
                changed = await groups.remove_member(group_row.id, user.id)
            if changed:
                kind = "group_add_member" if member else "group_remove_member"
                self._audit(db, kind, username, client, group=group)
            return changed

    async def groups(self) -> list[GroupSummary]:
        async with self._db.begin() as db:
            groups = Groups(db)
            return [
                GroupSummary(g.name, g.twofa_enabled, tuple(await groups.members(g.id)))
                for g in await groups.all()
            ]

    async def set_user_policy(self, username: str, enabled: bool, client: ClientInfo = CLI) -> None:
        async with self._db.begin() as db:
            user = await self._user(db, username)
            before, user.twofa_enabled = user.twofa_enabled, enabled
            self._audit(db, "policy_user", username, client, before=before, after=enabled)

    async def set_group_policy(self, name: str, enabled: bool, client: ClientInfo = CLI) -> None:
        async with self._db.begin() as db:
            group = await self._group(db, name)
            before, group.twofa_enabled = group.twofa_enabled, enabled
            self._audit(db, "policy_group", "", client, group=name, before=before, after=enabled)

    async def _user(self, db: AsyncSession, username: str) -> UserRow:
        user = await Users(db).by_name(username)
        if user is None:
            raise AccountError(f"no user {username!r}")
        return user

    async def _group(self, db: AsyncSession, name: str) -> GroupRow:
        group = await Groups(db).by_name(name)
        if group is None:
            raise AccountError(f"no group {name!r}")
        return group

    async def _summary(self, db: AsyncSession, user: UserRow) -> UserSummary:
        users = Users(db)
        enrolment = await DuoEnrolments(db).get(user.id)
        return UserSummary(
            username=user.username,
            display_name=user.display_name,
            email=user.email,
            enabled=user.enabled,
            is_admin=user.is_admin,
            groups=tuple(await users.group_names(user.id)),
            policy=second_factor_policy(
                user.twofa_enabled, await users.group_names(user.id, twofa_only=True)
            ),
            duo_configured=enrolment is not None and enrolment.configured_at is not None,
        )

    def _audit(
        self, db: AsyncSession, kind: str, username: str, client: ClientInfo, **detail: object
    ) -> None:
        audit.record(
            db,
            self._clock,
            kind,
            "ok",
            username=username,
            client=client,
            actor=self._actor,
            **detail,
        )
