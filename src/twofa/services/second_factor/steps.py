"""What the second-factor pipeline's two halves share (`enrolment.py` sets methods up,
`pipeline.py` challenges them): the service's parts, the method's context for a user, sending
a code, and the sign-in a passed second factor completes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.domain.client import ClientInfo
from twofa.errors import Unavailable
from twofa.methods.base import Delivery, MethodContext, MethodUser
from twofa.methods.registry import MethodRegistry
from twofa.security.sealing import Sealer
from twofa.services.second_factor.challenges import OpenChallenges
from twofa.services.second_factor.counted import count_when_committed
from twofa.services.second_factor.failures import FailureLedger
from twofa.services.second_factor.gate import MethodGate
from twofa.services.second_factor.outcomes import Completion, SecondFactorError
from twofa.services.state import audit
from twofa.services.state.sessions import Level, SessionService, SessionView
from twofa.storage.tables import UserRow


class DeliveryFailed(Unavailable, SecondFactorError):
    """A code could not be sent (the mail server is down); the other methods still work."""


class Mailer(Protocol):
    async def send(self, delivery: Delivery) -> None:
        """Sends the message or raises `DeliveryFailed` with a message for the user."""
        ...


@dataclass(frozen=True)
class Started:
    """A challenge or an enrolment draft: the id the page posts back and what it shows."""

    challenge_id: str  # "" while the method's form asks for details first (DetailsNeeded)
    show: Mapping[str, Any]
    note: str = ""  # said above the form (why no new code was sent)
    error: str = ""  # what was wrong with the details the user typed


@dataclass(frozen=True)
class Enrolled:
    credential_id: int
    completion: Completion | None  # set when this enrolment also finished a sign-in


class PipelineSteps:
    """The parts and shared steps of `SecondFactorService` (see `pipeline.py`)."""

    def __init__(
        self,
        db: async_sessionmaker[AsyncSession],
        registry: MethodRegistry,
        sessions: SessionService,
        access: MethodGate,
        clock: Clock,
        sealer: Sealer,
        mailer: Mailer | None,
    ) -> None:
        self._db = db
        self._registry = registry
        self._sessions = sessions
        self._access = access
        self._clock = clock
        self._sealer = sealer
        self._mailer = mailer
        self._challenges = OpenChallenges(clock, sealer)
        self._failures = FailureLedger(db, clock)

    @property
    def registry(self) -> MethodRegistry:
        return self._registry

    async def _sign_in(
        self,
        db: AsyncSession,
        session: SessionView,
        user: UserRow,
        client: ClientInfo,
        code: str,
        enrolled_now: bool,
    ) -> Completion:
        token, view = await self._sessions.promote(
            db, session, user.id, Level.SIGNED_IN, client, second_factor=True
        )
        count_when_committed(db, code, "allow")
        audit.record(
            db,
            self._clock,
            "second_factor",
            "allow",
            username=user.username,
            client=client,
            method=code,
            step_up=session.level is Level.SIGNED_IN,
        )
        return Completion(token, view, enrolled_now)

    async def _context(
        self, user: UserRow, code: str, entered: Mapping[str, str] | None = None
    ) -> MethodContext:
        options = await self._access.options(code)
        method_user = MethodUser(user.id, user.username, user.display_name, user.email)
        return MethodContext(method_user, self._clock.now(), options, dict(entered or {}))

    async def _deliver(
        self, delivery: Delivery, user: UserRow, code: str, client: ClientInfo
    ) -> None:
        if self._mailer is None:
            raise DeliveryFailed("E-mail is not configured on this server. Use another method.")
        try:
            await self._mailer.send(delivery)
        except DeliveryFailed:
            async with self._db.begin() as db:
                audit.record(
                    db,
                    self._clock,
                    "delivery",
                    "failed",
                    username=user.username,
                    client=client,
                    method=code,
                )
            raise
