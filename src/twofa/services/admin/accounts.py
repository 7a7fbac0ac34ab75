"""Admin actions on the local directory and the 2FA policy: users, groups, memberships,
per-user and per-group 2FA switches. Each action is one transaction with its audit record.
The CLI calls these today; the admin console and REST API call the same functions later."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.domain.account_input import (
    AccountConflict,
    ImportProblem,
    InvalidAccountInput,
    NewUser,
    UnknownAccount,
    group_name_problem,
    new_user_problems,
)
from twofa.domain.client import CLI, ClientInfo
from twofa.domain.policy import PolicyDecision
from twofa.errors import Refused
from twofa.methods.registry import DUO_PUSH
from twofa.security.hashing_pool import HashingPool
from twofa.security.password_rules import password_problem
from twofa.services.admin.account_audit import account_audit
from twofa.services.admin.user_import import ImportSummary, UserImport
from twofa.services.second_factor.gate import enrolled_methods
from twofa.services.settings.two_factor import policy_of
from twofa.services.state import throttle
from twofa.services.state.lockouts import (
    any_lockout_ends,
    clear_network_lockouts,
    lockout_keys,
)
from twofa.storage.credentials import Credentials, RememberedDevices
from twofa.storage.repositories import DuoEnrolments, Groups, Users
from twofa.storage.sessions import Sessions
from twofa.storage.tables import GroupRow, UserRow


class DemoOnly(Refused):
    """A demo user with its documented password was asked for outside demo mode."""


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
    methods: tuple[str, ...] = ()  # every method set up (`enrolled_methods`), Duo Push first


@dataclass(frozen=True)
class GroupSummary:
    name: str
    twofa_enabled: bool
    members: tuple[str, ...]


class AccountService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        actor: str = "cli",
        *,
        hashing: HashingPool,
        exempt_admins: bool = False,
        demo: bool = False,
    ) -> None:
        """`exempt_admins`: the demo's `admins_without_second_factor`, for the policy shown;
        `demo`: the gateway runs in demo mode, the only one where `add_demo_user` works."""
        self._db = sessions
        self._clock = clock
        self._actor = actor
        self._hashing = hashing
        self._exempt_admins = exempt_admins
        self._demo = demo

    def acting_as(self, actor: str) -> AccountService:
        """The same actions, audited as `actor` (an admin's name, `token:<name>`)."""
        return AccountService(
            self._db,
            self._clock,
            actor,
            hashing=self._hashing,
            exempt_admins=self._exempt_admins,
            demo=self._demo,
        )

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
        """`password` None: an account without one (it is set later)."""
        if password is not None:
            refuse_weak_password(password, username.strip())
        await self._add_user(username, password, display_name, email, is_admin, client)

    async def add_demo_user(
        self, username: str, password: str, *, display_name: str, email: str, is_admin: bool
    ) -> None:
        """One of `twofa demo`'s users, with the short password the README gives for it: only
        in demo mode, the one place where a password everyone knows is the point."""
        if not self._demo:
            raise DemoOnly("demo users with documented passwords exist in demo mode only")
        await self._add_user(username, password, display_name, email, is_admin, CLI)

    async def _add_user(
        self,
        username: str,
        password: str | None,
        display_name: str,
        email: str,
        is_admin: bool,
        client: ClientInfo,
    ) -> None:
        username = username.strip()
        problems = new_user_problems(NewUser(username, display_name, email, password, ()))
        if problems:
            raise InvalidAccountInput("; ".join(problems))
        # argon2 is slow on purpose: off the event loop, and before any transaction opens
        password_hash = await self._hashing.hash(password) if password else None
        try:
            async with self._db.begin() as db:
                if await Users(db).by_name(username) is not None:
                    raise AccountConflict(f"user {username!r} already exists")
                Users(db).add(
                    UserRow(
                        username=username,
                        display_name=display_name or username,
                        email=email,
                        password_hash=password_hash,
                        enabled=True,
                        is_admin=is_admin,
                        twofa_enabled=False,
                        created_at=self._clock.now(),
                    )
                )
                self._audit(db, "user_add", username, client, is_admin=is_admin)
        except IntegrityError:
            raise AccountConflict(f"user {username!r} already exists") from None

    async def set_password(self, username: str, password: str, client: ClientInfo = CLI) -> None:
        refuse_weak_password(password, username)
        password_hash = await self._hashing.hash(password)
        async with self._db.begin() as db:
            user = await self._user(db, username)
            user.password_hash = password_hash
            await Sessions(db).remove_for_user(user.id)  # a new password ends every session
            await RememberedDevices(db).remove_of_user(user.id)  # and every remembered device
            self._audit(db, "user_password", username, client)

    async def set_enabled(self, username: str, enabled: bool, client: ClientInfo = CLI) -> None:
        async with self._db.begin() as db:
            user = await self._user(db, username)
            user.enabled = enabled
            if not enabled:
                await Sessions(db).remove_for_user(user.id)
            self._audit(db, "user_enable" if enabled else "user_disable", username, client)

    async def set_admin(self, username: str, is_admin: bool, client: ClientInfo = CLI) -> None:
        """Grants or takes away the admin role. Taken away, the console closes to the user at
        their next request and every API token answering to them stops."""
        async with self._db.begin() as db:
            user = await self._user(db, username)
            if user.is_admin != is_admin:
                user.is_admin = is_admin
                kind = "user_admin_grant" if is_admin else "user_admin_revoke"
                self._audit(db, kind, username, client)

    async def reset_second_factor(self, username: str, client: ClientInfo = CLI) -> None:
        async with self._db.begin() as db:
            user = await self._user(db, username)
            await DuoEnrolments(db).remove(user.id)
            await Credentials(db).remove_of_user(user.id)
            await RememberedDevices(db).remove_of_user(user.id)
            await Sessions(db).remove_for_user(user.id)
            user.default_method = None
            self._audit(db, "user_reset_2fa", username, client)

    async def end_sessions(self, username: str, client: ClientInfo = CLI) -> None:
        """Signs the user out of every browser, on every gateway node (within a second: the
        change feed tells the others); their password and second factor stay as they are."""
        async with self._db.begin() as db:
            user = await self._user(db, username)
            await Sessions(db).remove_for_user(user.id)
            self._audit(db, "user_sessions_ended", username, client)

    async def forget_devices(self, username: str, client: ClientInfo = CLI) -> int:
        """Makes every remembered device of the user ask for a second factor again."""
        async with self._db.begin() as db:
            user = await self._user(db, username)
            count = await RememberedDevices(db).remove_of_user(user.id)
            self._audit(db, "user_forget_devices", username, client, count=count)
        return count

    async def delete_user(self, username: str, client: ClientInfo = CLI) -> None:
        """Removes a local user with their sessions, enrolments and memberships."""
        async with self._db.begin() as db:
            user = await self._user(db, username)
            await Users(db).remove(user.id)
            self._audit(db, "user_delete", username, client)

    async def unlock_user(self, username: str, client: ClientInfo = CLI) -> bool:
        """Clears the user's sign-in (from every network) and passcode lock-outs; True if one
        was active. A slowdown under a distributed attack is no lock-out and stays."""
        async with self._db.begin() as db:
            await self._user(db, username)
            now = self._clock.now()
            keys = lockout_keys(username)
            was_locked = any([await throttle.locked_until(db, key, now) for key in keys])
            for key in keys:
                await throttle.reset(db, key)
            was_locked = await clear_network_lockouts(db, username, now) or was_locked
            self._audit(db, "user_unlock", username, client, was_locked=was_locked)
            return was_locked

    async def locked_until(self, username: str) -> datetime | None:
        async with self._db.begin() as db:
            return await any_lockout_ends(db, username, self._clock.now())

    async def users(self) -> list[UserSummary]:
        async with self._db.begin() as db:
            return [await self._summary(db, user) for user in await Users(db).all()]

    async def user(self, username: str) -> UserSummary:
        async with self._db.begin() as db:
            return await self._summary(db, await self._user(db, username))

    async def add_group(self, name: str, client: ClientInfo = CLI) -> None:
        name = name.strip()
        if problem := group_name_problem(name):
            raise InvalidAccountInput(problem)
        try:
            async with self._db.begin() as db:
                if await Groups(db).by_name(name) is not None:
                    raise AccountConflict(f"group {name!r} already exists")
                Groups(db).add(GroupRow(name=name, twofa_enabled=False))
                self._audit(db, "group_add", "", client, group=name)
        except IntegrityError:  # created by someone else between the check and the insert
            raise AccountConflict(f"group {name!r} already exists") from None

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

    async def check_import(self, users: Sequence[NewUser]) -> list[ImportProblem]:
        """Every reason `import_users` would refuse these users, without writing anything."""
        return await self._importer().check(users)

    async def import_users(
        self, users: Sequence[NewUser], client: ClientInfo = CLI
    ) -> ImportSummary:
        """All or nothing (see `services.admin.user_import`)."""
        return await self._importer().run(users, client)

    def _importer(self) -> UserImport:
        return UserImport(self._db, self._clock, self._hashing, self._actor)

    async def _user(self, db: AsyncSession, username: str) -> UserRow:
        user = await Users(db).by_name(username)
        if user is None:
            raise UnknownAccount(f"no user {username!r}")
        return user

    async def _group(self, db: AsyncSession, name: str) -> GroupRow:
        group = await Groups(db).by_name(name)
        if group is None:
            raise UnknownAccount(f"no group {name!r}")
        return group

    async def _summary(self, db: AsyncSession, user: UserRow) -> UserSummary:
        users = Users(db)
        methods = tuple(await enrolled_methods(db, user.id))
        return UserSummary(
            username=user.username,
            display_name=user.display_name,
            email=user.email,
            enabled=user.enabled,
            is_admin=user.is_admin,
            groups=tuple(await users.group_names(user.id)),
            policy=await policy_of(db, user, exempt_admins=self._exempt_admins),
            duo_configured=DUO_PUSH in methods,
            methods=methods,
        )

    def _audit(
        self, db: AsyncSession, kind: str, username: str, client: ClientInfo, **detail: object
    ) -> None:
        account_audit(db, self._clock, self._actor, kind, username, client, **detail)


def refuse_weak_password(password: str, username: str) -> None:
    """Raises, naming the password field, when security.password_rules refuses it."""
    if problem := password_problem(password, username):
        raise InvalidAccountInput(f"password: {problem}", fields={"password": problem})
