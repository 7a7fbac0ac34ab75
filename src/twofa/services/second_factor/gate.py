"""The one gate of the second factor: every route of every method, Duo Push included, asks it
before it enrols, starts, answers or skips a second factor.

It decides, for one session: may it enrol now (a first sign-in with no method yet, or a
signed-in session that passed an existing method in the last ten minutes), does the admin allow
the method (Two Factor Settings), and is it one of the user's usable methods. It also answers
"is this user enrolled, and with what" (`enrolled_methods`) for every caller, and whether Duo
may fail open for a session (only for users whose usable methods include Duo Push)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.domain.policy import PolicyDecision
from twofa.errors import SessionExpired
from twofa.methods.base import Method, MethodKind
from twofa.methods.registry import MethodRegistry, UnknownMethod
from twofa.services.second_factor.outcomes import SecondFactorError
from twofa.services.settings.console import ConsoleSettingsService
from twofa.services.settings.two_factor import BackupPolicy, policy_of
from twofa.services.state.sessions import Level, SessionView
from twofa.storage.repositories import Enrolments, Users
from twofa.storage.tables import UserRow

FRESH_SECOND_FACTOR: Final = timedelta(minutes=10)
SIGNED_OUT_MESSAGE: Final = SessionExpired.default_message


@dataclass(frozen=True)
class BackupStep:
    methods: tuple[str, ...]
    required: bool


class StepUpRequired(SecondFactorError):
    """The change needs a recent second factor: the page sends the user to verify first, then
    back to `return_to` (None: the page the request came from)."""

    return_to: str | None = None

    def returning_to(self, path: str) -> StepUpRequired:
        again = type(self)(self.message)
        again.return_to = path
        return again


class SecondFactorNeeded(StepUpRequired):
    """The page needs a session with a second factor behind it (the console): the user
    verifies with one of theirs, or sets one up when they have none."""


def options_key(code: str) -> str:
    return f"method.{code}"


async def enrolled_methods(db: AsyncSession, user_id: int) -> list[str]:
    """Is this user enrolled, and with what: the methods they have set up (whether or not the
    admin still allows them), Duo Push first when set up. The one answer for the gateway, the
    grace period, the console, the API and the CLI."""
    return await Enrolments(db).methods_of(user_id)


class MethodGate:
    def __init__(
        self,
        db: async_sessionmaker[AsyncSession],
        registry: MethodRegistry,
        console: ConsoleSettingsService,
        clock: Clock,
        *,
        exempt_admins: bool = False,
    ) -> None:
        """`exempt_admins`: the demo's `admins_without_second_factor` (refused elsewhere)."""
        self._db = db
        self._registry = registry
        self._console = console
        self._clock = clock
        self._exempt_admins = exempt_admins

    async def policy_of(self, db: AsyncSession, user: UserRow) -> PolicyDecision:
        """Does `user` need a second factor (read in the caller's transaction)."""
        return await policy_of(db, user, exempt_admins=self._exempt_admins)

    def may_use_console(self, session: SessionView, *, changing: bool) -> None:
        """The console's rule, asked for every console request (`web/admin`) with the
        admin's session: a second factor stands behind it, and one passed in the last ten
        minutes when the request changes something. A fail-open or a postponement is no
        second factor; the demo may exempt admins altogether."""
        if self._exempt_admins:
            return
        if session.second_factor_at is None:
            raise SecondFactorNeeded("Verify it's you with your second factor to use the console.")
        if changing and not self.is_fresh(session):
            raise StepUpRequired("Confirm it's you with your second factor to make this change.")

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
        user, _ = await self._user_and_methods_in(db, session)
        return user

    async def _user_and_methods_in(
        self, db: AsyncSession, session: SessionView
    ) -> tuple[UserRow, list[str]]:
        """`user_in` and the user's methods (`enrolled_methods`), in one statement."""
        if session.user_id is None or session.level < Level.AWAITING_SECOND_FACTOR:
            raise SecondFactorError(SIGNED_OUT_MESSAGE)
        found = await Users(db).with_methods(session.user_id)
        if found is None or not found[0].enabled:
            raise SecondFactorError(SIGNED_OUT_MESSAGE)
        return found

    def is_fresh(self, session: SessionView) -> bool:
        at = session.second_factor_at
        return at is not None and self._clock.now() - at <= FRESH_SECOND_FACTOR

    async def may_verify(self, session: SessionView, code: str) -> UserRow:
        """A challenge of `code` may be started or answered: the admin allows the method and
        the user has it set up (a method the admin withdrew is no way in, set up or not)."""
        async with self._db.begin() as db:
            return await self.may_verify_in(db, session, code)

    async def may_verify_in(self, db: AsyncSession, session: SessionView, code: str) -> UserRow:
        """`may_verify`, read in the caller's transaction (the one that loads the challenge)."""
        await self.require_allowed(code)  # so "usable" is "set up" from here on
        user, enrolled = await self._user_and_methods_in(db, session)
        if code not in enrolled:
            raise SecondFactorError(f"You have not set up {self._phrase(code)}.")
        return user

    async def may_enrol(self, session: SessionView, code: str) -> tuple[Method, UserRow]:
        """`may_enrol_in` for a method verified here, with the method."""
        method = self._registry.local(code)  # UnknownMethod for anything else
        return method, await self.may_enrol_in(session, code)

    async def may_enrol_in(self, session: SessionView, code: str) -> UserRow:
        """During a first sign-in only a user with no method yet may enrol; once signed in,
        a user who has a method must have passed it recently. Duo Push included."""
        await self.require_allowed(code)
        user, enrolled = await self._user_and_methods(session)
        self._refuse_enrolment(session, enrolled)
        return user

    def _refuse_enrolment(self, session: SessionView, enrolled: list[str]) -> None:
        """The enrolment rule itself, given the user's methods as read."""
        if session.level is Level.AWAITING_SECOND_FACTOR and enrolled:
            raise SecondFactorError("Verify it's you with your second factor first.")
        if session.level is Level.SIGNED_IN and enrolled and not self.is_fresh(session):
            raise StepUpRequired("Confirm it's you with your second factor to change your methods.")

    async def _user_and_methods(self, session: SessionView) -> tuple[UserRow, list[str]]:
        """The session's user (refused unless enabled) and their methods, in one transaction."""
        async with self._db.begin() as db:
            return await self._user_and_methods_in(db, session)

    async def hold_enrolment(self, db: AsyncSession, session: SessionView, user_id: int) -> None:
        """First, in the transaction that stores a new method: takes the user's row, then asks
        the enrolment rule again. Two sessions racing a first sign-in both passed
        `may_enrol_in` before either stored anything; the second now waits for the first, sees
        its method, and is refused (a password alone sets up one method, not two, and never
        replaces the one just set up)."""
        await Users(db).lock(user_id)
        self._refuse_enrolment(session, await enrolled_methods(db, user_id))

    async def purpose_for(self, session: SessionView, code: str) -> tuple[str, UserRow]:
        """Whether a challenge of `code` opened now verifies the user ("validate": a usable
        method) or finishes setting it up ("enrol": the enrolment rule allows it); refused
        when neither. For the out-of-band methods, whose set-up ends with a first challenge."""
        await self.require_allowed(code)
        user, enrolled = await self._user_and_methods(session)
        if code in enrolled:
            return "validate", user
        try:
            self._refuse_enrolment(session, enrolled)
        except StepUpRequired:
            raise
        except SecondFactorError:
            raise SecondFactorError(f"You have not set up {self._phrase(code)}.") from None
        return "enrol", user

    async def may_pass(self, session: SessionView, code: str, purpose: str) -> UserRow:
        """Checked again when a challenge of `purpose` succeeds: the rules in force then."""
        if purpose == "enrol":
            return await self.may_enrol_in(session, code)
        return await self.may_verify(session, code)

    async def may_fail_open(self, session: SessionView, code: str) -> UserRow | None:
        """The user this session may sign in without a second factor because `code`'s
        provider cannot be asked (failmode safe) or waives it (Duo's bypass); None when it may
        not: only at sign-in, never to confirm a change, and only for a user whose usable
        methods include `code`."""
        if session.level is not Level.AWAITING_SECOND_FACTOR:
            return None
        try:
            return await self.may_verify(session, code)
        except SecondFactorError:
            return None

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
        offered = tuple(c for c in config.backup_methods if self._registry.is_local(c))
        if not offered or any(code in enrolled for code in config.backup_methods):
            return None
        required = config.backup is BackupPolicy.REQUIRED
        if not required and not just_enrolled:
            return None
        return BackupStep(offered, required)

    async def require_allowed(self, code: str) -> None:
        self._registry.get(code)  # UnknownMethod for anything not registered
        if code not in await self.allowed_codes():
            raise SecondFactorError(f"{self.title_of(code)} is not offered on this server.")

    def title_of(self, code: str) -> str:
        return self._registry.get(code).title

    def _phrase(self, code: str) -> str:
        """The method's title inside a sentence: a brand keeps its capitals."""
        method = self._registry.get(code)
        return method.title if method.kind is MethodKind.OUT_OF_BAND else method.title.lower()


__all__ = ["MethodGate", "StepUpRequired", "UnknownMethod", "enrolled_methods"]
