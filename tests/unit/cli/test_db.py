"""`twofa db upgrade` and `twofa db status`, and how every command treats an unmigrated
database or unusable settings: one red line, exit code 2, no traceback."""

from __future__ import annotations

from pathlib import Path

from tests.unit.cli.conftest import TwofaCli
from twofa.storage.database import head_revision


def test_status_of_an_unmigrated_database_exits_1_and_says_to_upgrade(fresh_cli: TwofaCli) -> None:
    result = fresh_cli("db", "status")

    assert result.exit_code == 1
    assert "no twofa schema yet" in result.stdout
    assert "twofa db upgrade" in result.stdout


def test_upgrade_reports_the_head_revision(fresh_cli: TwofaCli) -> None:
    result = fresh_cli.ok("db", "upgrade")

    assert result.stdout.strip() == f"database at revision {head_revision()}"


def test_status_after_upgrade_is_up_to_date(fresh_cli: TwofaCli) -> None:
    fresh_cli.ok("db", "upgrade")

    result = fresh_cli("db", "status")

    assert result.exit_code == 0
    assert f"database at revision {head_revision()} (head): up to date" in result.stdout


def test_upgrade_twice_keeps_the_database_at_head(fresh_cli: TwofaCli) -> None:
    fresh_cli.ok("db", "upgrade")

    result = fresh_cli.ok("db", "upgrade")

    assert head_revision() in result.stdout
    assert fresh_cli("db", "status").exit_code == 0


def test_a_command_on_an_unmigrated_database_exits_2_with_the_schema_message(
    fresh_cli: TwofaCli,
) -> None:
    result = fresh_cli("user", "list")

    assert result.exit_code == 2
    assert "error: the database has no twofa schema yet: run `twofa db upgrade` first" in (
        result.stderr
    )
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_invalid_settings_exit_2_listing_the_problem(fresh_cli: TwofaCli) -> None:
    env = {**fresh_cli.env, "TWOFA_SESSION_IDLE_MINUTES": "zero"}

    result = TwofaCli(fresh_cli.runner, env)("db", "status")

    assert result.exit_code == 2
    assert "error: invalid settings: session_idle_minutes" in result.stderr
    assert "Traceback" not in result.output


def test_config_option_reads_the_settings_file(fresh_cli: TwofaCli, tmp_path: Path) -> None:
    database = tmp_path / "from-config.db"
    config = tmp_path / "twofa.toml"
    config.write_text(
        f'mode = "dev"\ndatabase_url = "sqlite+aiosqlite:///{database}"\n', encoding="utf-8"
    )
    env_without_database = {"TWOFA_MODE": "dev", "COLUMNS": "200"}
    cli = TwofaCli(fresh_cli.runner, env_without_database)

    cli.ok("--config", str(config), "db", "upgrade")

    assert database.exists()
    assert cli("--config", str(config), "db", "status").exit_code == 0


def test_missing_config_file_exits_2(fresh_cli: TwofaCli, tmp_path: Path) -> None:
    result = fresh_cli("--config", str(tmp_path / "absent.toml"), "db", "status")

    assert result.exit_code == 2
    assert "cannot read settings file" in result.stderr


def test_an_unusable_duo_api_hostname_is_a_settings_error(fresh_cli: TwofaCli) -> None:
    fresh_cli.ok("db", "upgrade")
    env = {
        **fresh_cli.env,
        "TWOFA_DUO__IKEY": "DIXXXXXXXXXXXXXXXXXX",
        "TWOFA_DUO__SKEY": "duo-secret-key-duo-secret-key-duo-secret",
        "TWOFA_DUO__API_HOSTNAME": "http://api-1234abcd.duosecurity.com",  # http off loopback
    }

    result = TwofaCli(fresh_cli.runner, env)("user", "list")

    assert result.exit_code == 2
    assert "error: invalid settings: duo" in result.stderr
