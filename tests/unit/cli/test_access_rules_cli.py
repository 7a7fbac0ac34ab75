"""`twofa access rules …`: the console's access rules from the command line, listed after the
settings file's, each change audited as `cli`, a refused rule named by its option."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.unit.cli.conftest import TwofaCli

SETTINGS = """
[access]
domains = ["jira.example.com"]
[[access.rules]]
domain = "jira.example.com"
resources = ["/rest/*"]
policy = "bypass"
"""


@pytest.fixture
def rules_cli(cli: TwofaCli, tmp_path: Path) -> TwofaCli:
    settings = tmp_path / "twofa.toml"
    settings.write_text(SETTINGS)
    return TwofaCli(cli.runner, {**cli.env, "TWOFA_CONFIG": str(settings)})


def listed(cli: TwofaCli) -> list[dict[str, object]]:
    rules: list[dict[str, object]] = json.loads(cli.ok("access", "rules", "list", "--json").output)
    return rules


def add(cli: TwofaCli, *options: str) -> int:
    out = cli.ok("access", "rules", "add", "--domain", "jira.example.com", *options).output
    return int(out.split("console rule id ", 1)[1].split()[0])


def test_added_rules_are_listed_after_the_settings_files(rules_cli: TwofaCli) -> None:
    add(rules_cli, "--policy", "deny", "--group", "contractors")
    add(rules_cli, "--policy", "two_factor")
    rules = listed(rules_cli)
    assert [(r["source"], r["policy"]) for r in rules] == [
        ("file", "bypass"),
        ("console", "deny"),
        ("console", "two_factor"),
    ]
    table = rules_cli.ok("access", "rules", "list").output
    assert table.index("file") < table.index("console id")


def test_move_edit_and_remove_are_audited_as_the_cli(rules_cli: TwofaCli) -> None:
    first = add(rules_cli, "--policy", "deny", "--user", "carol")
    second = add(rules_cli, "--policy", "one_factor")
    out = rules_cli.ok("access", "rules", "move", str(second), "1").output
    assert f"moved console rule id {second} to console position 1" in out
    rules_cli.ok(
        "access", "rules", "edit", str(first), "--domain", "jira.example.com", "--policy", "deny",
        "--network", "10.0.0.0/8",
    )  # fmt: skip
    rules_cli.ok("access", "rules", "remove", str(second))
    (_, only) = listed(rules_cli)
    assert only["id"] == first
    assert only["networks"] == ["10.0.0.0/8"]
    rows = [row for row in rules_cli.audit_rows() if row.kind == "access_rule"]
    assert [row.outcome for row in rows] == ["added", "added", "moved", "updated", "removed"]
    assert {row.username for row in rows} == {"cli"}


def test_a_refused_rule_names_the_option_and_saves_nothing(rules_cli: TwofaCli) -> None:
    result = rules_cli(
        "access", "rules", "add", "--domain", "wiki.other.org", "--policy", "deny",
        "--network", "not-a-network",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "--domain: wiki.other.org is not one of the protected domains" in result.output
    assert "--network: 'not-a-network' is not an IP address" in result.output
    assert "nothing was saved" in result.output
    assert [r["source"] for r in listed(rules_cli)] == ["file"]


def test_an_unknown_rule_id_is_an_error(rules_cli: TwofaCli) -> None:
    result = rules_cli("access", "rules", "remove", "77")
    assert result.exit_code == 2
    assert "no console access rule with id 77" in result.output


def test_explain_names_a_console_rule_and_its_place(rules_cli: TwofaCli) -> None:
    rule_id = add(rules_cli, "--policy", "deny")
    out = rules_cli.ok("access", "explain", "https://jira.example.com/browse/X-1").output
    assert f"rule: #2 (console rule 1, id {rule_id})" in out
    assert "policy: deny" in out
    out = rules_cli.ok("access", "explain", "https://jira.example.com/rest/x").output
    assert "rule: #1 (rule 1 from the settings file)" in out
