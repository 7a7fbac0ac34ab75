"""`twofa audit list` and `twofa audit export` with their filters, and `twofa user unlock` and
`twofa user delete`, run in-process against a fresh SQLite database."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path

from tests.unit.cli.conftest import TwofaCli
from twofa.domain.client import ClientInfo
from twofa.services.runtime import Gateway
from twofa.storage.tables import AuditRow

BROWSER = ClientInfo(ip="203.0.113.7", user_agent="pytest-browser")


def add_events(cli: TwofaCli, *rows: AuditRow) -> None:
    async def insert(gateway: Gateway) -> None:
        async with gateway.db.begin() as db:
            db.add_all(rows)

    cli.query(insert)


def event(day: int, kind: str, outcome: str, username: str, **detail: object) -> AuditRow:
    return AuditRow(
        at=datetime(2024, 6, day, 9, 30, tzinfo=UTC),
        kind=kind,
        outcome=outcome,
        username=username,
        client_ip="198.51.100.1",
        user_agent="agent, with comma",
        detail=detail,
    )


def seed_timeline(cli: TwofaCli) -> None:
    add_events(
        cli,
        event(1, "login", "bad_password", "bob"),
        event(2, "login", "password_ok", "bob", second_factor="not required"),
        event(3, "duo_push", "deny", "alice"),
        event(4, "settings_duo", "saved", "root", after={"skey": "top-secret-value"}),
    )


def test_list_shows_the_newest_events_first(cli: TwofaCli) -> None:
    seed_timeline(cli)
    result = cli.ok("audit", "list", "--until", "2024-06-30")
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["AT", "(UTC)", "KIND", "OUTCOME", "USER", "CLIENT", "IP", "DETAIL"]
    assert [line.split()[2] for line in lines[2:]] == [
        "settings_duo",
        "duo_push",
        "login",
        "login",
    ]
    assert "top-secret-value" not in result.stdout


def test_list_filters_by_user_kind_outcome_and_time(cli: TwofaCli) -> None:
    seed_timeline(cli)
    by_user = cli.ok("audit", "list", "--user", "bob", "--json")
    assert [e["outcome"] for e in json.loads(by_user.stdout)] == ["password_ok", "bad_password"]
    by_outcome = cli.ok("audit", "list", "--kind", "login", "--outcome", "bad_password", "--json")
    assert [e["username"] for e in json.loads(by_outcome.stdout)] == ["bob"]
    in_range = cli.ok("audit", "list", "--since", "2024-06-02", "--until", "2024-06-03", "--json")
    assert [e["kind"] for e in json.loads(in_range.stdout)] == ["duo_push", "login"]


def test_list_json_has_every_field_and_no_secret(cli: TwofaCli) -> None:
    seed_timeline(cli)
    [saved] = json.loads(cli.ok("audit", "list", "--kind", "settings_duo", "--json").stdout)
    assert saved == {
        "at": "2024-06-04T09:30:00+00:00",
        "kind": "settings_duo",
        "outcome": "saved",
        "username": "root",
        "client_ip": "198.51.100.1",
        "user_agent": "agent, with comma",
        "detail": {"after": {"skey": "(redacted)"}},
    }


def test_list_limit_says_how_many_more_there_are(cli: TwofaCli) -> None:
    seed_timeline(cli)
    result = cli.ok("audit", "list", "--until", "2024-06-30", "--limit", "2")
    assert "(the newest 2 of 4; use --limit or narrow the filter)" in result.stdout


def test_list_with_nothing_to_show_says_so(cli: TwofaCli) -> None:
    assert cli.ok("audit", "list", "--kind", "nothing-like-this").stdout == "no events match\n"


def test_bad_time_is_a_usage_error_naming_the_option(cli: TwofaCli) -> None:
    result = cli("audit", "list", "--since", "next week")
    assert result.exit_code == 2
    assert "--since" in result.output
    assert "is not a date or time" in result.output


def test_export_writes_csv_oldest_first_to_a_file(cli: TwofaCli, tmp_path: Path) -> None:
    seed_timeline(cli)
    target = tmp_path / "audit.csv"
    result = cli.ok(
        "audit", "export", "--since", "2024-06-01", "--until", "2024-06-03", "-o", str(target)
    )
    assert f"exported 3 events to {target}" in result.output
    rows = list(csv.DictReader(io.StringIO(target.read_text("utf-8"), newline="")))
    assert [(row["at"], row["kind"], row["username"]) for row in rows] == [
        ("2024-06-01T09:30:00+00:00", "login", "bob"),
        ("2024-06-02T09:30:00+00:00", "login", "bob"),
        ("2024-06-03T09:30:00+00:00", "duo_push", "alice"),
    ]
    assert rows[0]["user_agent"] == "agent, with comma"
    assert json.loads(rows[1]["detail"]) == {"second_factor": "not required"}
    [export] = cli.audit_rows("cli")
    assert export.kind == "audit_export"


def test_export_to_stdout_has_no_secret(cli: TwofaCli) -> None:
    seed_timeline(cli)
    result = cli.ok("audit", "export", "--since", "2024-06-04", "--until", "2024-06-04")
    rows = list(csv.DictReader(io.StringIO(result.stdout, newline="")))
    assert [row["kind"] for row in rows] == ["settings_duo"]
    assert json.loads(rows[0]["detail"]) == {"after": {"skey": "(redacted)"}}
    assert "top-secret-value" not in result.stdout


def test_export_needs_a_start(cli: TwofaCli) -> None:
    result = cli("audit", "export")
    assert result.exit_code == 2
    assert "--since" in result.output


def test_failed_export_leaves_no_partial_file(fresh_cli: TwofaCli, tmp_path: Path) -> None:
    target = tmp_path / "audit.csv"
    result = fresh_cli("audit", "export", "--since", "2024-06-01", "-o", str(target))
    assert result.exit_code == 2  # the database is not migrated
    assert not target.exists()


def lock_out(cli: TwofaCli, username: str) -> None:
    async def guess(gateway: Gateway) -> None:
        for _ in range(gateway.settings.login_failures_per_user):
            _, anonymous = await gateway.sessions.open(BROWSER, "/")
            await gateway.login.sign_in(anonymous, username, "wrong", BROWSER)

    cli.query(guess)


def locked(cli: TwofaCli, username: str) -> bool:
    async def read(gateway: Gateway) -> bool:
        return await gateway.accounts.locked_until(username) is not None

    return cli.query(read)


def test_unlock_lifts_a_lock_out(cli: TwofaCli) -> None:
    cli.ok("user", "add", "alice", "--password-stdin", input="alice-password\n")
    lock_out(cli, "alice")
    assert locked(cli, "alice")
    assert cli.ok("user", "unlock", "alice").stdout == "unlocked alice\n"
    assert not locked(cli, "alice")
    unlock = [row for row in cli.audit_rows("alice") if row.kind == "user_unlock"]
    assert [row.detail for row in unlock] == [{"actor": "cli", "was_locked": True}]


def test_unlock_of_a_user_who_is_not_locked_says_so(cli: TwofaCli) -> None:
    cli.ok("user", "add", "alice", "--no-password")
    result = cli.ok("user", "unlock", "alice")
    assert "alice was not locked" in result.stdout


def test_unlock_of_an_unknown_user_fails(cli: TwofaCli) -> None:
    result = cli("user", "unlock", "ghost")
    assert result.exit_code == 2
    assert "no user 'ghost'" in result.output


def user_exists(cli: TwofaCli, username: str) -> bool:
    async def read(gateway: Gateway) -> bool:
        return username in [user.username for user in await gateway.accounts.users()]

    return cli.query(read)


def test_delete_with_yes_removes_the_user(cli: TwofaCli) -> None:
    cli.ok("user", "add", "alice", "--no-password")
    assert cli.ok("user", "delete", "alice", "--yes").stdout == "deleted user alice\n"
    assert not user_exists(cli, "alice")
    assert cli.audit_kinds("alice")[-1] == "user_delete"


def test_delete_asks_first_and_no_keeps_the_user(cli: TwofaCli) -> None:
    cli.ok("user", "add", "alice", "--no-password")
    refused = cli("user", "delete", "alice", input="n\n")
    assert refused.exit_code == 1
    assert "Delete user alice" in refused.output
    assert user_exists(cli, "alice")
    cli.ok("user", "delete", "alice", input="y\n")
    assert not user_exists(cli, "alice")


def test_delete_of_an_unknown_user_fails(cli: TwofaCli) -> None:
    result = cli("user", "delete", "ghost", "--yes")
    assert result.exit_code == 2
    assert "no user 'ghost'" in result.output
