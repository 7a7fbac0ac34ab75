"""The grace period of Two Factor Settings: a user who must set up 2FA may postpone it a few
times or for a few days, then must enrol. Each postponement is audited, and it signs the user
in on the password alone, so it is only offered while the grace lasts."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.domain.client import ClientInfo
from twofa.domain.policy import GraceStatus, enrolment_grace
from twofa.errors import SessionExpired
from twofa.services.second_factor.gate import enrolled_methods
from twofa.services.second_factor.outcomes import Completion, SecondFactorError
from twofa.services.settings.console import ConsoleSettingsService
from twofa.services.state import audit
from twofa.services.state.sessions import Level, SessionService, SessionView
from twofa.storage.repositories import Users
from twofa.storage.tables import UserRow


class EnrolmentGraceService:
    def __init__(
        self,
        db: async_sessionmaker[AsyncSession],
        console: ConsoleSettingsService,
        sessions: SessionService,
        clock: Clock,
    ) -> None:
        self._db = db
        self._console = console
        self._sessions = sessions
        self._clock = clock

    async def status(self, session: SessionView) -> GraceStatus:
        async with self._db.begin() as db:
            user = await self._pending_user(db, session)
            return await self._status(db, user)

    async def postpone(self, session: SessionView, client: ClientInfo) -> Completion:
        async with self._db.begin() as db:
            user = await self._pending_user(db, session)
            grace = await self._status(db, user)
            if not grace.may_postpone:
                raise SecondFactorError(
                    "The grace period is over: set up two-factor authentication now."
                )
            user.enrolment_postponements += 1
            if user.grace_started_at is None:
                user.grace_started_at = self._clock.now()
            token, view = await self._sessions.promote(
                db, session, user.id, Level.SIGNED_IN, client
            )
            audit.record(
                db,
                self._clock,
                "enrolment",
                "postponed",
                username=user.username,
                client=client,
                postponements_used=user.enrolment_postponements,
            )
        return Completion(token, view)

    async def _status(self, db: AsyncSession, user: UserRow) -> GraceStatus:
        if await enrolled_methods(db, user.id):
            return GraceStatus(False)  # enrolled with any method: nothing to postpone
        rules = await self._console.two_factor()
        return enrolment_grace(
            rules.grace_postponements,
            rules.grace_days,
            user.enrolment_postponements,
            user.grace_started_at,
            self._clock.now(),
        )

    async def _pending_user(self, db: AsyncSession, session: SessionView) -> UserRow:
        if session.user_id is None or session.level is not Level.AWAITING_SECOND_FACTOR:
            raise SecondFactorError(SessionExpired.default_message)
        user = await Users(db).by_id(session.user_id)
        if user is None or not user.enabled:
            raise SecondFactorError(SessionExpired.default_message)
        return user
