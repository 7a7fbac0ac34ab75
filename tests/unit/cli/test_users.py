"""`twofa user …`: adding users with a password from a file, stdin or a prompt, changing it,
disabling and enabling, listing and showing, and resetting the second factor."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from tests.unit.cli.conftest import TwofaCli
from twofa.security.passwords import PasswordHashing
from twofa.services.runtime import Gateway
from twofa.storage.repositories import DuoEnrolments, Users
from twofa.storage.sessions import Sessions
from twofa.storage.tables import SessionRow

verify_password = PasswordHashing().verify  # a hash names its own parameters


def test_add_reads_the_password_from_a_file(cli: TwofaCli, password_file: Path) -> None:
    result = cli.ok("user", "add", "alice", "--password-file", str(password_file))

    assert "added user alice" in result.stdout
    stored = cli.user_row("alice").password_hash
    assert verify_password(stored, "file-password-1")
    assert not verify_password(stored, "file-password-1\n")


def test_add_reads_the_password_from_stdin(cli: TwofaCli) -> None:
    cli.ok("user", "add", "alice", "--password-stdin", input="stdin-password-1\n")

    assert verify_password(cli.user_row("alice").password_hash, "stdin-password-1")


def test_add_asks_for_the_password_twice_without_echo(cli: TwofaCli) -> None:
    result = cli.ok("user", "add", "alice", input="prompted-password\nprompted-password\n")

    assert "prompted-password" not in result.output
    assert verify_password(cli.user_row("alice").password_hash, "prompted-password")


def test_add_stores_the_details_given(cli: TwofaCli) -> None:
    cli.ok(
        "user", "add", "alice", "--no-password",
        "--display-name", "Alice Liddell", "--email", "alice@example.com", "--admin",
    )  # fmt: skip

    row = cli.user_row("alice")
    assert (row.display_name, row.email, row.is_admin, row.enabled) == (
        "Alice Liddell",
        "alice@example.com",
        True,
        True,
    )
    assert row.password_hash is None


def test_add_refuses_an_empty_password_file(cli: TwofaCli, tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n", encoding="utf-8")

    result = cli("user", "add", "alice", "--password-file", str(empty))

    assert result.exit_code == 2
    assert "the password is empty" in result.stderr
    assert cli.ok("user", "list", "--json").stdout.strip() == "[]"


def test_add_refuses_two_password_sources(cli: TwofaCli, password_file: Path) -> None:
    result = cli(
        "user", "add", "alice", "--password-file", str(password_file), "--password-stdin",
        input="other\n",
    )  # fmt: skip

    assert result.exit_code == 2
    assert "not both" in result.stderr


def test_add_has_no_password_value_option(cli: TwofaCli) -> None:
    result = cli("user", "add", "alice", "--password", "on-the-command-line")

    assert result.exit_code == 2
    assert "No such option" in result.stderr


def test_adding_an_existing_user_exits_2_with_a_message(cli: TwofaCli) -> None:
    cli.ok("user", "add", "alice", "--no-password")

    result = cli("user", "add", "alice", "--no-password")

    assert result.exit_code == 2
    assert "error: user 'alice' already exists" in result.stderr
    assert "Traceback" not in result.output


def test_add_records_an_audit_event(cli: TwofaCli) -> None:
    cli.ok("user", "add", "alice", "--no-password", "--admin")

    [event] = cli.audit_rows("alice")
    assert event.kind == "user_add"
    assert event.user_agent == "twofa-cli"
    assert event.detail == {"actor": "cli", "is_admin": True}


def test_passwd_replaces_the_password_from_a_file(cli: TwofaCli, password_file: Path) -> None:
    cli.ok("user", "add", "alice", "--password-stdin", input="old-password\n")

    result = cli.ok("user", "passwd", "alice", "--password-file", str(password_file))

    assert "password changed for alice" in result.stdout
    stored = cli.user_row("alice").password_hash
    assert verify_password(stored, "file-password-1")
    assert not verify_password(stored, "old-password")
    assert cli.audit_kinds("alice") == ["user_add", "user_password"]


def test_passwd_from_stdin_ends_the_users_sessions(cli: TwofaCli) -> None:
    cli.ok("user", "add", "alice", "--password-stdin", input="old-password\n")
    cli.query(lambda gateway: _open_session(gateway, "alice"))

    cli.ok("user", "passwd", "alice", "--password-stdin", input="new-password\n")

    assert verify_password(cli.user_row("alice").password_hash, "new-password")
    assert cli.query(lambda gateway: _session_count(gateway, "alice")) == 0


def test_passwd_for_an_unknown_user_exits_2(cli: TwofaCli) -> None:
    result = cli("user", "passwd", "nobody", "--password-stdin", input="whatever-password\n")

    assert result.exit_code == 2
    assert "error: no user 'nobody'" in result.stderr


def test_disable_then_enable(cli: TwofaCli) -> None:
    cli.ok("user", "add", "alice", "--no-password")

    assert "disabled alice" in cli.ok("user", "disable", "alice").stdout
    assert cli.user_row("alice").enabled is False
    assert "enabled alice" in cli.ok("user", "enable", "alice").stdout
    assert cli.user_row("alice").enabled is True
    assert cli.audit_kinds("alice") == ["user_add", "user_disable", "user_enable"]


def test_disable_an_unknown_user_exits_2(cli: TwofaCli) -> None:
    result = cli("user", "disable", "nobody")

    assert result.exit_code == 2
    assert "no user 'nobody'" in result.stderr


def test_list_shows_a_table_with_policy_and_method_columns(cli: TwofaCli) -> None:
    cli.ok("user", "add", "alice", "--no-password", "--display-name", "Alice Liddell")
    cli.ok("user", "add", "bob", "--no-password", "--admin")
    cli.ok("group", "add", "engineering")
    cli.ok("group", "add-member", "engineering", "alice")
    cli.ok("policy", "enable", "--group", "engineering")
    cli.ok("user", "disable", "bob")

    lines = cli.ok("user", "list").stdout.splitlines()

    assert lines[0].split() == [
        "USERNAME", "NAME", "ENABLED", "ADMIN", "GROUPS", "2FA", "REASON", "METHODS",
    ]  # fmt: skip
    assert lines[2].split()[:8] == [
        "alice", "Alice", "Liddell", "yes", "no", "engineering", "required", "enabled",
    ]  # fmt: skip
    assert "enabled via group engineering" in lines[2]
    assert lines[2].endswith("not set up")
    assert lines[3].split()[:6] == ["bob", "bob", "no", "yes", "-", "required"]
    assert "required for administrators" in lines[3]


def test_list_with_no_users_says_how_to_add_one(cli: TwofaCli) -> None:
    assert "twofa user add" in cli.ok("user", "list").stdout


def test_list_json_is_machine_readable(cli: TwofaCli) -> None:
    cli.ok("user", "add", "alice", "--no-password", "--email", "alice@example.com")
    cli.ok("policy", "enable", "--user", "alice")

    [alice] = json.loads(cli.ok("user", "list", "--json").stdout)

    assert alice["username"] == "alice"
    assert alice["email"] == "alice@example.com"
    assert alice["policy"] == {"required": True, "reason": "enabled for the user"}
    assert alice["duo_configured"] is False


def test_show_describes_one_user(cli: TwofaCli) -> None:
    cli.ok("user", "add", "alice", "--no-password", "--email", "alice@example.com")

    shown = dict(line.split(":", 1) for line in cli.ok("user", "show", "alice").stdout.splitlines())

    assert shown["email"].strip() == "alice@example.com"
    assert shown["2FA"].strip() == (
        "not required (2FA is not enabled for the user or any of their groups)"
    )
    assert shown["methods"].strip() == "not set up"


def test_show_an_unknown_user_exits_2(cli: TwofaCli) -> None:
    result = cli("user", "show", "nobody")

    assert result.exit_code == 2
    assert "error: no user 'nobody'" in result.stderr


def test_reset_2fa_forgets_duo_push_and_ends_sessions(cli: TwofaCli) -> None:
    cli.ok("user", "add", "alice", "--no-password")
    cli.query(lambda gateway: _configure_duo_push(gateway, "alice"))
    cli.query(lambda gateway: _open_session(gateway, "alice"))
    assert cli.ok("user", "show", "alice").stdout.splitlines()[-1] == "methods:  duo_push"

    result = cli.ok("user", "reset-2fa", "alice")

    assert "second factor reset for alice" in result.stdout
    assert cli.ok("user", "show", "alice").stdout.splitlines()[-1].endswith("not set up")
    assert cli.query(lambda gateway: _session_count(gateway, "alice")) == 0
    assert cli.audit_kinds("alice")[-1] == "user_reset_2fa"


async def _configure_duo_push(gateway: Gateway, username: str) -> None:
    async with gateway.db.begin() as db:
        user = await Users(db).by_name(username)
        assert user is not None
        enrolment = await DuoEnrolments(db).get_or_create(user.id)
        enrolment.duo_user_id = "DU0000000000000001"
        enrolment.configured_at = gateway.clock.now()


async def _open_session(gateway: Gateway, username: str) -> None:
    async with gateway.db.begin() as db:
        user = await Users(db).by_name(username)
        assert user is not None
        now = gateway.clock.now()
        await Sessions(db).add(
            SessionRow(
                id="0" * 64,
                user_id=user.id,
                level=2,
                csrf_token="c" * 32,
                created_at=now,
                last_seen_at=now,
                expires_at=now + timedelta(hours=1),
            )
        )


async def _session_count(gateway: Gateway, username: str) -> int:
    async with gateway.db() as db:
        user = await Users(db).by_name(username)
        assert user is not None
        rows = await db.scalars(select(SessionRow).where(SessionRow.user_id == user.id))
        return len(rows.all())
