"""Builds the gateway's object graph from settings, once, at start-up (and for each CLI call).

Nothing here is global: the web app and the CLI each hold one `Gateway` and pass it on. The
Duo service is rebuilt when an admin saves new Duo settings in the console: each node notices
within a second (the console's settings cache compares their version at most once a second;
a save on this node is seen at once); so are the console's access rules
(services.access.live_rules).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass, field
from functools import cached_property

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from twofa.clock import Clock, SystemClock
from twofa.config import DuoSettings, Settings
from twofa.directories.base import ExternalDirectory
from twofa.directories.crowd import CrowdDirectory, make_crowd_http_client
from twofa.directories.ldap import LdapDirectory
from twofa.directories.local import LocalDirectory
from twofa.duo import (
    DuoAuthClient,
    DuoCredentials,
    DuoEndpoint,
    DuoTimeouts,
    InvalidEndpoint,
    make_http_client,
)
from twofa.methods.backup_codes import BackupCodesMethod
from twofa.methods.duo_push import DuoPushMethod
from twofa.methods.email_otp import EmailOtpMethod
from twofa.methods.registry import MethodRegistry
from twofa.methods.security_questions import SecurityQuestionsMethod
from twofa.methods.totp import TotpMethod
from twofa.methods.webauthn import WebAuthnMethod
from twofa.security.hashing_pool import HashingPool
from twofa.security.passwords import Argon2Cost, PasswordHashing
from twofa.security.sealing import Sealer
from twofa.services.access.forward_auth import ForwardAuthService
from twofa.services.access.live_rules import LiveConsoleRules
from twofa.services.access.rules import AccessRuleService
from twofa.services.admin.accounts import AccountService
from twofa.services.admin.api_tokens import ApiTokenService
from twofa.services.admin.audit_query import AuditQueryService
from twofa.services.admin.console_access import ConsoleAccessService
from twofa.services.admin.console_users import ConsoleUsersService
from twofa.services.admin.key_rotation import KeyRotationService
from twofa.services.admin.overview import OverviewService
from twofa.services.duo.push import DuoPushService
from twofa.services.feed_wiring import build_change_feed, follow_changes
from twofa.services.idp.admission import AdmissionExplanation
from twofa.services.idp.admission import explain as explain_admission
from twofa.services.idp.applications import ApplicationService
from twofa.services.idp.backchannel import BackchannelLogout
from twofa.services.idp.provider import OidcProvider
from twofa.services.idp.signing_keys import SigningKeyService
from twofa.services.mail.delivery import SmtpMailer, SmtpSettingsService
from twofa.services.second_factor.authenticator_options import AuthenticatorOptionsService
from twofa.services.second_factor.email_code_options import EmailCodeOptionsService
from twofa.services.second_factor.gate import MethodGate
from twofa.services.second_factor.my_methods import MyMethodsService
from twofa.services.second_factor.pipeline import SecondFactorService
from twofa.services.second_factor.question_pool import QuestionPoolService
from twofa.services.settings.cache import SettingsCache
from twofa.services.settings.console import ConsoleSettingsService
from twofa.services.signin.enrolment_grace import EnrolmentGraceService
from twofa.services.signin.group_refresh import GroupRefresher
from twofa.services.signin.login import LoginService
from twofa.services.signin.remembered_devices import RememberedDeviceService
from twofa.services.state.change_feed import ChangeFeed
from twofa.services.state.change_outbox import ChangeOutbox
from twofa.services.state.feed_state import FeedState
from twofa.services.state.sessions import SessionService
from twofa.storage.change_notes import Changes
from twofa.storage.database import (
    check_schema,
    create_engine,
    session_factory,
    side_engine,
    single_statement_factory,
)

DUO_CONNECTIONS = 2000  # pending pushes one process may follow at once
log = logging.getLogger(__name__)


def build_duo_service(
    duo: DuoSettings,
    http: httpx.AsyncClient,
    db: async_sessionmaker[AsyncSession],
    sessions: SessionService,
    clock: Clock,
    gate: MethodGate,
    method: DuoPushMethod,
    *,
    allow_custom_host: bool,
) -> DuoPushService | None:
    """Connects the registered Duo Push method to the Duo application of `duo` (the settings
    in force) and builds the service on it; None while Duo has no keys, or while its host is
    not one of Duo's and custom hosts are not allowed (saved in dev mode, now in production)."""
    if not duo.configured:
        return None
    try:
        endpoint = DuoEndpoint.parse(duo.api_hostname, allow_custom_host=allow_custom_host)
    except InvalidEndpoint as refused:
        log.error("Duo Push is off: the saved API hostname cannot be used: %s", refused)
        return None
    client = DuoAuthClient(
        http,
        credentials=DuoCredentials(duo.ikey, duo.skey.get_secret_value()),
        endpoint=endpoint,
        timeouts=DuoTimeouts(
            connect=duo.timeout_s,
            read=duo.timeout_s,
            long_poll_read=duo.long_poll_s + duo.timeout_s,
        ),
    )
    method.connect(client, duo)
    return DuoPushService(db, method, sessions, clock, duo, gate)


def password_hashing(settings: Settings) -> PasswordHashing:
    """Local users' password hashes at the argon2 cost of `[passwords]`."""
    cost = settings.passwords
    return PasswordHashing(
        Argon2Cost(cost.argon2_time_cost, cost.argon2_memory_kib, cost.argon2_parallelism)
    )


def external_directories(
    settings: Settings,
) -> tuple[list[ExternalDirectory], list[httpx.AsyncClient]]:
    """The external directories the settings list, in their order, and the HTTP clients
    they hold (closed with the gateway)."""
    directories: list[ExternalDirectory] = []
    clients: list[httpx.AsyncClient] = []
    for name in settings.directories:
        if name == "crowd" and settings.crowd is not None:
            client = make_crowd_http_client(settings.crowd)
            clients.append(client)
            directories.append(CrowdDirectory(settings.crowd, client))
        elif name == "ldap" and settings.ldap is not None:
            directories.append(LdapDirectory(settings.ldap))
    return directories, clients


def build_registry(
    settings: Settings, duo_push: DuoPushMethod | None = None, *, hashing: HashingPool
) -> MethodRegistry:
    """Every method this gateway offers, explicitly; the admin allows a subset. `hashing` is
    the gateway's one hashing pool: backup codes and security answers are hashed in it."""
    return MethodRegistry(
        [
            TotpMethod(),
            WebAuthnMethod(settings.webauthn, settings.public_url),
            BackupCodesMethod(hashing),
            EmailOtpMethod(),
            SecurityQuestionsMethod(hashing),
        ],
        out_of_band=[duo_push or DuoPushMethod()],
    )


@dataclass
class Gateway:
    settings: Settings
    clock: Clock
    engine: AsyncEngine
    db: async_sessionmaker[AsyncSession]
    sessions: SessionService
    login: LoginService
    accounts: AccountService
    console: ConsoleSettingsService
    http: httpx.AsyncClient
    grace: EnrolmentGraceService
    second_factor: SecondFactorService
    gate: MethodGate
    my_methods: MyMethodsService
    devices: RememberedDeviceService
    forward_auth: ForwardAuthService
    smtp: SmtpSettingsService
    groups: GroupRefresher
    access_rules: AccessRuleService
    live_rules: LiveConsoleRules
    duo: DuoPushService | None = None
    duo_push: DuoPushMethod = field(default_factory=DuoPushMethod)  # the registered method
    feed_state: FeedState | None = None  # whether this process hears the others now
    change_feed: ChangeFeed | None = None  # services.state: Redis, PostgreSQL or local
    change_outbox: ChangeOutbox | None = None  # beside the Redis feed (services.state)
    # The settings copy's own connection (storage.database.side_engine), closed with the rest.
    settings_engine: AsyncEngine | None = None
    _duo_version: int = -1
    directory_clients: list[httpx.AsyncClient] = field(default_factory=list)
    hashing: HashingPool | None = None  # argon2 off the event loop (passwords)
    directories: list[ExternalDirectory] = field(default_factory=list)  # in settings' order

    @classmethod
    async def start(
        cls,
        settings: Settings,
        *,
        clock: Clock | None = None,
        verify_schema: bool = True,
        duo_http: httpx.AsyncClient | None = None,
        smtp_tls: ssl.SSLContext | None = None,
    ) -> Gateway:
        """`verify_schema` refuses an unmigrated or newer database with a clear message;
        `smtp_tls` checks the mail server's certificate (None: `smtp_ca_path` from the
        settings, else the system's CAs)."""
        clock = clock or SystemClock()
        if smtp_tls is None and settings.smtp_ca_path is not None:
            smtp_tls = ssl.create_default_context(cafile=settings.smtp_ca_path)
        engine = create_engine(settings.database_url, settings.database_pool_size)
        if verify_schema:
            try:
                await check_schema(engine)
            except Exception:
                await engine.dispose()
                raise
        db = session_factory(engine)
        sessions = SessionService(db, clock, settings, single_statement_factory(engine))
        # Absolute URLs on one pooled client: it serves whichever Duo host is configured.
        http = duo_http or make_http_client(
            DuoEndpoint.parse("api-placeholder.duosecurity.com"), max_connections=DUO_CONNECTIONS
        )
        sealer = Sealer(settings.secret_keys)  # the newest key seals, every listed one opens
        duo_push = DuoPushMethod()  # connected to Duo's keys as the console sets them
        hashing = HashingPool(password_hashing(settings))  # every argon2 hash of the gateway
        registry = build_registry(settings, duo_push, hashing=hashing)
        offered = registry.codes
        settings_engine = side_engine(engine)  # the settings copy reloads on it
        settings_copy = SettingsCache(session_factory(settings_engine), clock)
        console = ConsoleSettingsService(
            db,
            clock,
            sealer,
            http,
            settings.duo,
            offered,
            cache=settings_copy,
            allow_custom_duo_host=settings.duo_custom_host_allowed,
        )
        external, directory_clients = external_directories(settings)
        login = LoginService(
            db, sessions, LocalDirectory(hashing), clock, settings, console, external
        )
        grace = EnrolmentGraceService(db, console, sessions, clock)
        gate = MethodGate(
            db, registry, console, clock, exempt_admins=settings.admins_without_second_factor
        )
        smtp = SmtpSettingsService(db, clock, sealer, smtp_tls)
        groups = GroupRefresher(db, external, clock, settings.directory_groups_cache_s)
        factors = SecondFactorService(db, registry, sessions, gate, clock, sealer, SmtpMailer(smtp))
        access_rules = AccessRuleService(db, clock, settings.access)
        live_rules = LiveConsoleRules(access_rules, clock)
        feed_state = FeedState(settings.change_feed_kind, clock)
        gateway = cls(
            settings,
            clock,
            engine,
            db,
            sessions,
            login,
            AccountService(
                db,
                clock,
                hashing=hashing,
                exempt_admins=settings.admins_without_second_factor,
                demo=settings.is_demo,
            ),
            console,
            http,
            grace,
            factors,
            gate,
            MyMethodsService(db, registry, gate, console, clock),
            RememberedDeviceService(db, console, sessions, clock),
            ForwardAuthService(
                db, sessions, settings.access, groups, live_rules, clock=clock, feed=feed_state
            ),
            smtp,
            groups,
            access_rules,
            live_rules,
        )
        gateway.duo_push = duo_push
        gateway.settings_engine = settings_engine
        gateway.duo = build_duo_service(
            settings.duo,
            http,
            db,
            sessions,
            clock,
            gate,
            duo_push,
            allow_custom_host=settings.duo_custom_host_allowed,
        )
        gateway.directory_clients = directory_clients
        gateway.hashing = hashing
        gateway.directories = external
        gateway.feed_state = feed_state
        await gateway.follow_changes(
            build_change_feed(settings, engine, feed_state, gateway.apply_changes)
        )
        return gateway

    async def follow_changes(self, feed: ChangeFeed | None) -> None:
        """Hears the other processes through `feed` and tells them of this one's commits
        (services.feed_wiring)."""
        self.change_outbox = await follow_changes(
            self.db,
            feed,
            self.apply_changes,
            clock=self.clock,
            sign_ins_ended=lambda ended: self.oidc_backchannel.sessions_ended(ended),
        )
        self.change_feed = feed

    def apply_changes(self, changes: Changes) -> None:
        """What a process committed (this one or another): drop the copies kept of it."""
        cache = self.forward_auth.cache
        for session_id in changes.ended_sessions:
            cache.forget_session(session_id)
        for user_id in changes.ended_users | changes.changed_users:
            cache.forget_user(user_id)
        if changes.settings:
            self.console.cache.invalidate()
        if changes.access_rules:
            self.live_rules.changed_elsewhere()

    # What the console and the API read and do for admins.
    @cached_property
    def console_access(self) -> ConsoleAccessService:
        return ConsoleAccessService(self.db, self.clock)

    @cached_property
    def console_users(self) -> ConsoleUsersService:
        return ConsoleUsersService(self.db, self.clock, self.console, self.gate)

    @cached_property
    def overview(self) -> OverviewService:
        exempt_admins = self.settings.admins_without_second_factor
        return OverviewService(self.db, self.clock, self.console, exempt_admins=exempt_admins)

    @cached_property
    def audit_queries(self) -> AuditQueryService:
        return AuditQueryService(self.db, self.clock)

    @cached_property
    def api_tokens(self) -> ApiTokenService:
        return ApiTokenService(self.db, self.clock)

    @cached_property
    def key_rotation(self) -> KeyRotationService:
        return KeyRotationService(self.db, self.clock, Sealer(self.settings.secret_keys))

    # The methods' own console settings, edited from the console, the CLI and the API.
    @cached_property
    def email_codes(self) -> EmailCodeOptionsService:
        return EmailCodeOptionsService(self.db, self.clock, self.console.cache)

    @cached_property
    def authenticator_app(self) -> AuthenticatorOptionsService:
        return AuthenticatorOptionsService(self.db, self.clock, self.console.cache)

    @cached_property
    def question_pool(self) -> QuestionPoolService:
        return QuestionPoolService(self.db, self.clock, self.console.cache)

    async def current_duo(self) -> DuoPushService | None:
        """The Duo service for the settings in force now (console first, then the file)."""
        version = await self.console.version()  # cached: re-read at most once a second
        if version != self._duo_version:
            effective = await self.console.effective_duo()
            self.duo = build_duo_service(
                effective,
                self.http,
                self.db,
                self.sessions,
                self.clock,
                self.gate,
                self.duo_push,
                allow_custom_host=self.console.allows_custom_duo_host,
            )
            self._duo_version = version
        return self.duo

    async def database_answers(self, timeout_s: float = 2.0) -> bool:
        """Whether the database answers a trivial query within `timeout_s` (readiness)."""
        try:
            async with asyncio.timeout(timeout_s), self.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except Exception:  # any failure to answer is "not ready"; the log has the pool's own
            return False
        return True

    async def close(self) -> None:
        if self.change_feed is not None:
            await self.change_feed.close()
        if self.change_outbox is not None:
            await self.change_outbox.close()
        await self.forward_auth.close()
        await self.sessions.close()
        await self.groups.close()
        await self.live_rules.close()
        if "oidc_backchannel" in self.__dict__:  # made on first use: tell what is under way
            await self.oidc_backchannel.drain()
        await self.http.aclose()
        for client in self.directory_clients:
            await client.aclose()
        if self.hashing is not None:
            self.hashing.close()
        await self.engine.dispose()
        if self.settings_engine is not None:
            await self.settings_engine.dispose()

    # twofa as an identity provider (services.idp): applications, signing keys, OIDC.
    @cached_property
    def applications(self) -> ApplicationService:
        return ApplicationService(self.db, self.clock)

    async def explain_admission(self, application: str, username: str) -> AdmissionExplanation:
        """Whether `username` may sign in to `application` (a name or client id), and why."""
        return await explain_admission(self.db, await self.applications.show(application), username)

    @cached_property
    def oidc_keys(self) -> SigningKeyService:
        return SigningKeyService(self.db, self.clock, Sealer(self.settings.secret_keys))

    @cached_property
    def oidc(self) -> OidcProvider:
        return OidcProvider(self.db, self.clock, self.oidc_keys, self.settings.public_url)

    @cached_property
    def oidc_backchannel(self) -> BackchannelLogout:
        """Tells applications when a twofa session they signed in through ends, through the
        gateway's one outgoing HTTP client."""
        return BackchannelLogout(
            self.db, self.clock, self.oidc_keys, self.settings.public_url, self.http
        )
