"""What an API token may do: its scopes, and the one table that says which scope each API
route needs. A route the table does not know needs a scope no token has, so a new area of the
API is closed until it is written down here (and the test that walks every route says so)."""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from typing import Final


class Scope(Enum):
    READ = "read"  # every GET but the tokens': users, groups, settings, rules, audit, status
    USERS = "users"  # create, change, unlock, reset and delete users; groups and members
    SETTINGS = "settings"  # Duo keys and failmode, Two Factor Settings, methods, access rules,
    # applications (OpenID Connect clients)
    TOKENS = "tokens"  # list, create and revoke API tokens


ALL_SCOPES: Final = frozenset(Scope)
API_PREFIX: Final = "/api/v1/"
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
# The first path segment after /api/v1/ → the scope a change there needs. Reading needs
# `read`, except tokens: a list of who holds which token is the token admin's business.
_CHANGE_SCOPES: Final = {
    "users": Scope.USERS,
    "groups": Scope.USERS,
    "settings": Scope.SETTINGS,
    "access": Scope.SETTINGS,
    "applications": Scope.SETTINGS,
    "tokens": Scope.TOKENS,
}
_READ_SCOPES: Final = {
    **dict.fromkeys(
        ("users", "groups", "settings", "access", "applications", "audit", "status"), Scope.READ
    ),
    "tokens": Scope.TOKENS,
}


class UnknownScope(ValueError):
    """A scope name no token can hold; the message lists the ones there are."""


def scope_needed(method: str, path: str) -> Scope | None:
    """The scope a request needs, from its method and its path (`/api/v1/users/alice`) or
    its route's template (`/api/v1/users/{username}`); None for an area this table does not
    know (refused)."""
    if not path.startswith(API_PREFIX):
        return None
    area = path.removeprefix(API_PREFIX).split("/", 1)[0]
    table = _READ_SCOPES if method.upper() in SAFE_METHODS else _CHANGE_SCOPES
    return table.get(area)


def parse_scopes(names: Iterable[str]) -> frozenset[Scope]:
    """`["read", "users"]`, or one comma- or space-separated string's parts; at least one."""
    parts = [part for name in names for part in name.replace(",", " ").split()]
    known = {scope.value: scope for scope in Scope}
    unknown = sorted({part for part in parts if part not in known})
    if unknown:
        raise UnknownScope(
            f"unknown scope {', '.join(unknown)}: choose from {scopes_text(ALL_SCOPES)}"
        )
    if not parts:
        raise UnknownScope(f"a token needs at least one scope: {scopes_text(ALL_SCOPES)}")
    return frozenset(known[part] for part in parts)


def scopes_text(scopes: Iterable[Scope]) -> str:
    """Space-separated in one order (as stored, and as OAuth writes scopes)."""
    held = set(scopes)
    return " ".join(scope.value for scope in Scope if scope in held)
