"""`twofa access explain` names the deciding rule, the user's groups and the outcome."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.cli.conftest import TwofaCli

RULES = """
[access]
domains = ["jira.example.com"]
[[access.rules]]
domain = "jira.example.com"
resources = ["/rest/api/*"]
policy = "bypass"
[[access.rules]]
domain = "jira.example.com"
groups = ["contractors"]
policy = "deny"
[[access.rules]]
domain = "jira.example.com"
policy = "two_factor"
"""


@pytest.fixture
def access_cli(cli: TwofaCli, tmp_path: Path) -> TwofaCli:
    settings = tmp_path / "twofa.toml"
    settings.write_text(RULES)
    env = {**cli.env, "TWOFA_CONFIG": str(settings)}
    explained = TwofaCli(cli.runner, env)
    explained.ok("user", "add", "carol", "--no-password")
    explained.ok("group", "add", "contractors")
    explained.ok("group", "add-member", "contractors", "carol")
    return explained


def test_a_bypass_path_for_anyone(access_cli: TwofaCli) -> None:
    out = access_cli.ok("access", "explain", "https://jira.example.com/rest/api/2/x").output
    assert "rule: #1" in out
    assert "policy: bypass" in out
    assert "user: not signed in" in out


def test_a_group_rule_names_the_users_groups(access_cli: TwofaCli) -> None:
    out = access_cli.ok(
        "access", "explain", "https://jira.example.com/browse/X-1", "--user", "carol"
    ).output
    assert "groups: contractors" in out
    assert "rule: #2" in out
    assert "policy: deny" in out


def test_an_anonymous_request_meets_a_group_rule_by_signing_in_first(
    access_cli: TwofaCli,
) -> None:
    out = access_cli.ok("access", "explain", "https://jira.example.com/browse/X-1").output
    assert "sign-in first" in out


def test_an_unprotected_host_is_called_out(access_cli: TwofaCli) -> None:
    out = access_cli.ok("access", "explain", "https://wiki.other.org/").output
    assert "not a protected domain" in out
    assert "policy: deny" in out


def test_an_unknown_user_is_an_error(access_cli: TwofaCli) -> None:
    result = access_cli("access", "explain", "https://jira.example.com/", "--user", "nobody")
    assert result.exit_code != 0
    assert "no user 'nobody'" in result.output


def test_explain_decides_on_the_normal_form_of_the_path(access_cli: TwofaCli) -> None:
    out = access_cli.ok("access", "explain", "https://jira.example.com/rest/%61pi/2/x").output
    assert "rule: #1" in out
    assert "policy: bypass" in out


@pytest.mark.parametrize("path", ["/rest/api/..;/admin", "/rest/api/%2e%2e/admin", "/a%2Fb"])
def test_explain_calls_a_path_trick_a_400(access_cli: TwofaCli, path: str) -> None:
    result = access_cli("access", "explain", f"https://jira.example.com{path}")
    assert result.exit_code != 0
    assert "the path is refused (400)" in result.output


def test_an_application_names_the_rule_that_admits_a_group_member(access_cli: TwofaCli) -> None:
    access_cli.ok(
        "oidc", "client", "add", "Payroll", "--redirect-uri", "https://pay.example.com/cb",
        "--group", "contractors", "--user", "dave",
    )  # fmt: skip
    out = access_cli.ok("access", "explain", "--application", "Payroll", "--user", "carol").output
    assert "application: Payroll (oidc" in out
    assert "groups: contractors" in out
    assert "rule: #1 of the application's" in out
    assert "decision: may sign in; policy two_factor" in out


def test_an_application_refuses_whoever_it_does_not_list_and_says_why(
    access_cli: TwofaCli,
) -> None:
    access_cli.ok("user", "add", "erin", "--no-password")
    access_cli.ok(
        "oidc", "client", "add", "Payroll", "--redirect-uri", "https://pay.example.com/cb",
        "--group", "contractors", "--no-second-factor",
    )  # fmt: skip
    outsider = access_cli.ok("access", "explain", "--application", "Payroll", "--user", "erin")
    assert "rule: #2 of the application's" in outsider.output
    assert "not among the users and groups the application admits: refused" in outsider.output
    access_cli.ok("user", "disable", "carol")
    disabled = access_cli.ok("access", "explain", "--application", "Payroll", "--user", "carol")
    assert "the account is disabled: refused" in disabled.output
    nobody = access_cli.ok("access", "explain", "--application", "Payroll", "--user", "nobody")
    assert "no such user: refused" in nobody.output


def test_explain_needs_a_url_or_an_application_with_a_user(access_cli: TwofaCli) -> None:
    assert access_cli("access", "explain").exit_code != 0
    assert access_cli("access", "explain", "--application", "Payroll").exit_code != 0
