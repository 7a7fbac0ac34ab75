"""What an answer to a second factor costs: each method has its own attempt counter per user
(five attempts per 15 minutes, then a 15-minute lock-out of that method and only that one;
security questions three per hour), counted before the answer is checked; every refusal is
audited, and the user sees one plain message per kind of method whatever went wrong."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Final

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.domain.client import ClientInfo
from twofa.methods.base import Method, MethodKind
from twofa.services.second_factor.counted import count_when_committed
from twofa.services.second_factor.outcomes import SecondFactorError
from twofa.services.state import audit, throttle
from twofa.services.state.lockouts import method_lockout_key

FAILURE_RULE: Final = throttle.ThrottleRule(5, timedelta(minutes=15), timedelta(minutes=15))
# Answers people chose are easier to guess than codes: at most three tries an hour.
FAILURE_RULES: Final[Mapping[str, throttle.ThrottleRule]] = {
    "security_questions": throttle.ThrottleRule(3, timedelta(hours=1), timedelta(hours=1)),
}
FAILURE_MESSAGES: Final = {
    MethodKind.CODE: "That code didn't work. Check it and try again.",
    MethodKind.ANSWERS: "Those answers didn't work. Check them and try again.",
    MethodKind.WEBAUTHN: "That security key didn't work. Try again or use another method.",
}

failure_key = method_lockout_key


def failure_rule(code: str) -> throttle.ThrottleRule:
    return FAILURE_RULES.get(code, FAILURE_RULE)


def _duration(span: timedelta) -> str:
    minutes = int(span.total_seconds() // 60)
    if minutes % 60:
        return f"{minutes} minutes"
    return "an hour" if minutes == 60 else f"{minutes // 60} hours"


def locked_message(code: str) -> str:
    lockout = failure_rule(code).lockout
    return f"Too many failed attempts with this method. Try again in {_duration(lockout)}."


LOCKED_MESSAGE: Final = locked_message("")  # the methods with the common rule


class FailureLedger:
    def __init__(self, db: async_sessionmaker[AsyncSession], clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def audit_refusal(
        self, db: AsyncSession, username: str, client: ClientInfo, code: str, outcome: str
    ) -> None:
        """A refusal that is not a wrong answer (locked, expired), in the caller's transaction."""
        count_when_committed(db, code, outcome)
        audit.record(
            db,
            self._clock,
            "second_factor",
            outcome,
            username=username,
            client=client,
            method=code,
        )

    async def take_attempt(
        self, db: AsyncSession, username: str, code: str, client: ClientInfo
    ) -> tuple[throttle.Attempt, SecondFactorError | None]:
        """Counts this answer against the method before anything checks it, in the caller's
        transaction (the counter's row stays locked until it ends, so concurrent answers wait
        for each other). An answer over the limit is audited as locked and its refusal
        returned, for the caller to raise after the commit: it is never checked."""
        key = failure_key(code, username)
        attempt = await throttle.take_attempt(db, key, failure_rule(code), self._clock.now())
        if attempt.allowed:
            return attempt, None
        self.audit_refusal(db, username, client, code, "locked")
        return attempt, SecondFactorError(locked_message(code))

    def refused_in(
        self,
        db: AsyncSession,
        username: str,
        code: str,
        client: ClientInfo,
        kind: str,
        reason: str,
        attempt: throttle.Attempt,
    ) -> None:
        """A wrong or replayed answer (its attempt counted already), in the caller's
        transaction: audited, and the lock-out audited too when this failure is the one that
        locks the method."""
        if kind == "second_factor":  # as audited: a set-up's wrong code is an "enrolment" refusal
            count_when_committed(db, code, "refused")
        audit.record(
            db,
            self._clock,
            kind,
            "refused",
            username=username,
            client=client,
            method=code,
            reason=reason,
        )
        throttle.audit_lockout(db, self._clock, attempt, username=username, client=client)

    async def refuse(
        self,
        username: str,
        method: Method,
        client: ClientInfo,
        kind: str,
        reason: str,
        attempt: throttle.Attempt,
    ) -> None:
        """`refused_in`, in a transaction of its own."""
        async with self._db.begin() as db:
            self.refused_in(db, username, method.code, client, kind, reason, attempt)

    async def count_and_refuse(
        self, username: str, method: Method, client: ClientInfo, reason: str
    ) -> SecondFactorError | None:
        """A right answer that lost a race (the challenge or the credential was consumed
        first) rolled back whole, its count included: counted again, and refused; the
        lock-out's refusal when this count is over the limit. By name: the user's row went
        with the rolled-back transaction."""
        async with self._db.begin() as db:
            attempt, locked = await self.take_attempt(db, username, method.code, client)
            if locked is None:
                code, kind = method.code, "second_factor"
                self.refused_in(db, username, code, client, kind, reason, attempt)
        return locked

    async def give_back(self, attempt: throttle.Attempt) -> None:
        """An attempt refused before any secret was checked (a set-up form to correct)."""
        async with self._db.begin() as db:
            await throttle.refund(db, attempt)

    async def refused_enrolment(
        self,
        username: str,
        client: ClientInfo,
        code: str,
        reason: str,
        attempt: throttle.Attempt | None = None,
    ) -> None:
        """An enrolment refused for what it is, not as a wrong answer: audited, and its attempt
        (if counted) given back."""
        async with self._db.begin() as db:
            if attempt is not None:
                await throttle.refund(db, attempt)
            audit.record(
                db,
                self._clock,
                "enrolment",
                "refused",
                username=username,
                client=client,
                method=code,
                reason=reason,
            )
