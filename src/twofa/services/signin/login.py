"""The first factor: password check (twofa's own users, or external directories in order),
throttling, the 2FA policy decision and the audit record. Unknown users and wrong passwords
get the same answer; a directory that cannot be asked gets its own.

Count, then check: each sign-in first takes an attempt on the client's address, on the
username from the client's network (an IPv4 address, an IPv6 /64: domain.sign_in_limits) and
on the username from every network (services.state.throttle), committed before any password
is checked. One over the address's or the network's limit is refused as locked, unchecked:
an outsider hammering a name locks it for their own network only, never for its owner
elsewhere. Over the every-network limit (a distributed attack) nothing is refused: each
attempt waits first, 1 s, 2 s, 4 s … up to a cap, after the commit (no transaction stays
open while it waits), and the first one to wait is audited as an alert. A right password
clears its network's count and gives back its own attempt on the address and on every
network (both shared with others: it must not clear their failures).

Each sign-in is counted in the metrics by its result (`twofa_sign_ins_total`), after the
transaction that audited it; `busy` when the hashing pool was full and nothing was checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from typing import Final

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.config import Settings
from twofa.directories.base import DirectoryUnavailable, ExternalDirectory
from twofa.directories.local import LocalDirectory, StoredPassword
from twofa.domain.access import in_networks
from twofa.domain.account_input import MAX_NAME_LENGTH
from twofa.domain.client import ClientInfo
from twofa.domain.sign_in_limits import client_network, slowdown_seconds
from twofa.security.hashing_pool import HashingBusy
from twofa.services.second_factor.gate import enrolled_methods
from twofa.services.settings.console import ConsoleSettingsService
from twofa.services.settings.two_factor import policy_of
from twofa.services.signin.attack_alerts import ATTACK_KIND, ATTACK_OUTCOME
from twofa.services.signin.directory_users import DirectoryConflict, ask_in_order, provision
from twofa.services.state import audit, throttle
from twofa.services.state.lockouts import sign_in_all_networks_key, sign_in_network_key
from twofa.services.state.sessions import Level, SessionService, SessionView
from twofa.storage.repositories import Users
from twofa.storage.tables import UserRow
from twofa.telemetry import SIGN_INS

LOCAL = "local"


class LoginResult(Enum):
    REFUSED = "refused"
    LOCKED = "locked"
    UNAVAILABLE = "unavailable"  # a directory could not be asked: neither yes nor no
    SIGNED_IN = "signed_in"
    SECOND_FACTOR = "second_factor"


# Bound once, and so present at 0 from the start.
_COUNTED: Final = {result: SIGN_INS.labels(result.value) for result in LoginResult}
_BUSY: Final = SIGN_INS.labels("busy")


@dataclass(frozen=True)
class _Attempts:
    """A sign-in's attempts, counted and allowed: on the address, on the username from the
    client's network and from every network; how long it waits before it is checked; and the
    account of that name, read in the same transaction (None: none yet)."""

    ip: throttle.Attempt
    network: throttle.Attempt
    all_networks: throttle.Attempt
    delay_s: float
    owner: UserRow | None


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
        directory: LocalDirectory,
        clock: Clock,
        settings: Settings,
        console: ConsoleSettingsService,
        external: Sequence[ExternalDirectory] = (),
    ) -> None:
        self._external = tuple(external)
        self._trusted_networks = tuple(settings.access.trusted_networks)
        self._exempt_admins = settings.admins_without_second_factor
        self._db = sessions

        self._session_service = session_service
        self._directory = directory
        self._clock = clock
        lockout = timedelta(minutes=settings.lockout_minutes)
        self._per_network = throttle.ThrottleRule(
            settings.login_failures_per_user, lockout, lockout
        )
        self._per_ip = throttle.ThrottleRule(settings.login_failures_per_ip, lockout, lockout)
        # Its "lock-out" is the time attempts are slowed for; nothing is refused on this key.
        self._all_networks = throttle.ThrottleRule(
            settings.login_failures_per_user_all_networks, lockout, lockout
        )
        self._slowdown_cap_s = float(settings.login_slowdown_max_seconds)

    async def sign_in(
        self, session: SessionView, username: str, password: str, client: ClientInfo
    ) -> LoginOutcome:
        try:
            outcome = await self._sign_in(session, username, password, client)
        except HashingBusy:
            _BUSY.inc()
            raise
        _COUNTED[outcome.result].inc()
        return outcome

    async def _sign_in(
        self, session: SessionView, username: str, password: str, client: ClientInfo
    ) -> LoginOutcome:
        username = username.strip()
        if len(username) > MAX_NAME_LENGTH:
            return await self._name_too_long(username, client)
        attempts = await self._take_attempts(username, client)
        if attempts is None:
            return LoginOutcome(LoginResult.LOCKED)
        if attempts.delay_s:
            await self._clock.sleep(attempts.delay_s)  # committed: no transaction waits too
        owner = attempts.owner
        if (owner is not None and owner.directory != LOCAL) or (owner is None and self._external):
            external = self._directories_for(owner)
            return await self._sign_in_external(
                session, username, password, client, external, attempts
            )
        stored = StoredPassword.of(owner)
        try:
            checked = await self._directory.check(stored, password)  # in no transaction
        except HashingBusy:  # nothing was checked: the attempt must not count
            await self._give_back(attempts)
            raise
        async with self._db.begin() as db:
            user = await self._directory.settle(db, stored, checked)
            if user is None:
                self._refused(db, attempts, username, client)
                return LoginOutcome(LoginResult.REFUSED)
            return await self._signed_in(db, session, user, attempts, client)

    async def _give_back(self, attempts: _Attempts) -> None:
        async with self._db.begin() as db:
            for attempt in (attempts.ip, attempts.network, attempts.all_networks):
                await throttle.refund(db, attempt)

    async def _take_attempts(self, username: str, client: ClientInfo) -> _Attempts | None:
        """Counts the attempt on the address, then on the username from the client's network,
        then from every network, in one short transaction that writes first and is committed
        before any password is checked (it reads the name's account last, for the check);
        None (audited) when the address or the network is
        over its limit. A locked address counts nothing against the username (a locked-out
        guesser cannot lock users out); a locked network gives back the address's attempt and
        counts nothing against every network (only checked passwords count there). Always in
        this order, so two transactions never wait for each other's rows in opposite orders."""
        now = self._clock.now()
        network_key = sign_in_network_key(username, client_network(client.ip))
        async with self._db.begin() as db:
            ip = await throttle.take_attempt(db, f"login-ip:{client.ip}", self._per_ip, now)
            network = None
            if ip.allowed:
                network = await throttle.take_attempt(db, network_key, self._per_network, now)
                if not network.allowed:
                    await throttle.refund(db, ip)
            if network is None or not network.allowed:
                audit.record(db, self._clock, "login", "locked", username=username, client=client)
                return None
            everywhere = await throttle.take_attempt(
                db, sign_in_all_networks_key(username), self._all_networks, now
            )
            delay_s = slowdown_seconds(everywhere.number, everywhere.limit, self._slowdown_cap_s)
            if everywhere.number == everywhere.limit + 1:  # the first attempt to wait
                self._alert(db, everywhere, username, client)
            owner = await Users(db).by_name(username)
        return _Attempts(ip, network, everywhere, delay_s, owner)

    def _alert(
        self, db: AsyncSession, everywhere: throttle.Attempt, username: str, client: ClientInfo
    ) -> None:
        """A distributed attack on `username`: the Overview, the Status page and `twofa doctor`
        show it (services.signin.attack_alerts), and the log has it at WARNING."""
        until = everywhere.locked_until
        audit.record(
            db,
            self._clock,
            ATTACK_KIND,
            ATTACK_OUTCOME,
            username=username,
            client=client,
            limit=everywhere.limit,
            network=client_network(client.ip),
            until=until.isoformat() if until is not None else None,
        )

    async def _name_too_long(self, username: str, client: ClientInfo) -> LoginOutcome:
        """No account has a name this long (domain.account_input): refused as a wrong password
        is, with nothing to count (its keys would not fit the throttle table) or check."""
        async with self._db.begin() as db:
            name = username[:MAX_NAME_LENGTH]
            audit.record(
                db,
                self._clock,
                "login",
                "bad_password",
                username=name,
                client=client,
                too_long=True,
            )
        return LoginOutcome(LoginResult.REFUSED)

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
                # Nothing was checked: no attempt counts (in the order they were counted).
                await throttle.refund(db, attempts.ip)
                await throttle.refund(db, attempts.network)
                await throttle.refund(db, attempts.all_networks)
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
        # In the order they were counted. Every network's count is shared with whoever
        # attacks the name: a right password gives back its own attempt, it clears nothing.
        await throttle.refund(db, attempts.ip)
        await throttle.reset(db, attempts.network.key)
        await throttle.refund(db, attempts.all_networks)
        decision = await policy_of(db, user, exempt_admins=self._exempt_admins)
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
        for attempt in (attempts.network, attempts.ip):
            throttle.audit_lockout(db, self._clock, attempt, username=username, client=client)
