"""`twofa keys` on a fresh database: what it says when there is nothing to rotate, and the
secret key file it reads (one key a line, newest first)."""

from __future__ import annotations

from pathlib import Path

from tests.unit.cli.conftest import TwofaCli
from twofa.cli.main import app
from twofa.config import PLACEHOLDER_SECRET
from twofa.security.sealing import key_id

NEW = "a-new-key-for-the-command-line-tests-0123456"


def test_status_lists_the_keys_newest_first_with_their_counts(
    cli: TwofaCli, tmp_path: Path
) -> None:
    key_file = tmp_path / "secret_key"
    key_file.write_text(f"{NEW}\n{PLACEHOLDER_SECRET}\n", "utf-8")
    env = {**cli.env, "TWOFA_SECRET_KEY_FILE": str(key_file)}

    result = cli.runner.invoke(app, ["keys", "status"], env=env)

    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines()[2:4]]
    assert rows == [[key_id(NEW), "newest", "0"], [key_id(PLACEHOLDER_SECRET), "older", "0"]]
    assert "remove the older keys from secret_key" in result.output


def test_rotate_with_nothing_sealed_finishes_at_once(cli: TwofaCli) -> None:
    result = cli.ok("keys", "rotate")

    assert "0 values sealed again" in result.output
    assert "Every sealed value uses the newest key." in result.output
    assert cli.audit_kinds() == ["secret_key_rotation", "secret_key_rotation"]


def test_rotate_refuses_an_empty_batch(cli: TwofaCli) -> None:
    result = cli("keys", "rotate", "--batch-size", "0")
    assert result.exit_code == 2
    assert "batch-size" in result.output
