"""Access rules for the applications twofa protects: per domain and path, a policy
(`bypass`, `one_factor`, `two_factor`, `deny`), optionally only for some users, groups or
client networks. The first matching rule wins; when none matches, the default policy applies
(deny unless configured otherwise: fail closed). Rules come from two places, evaluated in this
order: the settings file (the operator's pinned baseline), then the console's, in their order.

A rule that names users or groups cannot be decided for an anonymous request; such a request
is asked to sign in first (`needs_identity`) and decided again with the identity.

Paths are matched in their normal form (domain.request_paths), and twice: as they are (what a
case-sensitive application reads) and in their lenient reading, case-insensitively (what IIS
or a Windows file system reads: `/ADMIN./` is `/admin/`). The stricter decision wins, so
`/ADMIN/x` does not dodge a deny rule on `/admin/*`, and `/PUBLIC/x` is not let through by a
bypass rule on `/public/*` (to a case-sensitive application it is another resource).
"""

from __future__ import annotations

import fnmatch
import functools
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from functools import cached_property
from typing import Final

from twofa.config import AccessRuleSettings
from twofa.domain.request_paths import lenient_reading, normal_pattern

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Policy(Enum):
    BYPASS = "bypass"
    ONE_FACTOR = "one_factor"
    TWO_FACTOR = "two_factor"
    DENY = "deny"


STRICTNESS: Final = {Policy.BYPASS: 0, Policy.ONE_FACTOR: 1, Policy.TWO_FACTOR: 2, Policy.DENY: 3}


@functools.lru_cache(maxsize=4096)  # forward-auth asks about the same few hosts all day
def domain_matches(pattern: str, host: str) -> bool:
    """`app.example.com` matches itself; `*.example.com` matches any subdomain (not the apex)."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


@dataclass(frozen=True)
class AccessRule:
    domains: tuple[str, ...]
    policy: Policy
    paths: tuple[str, ...] = ()  # glob patterns on the path: "/api/*", "/rest/**" ("*" spans "/")
    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    networks: tuple[Network, ...] = ()

    @cached_property
    def _path_pattern(self) -> re.Pattern[str] | None:
        return self._compiled(0)

    @cached_property
    def _lenient_pattern(self) -> re.Pattern[str] | None:
        return self._compiled(re.IGNORECASE)

    def _compiled(self, flags: int) -> re.Pattern[str] | None:
        """The rule's path globs as one alternation (one match per request, not one per
        glob); None when the rule names no paths (it covers them all)."""
        globs = [normal_pattern(p.replace("**", "*")) for p in self.paths]
        if not globs:
            return None
        return re.compile("|".join(fnmatch.translate(glob) for glob in globs), flags)

    @property
    def names_subjects(self) -> bool:
        return bool(self.users or self.groups)

    def serves(self, host: str) -> bool:
        return any(domain_matches(pattern, host) for pattern in self.domains)

    def matches_resource(
        self, host: str, path: str, client_ip: str, *, lenient: bool = False
    ) -> bool:
        return self.serves(host) and self.matches_path(path, client_ip, lenient=lenient)

    def matches_path(self, path: str, client_ip: str, *, lenient: bool = False) -> bool:
        """The path and client part of `matches_resource`, for a rule already known to serve
        the host."""
        pattern = self._lenient_pattern if lenient else self._path_pattern
        if pattern is not None and pattern.match(path) is None:
            return False
        return not self.networks or in_networks(client_ip, self.networks)

    def matches_subject(self, username: str, groups: Iterable[str]) -> bool:
        if not self.names_subjects:
            return True
        wanted_users = {u.lower() for u in self.users}
        return username.lower() in wanted_users or bool(set(self.groups) & set(groups))


def in_networks(address: str, networks: Sequence[Network]) -> bool:
    """Whether `address` is in any of `networks`. An IPv4 client reaching a dual-stack socket
    arrives as `::ffff:a.b.c.d`: it is the IPv4 address, for rules written either way."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return any(ip in network or (mapped is not None and mapped in network) for network in networks)


@dataclass(frozen=True)
class AccessRequest:
    host: str
    path: str  # in normal form: request_paths.normal_path(...).rule_path
    client_ip: str
    username: str | None = None  # None: not signed in
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class Decision:
    policy: Policy
    rule: int | None  # index of the rule that decided, None for the default policy
    needs_identity: bool = False  # a rule naming users/groups: sign in, then decide again


Serving = tuple[tuple[int, AccessRule], ...]  # rules serving one host, with their indexes


def rules_serving(rules: Sequence[AccessRule], host: str) -> Serving:
    return tuple((index, rule) for index, rule in enumerate(rules) if rule.serves(host))


def decide(rules: Sequence[AccessRule], default: Policy, request: AccessRequest) -> Decision:
    return decide_among(rules_serving(rules, request.host), default, request)


def decide_among(serving: Serving, default: Policy, request: AccessRequest) -> Decision:
    """The stricter of the decisions on the path as it is and on its lenient reading (see
    the module's docstring); on a tie, the one on the path as it is. `serving`: the rules
    that serve the request's host (`rules_serving`), the same for both readings."""
    exact = _decide_on(serving, default, request, request.path, lenient=False)
    if exact.policy is Policy.DENY:
        return exact
    lenient = _decide_on(serving, default, request, lenient_reading(request.path), lenient=True)
    return lenient if STRICTNESS[lenient.policy] > STRICTNESS[exact.policy] else exact


def _decide_on(
    serving: Serving,
    default: Policy,
    request: AccessRequest,
    path: str,
    *,
    lenient: bool,
) -> Decision:
    for index, rule in serving:
        if not rule.matches_path(path, request.client_ip, lenient=lenient):
            continue
        if rule.names_subjects:
            if request.username is None:
                return Decision(Policy.ONE_FACTOR, index, needs_identity=True)
            if not rule.matches_subject(request.username, request.groups):
                continue
        return Decision(rule.policy, index)
    return Decision(default, None)


def known_domain(patterns: Iterable[str], host: str) -> bool:
    return any(domain_matches(pattern, host) for pattern in patterns)


class RuleSource(Enum):
    FILE = "file"
    CONSOLE = "console"


@dataclass(frozen=True)
class RuleOrigin:
    """Where a rule was written: its place (1-based) in the settings file or among the
    console's rules, and the console rule's id."""

    source: RuleSource
    position: int
    rule_id: int | None = None

    @property
    def label(self) -> str:
        if self.source is RuleSource.FILE:
            return f"rule {self.position} from the settings file"
        return f"console rule {self.position}, id {self.rule_id}"


@dataclass(frozen=True)
class RuleSet:
    """Every rule in evaluation order, with each one as written and where it came from;
    `version` is the console rules' version it was built from."""

    written: tuple[AccessRuleSettings, ...]
    origins: tuple[RuleOrigin, ...]
    version: int = 0

    @cached_property
    def rules(self) -> tuple[AccessRule, ...]:
        return rules_from_settings(self.written)

    def serving(self, host: str) -> Serving:
        """`rules_serving(self.rules, host)`, remembered: forward-auth asks about the same few
        hosts all day (a wildcard domain may bring more, so at most 1,024 are kept)."""
        known = self._serving_by_host
        serving = known.get(host)
        if serving is None:
            serving = rules_serving(self.rules, host)
            if len(known) < 1024:
                known[host] = serving
        return serving

    @cached_property
    def _serving_by_host(self) -> dict[str, Serving]:
        return {}


def file_rule_set(rules: Sequence[AccessRuleSettings]) -> RuleSet:
    origins = tuple(RuleOrigin(RuleSource.FILE, index + 1) for index in range(len(rules)))
    return RuleSet(tuple(rules), origins)


def with_console_rules(
    file_rules: Sequence[AccessRuleSettings],
    console_rules: Sequence[tuple[int, AccessRuleSettings]],
    version: int,
) -> RuleSet:
    """The file's rules first, then the console's `(id, rule)` in their order."""
    base = file_rule_set(file_rules)
    origins = tuple(
        RuleOrigin(RuleSource.CONSOLE, index + 1, rule_id)
        for index, (rule_id, _) in enumerate(console_rules)
    )
    return RuleSet(
        (*base.written, *(rule for _, rule in console_rules)), (*base.origins, *origins), version
    )


_DOMAIN_PATTERN = re.compile(
    r"(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*", re.IGNORECASE
)


def domain_pattern_problem(pattern: str, protected: Iterable[str]) -> str | None:
    """Why `pattern` cannot be a rule's domain, or None: it must be a host name or
    `*.`-wildcard, and every host it matches must be one of the protected domains (a rule for
    a domain twofa does not answer for would never apply)."""
    if not _DOMAIN_PATTERN.fullmatch(pattern) or len(pattern) > 253:
        return f"{pattern!r} is not a host name or a *.domain pattern"
    protected = tuple(protected)
    if pattern.startswith("*."):
        # Every subdomain is covered only by a wildcard over this domain or a parent of it.
        probe = "probe." + pattern[2:]
        covered = any(p.startswith("*.") and domain_matches(p, probe) for p in protected)
    else:
        covered = known_domain(protected, pattern)
    if not covered:
        listed = ", ".join(protected) or "none"
        return f"{pattern} is not one of the protected domains ([access] domains: {listed})"
    return None


def rules_from_settings(rules: Iterable[AccessRuleSettings]) -> tuple[AccessRule, ...]:
    return tuple(
        AccessRule(
            domains=rule.domain,
            policy=Policy(rule.policy),
            paths=rule.resources,
            users=rule.users,
            groups=rule.groups,
            networks=tuple(rule.networks),
        )
        for rule in rules
    )
