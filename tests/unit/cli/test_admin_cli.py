from pathlib import Path

from tests.unit.cli.conftest import TwofaCli


def test_admin_create_makes_a_user_with_the_admin_role(cli: TwofaCli, tmp_path: Path) -> None:
    secret = tmp_path / "password.txt"
    secret.write_text("first-admin-password\n")
    result = cli.ok("admin", "create", "root", "--password-file", str(secret))
    assert "added administrator root" in result.output
    shown = cli.ok("user", "show", "root", "--json")
    assert '"is_admin": true' in shown.output


def test_admin_create_refuses_an_existing_username(cli: TwofaCli, tmp_path: Path) -> None:
    secret = tmp_path / "password.txt"
    secret.write_text("first-admin-password\n")
    cli.ok("admin", "create", "root", "--password-file", str(secret))
    result = cli("admin", "create", "root", "--password-file", str(secret))
    assert result.exit_code == 2
    assert "already exists" in result.output
