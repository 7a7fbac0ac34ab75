"""`twofa token …`: a token is printed once and stored only as a hash, listed without its
secret, revoked by id; each change is audited as `cli`."""

from __future__ import annotations

import json

from tests.unit.cli.conftest import TwofaCli
from twofa.security.tokens import token_digest
from twofa.services.admin.api_tokens import ApiTokenService
from twofa.services.runtime import Gateway


def _create(cli: TwofaCli, *args: str) -> str:
    result = cli.ok("token", "create", *args)
    token = result.stdout.strip()
    assert "\n" not in token, "stdout holds the token alone, for TOKEN=$(twofa token create …)"
    return token


def test_create_prints_the_token_once_with_a_warning(cli: TwofaCli) -> None:
    result = cli.ok("token", "create", "deploy", "--days", "7")

    token = result.stdout.strip()
    assert token.startswith("twofa_")
    assert "only time the token is shown" in result.stderr
    assert "deploy" in result.stderr
    [listed] = json.loads(cli.ok("token", "list", "--json").stdout)
    assert listed["name"] == "deploy"
    assert listed["status"] == "active"
    assert listed["created_by"] == "cli"
    assert token not in cli.ok("token", "list").stdout


def test_the_printed_token_authenticates_and_only_its_hash_is_stored(cli: TwofaCli) -> None:
    token = _create(cli, "deploy")

    async def check(gateway: Gateway) -> tuple[str | None, str]:
        service = ApiTokenService(gateway.db, gateway.clock)
        caller = await service.authenticate(token)
        [info] = await service.tokens()
        return (caller.actor if caller else None), info.id

    actor, token_id = cli.query(check)
    assert actor == "token:deploy"
    assert token_digest(token) not in cli.ok("token", "list", "--json").stdout
    [record] = cli.audit_rows()
    assert (record.kind, record.detail["actor"], record.detail["token_id"]) == (
        "api_token_create",
        "cli",
        token_id,
    )


def test_days_outside_1_to_365_is_a_usage_error(cli: TwofaCli) -> None:
    result = cli("token", "create", "deploy", "--days", "366")
    assert result.exit_code == 2
    assert "--days" in result.output
    assert "no API tokens yet" in cli.ok("token", "list").stdout


def test_list_shows_a_table_with_the_status_of_each_token(cli: TwofaCli) -> None:
    assert "no API tokens yet" in cli.ok("token", "list").stdout
    _create(cli, "deploy")
    _create(cli, "backup")
    [deploy, _backup] = json.loads(cli.ok("token", "list", "--json").stdout)
    cli.ok("token", "revoke", deploy["id"])

    table = cli.ok("token", "list").stdout.splitlines()

    assert table[0].split()[:3] == ["ID", "NAME", "STATUS"]
    assert table[2].split()[:3] == [deploy["id"], "deploy", "revoked"]
    assert table[3].split()[1:3] == ["backup", "active"]


def test_revoke_refuses_the_token_from_then_on(cli: TwofaCli) -> None:
    token = _create(cli, "deploy")
    [listed] = json.loads(cli.ok("token", "list", "--json").stdout)

    result = cli.ok("token", "revoke", listed["id"])

    assert f"revoked API token {listed['id']} (deploy)" in result.stdout

    async def authenticate(gateway: Gateway) -> bool:
        return await ApiTokenService(gateway.db, gateway.clock).authenticate(token) is not None

    assert cli.query(authenticate) is False
    assert cli.audit_kinds() == ["api_token_create", "api_token_revoke", "api_token_refused"]


def test_revoking_an_unknown_id_exits_2(cli: TwofaCli) -> None:
    result = cli("token", "revoke", "0123456789abcdef")
    assert result.exit_code == 2
    assert "error: no API token '0123456789abcdef'" in result.stderr


def test_a_name_in_use_exits_2(cli: TwofaCli) -> None:
    _create(cli, "deploy")
    result = cli("token", "create", "deploy")
    assert result.exit_code == 2
    assert "already named 'deploy'" in result.stderr
    assert len(json.loads(cli.ok("token", "list", "--json").stdout)) == 1


def test_a_token_reads_only_unless_scopes_are_named(cli: TwofaCli) -> None:
    _create(cli, "reader")
    _create(cli, "ops", "--scope", "read", "--scope", "users,settings")
    listed = {item["name"]: item for item in json.loads(cli.ok("token", "list", "--json").stdout)}
    assert listed["reader"]["scopes"] == ["read"]
    assert listed["ops"]["scopes"] == ["read", "users", "settings"]
    assert listed["ops"]["owner"] is None
    assert "read users settings" in cli.ok("token", "list").stdout


def test_an_unknown_scope_is_a_usage_error_naming_the_choices(cli: TwofaCli) -> None:
    result = cli("token", "create", "deploy", "--scope", "admin")
    assert result.exit_code == 2
    assert "read users settings tokens" in result.output
    assert "no API tokens yet" in cli.ok("token", "list").stdout


def test_a_token_answers_to_the_admin_named_as_its_owner(cli: TwofaCli) -> None:
    cli.ok("user", "add", "boss", "--password-stdin", "--admin", input="boss-password-long-1\n")
    cli.ok("user", "add", "carol", "--password-stdin", input="carol-password-long-1\n")
    _create(cli, "owned", "--owner", "boss")
    [listed] = json.loads(cli.ok("token", "list", "--json").stdout)
    assert listed["owner"] == "boss"

    refused = cli("token", "create", "not-owned", "--owner", "carol")
    assert refused.exit_code != 0
    assert "'carol' is not an enabled admin" in refused.output


def test_promote_and_demote_grant_and_take_away_the_admin_role(cli: TwofaCli) -> None:
    cli.ok("user", "add", "boss", "--password-stdin", "--admin", input="boss-password-long-1\n")
    _create(cli, "owned", "--owner", "boss")
    token = _create(cli, "owned-too", "--owner", "boss")

    async def caller(gateway: Gateway) -> str | None:
        found = await ApiTokenService(gateway.db, gateway.clock).authenticate(token)
        return found.actor if found else None

    assert cli.query(caller) == "token:owned-too"
    assert "boss is no longer an admin" in cli.ok("user", "demote", "boss").stdout
    assert cli.query(caller) is None  # the token answers to an admin who is no more
    assert "boss is an admin" in cli.ok("user", "promote", "boss").stdout
    assert cli.query(caller) == "token:owned-too"
    kinds = [row.kind for row in cli.audit_rows() if row.kind.startswith("user_admin")]
    assert kinds == ["user_admin_revoke", "user_admin_grant"]
