"""`twofa user import FILE.csv`: all users or none, missing groups created, every bad row
reported with its line number."""

from __future__ import annotations

import json
from pathlib import Path

from tests.unit.cli.conftest import TwofaCli
from twofa.security.passwords import PasswordHashing

verify_password = PasswordHashing().verify  # a hash names its own parameters
HEADER = "username,display_name,email,password,groups\n"


def write_csv(directory: Path, body: str, header: str = HEADER) -> str:
    path = directory / "users.csv"
    path.write_text(header + body, encoding="utf-8")
    return str(path)


def usernames(cli: TwofaCli) -> list[str]:
    return [user["username"] for user in json.loads(cli.ok("user", "list", "--json").stdout)]


def test_import_creates_users_groups_and_memberships(cli: TwofaCli, tmp_path: Path) -> None:
    cli.ok("group", "add", "engineering")
    path = write_csv(
        tmp_path,
        "alice,Alice Liddell,alice@example.com,alice-import-password,engineering;ops\n"
        "bob,,,,ops\n"
        'carol,"Carol, the Third",,carol-import-password,\n',
    )

    result = cli.ok("user", "import", path)

    assert result.stdout.strip() == "imported 3 users, created 1 groups"
    assert usernames(cli) == ["alice", "bob", "carol"]
    groups = {g["name"]: g["members"] for g in json.loads(cli.ok("group", "list", "--json").stdout)}
    assert groups == {"engineering": ["alice"], "ops": ["alice", "bob"]}
    alice = cli.user_row("alice")
    assert (alice.display_name, alice.email) == ("Alice Liddell", "alice@example.com")
    assert verify_password(alice.password_hash, "alice-import-password")
    assert cli.user_row("bob").password_hash is None
    assert cli.user_row("bob").display_name == "bob"
    assert cli.user_row("carol").display_name == "Carol, the Third"


def test_import_audits_each_user_group_and_membership(cli: TwofaCli, tmp_path: Path) -> None:
    path = write_csv(tmp_path, "alice,,,,ops\nbob,,,,\n")

    cli.ok("user", "import", path)

    events = [(e.kind, e.username, e.detail.get("group")) for e in cli.audit_rows()]
    assert events == [
        ("group_add", "", "ops"),
        ("user_add", "alice", None),
        ("group_add_member", "alice", "ops"),
        ("user_add", "bob", None),
    ]
    assert {e.detail["source"] for e in cli.audit_rows() if e.kind != "group_add_member"} == {
        "import"
    }


def test_two_bad_rows_are_both_reported_and_nothing_is_written(
    cli: TwofaCli, tmp_path: Path
) -> None:
    cli.ok("user", "add", "alice", "--no-password")
    audit_before = len(cli.audit_rows())
    path = write_csv(
        tmp_path,
        "dave,,,dave-import-password,newgroup\n"  # line 2: fine on its own
        "alice,,,,\n"  # line 3: exists already
        "bad name,,,,\n",  # line 4: a space in the username
    )

    result = cli("user", "import", path)

    assert result.exit_code == 2
    assert "nothing imported, 2 bad row(s)" in result.stderr
    assert "line 3: user 'alice' already exists" in result.stderr
    assert "line 4: invalid username 'bad name'" in result.stderr
    assert "line 2" not in result.stderr
    assert usernames(cli) == ["alice"]
    assert "newgroup" not in cli.ok("group", "list").stdout
    assert len(cli.audit_rows()) == audit_before


def test_malformed_rows_are_reported_with_the_other_problems(cli: TwofaCli, tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        "erin,,,,\n"
        "frank,Frank,frank@example.com,pw,ops,extra\n"  # line 3: six fields
        "gina,Gina\n"  # line 4: two fields
        "erin,,,,\n",  # line 5: erin twice
    )

    result = cli("user", "import", path)

    assert result.exit_code == 2
    assert "line 3: expected 5 fields, found 6" in result.stderr
    assert "line 4: expected 5 fields, found 2" in result.stderr
    assert "line 5: user 'erin' is listed more than once" in result.stderr
    assert usernames(cli) == []


def test_a_header_with_an_unknown_column_is_refused(cli: TwofaCli, tmp_path: Path) -> None:
    path = write_csv(tmp_path, "alice,Al\n", header="username,nickname\n")

    result = cli("user", "import", path)

    assert result.exit_code == 2
    assert "line 1: unknown column(s) nickname" in result.stderr
    assert usernames(cli) == []


def test_an_empty_file_is_refused(cli: TwofaCli, tmp_path: Path) -> None:
    result = cli("user", "import", write_csv(tmp_path, "", header=""))

    assert result.exit_code == 2
    assert "empty file" in result.stderr


def test_a_missing_file_is_a_usage_error(cli: TwofaCli, tmp_path: Path) -> None:
    result = cli("user", "import", str(tmp_path / "absent.csv"))

    assert result.exit_code == 2
    assert "does not exist" in result.stderr
