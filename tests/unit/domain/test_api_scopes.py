"""The scope table: which scope each API request needs, and how scope names are read."""

from __future__ import annotations

import pytest

from twofa.domain.api_scopes import ALL_SCOPES, Scope, UnknownScope, parse_scopes, scope_needed


@pytest.mark.parametrize(
    ("method", "path", "needed"),
    [
        ("GET", "/api/v1/users", Scope.READ),
        ("GET", "/api/v1/users/{username}", Scope.READ),
        ("GET", "/api/v1/audit", Scope.READ),
        ("GET", "/api/v1/status", Scope.READ),
        ("GET", "/api/v1/settings/duo", Scope.READ),
        ("POST", "/api/v1/users", Scope.USERS),
        ("PATCH", "/api/v1/users/alice", Scope.USERS),
        ("DELETE", "/api/v1/groups/{group}", Scope.USERS),
        ("PUT", "/api/v1/settings/duo", Scope.SETTINGS),
        ("POST", "/api/v1/settings/duo/test", Scope.SETTINGS),
        ("POST", "/api/v1/access/rules", Scope.SETTINGS),
        ("GET", "/api/v1/applications/{client_id}", Scope.READ),
        ("POST", "/api/v1/applications/{client_id}/rotate-secret", Scope.SETTINGS),
        ("GET", "/api/v1/tokens", Scope.TOKENS),
        ("POST", "/api/v1/tokens", Scope.TOKENS),
        ("delete", "/api/v1/tokens/abc", Scope.TOKENS),
    ],
)
def test_each_request_needs_its_areas_scope(method: str, path: str, needed: Scope) -> None:
    assert scope_needed(method, path) is needed


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v1/status"),  # an area with no changes has no scope for one
        ("POST", "/api/v1/audit"),
        ("GET", "/api/v1/new-area"),
        ("GET", "/admin/users"),
        ("GET", "/api/v1"),
        ("GET", "/api/v2/users"),
    ],
)
def test_an_area_the_table_does_not_know_needs_a_scope_no_token_has(method: str, path: str) -> None:
    assert scope_needed(method, path) is None


def test_scope_names_are_read_from_lists_commas_and_spaces() -> None:
    assert parse_scopes(["read", "users,settings"]) == {Scope.READ, Scope.USERS, Scope.SETTINGS}
    assert parse_scopes(["read tokens"]) == {Scope.READ, Scope.TOKENS}
    assert parse_scopes(["read users settings tokens"]) == ALL_SCOPES


@pytest.mark.parametrize("names", [[], [""], ["admin"], ["read", "root"], ["READ"]])
def test_unknown_or_missing_scopes_are_refused_with_the_choices(names: list[str]) -> None:
    with pytest.raises(UnknownScope, match="read users settings tokens"):
        parse_scopes(names)
