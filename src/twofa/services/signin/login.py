"""The first factor: password check (twofa's own users, or external directories in order),
throttling per user and per IP, the 2FA policy decision and the audit record. Unknown users
and wrong passwords get the same answer; a directory that cannot be asked gets its own.

Count, then check: each sign-in first takes an attempt on the client's address and on the
username (services.state.throttle), committed before any password is checked; one over either limit
is refused as locked, unchecked. A right password resets the username's count and gives back
its own attempt on the address (which others share: it must not clear their failures).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.config import Settings
from twofa.directories.base import Directory, DirectoryUnavailable, ExternalDirectory
from twofa.domain.access import in_networks
from twofa.domain.client import ClientInfo
from twofa.domain.policy import second_factor_policy
from twofa.services.second_factor.gate import enrolled_methods
from twofa.services.settings.console import ConsoleSettingsService
from twofa.services.settings.two_factor import enforced_for_everyone
from twofa.services.signin.directory_users import DirectoryConflict, ask_in_order, provision
from twofa.services.state import audit, throttle
from twofa.services.state.lockouts import lockout_keys
from twofa.services.state.sessions import Level, SessionService, SessionView
from twofa.storage.repositories import Users
from twofa.storage.tables import UserRow

LOCAL = "local"


class LoginResult(Enum):
    REFUSED = "refused"
    LOCKED = "locked"
    UNAVAILABLE = "unavailable"  # a directory could not be asked: neither yes nor no
    SIGNED_IN = "signed_in"
    SECOND_FACTOR = "second_factor"


@dataclass(frozen=True)
class _Attempts:
    """A sign-in's attempts, counted and allowed, on the username and on the address."""

    user: throttle.Attempt
    ip: throttle.Attempt


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
        external: Sequence[ExternalDirectory] = (),
    ) -> None:
        self._external = tuple(external)
        self._trusted_networks = tuple(settings.access.trusted_networks)
        self._db = sessions

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
        attempts = await self._take_attempts(username, client)
        if attempts is None:
            return LoginOutcome(LoginResult.LOCKED)
        async with self._db.begin() as db:
            owner = await Users(db).by_name(username)
            if (owner is not None and owner.directory != LOCAL) or (
                owner is None and self._external
            ):
                external = self._directories_for(owner)
            else:
                identity = await self._directory.authenticate(db, username, password)
                if identity is None:
                    self._refused(db, attempts, username, client)
                    return LoginOutcome(LoginResult.REFUSED)
                user = await Users(db).by_id(identity.user_id)
                assert user is not None
                return await self._signed_in(db, session, user, attempts, client)
        return await self._sign_in_external(session, username, password, client, external, attempts)

    async def _take_attempts(self, username: str, client: ClientInfo) -> _Attempts | None:
        """Counts the attempt on the address, then on the username, in one short transaction
        that writes first and is committed before any password is checked; None (audited) when
        either is over its limit. A locked address does not count against the username (a
        locked-out guesser cannot lock users out), and a locked username gives back the
        address's attempt. Always the address's key first, so two transactions never wait
        for each other's rows in opposite orders."""
        now = self._clock.now()
        async with self._db.begin() as db:
            ip = await throttle.take_attempt(db, f"login-ip:{client.ip}", self._per_ip, now)
            user = None
            if ip.allowed:
                user = await throttle.take_attempt(
                    db, lockout_keys(username)[0], self._per_user, now
                )
                if not user.allowed:
                    await throttle.refund(db, ip)
            if user is None or not user.allowed:
                audit.record(db, self._clock, "login", "locked", username=username, client=client)
                return None
        return _Attempts(user, ip)

    def _directories_for(self, owner: UserRow | None) -> list[ExternalDirectory]:
        """A known directory user asks only their own directory; a new name asks them all."""
        if owner is None:
            return list(self._external)
        return [d for d in self._external if d.name == owner.directory]

    async def _sign_in_external(
        self,
        session: SessionView,
        username: str,
        password: str,
        client: ClientInfo,
        directories: list[ExternalDirectory],
        attempts: _Attempts,
    ) -> LoginOutcome:
        """Asks the directories outside any transaction (they are network calls)."""
        try:
            vouched = await ask_in_order(directories, username, password)
        except DirectoryUnavailable as exc:
            async with self._db.begin() as db:
                # Nothing was checked: neither attempt counts (the address's key first).
                await throttle.refund(db, attempts.ip)
                await throttle.refund(db, attempts.user)
                audit.record(
                    db,
                    self._clock,
                    "login",
                    "directory_unavailable",
                    username=username,
                    client=client,
                    error=str(exc),
                )
            return LoginOutcome(LoginResult.UNAVAILABLE)
        async with self._db.begin() as db:
            if vouched is None:
                self._refused(db, attempts, username, client)
                return LoginOutcome(LoginResult.REFUSED)
            try:
                user = await provision(db, vouched, self._clock.now())
            except DirectoryConflict as exc:
                audit.record(
                    db,
                    self._clock,
                    "login",
                    "directory_conflict",
                    username=username,
                    client=client,
                    error=str(exc),
                )
                self._refused(db, attempts, username, client)
                return LoginOutcome(LoginResult.REFUSED)
            if not user.enabled:
                self._refused(db, attempts, username, client)
                return LoginOutcome(LoginResult.REFUSED)
            return await self._signed_in(db, session, user, attempts, client, vouched.directory)

    async def _signed_in(
        self,
        db: AsyncSession,
        session: SessionView,
        user: UserRow,
        attempts: _Attempts,
        client: ClientInfo,
        directory: str = LOCAL,
    ) -> LoginOutcome:
        """The password is right: decide on the second factor and open the session."""
        await throttle.refund(db, attempts.ip)  # the address's key first, as when counting
        await throttle.reset(db, attempts.user.key)
        everyone = await enforced_for_everyone(db)
        enabled_groups = await Users(db).group_names(user.id, twofa_only=True)
        decision = second_factor_policy(user.twofa_enabled, enabled_groups, everyone)
        required = decision.required
        reason = decision.reason
        # The office network may skip a second factor the user has set up; one who has not
        # must still enrol (a password alone must never be the way in for good).
        if (
            required
            and in_networks(client.ip, self._trusted_networks)
            and await enrolled_methods(db, user.id)
        ):
            required, reason = False, "skipped: sign-in from a trusted network"
        level = Level.AWAITING_SECOND_FACTOR if required else Level.SIGNED_IN
        token, view = await self._session_service.promote(db, session, user.id, level, client)
        audit.record(
            db,
            self._clock,
            "login",
            "password_ok",
            username=user.username,
            client=client,
            second_factor=reason,
            directory=directory,
        )
        result = LoginResult.SECOND_FACTOR if required else LoginResult.SIGNED_IN
        return LoginOutcome(result, token, view)

    def _refused(
        self, db: AsyncSession, attempts: _Attempts, username: str, client: ClientInfo
    ) -> None:
        """A wrong password (its attempts counted already): audited, with the lock-out of each
        key this failure locks."""
        audit.record(db, self._clock, "login", "bad_password", username=username, client=client)
        for attempt in (attempts.user, attempts.ip):
            throttle.audit_lockout(db, self._clock, attempt, username=username, client=client)
