"""What a failed second factor costs: each method has its own failure counter per user (five
failures lock that method, and only that one, for 15 minutes), every refusal is audited, and
the user sees one plain message per kind of method whatever went wrong."""

from __future__ import annotations

from datetime import timedelta
from typing import Final

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.domain.client import ClientInfo
from twofa.methods.base import Method, MethodKind
from twofa.services import audit, throttle
from twofa.services.lockouts import method_lockout_key
from twofa.services.second_factor_outcomes import SecondFactorError
from twofa.storage.tables import UserRow

FAILURE_RULE: Final = throttle.ThrottleRule(5, timedelta(minutes=15), timedelta(minutes=15))
FAILURE_MESSAGES: Final = {
    MethodKind.CODE: "That code didn't work. Check it and try again.",
    MethodKind.ANSWERS: "Those answers didn't work. Check them and try again.",
    MethodKind.WEBAUTHN: "That security key didn't work. Try again or use another method.",
}
LOCKED_MESSAGE: Final = "Too many failed attempts with this method. Try again in 15 minutes."

failure_key = method_lockout_key


class FailureLedger:
    def __init__(self, db: async_sessionmaker[AsyncSession], clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def audit_refusal(
        self, db: AsyncSession, user: UserRow, client: ClientInfo, code: str, outcome: str
    ) -> None:
        """A refusal that is not a wrong answer (locked, expired), in the caller's transaction."""
        audit.record(
            db,
            self._clock,
            "second_factor",
            outcome,
            username=user.username,
            client=client,
            method=code,
        )

    async def refuse_if_locked(self, user: UserRow, code: str, client: ClientInfo) -> None:
        async with self._db.begin() as db:
            locked = await throttle.locked_until(
                db, failure_key(code, user.username), self._clock.now()
            )
            if locked:
                self.audit_refusal(db, user, client, code, "locked")
        if locked:  # raised after the commit, so the audit record stays
            raise SecondFactorError(LOCKED_MESSAGE)

    async def count(
        self, user: UserRow, method: Method, client: ClientInfo, kind: str, reason: str
    ) -> None:
        """A wrong or replayed answer: counted against the method, audited, and the lock-out
        audited too when this failure starts one."""
        async with self._db.begin() as db:
            until = await throttle.record_failure(
                db, failure_key(method.code, user.username), FAILURE_RULE, self._clock.now()
            )
            audit.record(
                db,
                self._clock,
                kind,
                "refused",
                username=user.username,
                client=client,
                method=method.code,
                reason=reason,
            )
            if until is not None:
                audit.record(
                    db,
                    self._clock,
                    "lockout",
                    "locked",
                    username=user.username,
                    client=client,
                    key=failure_key(method.code, user.username),
                    until=until.isoformat(),
                )

    async def refused_enrolment(
        self, user: UserRow, client: ClientInfo, code: str, reason: str
    ) -> None:
        """An enrolment refused for what it is, not as a wrong answer: audited, not counted."""
        async with self._db.begin() as db:
            audit.record(
                db,
                self._clock,
                "enrolment",
                "refused",
                username=user.username,
                client=client,
                method=code,
                reason=reason,
            )
