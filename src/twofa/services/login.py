"""The first factor: password check, throttling per user and per IP, the 2FA policy decision
and the audit record. Unknown users and wrong passwords get the same answer and cost."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import Enum

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.config import Settings
from twofa.directories.base import Directory
from twofa.domain.client import ClientInfo
from twofa.domain.policy import second_factor_policy
from twofa.services import audit, throttle
from twofa.services.accounts import lockout_keys
from twofa.services.console import ConsoleSettingsService, Enforcement
from twofa.services.sessions import Level, SessionService, SessionView
from twofa.storage.repositories import Users


class LoginResult(Enum):
    REFUSED = "refused"
    LOCKED = "locked"
    SIGNED_IN = "signed_in"
    SECOND_FACTOR = "second_factor"


@dataclass(frozen=True)
class LoginOutcome:
    result: LoginResult
    token: str | None = None
    session: SessionView | None = None


class LoginService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        session_service: SessionService,
        directory: Directory,
        clock: Clock,
        settings: Settings,
        console: ConsoleSettingsService,
    ) -> None:
        self._db = sessions
        self._console = console
        self._session_service = session_service
        self._directory = directory
        self._clock = clock
        lockout = timedelta(minutes=settings.lockout_minutes)
        self._per_user = throttle.ThrottleRule(settings.login_failures_per_user, lockout, lockout)
        self._per_ip = throttle.ThrottleRule(settings.login_failures_per_ip, lockout, lockout)

    async def sign_in(
        self, session: SessionView, username: str, password: str, client: ClientInfo
    ) -> LoginOutcome:
        username = username.strip()
        now = self._clock.now()
        everyone = (await self._console.two_factor()).enforcement is Enforcement.EVERYONE
        user_key, ip_key = lockout_keys(username)[0], f"login-ip:{client.ip}"
        async with self._db.begin() as db:
            for key in (user_key, ip_key):
                if await throttle.locked_until(db, key, now):
                    audit.record(
                        db, self._clock, "login", "locked", username=username, client=client
                    )
                    return LoginOutcome(LoginResult.LOCKED)
            identity = await self._directory.authenticate(db, username, password)
            if identity is None:
                await self._count_failure(db, user_key, ip_key, username, client)
                return LoginOutcome(LoginResult.REFUSED)
            await throttle.reset(db, user_key)
            user = await Users(db).by_id(identity.user_id)
            assert user is not None
            enabled_groups = await Users(db).group_names(user.id, twofa_only=True)
            decision = second_factor_policy(user.twofa_enabled, enabled_groups, everyone)
            level = Level.PASSWORD if decision.required else Level.SIGNED_IN
            token, view = await self._session_service.promote(db, session, user.id, level, client)
            audit.record(
                db,
                self._clock,
                "login",
                "password_ok",
                username=user.username,
                client=client,
                second_factor=decision.reason,
            )
            result = LoginResult.SECOND_FACTOR if decision.required else LoginResult.SIGNED_IN
            return LoginOutcome(result, token, view)

    async def _count_failure(
        self, db: AsyncSession, user_key: str, ip_key: str, username: str, client: ClientInfo
    ) -> None:
        now = self._clock.now()
        audit.record(db, self._clock, "login", "bad_password", username=username, client=client)
        for key, rule in ((user_key, self._per_user), (ip_key, self._per_ip)):
            until = await throttle.record_failure(db, key, rule, now)
            if until is not None:
                audit.record(
                    db,
                    self._clock,
                    "lockout",
                    "locked",
                    username=username,
                    client=client,
                    key=key,
                    until=until.isoformat(),
                )
