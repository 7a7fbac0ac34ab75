"""`twofa group …`: creating groups, adding and removing members, listing them."""

from __future__ import annotations

import json

from tests.unit.cli.conftest import TwofaCli


def _user_with_group(cli: TwofaCli) -> None:
    cli.ok("user", "add", "alice", "--no-password")
    cli.ok("group", "add", "engineering")


def test_add_creates_an_empty_group_with_2fa_off(cli: TwofaCli) -> None:
    assert "added group engineering" in cli.ok("group", "add", "engineering").stdout

    [group] = json.loads(cli.ok("group", "list", "--json").stdout)
    assert group == {"name": "engineering", "twofa_enabled": False, "members": []}
    assert cli.audit_rows()[-1].detail["group"] == "engineering"


def test_adding_an_existing_group_exits_2(cli: TwofaCli) -> None:
    cli.ok("group", "add", "engineering")

    result = cli("group", "add", "engineering")

    assert result.exit_code == 2
    assert "error: group 'engineering' already exists" in result.stderr


def test_add_member_then_remove_member(cli: TwofaCli) -> None:
    _user_with_group(cli)

    assert (
        "added alice to engineering" in cli.ok("group", "add-member", "engineering", "alice").stdout
    )
    assert cli.ok("user", "show", "alice", "--json").stdout.count("engineering") == 1
    assert "removed alice from engineering" in (
        cli.ok("group", "remove-member", "engineering", "alice").stdout
    )
    assert json.loads(cli.ok("user", "show", "alice", "--json").stdout)["groups"] == []
    assert cli.audit_kinds("alice") == ["user_add", "group_add_member", "group_remove_member"]


def test_adding_a_member_twice_changes_nothing(cli: TwofaCli) -> None:
    _user_with_group(cli)
    cli.ok("group", "add-member", "engineering", "alice")

    result = cli.ok("group", "add-member", "engineering", "alice")

    assert "alice is already a member of engineering" in result.stdout
    assert cli.audit_kinds("alice").count("group_add_member") == 1


def test_removing_a_non_member_says_so(cli: TwofaCli) -> None:
    _user_with_group(cli)

    result = cli.ok("group", "remove-member", "engineering", "alice")

    assert "alice was not a member of engineering" in result.stdout
    assert "group_remove_member" not in cli.audit_kinds("alice")


def test_add_member_to_an_unknown_group_exits_2(cli: TwofaCli) -> None:
    cli.ok("user", "add", "alice", "--no-password")

    result = cli("group", "add-member", "nowhere", "alice")

    assert result.exit_code == 2
    assert "error: no group 'nowhere'" in result.stderr


def test_add_an_unknown_user_to_a_group_exits_2(cli: TwofaCli) -> None:
    cli.ok("group", "add", "engineering")

    result = cli("group", "add-member", "engineering", "nobody")

    assert result.exit_code == 2
    assert "error: no user 'nobody'" in result.stderr


def test_list_shows_2fa_and_members(cli: TwofaCli) -> None:
    for username in ("alice", "bob"):
        cli.ok("user", "add", username, "--no-password")
    cli.ok("group", "add", "engineering")
    cli.ok("group", "add", "sales")
    cli.ok("group", "add-member", "engineering", "bob")
    cli.ok("group", "add-member", "engineering", "alice")
    cli.ok("policy", "enable", "--group", "engineering")

    lines = cli.ok("group", "list").stdout.splitlines()

    assert lines[0].split() == ["GROUP", "2FA", "ENABLED", "MEMBERS"]
    assert lines[2].split() == ["engineering", "yes", "alice,", "bob"]
    assert lines[3].split() == ["sales", "no", "-"]


def test_list_with_no_groups_says_how_to_add_one(cli: TwofaCli) -> None:
    assert "twofa group add" in cli.ok("group", "list").stdout
