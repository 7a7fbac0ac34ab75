"""The Duo Push use cases: first-login set-up, sending a push, following it (or a phone call)
to an answer, Duo passcodes, and failmode when Duo cannot be asked.

The server owns each challenge: a row bound to the user, the session and Duo's txid. A push
answer is accepted only for that row, and only once (a conditional UPDATE).
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.config import DuoSettings, FailMode
from twofa.domain.client import ClientInfo
from twofa.duo import DuoApiError, DuoError, DuoUnavailable
from twofa.duo.models import AuthResult, Device, EnrollmentStatus, PreauthOutcome
from twofa.methods.duo_push import CODE, DuoPushMethod, PushContext
from twofa.security.tokens import new_token
from twofa.services import audit, throttle
from twofa.services.duo_factor_rules import (
    MESSAGES,
    POLLED_CHALLENGES,
    FactorOffer,
    PushState,
    offer_for,
    offer_for_new_duo_mobile,
    pending_message,
    phone_requests_since,
    push_state,
    refusal_message,
)
from twofa.services.lockouts import lockout_keys
from twofa.services.second_factor_outcomes import (
    Completion,
    DuoDown,
    FailOpen,
    SecondFactorError,
)
from twofa.services.sessions import Level, SessionService, SessionView
from twofa.storage.challenges import Challenges
from twofa.storage.repositories import DuoEnrolments, Users
from twofa.storage.tables import ChallengeRow, UserRow

T = TypeVar("T")
PUSH_LIFETIME = timedelta(seconds=75)  # Duo's own push timeout is about 60 s
PASSCODE_RULE = throttle.ThrottleRule(5, timedelta(minutes=15), timedelta(minutes=15))


class SetupKind(Enum):
    ACTIVATE = "activate"  # scan the QR code, then push
    READY = "ready"  # already has a push-capable device in Duo
    BYPASS = "bypass"  # Duo says allow without a second factor
    DENIED = "denied"  # Duo's policy refuses this user


@dataclass(frozen=True)
class SetupView:
    kind: SetupKind
    activation_code: str | None = None
    expires_at: datetime | None = None
    devices: tuple[Device, ...] = ()  # those that can take a push
    preferred_device: str | None = None
    offer: FactorOffer = field(default_factory=FactorOffer)


@dataclass(frozen=True)
class PollResult:
    state: PushState
    message: str
    completion: Completion | None = None


class DuoPushService:
    def __init__(
        self,
        db: async_sessionmaker[AsyncSession],
        method: DuoPushMethod,
        sessions: SessionService,
        clock: Clock,
        settings: DuoSettings,
    ) -> None:
        self._db = db
        self._method = method
        self._sessions = sessions
        self._clock = clock
        self._settings = settings

    @property
    def settings(self) -> DuoSettings:
        return self._settings

    @property
    def method(self) -> DuoPushMethod:
        return self._method

    async def setup(self, session: SessionView, client: ClientInfo) -> SetupView:
        """What the user must do next; starts (or resumes) a Duo enrolment if needed."""
        user = await self.user_of(session)
        preauth = await self.ask_duo(self._method.preauth(user.username, client.ip), user, client)
        allowed = self._settings.allowed_factors
        offer = offer_for(preauth.devices, allowed)
        async with self._db.begin() as db:
            enrolment = await DuoEnrolments(db).get_or_create(user.id)
            preferred = enrolment.preferred_device
            if preauth.outcome is PreauthOutcome.AUTH and offer.anything:
                return SetupView(
                    SetupKind.READY,
                    devices=preauth.push_devices if offer.push else (),
                    preferred_device=preferred,
                    offer=offer,
                )
            if preauth.outcome in (PreauthOutcome.ALLOW, PreauthOutcome.DENY):
                kind = (
                    SetupKind.BYPASS
                    if preauth.outcome is PreauthOutcome.ALLOW
                    else SetupKind.DENIED
                )
                audit.record(
                    db,
                    self._clock,
                    "duo_preauth",
                    kind.value,
                    username=user.username,
                    client=client,
                )
                return SetupView(kind)
            now = self._clock.now()
            if (
                enrolment.activation_code
                and enrolment.activation_expires_at
                and enrolment.activation_expires_at > now
            ):
                return SetupView(
                    SetupKind.ACTIVATE,
                    enrolment.activation_code,
                    enrolment.activation_expires_at,
                    offer=offer_for_new_duo_mobile(allowed),
                )
        enrollment = await self.ask_duo(self._method.begin_enrollment(user.username), user, client)
        async with self._db.begin() as db:
            enrolment = await DuoEnrolments(db).get_or_create(user.id)
            enrolment.duo_user_id = enrollment.user_id
            enrolment.activation_code = enrollment.activation_code
            enrolment.activation_barcode = enrollment.activation_barcode
            enrolment.activation_expires_at = datetime.fromtimestamp(enrollment.expires_at, UTC)
            audit.record(
                db, self._clock, "duo_enrol", "started", username=user.username, client=client
            )
            return SetupView(
                SetupKind.ACTIVATE,
                enrollment.activation_code,
                enrolment.activation_expires_at,
                offer=offer_for_new_duo_mobile(allowed),
            )

    async def activation_status(self, session: SessionView, client: ClientInfo) -> EnrollmentStatus:
        user = await self.user_of(session)
        async with self._db.begin() as db:
            enrolment = await DuoEnrolments(db).get(user.id)
        if enrolment is None or not enrolment.duo_user_id or not enrolment.activation_code:
            return EnrollmentStatus.INVALID
        check = self._method.enrollment_status(enrolment.duo_user_id, enrolment.activation_code)
        return await self.ask_duo(check, user, client)

    async def send_push(
        self, session: SessionView, client: ClientInfo, device: str = "auto"
    ) -> str:
        """Starts a push and returns the challenge id the page polls. Rate-limited per user."""
        user = await self.user_of(session)
        await self.limit_phone_requests(
            user, client, CODE, "Too many push requests. Wait a minute, then try again."
        )
        context = PushContext(user.username, user.display_name, client.ip, device or "auto")
        txid = await self.ask_duo(self._method.start(context), user, client)
        return await self.open_challenge(session, user, client, CODE, txid, context.device)

    async def limit_phone_requests(
        self, user: UserRow, client: ClientInfo, kind: str, message: str
    ) -> None:
        """Refuses (and audits) a push, call or text beyond the per-minute limit they share."""
        since = self._clock.now() - timedelta(minutes=1)
        async with self._db.begin() as db:
            recent = await phone_requests_since(db, user.id, since)
        if recent >= self._settings.pushes_per_minute:
            await self.audit_event(user, client, kind, "rate_limited")
            raise SecondFactorError(message)

    async def open_challenge(
        self,
        session: SessionView,
        user: UserRow,
        client: ClientInfo,
        kind: str,
        txid: str | None,
        device: str,
        *,
        status: str = "pending",
    ) -> str:
        """Records what was sent to the phone as a challenge row of `kind` bound to this
        session (a push or call with Duo's txid, followed by `poll`; a text only counts)."""
        challenge_id, now = new_token(), self._clock.now()
        async with self._db.begin() as db:
            purpose = "enrol" if not await self._configured(db, user.id) else "validate"
            Challenges(db).add(
                ChallengeRow(
                    id=challenge_id,
                    user_id=user.id,
                    session_id=session.id,
                    method=kind,
                    purpose=purpose,
                    external_id=txid,
                    status=status,
                    created_at=now,
                    expires_at=now + PUSH_LIFETIME,
                )
            )
            audit.record(
                db,
                self._clock,
                kind,
                "sent",
                username=user.username,
                client=client,
                device=device,
                purpose=purpose,
            )
        return challenge_id

    async def poll(
        self, session: SessionView, challenge_id: str, client: ClientInfo, device: str | None = None
    ) -> PollResult:
        """One long-poll of Duo for this push or call; on approval, the signed-in session."""
        user = await self.user_of(session)
        async with self._db.begin() as db:
            challenge = await Challenges(db).get(challenge_id)
        if (
            challenge is None
            or challenge.method not in POLLED_CHALLENGES
            or challenge.user_id != user.id
            or challenge.session_id != session.id
            or challenge.consumed_at is not None
        ):
            raise SecondFactorError("This login request is no longer valid. Start again.")
        if challenge.expires_at <= self._clock.now():
            return PollResult(PushState.TIMEOUT, MESSAGES[PushState.TIMEOUT])
        if challenge.status != "pending":
            state = PushState(challenge.status)
            return PollResult(state, MESSAGES[state])
        outcome = await self.ask_duo(self._method.poll(str(challenge.external_id)), user, client)
        state = push_state(outcome.status, outcome.result)
        if state is PushState.PENDING:
            return PollResult(state, pending_message(challenge.method))
        if state is not PushState.ALLOW:
            async with self._db.begin() as db:
                await Challenges(db).set_status(challenge.id, state.value)
                audit.record(
                    db,
                    self._clock,
                    challenge.method,
                    state.value,
                    username=user.username,
                    client=client,
                )
            return PollResult(state, MESSAGES[state])
        completion = await self._complete(session, challenge, user, client, device)
        return PollResult(PushState.ALLOW, MESSAGES[PushState.ALLOW], completion)

    async def verify_passcode(
        self, session: SessionView, passcode: str, client: ClientInfo
    ) -> Completion:
        user = await self.user_of(session)
        key, now = lockout_keys(user.username)[1], self._clock.now()
        passcode = passcode.strip()
        async with self._db.begin() as db:
            if await throttle.locked_until(db, key, now):
                raise SecondFactorError("Too many wrong passcodes. Try again in 15 minutes.")
        if not passcode.isdigit() or not 6 <= len(passcode) <= 10:
            outcome_ok = False
        else:
            outcome = await self.ask_duo(
                self._method.verify_passcode(user.username, passcode, client.ip), user, client
            )
            outcome_ok = outcome.result is AuthResult.ALLOW
        async with self._db.begin() as db:
            if not outcome_ok:
                await throttle.record_failure(db, key, PASSCODE_RULE, now)
                audit.record(
                    db,
                    self._clock,
                    "duo_passcode",
                    "refused",
                    username=user.username,
                    client=client,
                )
        if not outcome_ok:
            raise SecondFactorError("That passcode is not valid.")
        async with self._db.begin() as db:
            await throttle.reset(db, key)
            enrolled_now = await self._mark_configured(db, user.id, None)
            return await self._sign_in(
                db, session, user, client, ("duo_passcode", "allow"), enrolled_now
            )

    async def bypass(self, session: SessionView, client: ClientInfo, reason: str) -> Completion:
        """Signs in without a second factor: Duo said allow, or failmode safe."""
        user = await self.user_of(session)
        async with self._db.begin() as db:
            return await self._sign_in(
                db, session, user, client, ("second_factor", "bypassed"), False, reason=reason
            )

    async def is_configured(self, session: SessionView) -> bool:
        user = await self.user_of(session)
        async with self._db.begin() as db:
            return await self._configured(db, user.id)

    async def _complete(
        self,
        session: SessionView,
        challenge: ChallengeRow,
        user: UserRow,
        client: ClientInfo,
        device: str | None,
    ) -> Completion:
        async with self._db.begin() as db:
            if not await Challenges(db).consume(
                challenge.id, user.id, session.id, self._clock.now()
            ):
                raise SecondFactorError("This login request was already used. Start again.")
            enrolled_now = await self._mark_configured(db, user.id, device)
            return await self._sign_in(
                db,
                session,
                user,
                client,
                (challenge.method, "allow"),
                enrolled_now,
                purpose=challenge.purpose,
            )

    async def _sign_in(
        self,
        db: AsyncSession,
        session: SessionView,
        user: UserRow,
        client: ClientInfo,
        event: tuple[str, str],
        enrolled_now: bool,
        **detail: object,
    ) -> Completion:
        """Replaces the pending session by a signed-in one and audits why, in `db`'s
        transaction (the same one that consumed the challenge, if any)."""
        kind, outcome = event
        token, view = await self._sessions.promote(
            db, session, user.id, Level.SIGNED_IN, client, second_factor=outcome == "allow"
        )
        audit.record(
            db, self._clock, kind, outcome, username=user.username, client=client, **detail
        )
        return Completion(token, view, enrolled_now)

    async def _mark_configured(self, db: AsyncSession, user_id: int, device: str | None) -> bool:
        """Records Duo Push as set up (True if this call did it) and the device that worked."""
        enrolment = await DuoEnrolments(db).get_or_create(user_id)
        enrolled_now = enrolment.configured_at is None
        if enrolled_now:
            enrolment.configured_at = self._clock.now()
            enrolment.activation_code = None
        if device and device != "auto":
            enrolment.preferred_device = device
        return enrolled_now

    async def _configured(self, db: AsyncSession, user_id: int) -> bool:
        enrolment = await DuoEnrolments(db).get(user_id)
        return enrolment is not None and enrolment.configured_at is not None

    async def user_of(self, session: SessionView) -> UserRow:
        """The user of a session that passed the password and waits for a second factor."""
        if session.user_id is None or session.level not in (Level.PASSWORD, Level.SIGNED_IN):
            raise SecondFactorError("Your sign-in has expired. Please sign in again.")
        async with self._db.begin() as db:
            user = await Users(db).by_id(session.user_id)
        if user is None or not user.enabled:
            raise SecondFactorError("Your sign-in has expired. Please sign in again.")
        return user

    async def ask_duo(self, call: Awaitable[T], user: UserRow, client: ClientInfo) -> T:
        """Awaits a Duo call and turns Duo's failures into failmode or a plain message."""
        try:
            return await call
        except (DuoUnavailable, DuoApiError) as exc:
            if (
                isinstance(exc, DuoApiError)
                and not isinstance(exc, DuoUnavailable)
                and not exc.is_bad_credentials
            ):
                await self._audit_duo_error(user, client, exc)
                raise SecondFactorError(refusal_message(exc)) from exc
            await self._audit_failmode(user, client, exc)
            if self._settings.failmode is FailMode.SAFE:
                raise FailOpen(str(exc)) from exc
            raise DuoDown(
                "Duo Security cannot be reached, so sign-in is refused for now "
                "(failmode: secure). Try again in a few minutes or contact your administrator."
            ) from exc

    async def _audit_failmode(self, user: UserRow, client: ClientInfo, exc: DuoError) -> None:
        error = f"{type(exc).__name__}: {exc}"
        await self.audit_event(user, client, "failmode", self._settings.failmode.value, error=error)

    async def _audit_duo_error(self, user: UserRow, client: ClientInfo, exc: DuoApiError) -> None:
        await self.audit_event(user, client, "duo_error", str(exc.code), error=str(exc))

    async def audit_event(
        self, user: UserRow, client: ClientInfo, kind: str, outcome: str, **detail: Any
    ) -> None:
        """Audits in a transaction of its own (for decisions that change nothing else)."""
        async with self._db.begin() as db:
            audit.record(
                db, self._clock, kind, outcome, username=user.username, client=client, **detail
            )
