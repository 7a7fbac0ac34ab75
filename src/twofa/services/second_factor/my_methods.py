"""A user's own view of their second factors (the My 2FA page): what is set up, which one is
the default, and the changes they may make themselves. Removing a method needs a recent
second factor and never leaves a user who must use 2FA without one, nor without the backup
method their administrator requires."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.domain.client import ClientInfo
from twofa.methods.registry import DUO_PUSH, MethodRegistry
from twofa.services.second_factor.gate import MethodGate, StepUpRequired, enrolled_methods
from twofa.services.second_factor.outcomes import SecondFactorError
from twofa.services.settings.console import ConsoleSettingsService
from twofa.services.settings.two_factor import BackupPolicy
from twofa.services.state import audit
from twofa.services.state.sessions import SessionView
from twofa.storage.credentials import CredentialItems, Credentials
from twofa.storage.repositories import Users
from twofa.storage.tables import CredentialRow, UserRow

LOW_BACKUP_CODES: Final = 2
MAX_LABEL: Final = 60


@dataclass(frozen=True)
class CredentialSummary:
    id: int
    method: str
    title: str
    label: str
    created_at: datetime
    last_used_at: datetime | None
    codes_left: int | None  # single-use items still unused (backup codes)


@dataclass(frozen=True)
class MyFactors:
    credentials: tuple[CredentialSummary, ...]
    duo_push: bool
    default_method: str | None
    addable: tuple[tuple[str, str], ...]  # (code, title) the admin allows and the user may add
    low_on_backup_codes: bool


class MyMethodsService:
    def __init__(
        self,
        db: async_sessionmaker[AsyncSession],
        registry: MethodRegistry,
        access: MethodGate,
        console: ConsoleSettingsService,
        clock: Clock,
    ) -> None:
        self._db = db
        self._registry = registry
        self._access = access
        self._console = console
        self._clock = clock

    async def overview(self, user_id: int) -> MyFactors:
        allowed = await self._access.allowed_codes()
        async with self._db.begin() as db:
            rows = await Credentials(db).of_user(user_id)
            enrolled = await enrolled_methods(db, user_id)
            user = await Users(db).by_id(user_id)
            summaries = [await self._summary(db, row) for row in rows]
        addable = tuple(
            (code, self._registry.get(code).title)
            for code in allowed
            if self._registry.is_local(code)  # Duo Push is added through its own set-up
            and (self._registry.get(code).many_per_user or code not in enrolled)
        )
        low = any(s.codes_left is not None and s.codes_left <= LOW_BACKUP_CODES for s in summaries)
        return MyFactors(
            tuple(summaries),
            DUO_PUSH in enrolled,
            user.default_method if user else None,
            addable,
            low,
        )

    async def remove(self, session: SessionView, credential_id: int, client: ClientInfo) -> None:
        user = await self._fresh_user(session)
        async with self._db.begin() as db:
            row = await self._own(db, user, credential_id)
            await self._refuse_if_last_needed(db, user, row)
            await Credentials(db).remove(row.id)
            if user.default_method == row.method and not await Credentials(db).of_user(
                user.id, row.method
            ):
                user.default_method = None
            audit.record(
                db,
                self._clock,
                "enrolment",
                "removed",
                username=user.username,
                client=client,
                method=row.method,
                label=row.label,
            )

    async def rename(
        self, session: SessionView, credential_id: int, label: str, client: ClientInfo
    ) -> None:
        user = await self._access.user_of(session)
        label = " ".join(label.split())[:MAX_LABEL]
        if not label:
            raise SecondFactorError("Give it a name, such as “Blue YubiKey”.")
        async with self._db.begin() as db:
            row = await self._own(db, user, credential_id)
            await Credentials(db).rename(row.id, label)
            audit.record(
                db,
                self._clock,
                "enrolment",
                "renamed",
                username=user.username,
                client=client,
                method=row.method,
                label=label,
            )

    async def set_default(self, session: SessionView, code: str, client: ClientInfo) -> None:
        user = await self._access.user_of(session)
        if code not in await self._access.usable_methods(user.id):
            raise SecondFactorError("You can only make a method you have set up the default.")
        async with self._db.begin() as db:
            row = await Users(db).by_id(user.id)
            assert row is not None
            row.default_method = code
            audit.record(
                db,
                self._clock,
                "enrolment",
                "default_set",
                username=user.username,
                client=client,
                method=code,
            )

    async def _fresh_user(self, session: SessionView) -> UserRow:
        user = await self._access.user_of(session)
        if not self._access.is_fresh(session):
            raise StepUpRequired("Confirm it's you with your second factor to change your methods.")
        return user

    async def _own(self, db: AsyncSession, user: UserRow, credential_id: int) -> CredentialRow:
        row = await Credentials(db).get(credential_id)
        if row is None or row.user_id != user.id:
            raise SecondFactorError("That method is not one of yours, or it was already removed.")
        return row

    async def _refuse_if_last_needed(
        self, db: AsyncSession, user: UserRow, row: CredentialRow
    ) -> None:
        remaining = [c for c in await enrolled_methods(db, user.id) if c != row.method]
        if len(await Credentials(db).of_user(user.id, row.method)) > 1:
            return  # another credential of the same method (another security key) stays
        config = await self._console.two_factor()
        if not remaining and (await self._access.policy_of(db, user)).required:
            raise SecondFactorError(
                "This is your only second factor and your account requires one: add another "
                "method before removing this one."
            )
        backups = set(config.backup_methods)
        if (
            config.backup is BackupPolicy.REQUIRED
            and row.method in backups
            and not backups.intersection(remaining)
        ):
            raise SecondFactorError(
                "Your administrator requires a backup method: set up another one first."
            )

    async def _summary(self, db: AsyncSession, row: CredentialRow) -> CredentialSummary:
        method = self._registry.local(row.method) if self._registry.is_local(row.method) else None
        items = CredentialItems(db)
        single_use = row.method == "backup_codes"
        return CredentialSummary(
            row.id,
            row.method,
            method.title if method else row.method,
            row.label,
            row.created_at,
            row.last_used_at,
            await items.unused_count(row.id) if single_use else None,
        )
