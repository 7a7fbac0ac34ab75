"""`twofa policy …`: switching 2FA on and off for a user or a group, and explaining the
decision for a user."""

from __future__ import annotations

import pytest

from tests.unit.cli.conftest import TwofaCli


@pytest.fixture
def team(cli: TwofaCli) -> TwofaCli:
    """alice in engineering, bob in no group; 2FA off everywhere."""
    cli.ok("user", "add", "alice", "--no-password")
    cli.ok("user", "add", "bob", "--no-password")
    cli.ok("group", "add", "engineering")
    cli.ok("group", "add-member", "engineering", "alice")
    return cli


def test_nobody_needs_2fa_until_it_is_enabled(team: TwofaCli) -> None:
    result = team.ok("policy", "show", "alice")

    assert result.stdout.strip() == (
        "alice: 2FA not required: 2FA is not enabled for the user or any of their groups"
    )


def test_enable_for_a_user(team: TwofaCli) -> None:
    assert "2FA enabled for user bob" in team.ok("policy", "enable", "--user", "bob").stdout

    assert team.ok("policy", "show", "bob").stdout.strip() == (
        "bob: 2FA required: enabled for the user"
    )
    assert "not required" in team.ok("policy", "show", "alice").stdout


def test_enable_for_a_group_reaches_its_members(team: TwofaCli) -> None:
    team.ok("policy", "enable", "--group", "engineering")

    assert team.ok("policy", "show", "alice").stdout.strip() == (
        "alice: 2FA required: enabled via group engineering"
    )
    assert "bob: 2FA not required" in team.ok("policy", "show", "bob").stdout


def test_disable_for_a_group(team: TwofaCli) -> None:
    team.ok("policy", "enable", "--group", "engineering")

    assert "2FA disabled for group engineering" in (
        team.ok("policy", "disable", "--group", "engineering").stdout
    )
    assert "alice: 2FA not required" in team.ok("policy", "show", "alice").stdout


def test_disable_for_a_user_keeps_the_group_requirement(team: TwofaCli) -> None:
    team.ok("policy", "enable", "--user", "alice")
    team.ok("policy", "enable", "--group", "engineering")

    team.ok("policy", "disable", "--user", "alice")

    assert "enabled via group engineering" in team.ok("policy", "show", "alice").stdout


def test_policy_changes_are_audited_with_before_and_after(team: TwofaCli) -> None:
    team.ok("policy", "enable", "--user", "bob")
    team.ok("policy", "enable", "--group", "engineering")

    user_event, group_event = [e for e in team.audit_rows() if e.kind.startswith("policy_")]
    assert (user_event.kind, user_event.username) == ("policy_user", "bob")
    assert (user_event.detail["before"], user_event.detail["after"]) == (False, True)
    assert (group_event.kind, group_event.detail["group"]) == ("policy_group", "engineering")
    assert group_event.detail["after"] is True


@pytest.mark.parametrize("action", ["enable", "disable"])
def test_user_and_group_together_is_a_usage_error(team: TwofaCli, action: str) -> None:
    result = team("policy", action, "--user", "alice", "--group", "engineering")

    assert result.exit_code == 2
    assert "Usage:" in result.stderr
    assert "give exactly one of them" in result.stderr
    assert "policy_user" not in team.audit_kinds()


def test_neither_user_nor_group_is_a_usage_error(team: TwofaCli) -> None:
    result = team("policy", "enable")

    assert result.exit_code == 2
    assert "'--user' / '--group'" in result.stderr


def test_enable_for_an_unknown_group_exits_2(team: TwofaCli) -> None:
    result = team("policy", "enable", "--group", "nowhere")

    assert result.exit_code == 2
    assert "error: no group 'nowhere'" in result.stderr


def test_show_for_an_unknown_user_exits_2(team: TwofaCli) -> None:
    result = team("policy", "show", "nobody")

    assert result.exit_code == 2
    assert "error: no user 'nobody'" in result.stderr
