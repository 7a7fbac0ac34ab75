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
