"""Who may use which second-factor method, and with what options: the admin's allow-list
from the Two Factor Settings, the per-method options, and the step-up rule (changing one's
methods needs a second factor passed in the last few minutes)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.methods.base import Method
from twofa.methods.registry import DUO_PUSH, MethodRegistry, UnknownMethod
from twofa.services.console import ConsoleSettingsService
from twofa.services.second_factor_outcomes import SecondFactorError
from twofa.services.sessions import Level, SessionView
from twofa.services.two_factor_settings import BackupPolicy
from twofa.storage.credentials import Credentials
from twofa.storage.repositories import DuoEnrolments, Users
from twofa.storage.tables import UserRow

FRESH_SECOND_FACTOR: Final = timedelta(minutes=10)
SIGNED_OUT_MESSAGE: Final = "Your sign-in has expired. Please sign in again."


@dataclass(frozen=True)
class BackupStep:
    methods: tuple[str, ...]
    required: bool


class StepUpRequired(SecondFactorError):
    """The change needs a recent second factor: the page sends the user to verify first."""


def options_key(code: str) -> str:
    return f"method.{code}"


async def enrolled_methods(db: AsyncSession, user_id: int) -> list[str]:
    """The methods the user has set up, Duo Push first when configured."""
    codes = await Credentials(db).methods_of(user_id)
    duo = await DuoEnrolments(db).get(user_id)
    if duo is not None and duo.configured_at is not None:
        codes.insert(0, DUO_PUSH)
    return codes


class FactorAccess:
    def __init__(
        self,
        db: async_sessionmaker[AsyncSession],
        registry: MethodRegistry,
        console: ConsoleSettingsService,
        clock: Clock,
    ) -> None:
        self._db = db
        self._registry = registry
        self._console = console
        self._clock = clock

    async def allowed_codes(self) -> tuple[str, ...]:
        """Methods the admin allows, first method first; anything else is refused."""
        config = await self._console.two_factor()
        return tuple(dict.fromkeys((*config.methods, *config.backup_methods)))

    async def options(self, code: str) -> Mapping[str, Any]:
        return await self._console.section(options_key(code)) or {}

    async def user_of(self, session: SessionView) -> UserRow:
        async with self._db.begin() as db:
            return await self.user_in(db, session)

    async def user_in(self, db: AsyncSession, session: SessionView) -> UserRow:
        """The session's user, read in the caller's transaction; refused unless enabled."""
        if session.user_id is None or session.level < Level.PASSWORD:
            raise SecondFactorError(SIGNED_OUT_MESSAGE)
        user = await Users(db).by_id(session.user_id)
        if user is None or not user.enabled:
            raise SecondFactorError(SIGNED_OUT_MESSAGE)
        return user

    def is_fresh(self, session: SessionView) -> bool:
        at = session.second_factor_at
        return at is not None and self._clock.now() - at <= FRESH_SECOND_FACTOR

    async def may_verify(self, session: SessionView, code: str) -> tuple[Method, UserRow]:
        method = await self.allowed_method(code)
        return method, await self.user_of(session)

    async def may_enrol(self, session: SessionView, code: str) -> tuple[Method, UserRow]:
        """During a first sign-in only a user with no method yet may enrol; once signed in,
        a user who has a method must have passed it recently."""
        method = await self.allowed_method(code)
        user = await self.user_of(session)
        async with self._db.begin() as db:
            has_any = bool(await enrolled_methods(db, user.id))
        if session.level is Level.PASSWORD and has_any:
            raise SecondFactorError("Verify it's you with your second factor first.")
        if session.level is Level.SIGNED_IN and has_any and not self.is_fresh(session):
            raise StepUpRequired("Confirm it's you with your second factor to change your methods.")
        return method, user

    async def usable_methods(self, user_id: int) -> list[str]:
        """The methods this user has set up that the admin still allows, the user's default
        first: what "Use another method" lists and what validation starts with."""
        allowed = await self.allowed_codes()
        async with self._db.begin() as db:
            enrolled = await enrolled_methods(db, user_id)
            user = await Users(db).by_id(user_id)
        usable = [code for code in enrolled if code in allowed]
        default = user.default_method if user else None
        if default in usable:
            usable.remove(default)
            usable.insert(0, default)
        return usable

    async def backup_step(self, user_id: int, just_enrolled: bool) -> BackupStep | None:
        """The backup-method step due after a second factor, if any: while a required backup
        method is missing, every time; when it is optional, once after the first enrolment."""
        config = await self._console.two_factor()
        if config.backup is BackupPolicy.NONE:
            return None
        async with self._db.begin() as db:
            enrolled = await enrolled_methods(db, user_id)
        offered = tuple(code for code in config.backup_methods if code in self._registry)
        if not offered or any(code in enrolled for code in config.backup_methods):
            return None
        required = config.backup is BackupPolicy.REQUIRED
        if not required and not just_enrolled:
            return None
        return BackupStep(offered, required)

    async def allowed_method(self, code: str) -> Method:
        method = self._registry.get(code)  # UnknownMethod for anything not registered
        if code not in await self.allowed_codes():
            raise SecondFactorError(f"{method.title} is not offered on this server.")
        return method


__all__ = ["FactorAccess", "StepUpRequired", "UnknownMethod", "enrolled_methods"]
