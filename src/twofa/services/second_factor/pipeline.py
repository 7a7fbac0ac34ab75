"""Verifying the local second factors: every method in the registry goes through here (and
through `enrolment.py` to be set up), so each one gets the same rules for free. The server owns
every challenge (bound to the user, the session, the method and an expiry; consumed once by a
conditional UPDATE); each method has its own failure throttle, counted before an answer is
checked; every outcome is audited.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from twofa.domain.client import ClientInfo
from twofa.methods.base import (
    Method,
    MethodContext,
    MethodKind,
    Prompt,
    ResponseRejected,
    StoredCredential,
    Verified,
)
from twofa.security.hashing_pool import HashingBusy
from twofa.services.second_factor import credential_store
from twofa.services.second_factor.enrolment import EnrolmentSteps
from twofa.services.second_factor.failures import FAILURE_MESSAGES, failure_key, locked_message
from twofa.services.second_factor.gate import StepUpRequired
from twofa.services.second_factor.outcomes import Completion, SecondFactorError
from twofa.services.second_factor.steps import DeliveryFailed, Enrolled, Mailer, Started
from twofa.services.state import throttle
from twofa.services.state.sessions import SessionView
from twofa.storage.challenges import Challenges
from twofa.storage.tables import ChallengeRow, UserRow

__all__ = [
    "DeliveryFailed",
    "Enrolled",
    "Mailer",
    "SecondFactorService",
    "Started",
    "StepUpRequired",
]


class SecondFactorService(EnrolmentSteps):
    """The one pipeline of every local method: set-up (`EnrolmentSteps`), then challenges."""

    async def reopen(
        self, session: SessionView, code: str, challenge_id: str, purpose: str
    ) -> Started | None:
        """The page of a challenge still open (to show it again after a wrong answer without
        sending a new e-mail or asking new questions); None once it expired or was used."""
        user = await self._access.user_of(session)
        try:
            async with self._db.begin() as db:
                challenge = await self._challenges.answerable(
                    db, session, user, code, challenge_id, purpose
                )
        except SecondFactorError:
            return None
        return Started(challenge.id, self._challenges.described(challenge).show)

    async def start(self, session: SessionView, code: str, client: ClientInfo) -> Started:
        """A challenge of `code` for this session: the gate, the lock-out, the credentials and
        the new challenge in one transaction. A method that sends its code (e-mail) sends it
        after that transaction and opens the challenge only once it went out."""
        method = self._registry.local(code)  # UnknownMethod for anything else
        async with self._db.begin() as db:
            checked = await self._checked(db, session, method, client)
            if checked.refusal is None:
                prepared = await self._prepare(db, session, method, checked)
        if checked.refusal is not None:  # raised after the commit, so its audit record stays
            raise checked.refusal
        if isinstance(prepared, Started):
            return prepared
        assert prepared.delivery is not None
        await self._deliver(prepared.delivery, checked.user, code, client)
        async with self._db.begin() as db:
            challenge_id = await self._challenges.open(
                db, session, checked.user, code, "validate", _lifetime(method), prepared.keep,
                prepared.show,
            )  # fmt: skip
        return Started(challenge_id, prepared.show)

    async def _prepare(
        self, db: AsyncSession, session: SessionView, method: Method, checked: _Checked
    ) -> Started | Prompt:
        """The challenge's page, opened in `db`; or, for a method that sends its code, the
        prompt whose delivery must go out first."""
        user, code = checked.user, method.code
        try:
            await self._challenges.refuse_during_cooldown(db, user, method)
        except SecondFactorError as exc:
            # A reload of the code page (or "send a new code" too soon): the code already
            # sent still works, so show its page again, saying why no new one was sent.
            still_open = await self._challenges.still_open(db, session, code)
            if still_open is None:
                raise
            return Started(still_open.id, still_open.show, note=exc.message)
        # Questions asked and not yet answered are asked again, in any browser, until that
        # challenge expires: reloading must not shop for questions someone can answer.
        asked = (
            await self._challenges.asked_of(db, user, code)
            if method.kind is MethodKind.ANSWERS
            else None
        )
        if asked is not None:
            keep, sealed_show = asked
            challenge_id = await self._challenges.open(
                db, session, user, code, "validate", _lifetime(method), keep, sealed_show
            )
            return Started(challenge_id, self._challenges.open_show(sealed_show))
        prompt = await method.start(await self._context(user, code), checked.credentials)
        if prompt.delivery is not None:
            return prompt
        challenge_id = await self._challenges.open(
            db, session, user, code, "validate", _lifetime(method), prompt.keep, prompt.show
        )
        return Started(challenge_id, prompt.show)

    async def verify(
        self,
        session: SessionView,
        code: str,
        challenge_id: str,
        response: Mapping[str, str],
        client: ClientInfo,
    ) -> Completion:
        """An answer, in one transaction: the gate, the challenge, the attempt counted (count,
        then check: an answer over the limit is refused as locked, never looked at), the check,
        and its outcome (challenge consumed, credential state, sign-in, audit). The counter's
        row stays locked until that commit, so concurrent answers for a method wait for each
        other. A method that checks slowly (a password-grade hash) commits its counted attempt
        first and settles in a second transaction: no hash runs in an open one."""
        method = self._registry.local(code)
        outcome: Completion | SecondFactorError | None = None
        try:
            async with self._db.begin() as db:
                answer = await self._answer(db, session, method, challenge_id, client)
                if answer.refusal is None and not method.checks_slowly:
                    verdict = await self._check(method, answer, response)
                    outcome = await self._settle(db, session, method, answer, verdict, client)
            if answer.refusal is not None:
                raise answer.refusal
            if outcome is None:  # the slow check, outside any transaction
                try:
                    verdict = await self._check(method, answer, response)
                except HashingBusy:  # the pool is full: nothing was checked, nothing counts
                    assert answer.attempt is not None
                    await self._failures.give_back(answer.attempt)
                    raise
                async with self._db.begin() as db:
                    outcome = await self._settle(db, session, method, answer, verdict, client)
        except _Replayed as exc:  # its transaction rolled back whole
            refusal = SecondFactorError(FAILURE_MESSAGES[method.kind])
            if method.checks_slowly:  # the attempt was committed before the check
                assert answer.attempt is not None
                await self._failures.refuse(
                    answer.username, method, client, "second_factor", str(exc), answer.attempt
                )
            else:  # the count went with it: counted again, with the refusal (or the lock-out)
                username = answer.username
                locked = await self._failures.count_and_refuse(username, method, client, str(exc))
                refusal = locked or refusal
            raise refusal from exc
        if isinstance(outcome, SecondFactorError):
            raise outcome
        return outcome

    async def _answer(
        self,
        db: AsyncSession,
        session: SessionView,
        method: Method,
        challenge_id: str,
        client: ClientInfo,
    ) -> _Answer:
        """What an answer is checked against, read in `db` after the gate; then the attempt is
        counted, the transaction's first write (on SQLite the write lock is held from there to
        the commit, so the reads come first). A refusal (expired, locked) is audited in `db`
        and returned, for the caller to raise after the commit."""
        code = method.code
        user = await self._access.may_verify_in(db, session, code)  # refused: nothing written
        try:
            challenge = await self._challenges.answerable(
                db, session, user, code, challenge_id, "validate"
            )
        except SecondFactorError as exc:
            self._failures.audit_refusal(db, user.username, client, code, "expired")
            return _Answer(user, user.username, None, None, [], None, exc)
        with_items = credential_store.keeps_items(method)
        credentials = await credential_store.load(
            db, self._sealer, user.id, code, with_items=with_items
        )
        context = await self._context(user, code)
        attempt, locked = await self._failures.take_attempt(db, user.username, code, client)
        return _Answer(user, user.username, challenge, attempt, credentials, context, locked)

    async def _check(
        self, method: Method, answer: _Answer, response: Mapping[str, str]
    ) -> Verified | ResponseRejected:
        """The method's verdict; it is only ever asked after the attempt was counted."""
        assert answer.challenge is not None
        assert answer.context is not None
        keep = self._challenges.described(answer.challenge).keep
        try:
            return await method.verify(answer.context, keep, answer.credentials, response)
        except ResponseRejected as exc:
            return exc

    async def _settle(
        self,
        db: AsyncSession,
        session: SessionView,
        method: Method,
        answer: _Answer,
        verdict: Verified | ResponseRejected,
        client: ClientInfo,
    ) -> Completion | SecondFactorError:
        """A wrong answer is audited (its attempt stays counted); a right one consumes the
        challenge and the credential's state, clears the counter and signs in. A racing
        request that consumed either first raises `_Replayed`, rolling `db` back whole."""
        user, code, now = answer.user, method.code, self._clock.now()
        assert answer.challenge is not None
        assert answer.attempt is not None
        if isinstance(verdict, ResponseRejected):
            self._failures.refused_in(
                db, user.username, code, client, "second_factor", verdict.reason, answer.attempt
            )
            return SecondFactorError(FAILURE_MESSAGES[method.kind])
        if not await Challenges(db).consume(
            answer.challenge.id, user.id, session.id, now, forget_payload=True
        ):
            raise _Replayed("challenge already used")
        if not await credential_store.apply(db, verdict, answer.credentials, now):
            raise _Replayed("credential already used by another sign-in")
        await throttle.reset(db, failure_key(code, user.username))
        return await self._sign_in(db, session, user, client, code, False)

    async def _checked(
        self, db: AsyncSession, session: SessionView, method: Method, client: ClientInfo
    ) -> _Checked:
        """What starting a challenge checks, read in `db`: the gate, the method's lock-out and
        the credentials. A refusal is audited in `db` and returned, for the caller to raise
        after the commit."""
        code = method.code
        user = await self._access.may_verify_in(db, session, code)  # refused: nothing written
        lock = await throttle.lock_state(db, failure_key(code, user.username), self._clock.now())
        if lock.locked_until is not None:
            self._failures.audit_refusal(db, user.username, client, code, "locked")
            return _Checked(user, [], SecondFactorError(locked_message(code)))
        with_items = credential_store.keeps_items(method)
        credentials = await credential_store.load(
            db, self._sealer, user.id, code, with_items=with_items
        )
        return _Checked(user, credentials, None)


def _lifetime(method: Method) -> timedelta:
    return timedelta(seconds=method.challenge_seconds)


@dataclass(frozen=True)
class _Checked:
    user: UserRow
    credentials: list[StoredCredential]
    refusal: SecondFactorError | None


@dataclass(frozen=True)
class _Answer:
    user: UserRow
    # Read while the row was loaded: a racing answer's transaction rolls back, which expires
    # `user`, and its refusal is still counted and audited by this name.
    username: str
    challenge: ChallengeRow | None
    attempt: throttle.Attempt | None
    credentials: list[StoredCredential]
    context: MethodContext | None
    refusal: SecondFactorError | None


class _Replayed(Exception):
    """A racing request consumed the challenge or the credential first."""
