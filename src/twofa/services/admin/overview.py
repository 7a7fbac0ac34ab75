"""The figures on the console's Overview page: who is protected, what happened in the last
24 hours (fraud reports included), whose phone is paused after one, which usernames were under
a distributed password attack in the last hour, and how Duo is configured.
Everything is read from the database; Duo itself is not called, so the page stays cheap however
often it is opened."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.services.duo.push_fatigue import FATIGUE_KIND, PausedUser, paused_users
from twofa.services.settings.console import ConsoleSettingsService
from twofa.services.settings.two_factor import Enforcement
from twofa.services.signin.attack_alerts import attacked_usernames
from twofa.storage.audit_log import AuditSearch
from twofa.storage.repositories import UserCounts

RECENT: Final = timedelta(hours=24)
DENIED_PUSH_OUTCOMES: Final = ("deny", "fraud")


@dataclass(frozen=True)
class UserFigures:
    total: int
    disabled: int
    required: int
    enrolled: int
    pending: int
    everyone: bool


@dataclass(frozen=True)
class ActivityFigures:
    since: datetime
    sign_ins: int
    denied_pushes: int
    failmode_events: int
    duo_errors: int
    fraud_reports: int  # pushes or calls answered "This wasn't me" (each pauses the phone)


@dataclass(frozen=True)
class DuoStatus:
    configured: bool
    source: str  # "console", "settings file"
    api_hostname: str
    failmode: str


@dataclass(frozen=True)
class Overview:
    users: UserFigures
    activity: ActivityFigures
    duo: DuoStatus
    paused: tuple[PausedUser, ...] = ()  # whose phone gets no push now, after a fraud report
    # Whose sign-ins were slowed in the last hour: wrong passwords from many networks.
    attacked: tuple[str, ...] = ()


class OverviewService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        console: ConsoleSettingsService,
        *,
        exempt_admins: bool = False,
    ) -> None:
        """`exempt_admins`: the demo's `admins_without_second_factor`."""
        self._db = sessions
        self._clock = clock
        self._console = console
        self._admins_required = not exempt_admins

    async def overview(self) -> Overview:
        return Overview(
            await self.users(),
            await self.activity(),
            await self.duo(),
            await self.paused(),
            await self.attacked(),
        )

    async def users(self) -> UserFigures:
        everyone = (await self._console.two_factor()).enforcement is Enforcement.EVERYONE
        async with self._db.begin() as db:
            counts = UserCounts(db)
            return UserFigures(
                total=await counts.total(),
                disabled=await counts.disabled(),
                required=await counts.required(everyone=everyone, admins=self._admins_required),
                enrolled=await counts.enrolled(),
                pending=await counts.pending(everyone=everyone, admins=self._admins_required),
                everyone=everyone,
            )

    async def activity(self) -> ActivityFigures:
        since = self._clock.now() - RECENT
        async with self._db.begin() as db:
            search = AuditSearch(db)
            return ActivityFigures(
                since=since,
                sign_ins=await search.count_events("login", ("password_ok",), since),
                denied_pushes=await search.count_events("duo_push", DENIED_PUSH_OUTCOMES, since),
                failmode_events=await search.count_events("failmode", (), since),
                duo_errors=await search.count_events("duo_error", (), since),
                fraud_reports=await search.count_events(FATIGUE_KIND, ("paused",), since),
            )

    async def paused(self) -> tuple[PausedUser, ...]:
        """Users whose pushes, calls and texts are paused now after a fraud report."""
        async with self._db.begin() as db:
            return tuple(await paused_users(db, self._clock.now()))

    async def attacked(self) -> tuple[str, ...]:
        """Usernames under a distributed password attack in the last hour."""
        async with self._db.begin() as db:
            return tuple(await attacked_usernames(db, self._clock.now()))

    async def duo(self) -> DuoStatus:
        """The Duo settings in force, without their secrets and without asking Duo."""
        saved = await self._console.duo()
        effective = await self._console.effective_duo()
        return DuoStatus(
            configured=effective.configured,
            source="console" if saved is not None else "settings file",
            api_hostname=effective.api_hostname,
            failmode=effective.failmode.value,
        )
