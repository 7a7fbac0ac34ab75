"""The push fatigue guard: someone who has a user's password must not wear them down with
pushes until they approve one. Pushes, calls and texts to a user's phone share a daily cap,
counted before anything reaches Duo, and a push or call the user answers "This wasn't me"
(Duo's fraud result) stops all of them for the admin's `fraud_pause_minutes`.

Both live in the throttle table (services.state.throttle, keys from
services.state.lockouts), so every
gateway process sees them at once, and the admin's Unlock in User Management lifts them early.
Passcodes typed from Duo Mobile or a token stay accepted during a pause: they buzz nothing, and
they prove the phone is in the user's hand.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.config import DuoSettings
from twofa.domain.client import ClientInfo
from twofa.duo import DuoError
from twofa.methods.base import OutOfBandAnswer, OutOfBandMethod
from twofa.services.duo.rules import (
    ANSWERED_NO,
    MESSAGES,
    POLLED_CHALLENGES,
    PUSH_CHALLENGE,
    FactorOffer,
    PollResult,
    PushState,
)
from twofa.services.second_factor.outcomes import SecondFactorError
from twofa.services.state import audit, throttle
from twofa.services.state.lockouts import phone_day_key, phone_minute_key, push_pause_key
from twofa.storage.audit_log import AuditCriteria, AuditSearch
from twofa.storage.challenges import Challenges
from twofa.storage.tables import ChallengeRow, UserRow

log = logging.getLogger("twofa.push_fatigue")

FATIGUE_KIND: Final = "push_fatigue"  # audit kind of a pause (outcome `paused`, with `until`)
DAY: Final = timedelta(days=1)
MINUTE: Final = timedelta(minutes=1)
SETTLE_WINDOW: Final = timedelta(minutes=15)  # earlier pushes and calls read before a new one
SETTLE_LATEST: Final = 3  # at most this many of them (the per-minute limit's default)
SETTLE_WAIT_S: Final = 1.0  # how long one may take to answer (one still waiting holds a new one)
LONGEST_PAUSE: Final = timedelta(minutes=10080)  # DuoSettings.fraud_pause_minutes' maximum
MOST_PAUSES_LISTED: Final = 500  # fraud reports are rare; the Overview reads this many at most


def utc_time(moment: datetime, now: datetime) -> str:
    """ "14:05 UTC" today, "2026-11-29 14:05 UTC" on another day."""
    shown = "%H:%M" if moment.date() == now.date() else "%Y-%m-%d %H:%M"
    return f"{moment.strftime(shown)} UTC"


def paused_message(until: datetime, now: datetime) -> str:
    return (
        "You reported a Duo Push you did not make, so pushes, calls and texts to your phone "
        f"are paused until {utc_time(until, now)}. Sign in with another method (or a "
        "passcode from Duo Mobile), or ask your administrator to lift the pause."
    )


def fraud_answer_message(until: datetime, now: datetime) -> str:
    """What the page says right after the user answered "This wasn't me"."""
    return (
        f"{MESSAGES[PushState.FRAUD]} Pushes to your phone are paused until "
        f"{utc_time(until, now)}; use another method to sign in."
    )


def daily_cap_message(cap: int, until: datetime, now: datetime) -> str:
    return (
        f"Your phone has had {cap} pushes, calls and texts in the last day, the most your "
        f"administrator allows, so no more are sent until {utc_time(until, now)}. Sign in with "
        "another method (or a passcode from Duo Mobile), or ask your administrator."
    )


class PushesPaused(SecondFactorError):
    """The user reported a push as fraud: nothing goes to their phone until `until`."""

    def __init__(self, message: str, until: datetime) -> None:
        super().__init__(message)
        self.until = until

    @property
    def other_methods_may_work(self) -> bool:
        return True


class DailyCapReached(SecondFactorError):
    """The user's phone had the day's pushes, calls and texts; nothing more until `until`."""

    def __init__(self, message: str, until: datetime) -> None:
        super().__init__(message)
        self.until = until

    @property
    def other_methods_may_work(self) -> bool:
        return True


def without_phone_requests(offer: FactorOffer) -> FactorOffer:
    """What a paused user is offered: passcodes only (nothing that reaches their phone)."""
    return replace(offer, push=False, phone=(), sms=())


@dataclass(frozen=True)
class PausedUser:
    username: str
    until: datetime


class PushFatigue:
    """The guard for one set of Duo settings (the caps come from `settings`)."""

    def __init__(
        self,
        db: async_sessionmaker[AsyncSession],
        clock: Clock,
        settings: DuoSettings,
        method: OutOfBandMethod,
    ) -> None:
        self._db = db
        self._clock = clock
        self._settings = settings
        self._method = method  # to read how earlier pushes ended

    async def limit_phone_requests(
        self, user: UserRow, client: ClientInfo, kind: str, too_fast: str
    ) -> None:
        """Refuses (and audits), before anything reaches Duo, a push, call or text while the
        user's phone is paused after a fraud report, beyond the per-minute limit they share
        (`too_fast`), or beyond the daily cap: both counted before Duo is asked."""
        await self._settle_earlier_requests(user, client)
        await self.refuse_if_paused(user, client, kind)
        await self.count_request(user, client, kind, too_fast)

    async def _settle_earlier_requests(self, user: UserRow, client: ClientInfo) -> None:
        """Reads how the user's latest pushes and calls ended when nobody polled them (a
        script sending pushes never asks), so that a "This wasn't me" pauses the phone before
        it is asked again. Duo's auth_status long-polls a push still waiting, so each is given
        `SETTLE_WAIT_S`, all at once; one still waiting, or Duo not answering, is left as is."""
        since = self._clock.now() - SETTLE_WINDOW
        async with self._db.begin() as db:
            earlier = await Challenges(db).unanswered(
                user.id, POLLED_CHALLENGES, since, SETTLE_LATEST
            )
        answers = await asyncio.gather(*(self._answer_if_any(row) for row in earlier))
        for challenge, answer in zip(earlier, answers, strict=True):
            if answer in ANSWERED_NO:
                await self.answered_no(challenge, PushState(answer.value), user, client)

    async def _answer_if_any(self, challenge: ChallengeRow) -> OutOfBandAnswer:
        try:
            return await asyncio.wait_for(
                self._method.poll(str(challenge.external_id)), SETTLE_WAIT_S
            )
        except (TimeoutError, DuoError):
            return OutOfBandAnswer.PENDING

    async def answered_no(
        self, challenge: ChallengeRow, state: PushState, user: UserRow, client: ClientInfo
    ) -> PollResult:
        """Records a denied, timed-out or fraud answer once, however many polls race; a
        fraud report pauses the user's phone in the same transaction."""
        paused_until = None
        async with self._db.begin() as db:
            if await Challenges(db).settle(challenge.id, state.value):
                audit.record(
                    db,
                    self._clock,
                    challenge.method,
                    state.value,
                    username=user.username,
                    client=client,
                )
                if state is PushState.FRAUD:
                    paused_until = await self.pause(db, user, client, challenge.method)
        if paused_until is not None:
            return PollResult(state, fraud_answer_message(paused_until, self._clock.now()))
        return PollResult(state, MESSAGES[state])

    async def paused_until(self, username: str) -> datetime | None:
        async with self._db.begin() as db:
            return await throttle.locked_until(db, push_pause_key(username), self._clock.now())

    async def refuse_if_paused(self, user: UserRow, client: ClientInfo, kind: str) -> None:
        """Refuses (audited as `kind`/`paused`) a push, call or text during a pause."""
        now = self._clock.now()
        async with self._db.begin() as db:
            until = await throttle.locked_until(db, push_pause_key(user.username), now)
            if until is not None:
                audit.record(
                    db,
                    self._clock,
                    kind,
                    "paused",
                    username=user.username,
                    client=client,
                    until=until.isoformat(),
                )
        if until is not None:
            raise PushesPaused(paused_message(until, now), until)

    async def count_request(
        self, user: UserRow, client: ClientInfo, kind: str, too_fast: str
    ) -> None:
        """Takes the request's number of the minute and of the day, each in one atomic
        statement (count, then check), committed before Duo is asked, so concurrent requests
        never send more than either limit. Past the per-minute limit: refused with
        `too_fast`, audited as `kind`/`rate_limited` with `limit` "per_minute" (the day is not
        used up). Past the daily cap: refused, audited with `limit` "daily", and the minute's
        attempt given back. The day is a 24-hour window opened by its first request; the
        request that reaches the cap locks the rest out for 24 hours from then. A request Duo
        then fails still counts."""
        settings, now = self._settings, self._clock.now()
        per_minute = throttle.ThrottleRule(settings.pushes_per_minute, MINUTE, MINUTE)
        per_day = throttle.ThrottleRule(settings.pushes_per_day, DAY, DAY)
        async with self._db.begin() as db:
            minute = await throttle.take_attempt(
                db, phone_minute_key(user.username), per_minute, now
            )
            day = None
            if minute.allowed:
                day = await throttle.take_attempt(db, phone_day_key(user.username), per_day, now)
            refusal = self._refusal(db, user, client, kind, too_fast, minute, day)
            if day is not None and not day.allowed:
                await throttle.refund(db, minute)
        if refusal is not None:  # raised after the commit, so the audit record stays
            raise refusal

    def _refusal(
        self,
        db: AsyncSession,
        user: UserRow,
        client: ClientInfo,
        kind: str,
        too_fast: str,
        minute: throttle.Attempt,
        day: throttle.Attempt | None,
    ) -> SecondFactorError | None:
        """The refusal for attempts over a limit, audited in `db`; None within both."""
        now = self._clock.now()
        if not minute.allowed:
            audit.record(
                db,
                self._clock,
                kind,
                "rate_limited",
                username=user.username,
                client=client,
                limit="per_minute",
            )
            return SecondFactorError(too_fast)
        if day is None or day.allowed:
            return None
        cap, until = day.limit, day.locked_until or now + DAY
        audit.record(
            db,
            self._clock,
            kind,
            "rate_limited",
            username=user.username,
            client=client,
            limit="daily",
            per_day=cap,
            until=until.isoformat(),
        )
        return DailyCapReached(daily_cap_message(cap, until, now), until)

    async def pause(
        self, db: AsyncSession, user: UserRow, client: ClientInfo, reported: str
    ) -> datetime:
        """After a fraud report on a `reported` challenge (a push or a call), in the caller's
        transaction: nothing more goes to the phone for `fraud_pause_minutes` from now (a
        later report starts the pause afresh). Audited as `push_fatigue`/`paused` and logged
        at WARNING; returns when the pause ends."""
        now, minutes = self._clock.now(), self._settings.fraud_pause_minutes
        pause = timedelta(minutes=minutes)
        key = push_pause_key(user.username)
        await throttle.reset(db, key)
        attempt = await throttle.take_attempt(db, key, throttle.ThrottleRule(1, pause, pause), now)
        until = attempt.locked_until or now + pause
        audit.record(
            db,
            self._clock,
            FATIGUE_KIND,
            "paused",
            username=user.username,
            client=client,
            reported=reported,
            minutes=minutes,
            until=until.isoformat(),
        )
        log.warning(
            "%s reported a Duo %s as fraud (not theirs): pushes, calls and texts to their "
            "phone are paused until %s",
            user.username,
            "push" if reported == PUSH_CHALLENGE else "call",
            until.isoformat(),
        )
        return until


async def paused_users(db: AsyncSession, now: datetime) -> list[PausedUser]:
    """Who is paused now, newest report first: the users of recent pauses (their audit
    records) whose pause is still in force (their throttle key: an Unlock ends it)."""
    criteria = AuditCriteria(kind=FATIGUE_KIND, outcome="paused", since=now - LONGEST_PAUSE)
    rows = await AuditSearch(db).newest_first(criteria, offset=0, limit=MOST_PAUSES_LISTED)
    paused = []
    for username in dict.fromkeys(row.username for row in rows):
        until = await throttle.locked_until(db, push_pause_key(username), now)
        if until is not None:
            paused.append(PausedUser(username, until))
    return paused
