"""Importing users from a CSV file (`twofa user import`): all or nothing, in one transaction
that creates the users, any missing groups and the memberships, with an audit record per
change; every problem is reported before anything is written."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.domain.account_input import (
    AccountConflict,
    ImportProblem,
    ImportRejected,
    NewUser,
    new_user_problems,
)
from twofa.domain.client import ClientInfo
from twofa.security.hashing_pool import HashingPool
from twofa.security.password_rules import password_problem
from twofa.services.admin.account_audit import account_audit
from twofa.storage.repositories import Groups, Users
from twofa.storage.tables import GroupRow, UserRow


@dataclass(frozen=True)
class ImportSummary:
    users_created: int
    groups_created: tuple[str, ...]


class UserImport:
    def __init__(
        self,
        db: async_sessionmaker[AsyncSession],
        clock: Clock,
        hashing: HashingPool,
        actor: str,
    ) -> None:
        self._db = db
        self._clock = clock
        self._hashing = hashing
        self._actor = actor

    async def check(self, users: Sequence[NewUser]) -> list[ImportProblem]:
        """Every reason `run` would refuse these users, without writing anything."""
        async with self._db.begin() as db:
            return await self._import_problems(db, users)

    async def run(self, users: Sequence[NewUser], client: ClientInfo) -> ImportSummary:
        """All or nothing, in one transaction: creates the users, any missing groups and the
        memberships, with an audit record per change. Any problem raises `ImportRejected`.
        The passwords are hashed first, in no transaction (argon2 is slow on purpose), once
        the input is known to be acceptable; the writing transaction checks it again, as
        someone may have added one of these users meanwhile."""
        if problems := await self.check(users):
            raise ImportRejected(problems)
        hashes = {
            new.username: await self._hashing.hash(new.password) for new in users if new.password
        }
        try:
            async with self._db.begin() as db:
                if problems := await self._import_problems(db, users):
                    raise ImportRejected(problems)
                groups, created = await self._groups_for_import(db, users, client)
                for new in users:
                    await self._add_imported_user(db, new, hashes.get(new.username), groups, client)
                return ImportSummary(users_created=len(users), groups_created=created)
        except IntegrityError:
            raise AccountConflict(
                "the same users or groups were changed while importing; nothing was imported"
            ) from None

    async def _import_problems(
        self, db: AsyncSession, users: Sequence[NewUser]
    ) -> list[ImportProblem]:
        problems: list[ImportProblem] = []
        seen: set[str] = set()
        for position, new in enumerate(users):
            messages = new_user_problems(new)
            if new.password and (weak := password_problem(new.password, new.username)):
                messages.append(f"password: {weak}")
            if new.username in seen:
                messages.append(f"user {new.username!r} is listed more than once")
            elif await Users(db).by_name(new.username) is not None:
                messages.append(f"user {new.username!r} already exists")
            seen.add(new.username)
            problems.extend(ImportProblem(position, message) for message in messages)
        return problems

    async def _groups_for_import(
        self, db: AsyncSession, users: Sequence[NewUser], client: ClientInfo
    ) -> tuple[dict[str, GroupRow], tuple[str, ...]]:
        """Every group the import names, and the names of those it had to create."""
        repository = Groups(db)
        found: dict[str, GroupRow] = {}
        created: list[str] = []
        for name in sorted({group for new in users for group in new.groups}):
            row = await repository.by_name(name)
            if row is None:
                row = GroupRow(name=name, twofa_enabled=False)
                repository.add(row)
                created.append(name)
                account_audit(
                    db,
                    self._clock,
                    self._actor,
                    "group_add",
                    "",
                    client,
                    group=name,
                    source="import",
                )
            found[name] = row
        await db.flush()  # gives the new groups their ids
        return found, tuple(created)

    async def _add_imported_user(
        self,
        db: AsyncSession,
        new: NewUser,
        password_hash: str | None,
        groups: dict[str, GroupRow],
        client: ClientInfo,
    ) -> None:
        user = UserRow(
            username=new.username,
            display_name=new.display_name or new.username,
            email=new.email,
            password_hash=password_hash,
            enabled=True,
            is_admin=False,
            twofa_enabled=False,
            created_at=self._clock.now(),
        )
        Users(db).add(user)
        await db.flush()  # gives the user its id for the memberships
        account_audit(
            db,
            self._clock,
            self._actor,
            "user_add",
            new.username,
            client,
            is_admin=False,
            source="import",
        )
        for name in dict.fromkeys(new.groups):  # each group once, in the order given
            await Groups(db).add_member(groups[name].id, user.id)
            account_audit(
                db, self._clock, self._actor, "group_add_member", new.username, client, group=name
            )
