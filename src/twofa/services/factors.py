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

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.domain.client import ClientInfo
from twofa.methods.base import (
    Delivery,
    EnrolmentRefused,
    Method,
    MethodContext,
    MethodKind,
    MethodUser,
    ResponseRejected,
)
from twofa.methods.registry import MethodRegistry
from twofa.security.sealing import Sealer
from twofa.security.tokens import new_token
from twofa.services import audit, credential_store, throttle
from twofa.services.accounts import method_lockout_key
from twofa.services.duo_push import Completion, SecondFactorError
from twofa.services.factor_access import FactorAccess, StepUpRequired
from twofa.services.sessions import Level, SessionService, SessionView
from twofa.storage.credentials import Credentials
from twofa.storage.repositories import Challenges
from twofa.storage.tables import ChallengeRow, UserRow

FAILURE_RULE: Final = throttle.ThrottleRule(5, timedelta(minutes=15), timedelta(minutes=15))
DRAFT_LIFETIME: Final = timedelta(minutes=15)
FAILURE_MESSAGES: Final = {
    MethodKind.CODE: "That code didn't work. Check it and try again.",
    MethodKind.ANSWERS: "Those answers didn't work. Check them and try again.",
    MethodKind.WEBAUTHN: "That security key didn't work. Try again or use another method.",
}
LOCKED_MESSAGE: Final = "Too many failed attempts with this method. Try again in 15 minutes."
SHOW_PURPOSE: Final = "challenge.show"
SWEEP_EVERY: Final = timedelta(minutes=1)
KEEP_EXPIRED: Final = timedelta(hours=1)  # long past any rate-limit window that counts them
EXPIRED_MESSAGE: Final = "This request has expired or was already used. Start again."

__all__ = ["DeliveryFailed", "Enrolled", "FactorService", "Mailer", "Started", "StepUpRequired"]


failure_key = method_lockout_key


class DeliveryFailed(SecondFactorError):
    """A code could not be sent (the mail server is down); the other methods still work."""


class Mailer(Protocol):
    async def send(self, delivery: Delivery) -> None:
        """Sends the message or raises `DeliveryFailed` with a message for the user."""
        ...


@dataclass(frozen=True)
class Started:
    """A challenge or an enrolment draft: the id the page posts back and what it shows."""

    challenge_id: str
    show: Mapping[str, Any]
    note: str = ""  # said above the form (why no new code was sent)


@dataclass(frozen=True)
class Enrolled:
    credential_id: int
    completion: Completion | None  # set when this enrolment also finished a sign-in


class FactorService:
    def __init__(
        self,
        db: async_sessionmaker[AsyncSession],
        registry: MethodRegistry,
        sessions: SessionService,
        access: FactorAccess,
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
        self._swept_at: datetime | None = None

    @property
    def registry(self) -> MethodRegistry:
        return self._registry

    async def begin_enrolment(self, session: SessionView, code: str, client: ClientInfo) -> Started:
        method, user = await self._access.may_enrol(session, code)
        await self._refuse_during_cooldown(method, user)
        context = await self._context(user, code)
        try:
            draft = await method.begin_enrollment(context)
        except EnrolmentRefused as exc:
            raise SecondFactorError(exc.message) from exc
        if draft.delivery is not None:
            await self._deliver(draft.delivery, user, code, client)
        payload: dict[str, Any] = {"keep": dict(draft.keep), "show": self._seal_show(draft.show)}
        if draft.secret is not None:
            payload["secret"] = self._sealer.seal(draft.secret, credential_store.DRAFT_PURPOSE)
        challenge_id = await self._new_challenge(
            session, user, code, "enrol", DRAFT_LIFETIME, payload
        )
        return Started(challenge_id, draft.show)

    async def reopen(
        self, session: SessionView, code: str, challenge_id: str, purpose: str
    ) -> Started | None:
        """The page of a challenge still open (to show it again after a wrong answer without
        sending a new e-mail or asking new questions); None once it expired or was used."""
        user = await self._access.user_of(session)
        try:
            async with self._db.begin() as db:
                challenge = await self._open_challenge(
                    db, session, user, code, challenge_id, purpose
                )
        except SecondFactorError:
            return None
        return Started(challenge.id, self._open_show(challenge.payload))

    async def draft_secret(self, session: SessionView, code: str, challenge_id: str) -> str | None:
        """The secret of an open enrolment draft (backup codes to download or print)."""
        _, user = await self._access.may_enrol(session, code)
        async with self._db.begin() as db:
            challenge = await self._open_challenge(db, session, user, code, challenge_id, "enrol")
        sealed = (challenge.payload or {}).get("secret")
        return self._sealer.open(sealed, credential_store.DRAFT_PURPOSE) if sealed else None

    async def finish_enrolment(
        self,
        session: SessionView,
        code: str,
        challenge_id: str,
        response: Mapping[str, str],
        client: ClientInfo,
    ) -> Enrolled:
        method, user = await self._access.may_enrol(session, code)
        await self._refuse_if_locked(user, code, client)
        async with self._db.begin() as db:
            challenge = await self._open_challenge(db, session, user, code, challenge_id, "enrol")
        payload = challenge.payload or {}
        sealed = payload.get("secret")
        secret = self._sealer.open(sealed, credential_store.DRAFT_PURPOSE) if sealed else None
        context = await self._context(user, code)
        try:
            credential = await method.finish_enrollment(
                context, payload.get("keep", {}), secret, response
            )
        except ResponseRejected as exc:
            await self._count_failure(user, method, client, "enrolment", exc.reason)
            raise SecondFactorError(FAILURE_MESSAGES[method.kind]) from exc
        except EnrolmentRefused as exc:
            raise SecondFactorError(exc.message) from exc
        now = self._clock.now()
        async with self._db.begin() as db:
            if not await Challenges(db).consume(challenge.id, user.id, session.id, now):
                raise SecondFactorError(EXPIRED_MESSAGE)
            await Challenges(db).forget_payload(challenge.id)
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
            if session.level is Level.PASSWORD:  # the first method: enrolling proved it
                completion = await self._sign_in(db, session, user, client, code, True)
        return Enrolled(credential_id, completion)

    async def start(self, session: SessionView, code: str, client: ClientInfo) -> Started:
        method, user = await self._access.may_verify(session, code)
        await self._refuse_if_locked(user, code, client)
        async with self._db.begin() as db:
            credentials = await credential_store.load(db, self._sealer, user.id, code)
        if not credentials:
            raise SecondFactorError(f"You have not set up {method.title.lower()}.")
        try:
            await self._refuse_during_cooldown(method, user)
        except SecondFactorError as exc:
            # A reload of the code page (or "send a new code" too soon): the code already
            # sent still works, so show its page again, saying why no new one was sent.
            still_open = await self._still_open(session, code)
            if still_open is None:
                raise
            return replace(still_open, note=exc.message)
        asked_before = await self._questions_already_asked(method, user)
        if asked_before is not None:
            payload, show = asked_before
        else:
            prompt = await method.start(await self._context(user, code), credentials)
            if prompt.delivery is not None:
                await self._deliver(prompt.delivery, user, code, client)
            payload = {"keep": dict(prompt.keep), "show": self._seal_show(prompt.show)}
            show = prompt.show
        lifetime = timedelta(seconds=method.challenge_seconds)
        challenge_id = await self._new_challenge(session, user, code, "validate", lifetime, payload)
        return Started(challenge_id, show)

    async def verify(
        self,
        session: SessionView,
        code: str,
        challenge_id: str,
        response: Mapping[str, str],
        client: ClientInfo,
    ) -> Completion:
        method, user = await self._access.may_verify(session, code)
        await self._refuse_if_locked(user, code, client)
        try:
            async with self._db.begin() as db:
                challenge = await self._open_challenge(
                    db, session, user, code, challenge_id, "validate"
                )
                credentials = await credential_store.load(db, self._sealer, user.id, code)
        except SecondFactorError:
            async with self._db.begin() as db:  # its own transaction: the failed one rolled back
                audit.record(
                    db,
                    self._clock,
                    "second_factor",
                    "expired",
                    username=user.username,
                    client=client,
                    method=code,
                )
            raise
        keep = (challenge.payload or {}).get("keep", {})
        try:
            verified = await method.verify(
                await self._context(user, code), keep, credentials, response
            )
        except ResponseRejected as exc:
            await self._count_failure(user, method, client, "second_factor", exc.reason)
            raise SecondFactorError(FAILURE_MESSAGES[method.kind]) from exc
        now = self._clock.now()
        try:
            async with self._db.begin() as db:
                if not await Challenges(db).consume(challenge.id, user.id, session.id, now):
                    raise _Replayed("challenge already used")
                if not await credential_store.apply(db, verified, credentials, now):
                    raise _Replayed("credential already used by another sign-in")
                await Challenges(db).forget_payload(challenge.id)
                await throttle.reset(db, failure_key(code, user.username))
                return await self._sign_in(db, session, user, client, code, False)
        except _Replayed as exc:
            await self._count_failure(user, method, client, "second_factor", str(exc))
            raise SecondFactorError(FAILURE_MESSAGES[method.kind]) from exc

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

    async def _open_challenge(
        self,
        db: AsyncSession,
        session: SessionView,
        user: UserRow,
        code: str,
        challenge_id: str,
        purpose: str,
    ) -> ChallengeRow:
        challenge = await Challenges(db).get(challenge_id) if challenge_id else None
        if (
            challenge is None
            or challenge.user_id != user.id
            or challenge.session_id != session.id
            or challenge.method != code
            or challenge.purpose != purpose
            or challenge.consumed_at is not None
            or challenge.expires_at <= self._clock.now()
        ):
            raise SecondFactorError(EXPIRED_MESSAGE)
        return challenge

    async def _new_challenge(
        self,
        session: SessionView,
        user: UserRow,
        code: str,
        purpose: str,
        lifetime: timedelta,
        payload: dict[str, Any],
    ) -> str:
        now = self._clock.now()
        challenge_id = new_token()
        async with self._db.begin() as db:
            if self._swept_at is None or now - self._swept_at >= SWEEP_EVERY:
                self._swept_at = now  # old challenges go, at most once a minute per process
                await Challenges(db).remove_expired(now - KEEP_EXPIRED)
            Challenges(db).add(
                ChallengeRow(
                    id=challenge_id,
                    user_id=user.id,
                    session_id=session.id,
                    method=code,
                    purpose=purpose,
                    status="pending",
                    created_at=now,
                    expires_at=now + lifetime,
                    payload=payload,
                )
            )
        return challenge_id

    async def _context(self, user: UserRow, code: str) -> MethodContext:
        options = await self._access.options(code)
        method_user = MethodUser(user.id, user.username, user.display_name, user.email)
        return MethodContext(method_user, self._clock.now(), options)

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

    async def _still_open(self, session: SessionView, code: str) -> Started | None:
        async with self._db.begin() as db:
            row = await Challenges(db).latest_open(
                code, "validate", self._clock.now(), session_id=session.id
            )
        if row is None:
            return None
        return Started(row.id, self._open_show(row.payload))

    async def _questions_already_asked(
        self, method: Method, user: UserRow
    ) -> tuple[dict[str, Any], Mapping[str, Any]] | None:
        """Questions asked and not yet answered are asked again, in any browser, until that
        challenge expires: reloading must not shop for questions someone can answer."""
        if method.kind is not MethodKind.ANSWERS:
            return None
        async with self._db.begin() as db:
            row = await Challenges(db).latest_open(
                method.code, "validate", self._clock.now(), user_id=user.id
            )
        if row is None or not row.payload:
            return None
        payload = {"keep": row.payload.get("keep", {}), "show": row.payload.get("show")}
        return payload, self._open_show(row.payload)

    def _seal_show(self, show: Mapping[str, Any]) -> str:
        """What a page shows can be a secret (a new TOTP key, fresh backup codes): kept
        sealed with the challenge, only so the page can be shown again."""
        return self._sealer.seal(json.dumps(dict(show)), SHOW_PURPOSE)

    def _open_show(self, payload: Mapping[str, Any] | None) -> Mapping[str, Any]:
        sealed = (payload or {}).get("show")
        shown: Mapping[str, Any] = (
            json.loads(self._sealer.open(sealed, SHOW_PURPOSE)) if sealed else {}
        )
        return shown

    async def _refuse_during_cooldown(self, method: Method, user: UserRow) -> None:
        """Methods that send something (an e-mail code) declare `resend_cooldown_seconds`:
        a new challenge so soon after the last one is refused, so nobody can flood a mailbox."""
        cooldown = int(getattr(method, "resend_cooldown_seconds", 0))
        if cooldown <= 0:
            return
        now = self._clock.now()
        async with self._db.begin() as db:
            last = await Challenges(db).latest_created(user.id, method.code)
        if last is not None and (wait := cooldown - (now - last).total_seconds()) > 0:
            raise SecondFactorError(
                f"Wait {math.ceil(wait)} seconds before asking for another code."
            )

    async def _refuse_if_locked(self, user: UserRow, code: str, client: ClientInfo) -> None:
        async with self._db.begin() as db:
            locked = await throttle.locked_until(
                db, failure_key(code, user.username), self._clock.now()
            )
            if locked:
                audit.record(
                    db,
                    self._clock,
                    "second_factor",
                    "locked",
                    username=user.username,
                    client=client,
                    method=code,
                )
        if locked:  # raised after the commit, so the audit record stays
            raise SecondFactorError(LOCKED_MESSAGE)

    async def _count_failure(
        self, user: UserRow, method: Method, client: ClientInfo, kind: str, reason: str
    ) -> None:
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


class _Replayed(Exception):
    """A racing request consumed the challenge or the credential first."""
