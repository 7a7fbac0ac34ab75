"""Access rules for the applications twofa protects: per domain and path, a policy
(`bypass`, `one_factor`, `two_factor`, `deny`), optionally only for some users, groups or
client networks. The first matching rule wins; when none matches, the default policy applies
(deny unless configured otherwise: fail closed).

A rule that names users or groups cannot be decided for an anonymous request; such a request
is asked to sign in first (`needs_identity`) and decided again with the identity.
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

from twofa.config import AccessRuleSettings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Policy(Enum):
    BYPASS = "bypass"
    ONE_FACTOR = "one_factor"
    TWO_FACTOR = "two_factor"
    DENY = "deny"


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
    def _path_patterns(self) -> tuple[re.Pattern[str], ...]:
        return tuple(re.compile(fnmatch.translate(p.replace("**", "*"))) for p in self.paths)

    @property
    def names_subjects(self) -> bool:
        return bool(self.users or self.groups)

    def matches_resource(self, host: str, path: str, client_ip: str) -> bool:
        if not any(domain_matches(d, host) for d in self.domains):
            return False
        if self._path_patterns and not any(p.match(path) for p in self._path_patterns):
            return False
        return not self.networks or in_networks(client_ip, self.networks)

    def matches_subject(self, username: str, groups: Iterable[str]) -> bool:
        if not self.names_subjects:
            return True
        wanted_users = {u.lower() for u in self.users}
        return username.lower() in wanted_users or bool(set(self.groups) & set(groups))


def in_networks(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


@dataclass(frozen=True)
class AccessRequest:
    host: str
    path: str
    client_ip: str
    username: str | None = None  # None: not signed in
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class Decision:
    policy: Policy
    rule: int | None  # index of the rule that decided, None for the default policy
    needs_identity: bool = False  # a rule naming users/groups: sign in, then decide again


def decide(rules: Sequence[AccessRule], default: Policy, request: AccessRequest) -> Decision:
    for index, rule in enumerate(rules):
        if not rule.matches_resource(request.host, request.path, request.client_ip):
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
