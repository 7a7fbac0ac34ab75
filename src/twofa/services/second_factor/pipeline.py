"""Enrolling and verifying the local second factors: every method in the registry goes
through here, so each one gets the same rules for free. The server owns every challenge (bound
to the user, the session, the method and an expiry; consumed once by a conditional UPDATE);
each method has its own failure throttle; every outcome is audited.

Who may enrol: during a first sign-in (password passed, no factor yet) the user sets up their
first method; once signed in, adding or replacing a method needs a second factor passed in
the last ten minutes (`StepUpRequired`), so a stolen password or an unattended browser cannot
add an attacker's authenticator.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final, Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.domain.client import ClientInfo
from twofa.errors import Unavailable
from twofa.methods.base import (
    Delivery,
    DetailsNeeded,
    EnrolmentRefused,
    Method,
    MethodContext,
    MethodKind,
    MethodUser,
    NewCredential,
    Prompt,
    ResponseRejected,
    StoredCredential,
    Verified,
    already_registered,
)
from twofa.methods.registry import MethodRegistry
from twofa.security.sealing import Sealer
from twofa.services.second_factor import credential_store
from twofa.services.second_factor.challenges import EXPIRED_MESSAGE, OpenChallenges
from twofa.services.second_factor.failures import (
    FAILURE_MESSAGES,
    FailureLedger,
    failure_key,
    locked_message,
)
from twofa.services.second_factor.gate import MethodGate, StepUpRequired
from twofa.services.second_factor.outcomes import Completion, SecondFactorError
from twofa.services.state import audit, throttle
from twofa.services.state.sessions import Level, SessionService, SessionView
from twofa.storage.challenges import Challenges
from twofa.storage.credentials import Credentials
from twofa.storage.tables import ChallengeRow, UserRow

DRAFT_LIFETIME: Final = timedelta(minutes=15)

__all__ = [
    "DeliveryFailed",
    "Enrolled",
    "Mailer",
    "SecondFactorService",
    "Started",
    "StepUpRequired",
]


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


class SecondFactorService:
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

    async def begin_enrolment(
        self,
        session: SessionView,
        code: str,
        client: ClientInfo,
        entered: Mapping[str, str] | None = None,
    ) -> Started:
        """`entered`: the fields of the method's details form, when the user submitted it."""
        method, user = await self._access.may_enrol(session, code)
        context = await self._context(user, code, entered)
        enrolled: list[StoredCredential] = []
        if method.many_per_user:  # no transaction for the others: they compare with nothing
            async with self._db.begin() as db:
                enrolled = await self._enrolled(db, user, method)
        try:
            draft = await method.begin_enrollment(context, enrolled)
        except EnrolmentRefused as exc:
            raise SecondFactorError(exc.message) from exc
        except DetailsNeeded as exc:  # nothing is stored until the form comes back
            return Started("", exc.show, error=exc.message)
        if draft.delivery is not None:
            async with self._db.begin() as db:
                await self._challenges.refuse_during_cooldown(db, user, method)
            await self._deliver(draft.delivery, user, code, client)
        async with self._db.begin() as db:
            challenge_id = await self._challenges.open(
                db, session, user, code, "enrol", DRAFT_LIFETIME, draft.keep, draft.show,
                draft.secret,
            )  # fmt: skip
        return Started(challenge_id, draft.show)

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

    async def draft_secret(self, session: SessionView, code: str, challenge_id: str) -> str | None:
        """The secret of an open enrolment draft (backup codes to download or print)."""
        _, user = await self._access.may_enrol(session, code)
        async with self._db.begin() as db:
            challenge = await self._challenges.answerable(
                db, session, user, code, challenge_id, "enrol"
            )
        return self._challenges.draft_secret(challenge)

    async def finish_enrolment(
        self,
        session: SessionView,
        code: str,
        challenge_id: str,
        response: Mapping[str, str],
        client: ClientInfo,
    ) -> Enrolled:
        method, user = await self._access.may_enrol(session, code)
        async with self._db.begin() as db:
            challenge = await self._challenges.answerable(
                db, session, user, code, challenge_id, "enrol"
            )
            enrolled = await self._enrolled(db, user, method)
            attempt, locked = await self._failures.take_attempt(db, user, code, client)
        if locked is not None:  # committed, with its audit record; the answer is never checked
            raise locked
        secret = self._challenges.draft_secret(challenge)
        keep = self._challenges.described(challenge).keep
        context = await self._context(user, code)
        try:
            credential = await method.finish_enrollment(context, keep, secret, response, enrolled)
        except ResponseRejected as exc:
            await self._failures.refuse(user, method, client, "enrolment", exc.reason, attempt)
            raise SecondFactorError(FAILURE_MESSAGES[method.kind]) from exc
        except EnrolmentRefused as exc:  # a form to correct, not a wrong answer
            await self._failures.give_back(attempt)
            raise SecondFactorError(exc.message) from exc
        try:
            return await self._store_enrolment(session, user, method, challenge, credential, client)
        except credential_store.DuplicateCredential as exc:  # rolled back whole
            # Another user's key, or a racing enrolment of this one: refused, and on record.
            await self._failures.refused_enrolment(
                user, client, method.code, "credential id registered already", attempt
            )
            raise SecondFactorError(already_registered(method.title)) from exc

    async def _store_enrolment(
        self,
        session: SessionView,
        user: UserRow,
        method: Method,
        challenge: ChallengeRow,
        credential: NewCredential,
        client: ClientInfo,
    ) -> Enrolled:
        code, now = method.code, self._clock.now()
        async with self._db.begin() as db:
            await self._access.hold_enrolment(db, session, user.id)
            if not await Challenges(db).consume(
                challenge.id, user.id, session.id, now, forget_payload=True
            ):
                raise SecondFactorError(EXPIRED_MESSAGE)
            if not method.many_per_user:
                await Credentials(db).remove_of_user(user.id, code)
            credential_id = await credential_store.store(
                db, self._sealer, user.id, code, credential, now
            )
            await throttle.reset(db, failure_key(code, user.username))
            audit.record(
                db,
                self._clock,
                "enrolment",
                "added",
                username=user.username,
                client=client,
                method=code,
                label=credential.label,
            )
            completion = None
            if (
                session.level is Level.AWAITING_SECOND_FACTOR
            ):  # the first method: enrolling proved it
                completion = await self._sign_in(db, session, user, client, code, True)
        return Enrolled(credential_id, completion)

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
                verdict = await self._check(method, answer, response)
                async with self._db.begin() as db:
                    outcome = await self._settle(db, session, method, answer, verdict, client)
        except _Replayed as exc:  # its transaction rolled back whole
            if method.checks_slowly:  # the attempt was committed before the check
                assert answer.attempt is not None
                await self._failures.refuse(
                    answer.user, method, client, "second_factor", str(exc), answer.attempt
                )
            else:  # the count went with it: counted again, with the refusal
                await self._failures.count_and_refuse(answer.user, method, client, str(exc))
            raise SecondFactorError(FAILURE_MESSAGES[method.kind]) from exc
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
            self._failures.audit_refusal(db, user, client, code, "expired")
            return _Answer(user, None, None, [], None, exc)
        with_items = credential_store.keeps_items(method)
        credentials = await credential_store.load(
            db, self._sealer, user.id, code, with_items=with_items
        )
        context = await self._context(user, code)
        attempt, locked = await self._failures.take_attempt(db, user, code, client)
        return _Answer(user, challenge, attempt, credentials, context, locked)

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
                db, user, code, client, "second_factor", verdict.reason, answer.attempt
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
            self._failures.audit_refusal(db, user, client, code, "locked")
            return _Checked(user, [], SecondFactorError(locked_message(code)))
        with_items = credential_store.keeps_items(method)
        credentials = await credential_store.load(
            db, self._sealer, user.id, code, with_items=with_items
        )
        return _Checked(user, credentials, None)

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

    async def _enrolled(
        self, db: AsyncSession, user: UserRow, method: Method
    ) -> list[StoredCredential]:
        """What the user has of a method that keeps several (so it can refuse the same key
        twice); nothing for the others, whose new credential replaces the old one."""
        if not method.many_per_user:
            return []
        return await credential_store.load(db, self._sealer, user.id, method.code)

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
    challenge: ChallengeRow | None
    attempt: throttle.Attempt | None
    credentials: list[StoredCredential]
    context: MethodContext | None
    refusal: SecondFactorError | None


class _Replayed(Exception):
    """A racing request consumed the challenge or the credential first."""
