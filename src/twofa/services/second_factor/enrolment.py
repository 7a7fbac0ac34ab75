"""Setting a method up: the first half of the second-factor pipeline (`pipeline.py` holds the
challenges). Who may enrol is the gate's rule: during a first sign-in (password passed, no
method yet) the user sets up their first method; once signed in, adding or replacing one needs
a second factor passed in the last ten minutes (`StepUpRequired`), so a stolen password or an
unattended browser cannot add an attacker's authenticator. The draft is a challenge of purpose
`enrol`, consumed once by the transaction that stores the new credential."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Final

from sqlalchemy.ext.asyncio import AsyncSession

from twofa.domain.client import ClientInfo
from twofa.methods.base import (
    DetailsNeeded,
    EnrolmentRefused,
    Method,
    NewCredential,
    ResponseRejected,
    StoredCredential,
    already_registered,
)
from twofa.security.hashing_pool import HashingBusy
from twofa.services.second_factor import credential_store
from twofa.services.second_factor.challenges import EXPIRED_MESSAGE
from twofa.services.second_factor.failures import FAILURE_MESSAGES, failure_key
from twofa.services.second_factor.outcomes import SecondFactorError
from twofa.services.second_factor.steps import Enrolled, PipelineSteps, Started
from twofa.services.state import audit, throttle
from twofa.services.state.sessions import Level, SessionView
from twofa.storage.challenges import Challenges
from twofa.storage.credentials import Credentials
from twofa.storage.tables import ChallengeRow, UserRow

DRAFT_LIFETIME: Final = timedelta(minutes=15)


class EnrolmentSteps(PipelineSteps):
    """Enrolment, for `SecondFactorService`, which adds the challenges."""

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
            draft = await method.begin_enrolment(context, enrolled)
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
            attempt, locked = await self._failures.take_attempt(db, user.username, code, client)
        if locked is not None:  # committed, with its audit record; the answer is never checked
            raise locked
        secret = self._challenges.draft_secret(challenge)
        keep = self._challenges.described(challenge).keep
        context = await self._context(user, code)
        try:
            credential = await method.finish_enrolment(context, keep, secret, response, enrolled)
        except ResponseRejected as exc:
            await self._failures.refuse(
                user.username, method, client, "enrolment", exc.reason, attempt
            )
            raise SecondFactorError(FAILURE_MESSAGES[method.kind]) from exc
        except EnrolmentRefused as exc:  # a form to correct, not a wrong answer
            await self._failures.give_back(attempt)
            raise SecondFactorError(exc.message) from exc
        except HashingBusy:  # the hashing pool is full: nothing was checked, nothing counts
            await self._failures.give_back(attempt)
            raise
        try:
            return await self._store_enrolment(session, user, method, challenge, credential, client)
        except credential_store.DuplicateCredential as exc:  # rolled back whole
            # Another user's key, or a racing enrolment of this one: refused, and on record.
            await self._failures.refused_enrolment(
                user.username, client, method.code, "credential id registered already", attempt
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

    async def _enrolled(
        self, db: AsyncSession, user: UserRow, method: Method
    ) -> list[StoredCredential]:
        """What the user has of a method that keeps several (so it can refuse the same key
        twice); nothing for the others, whose new credential replaces the old one."""
        if not method.many_per_user:
            return []
        return await credential_store.load(db, self._sealer, user.id, method.code)
