"""The check a reverse proxy makes before every request to a protected application
(nginx `auth_request`, Traefik ForwardAuth, Caddy `forward_auth`): is this browser signed in
far enough for the access rule of this URL, and who is it?

It is on the path of every request, so it never hashes a password or calls Duo: it answers the
sessions in use from memory (services.access.session_cache: as long as the change feed is live,
a second otherwise), and reads a session it does not know in one statement. The access rules
come from an `AccessRuleProvider` that keeps them in memory (services.access.live_rules).
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Final, Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.config import AccessRuleSettings, AccessSettings
from twofa.domain.access import (
    AccessRequest,
    Decision,
    Policy,
    RuleOrigin,
    RuleSet,
    decide,
    decide_among,
    file_rule_set,
    in_networks,
    known_domain,
)
from twofa.domain.request_paths import NormalPath, PathRefusal, normal_path, path_as_sent
from twofa.errors import Invalid, NotFound
from twofa.security.tokens import token_digest
from twofa.services.access.session_cache import Loaded, SessionCache
from twofa.services.signin.group_refresh import GroupRefresher
from twofa.services.state.feed_state import FeedState
from twofa.services.state.sessions import Level, SessionService
from twofa.storage.repositories import Users

# How long closing waits for reads in flight; a database that stalls past it must not hold the
# gateway's shutdown, so what is left then is cancelled.
CLOSE_WAIT_SECONDS: Final = 5.0


class Verdict(Enum):
    ALLOW = "allow"  # 200, with the identity headers when someone is signed in
    SIGN_IN = "sign_in"  # 401 for nginx, a redirect to the portal for Traefik/Caddy
    FORBIDDEN = "forbidden"  # 403: a deny rule, an unknown domain, an untrusted caller
    BAD_PATH = "bad_path"  # 400: a path no normal form is safe for (domain.request_paths)


UNSAFE_IN_HEADERS: Final = str.maketrans("", "", "\r\n\x00")


@dataclass(frozen=True, slots=True)  # one per session in use on the node (SessionCache)
class SignedInUser:
    user_id: int
    username: str
    display_name: str
    email: str
    groups: tuple[str, ...]
    second_factor: bool  # this session passed a second factor (or a remembered device did)
    directory: str = "local"
    groups_synced_at: datetime | None = None  # directory groups last copied (for a refresh)
    # Username, display name, e-mail and groups as the proxy passes them on to the app in
    # headers: UTF-8 (display names are not always Latin-1), without line breaks or NUL.
    # Encoded once per read, not once per request answered from memory.
    header_values: tuple[bytes, bytes, bytes, bytes] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        values = (self.username, self.display_name, self.email, ",".join(self.groups))
        encoded = tuple(value.translate(UNSAFE_IN_HEADERS).encode() for value in values)
        object.__setattr__(self, "header_values", encoded)


@dataclass(frozen=True)
class OriginalRequest:
    """The request the proxy is asking about, rebuilt from its headers."""

    scheme: str
    host: str
    uri: str  # path and query
    client_ip: str

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}{self.uri}"

    @property
    def path(self) -> str:
        return self.uri.split("?", 1)[0]


@dataclass(frozen=True)
class AuthzAnswer:
    verdict: Verdict
    user: SignedInUser | None = None
    reason: str = ""


class UnknownUser(NotFound):
    def __init__(self, username: str) -> None:
        super().__init__(f"no user {username!r}")


class UncheckablePath(Invalid):
    def __init__(self, refusal: PathRefusal) -> None:
        super().__init__(f"the path is refused (400): {refusal.value}", {"url": refusal.value})


@dataclass(frozen=True)
class Explanation:
    protected: bool  # the host is one of the protected domains
    decision: Decision  # `rule` indexes all rules in evaluation order (the file's first)
    rule: AccessRuleSettings | None  # as written; None: the default policy
    groups: tuple[str, ...]
    origin: RuleOrigin | None = None  # the settings file or the console, and its place there


class AccessRuleProvider(Protocol):
    """Where the rules come from: `current` is on every request's path (no database read),
    `fresh` reads them as saved now."""

    async def current(self) -> RuleSet: ...

    async def fresh(self) -> RuleSet: ...


class FileRulesOnly:
    """The settings file's rules and nothing else (no console rules to follow)."""

    def __init__(self, rules: tuple[AccessRuleSettings, ...]) -> None:
        self._rule_set = file_rule_set(rules)

    async def current(self) -> RuleSet:
        return self._rule_set

    async def fresh(self) -> RuleSet:
        return self._rule_set


class ForwardAuthService:
    def __init__(
        self,
        db: async_sessionmaker[AsyncSession],
        sessions: SessionService,
        access: AccessSettings,
        groups: GroupRefresher | None = None,
        rules: AccessRuleProvider | None = None,
        *,
        clock: Clock,
        feed: FeedState | None = None,
    ) -> None:
        """`feed`: whether this process hears the others' changes (without one, what is
        cached is checked again every second)."""
        self._db = db
        self._groups = groups
        self._clock = clock
        self._sessions = sessions
        self._access = access
        self._rules = rules or FileRulesOnly(access.rules)
        self._default = Policy(access.default_policy)
        self.cache = SessionCache(
            self._read,
            sessions,
            feed or FeedState("none", clock),
            clock,
            on_answer=self._refresh_groups_if_due if groups is not None else None,
        )
        self._trusted_peers: dict[str, bool] = {}

    def trusts_proxy(self, peer_ip: str) -> bool:
        # A handful of proxy addresses call this for every request: remember the answer.
        trusted = self._trusted_peers.get(peer_ip)
        if trusted is None:
            trusted = in_networks(peer_ip, tuple(self._access.trusted_proxies))
            if len(self._trusted_peers) < 1024:
                self._trusted_peers[peer_ip] = trusted
        return trusted

    def protects(self, host: str) -> bool:
        return known_domain(self._access.domains, host.split(":", 1)[0])

    async def check(self, token: str | None, original: OriginalRequest) -> AuthzAnswer:
        host = original.host.split(":", 1)[0]
        if not self.protects(host):
            return AuthzAnswer(Verdict.FORBIDDEN, reason=f"{host} is not a protected domain")
        path = self._path_as_sent(original.path)
        if isinstance(path, PathRefusal):
            return AuthzAnswer(Verdict.BAD_PATH, reason=f"path refused: {path.value}")
        user = await self._signed_in(token)
        request = AccessRequest(
            host,
            path.rule_path,
            original.client_ip,
            user.username if user else None,
            user.groups if user else (),
        )
        decision = decide_among((await self._rules.current()).serving(host), self._default, request)
        if decision.policy is Policy.BYPASS:
            return AuthzAnswer(Verdict.ALLOW, reason="bypass")
        if decision.policy is Policy.DENY:
            return AuthzAnswer(Verdict.FORBIDDEN, user, reason="denied by rule")
        if user is None:
            return AuthzAnswer(Verdict.SIGN_IN, reason="not signed in")
        if decision.policy is Policy.TWO_FACTOR and not user.second_factor:
            return AuthzAnswer(Verdict.SIGN_IN, user, reason="second factor required")
        return AuthzAnswer(Verdict.ALLOW, user)

    async def explain(self, username: str | None, url: str, client_ip: str) -> Explanation:
        """Which rule decides `url` for this user (None: not signed in), and why; for
        `twofa access explain` and the console."""
        parts = urllib.parse.urlsplit(url)
        host = (parts.hostname or "").lower()
        groups: tuple[str, ...] = ()
        if username is not None:
            async with self._db.begin() as db:
                users = Users(db)
                user = await users.by_name(username)
                if user is None:
                    raise UnknownUser(username)
                groups = tuple(await users.group_names(user.id))
        path = self._path_as_sent(parts.path or "/")
        if isinstance(path, PathRefusal):
            raise UncheckablePath(path)
        request = AccessRequest(host, path.rule_path, client_ip, username, groups)
        rule_set = await self._rules.fresh()
        decision = decide(rule_set.rules, self._default, request)
        found = decision.rule
        return Explanation(
            protected=self.protects(host),
            decision=decision,
            rule=rule_set.written[found] if found is not None else None,
            groups=groups,
            origin=rule_set.origins[found] if found is not None else None,
        )

    def normal_path(self, raw: str) -> NormalPath | PathRefusal:
        """For a caller that forwards the normal form itself (the built-in proxy): `check`
        answers a path in normal form only, as the proxy in front passes it on unchanged."""
        return normal_path(raw, allow_parameters=self._access.allow_path_parameters)

    def _path_as_sent(self, raw: str) -> NormalPath | PathRefusal:
        return path_as_sent(raw, allow_parameters=self._access.allow_path_parameters)

    async def close(self, wait_seconds: float = CLOSE_WAIT_SECONDS) -> None:
        await self.cache.close(wait_seconds)

    def forget(self, token: str) -> None:
        """Drops a cached session at once (this node signed it out)."""
        self.cache.forget_session(token_digest(token))

    async def _signed_in(self, token: str | None) -> SignedInUser | None:
        if not token or len(token) > 100:
            return None
        return await self.cache.identity(token)

    async def _read(self, token: str) -> Loaded[SignedInUser] | None:
        live = await self._sessions.load_with_user(token)
        if live is None or live.user is None or not live.user.enabled:
            return None
        session, user = live.view, live.user
        if session.level is not Level.SIGNED_IN or session.user_id is None:
            return None
        identity = SignedInUser(
            session.user_id,
            user.username,
            user.display_name,
            user.email,
            user.groups,
            second_factor=session.second_factor_at is not None,
            directory=user.directory,
            groups_synced_at=user.groups_synced_at,
        )
        return Loaded(identity, session.user_id, session.id, live.seen_at, live.expires_at)

    def _refresh_groups_if_due(self, user: SignedInUser) -> None:
        """Directory groups too old: refreshed in the background (a change comes back as a
        changed user, and the next answer has the new groups)."""
        assert self._groups is not None
        self._groups.refresh_if_due(
            user.user_id, user.username, user.directory, user.groups_synced_at
        )
