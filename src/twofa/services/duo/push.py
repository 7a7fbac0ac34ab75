"""The Duo Push use cases: first-login set-up, sending a push, following it (or a phone call)
to an answer, Duo passcodes, and failmode when Duo cannot be asked.

The server owns each challenge: a row bound to the user, the session and Duo's txid. A push
answer is accepted only for that row, and only once (a conditional UPDATE).
"""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.config import DuoSettings
from twofa.domain.client import ClientInfo
from twofa.duo.models import (
    EnrollmentStatus,
    PreauthOutcome,
)
from twofa.methods.base import OutOfBandAnswer, OutOfBandRequest
from twofa.methods.duo_push import CODE, DuoPushMethod
from twofa.security.tokens import new_token
from twofa.services.duo.calls import DuoCalls
from twofa.services.duo.push_fatigue import PushFatigue, paused_message
from twofa.services.duo.rules import (
    ANSWERED_NO,
    BYPASS_REFUSALS,
    CANNOT_CONFIRM,
    MESSAGES,
    POLLED_CHALLENGES,
    Bypass,
    PollResult,
    PushState,
    SetupKind,
    SetupView,
    offer_for,
    offer_for_new_duo_mobile,
    pending_message,
)
from twofa.services.second_factor.counted import count_when_committed
from twofa.services.second_factor.gate import MethodGate
from twofa.services.second_factor.outcomes import (
    Completion,
    SecondFactorError,
)
from twofa.services.state import audit, throttle
from twofa.services.state.lockouts import lockout_keys
from twofa.services.state.sessions import Level, SessionService, SessionView
from twofa.storage.challenges import Challenges
from twofa.storage.repositories import DuoEnrolments
from twofa.storage.tables import ChallengeRow, UserRow
from twofa.telemetry import PUSHES_PENDING, SECOND_FACTOR_OUTCOMES

T = TypeVar("T")
PASSCODE_RULE = throttle.ThrottleRule(5, timedelta(minutes=15), timedelta(minutes=15))
PASSCODE_LOCKED = "Too many wrong passcodes. Try again in 15 minutes."


class DuoPushService:
    def __init__(
        self,
        db: async_sessionmaker[AsyncSession],
        method: DuoPushMethod,
        sessions: SessionService,
        clock: Clock,
        settings: DuoSettings,
        access: MethodGate,
    ) -> None:
        self._db = db
        self._method = method
        self._sessions = sessions
        self._clock = clock
        self._settings = settings
        self._access = access
        self._calls = DuoCalls(db, clock, settings)

    @property
    def settings(self) -> DuoSettings:
        return self._settings

    @property
    def method(self) -> DuoPushMethod:
        return self._method

    async def setup(self, session: SessionView, client: ClientInfo) -> SetupView:
        """Setting up Duo Push, for a session the gate lets enrol: what the user must do
        next; starts (or resumes) a Duo enrolment if needed."""
        user = await self._access.may_enrol_in(session, CODE)
        return await self._next_step(user, client, enrol=True)

    async def validation(self, session: SessionView, client: ClientInfo) -> SetupView:
        """The validation page of a user whose usable methods include Duo Push. `ACTIVATE`
        without a code: Duo no longer knows a phone of theirs, and a password alone may not
        set up another (the user verifies with another method first)."""
        user = await self._access.may_verify(session, CODE)
        return await self._next_step(user, client, enrol=False)

    async def _next_step(self, user: UserRow, client: ClientInfo, *, enrol: bool) -> SetupView:
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
            if not enrol:
                return SetupView(SetupKind.ACTIVATE)
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
        user = await self._access.may_enrol_in(session, CODE)
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
        purpose, user = await self.challenger(session)
        await self.fatigue.limit_phone_requests(
            user, client, CODE, "Too many push requests. Wait a minute, then try again."
        )
        context = OutOfBandRequest(user.username, user.display_name, client.ip, device or "auto")
        txid = await self.ask_duo(self._method.start(context), user, client)
        return await self.open_challenge(
            session, user, client, (CODE, purpose), txid, context.device
        )

    async def challenger(self, session: SessionView) -> tuple[str, UserRow]:
        """Who a push, call, text or passcode is for, and whether it verifies them
        ("validate") or finishes setting up Duo Push ("enrol"), as the gate decides."""
        return await self._access.purpose_for(session, CODE)

    @cached_property
    def fatigue(self) -> PushFatigue:
        """The push fatigue guard for these settings (daily cap, pause after a fraud report)."""
        return PushFatigue(self._db, self._clock, self._settings, self._method)

    async def pause_notice(self, session: SessionView) -> str | None:
        """Why nothing goes to the user's phone, while a pause after their fraud report lasts."""
        user = await self.user_of(session)
        until = await self.fatigue.paused_until(user.username)
        return paused_message(until, self._clock.now()) if until is not None else None

    async def open_challenge(
        self,
        session: SessionView,
        user: UserRow,
        client: ClientInfo,
        kind_and_purpose: tuple[str, str],
        txid: str | None,
        device: str,
        *,
        status: str = "pending",
    ) -> str:
        """Records what was sent to the phone as a challenge row of its kind and purpose
        (`challenger`) bound to this session (a push or call with Duo's txid, followed by
        `poll`; a text only counts)."""
        (kind, purpose), challenge_id, now = kind_and_purpose, new_token(), self._clock.now()
        async with self._db.begin() as db:
            await Challenges(db).add(
                ChallengeRow(
                    id=challenge_id,
                    user_id=user.id,
                    session_id=session.id,
                    method=kind,
                    purpose=purpose,
                    external_id=txid,
                    status=status,
                    created_at=now,
                    expires_at=now + timedelta(seconds=self._method.challenge_seconds),
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
        # Pending: pushes and calls whose answer this process is waiting on from Duo (a
        # long poll in flight), summed over the workers; each worker knows only its own.
        with PUSHES_PENDING.track_inprogress():
            poll = self._method.poll(str(challenge.external_id))
            answer = await self.ask_duo(poll, user, client)
        if answer is OutOfBandAnswer.PENDING:
            return PollResult(PushState.PENDING, pending_message(challenge.method))
        if answer in ANSWERED_NO:
            state = PushState(answer.value)
            said_no = await self.fatigue.answered_no(challenge, state, user, client)
            # Counted here, after its commit; two polls racing to the same answer (audited
            # once) would count it twice.
            SECOND_FACTOR_OUTCOMES.labels(challenge.method, answer.value).inc()
            return said_no
        if answer is OutOfBandAnswer.WAIVED:  # Duo waived it: no factor was passed
            completion = await self._bypassed(session, challenge, user, client)
            return PollResult(PushState.ALLOW, MESSAGES[PushState.ALLOW], completion)
        completion = await self._complete(session, challenge, user, client, device)
        return PollResult(PushState.ALLOW, MESSAGES[PushState.ALLOW], completion)

    async def verify_passcode(
        self, session: SessionView, passcode: str, client: ClientInfo
    ) -> Completion:
        """Count, then check: the attempt is counted (and committed) before Duo sees the
        passcode, and refused unseen once over the limit. Duo's "bypass" answer (its policy
        waives the factor for this user, whatever was typed) is a bypass, not a factor."""
        purpose, user = await self.challenger(session)
        key, passcode = lockout_keys(user.username)[1], passcode.strip()
        async with self._db.begin() as db:
            attempt = await throttle.take_attempt(db, key, PASSCODE_RULE, self._clock.now())
            if not attempt.allowed:
                count_when_committed(db, "duo_passcode", "locked")
                audit.record(
                    db,
                    self._clock,
                    "duo_passcode",
                    "locked",
                    username=user.username,
                    client=client,
                )
        if not attempt.allowed:  # raised after the commit, so the audit record stays
            raise SecondFactorError(PASSCODE_LOCKED)
        answer = OutOfBandAnswer.DENY
        if passcode.isdigit() and 6 <= len(passcode) <= 10:
            answer = await self.ask_duo(
                self._method.verify_passcode(user.username, passcode, client.ip), user, client
            )
        if answer not in (OutOfBandAnswer.ALLOW, OutOfBandAnswer.WAIVED):
            async with self._db.begin() as db:
                count_when_committed(db, "duo_passcode", "refused")
                audit.record(
                    db,
                    self._clock,
                    "duo_passcode",
                    "refused",
                    username=user.username,
                    client=client,
                )
                throttle.audit_lockout(
                    db, self._clock, attempt, username=user.username, client=client
                )
            raise SecondFactorError("That passcode is not valid.")
        if answer is OutOfBandAnswer.WAIVED:
            async with self._db.begin() as db:
                await throttle.refund(db, attempt)
            return await self.bypass(session, client, Bypass.DUO_ALLOWS)
        async with self._db.begin() as db:
            if purpose == "enrol":
                await self._access.hold_enrolment(db, session, user.id)
            await throttle.reset(db, key)
            enrolled_now = purpose == "enrol" and await self._mark_configured(db, user.id, None)
            return await self._sign_in(
                db, session, user, client, ("duo_passcode", "allow"), enrolled_now
            )

    async def bypass(self, session: SessionView, client: ClientInfo, cause: Bypass) -> Completion:
        """Signs in on the password alone because Duo waives the second factor (its bypass
        status) or cannot be asked (failmode safe) — only where the gate allows it (a sign-in
        of a user whose usable methods include Duo Push). Never a fresh second factor, never a
        remembered device; audited as `second_factor`/`bypassed` with the cause."""
        user = await self._access.may_fail_open(session, CODE)
        if user is None:
            if session.user_id is not None:
                refused = await self._access.user_of(session)
                await self.audit_event(
                    refused, client, "second_factor", "bypass_refused", cause=cause.value
                )
                SECOND_FACTOR_OUTCOMES.labels(CODE, "bypass_refused").inc()
            confirming = session.level is Level.SIGNED_IN  # a change: confirming is the point
            raise SecondFactorError(CANNOT_CONFIRM if confirming else BYPASS_REFUSALS[cause])
        async with self._db.begin() as db:
            return await self._sign_in(
                db, session, user, client, ("second_factor", "bypassed"), False, reason=cause.value
            )

    async def _bypassed(
        self, session: SessionView, challenge: ChallengeRow, user: UserRow, client: ClientInfo
    ) -> Completion:
        """A push or call Duo answered with "bypass": the challenge is used up, and the
        sign-in goes through `bypass` (its rules, its audit), never as a passed factor."""
        async with self._db.begin() as db:
            if not await Challenges(db).consume(
                challenge.id, user.id, session.id, self._clock.now()
            ):
                raise SecondFactorError("This login request was already used. Start again.")
        return await self.bypass(session, client, Bypass.DUO_ALLOWS)

    async def _complete(
        self,
        session: SessionView,
        challenge: ChallengeRow,
        user: UserRow,
        client: ClientInfo,
        device: str | None,
    ) -> Completion:
        await self._access.may_pass(session, CODE, challenge.purpose)  # the rules of now
        async with self._db.begin() as db:
            if challenge.purpose == "enrol":
                await self._access.hold_enrolment(db, session, user.id)
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
        # By method: a bypass is audited as `second_factor`, and it is Duo Push's.
        count_when_committed(db, CODE if kind == "second_factor" else kind, outcome)
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

    async def user_of(self, session: SessionView) -> UserRow:
        """The user of a session that passed the password (no decision on the method)."""
        return await self._access.user_of(session)

    async def ask_duo(self, call: Awaitable[T], user: UserRow, client: ClientInfo) -> T:
        """Awaits a Duo call; Duo's failures become failmode or a plain refusal (duo_calls)."""
        return await self._calls.ask(call, user, client)

    async def audit_event(
        self, user: UserRow, client: ClientInfo, kind: str, outcome: str, **detail: Any
    ) -> None:
        await self._calls.audit_event(user, client, kind, outcome, **detail)
