"""`twofa oidc …`: a client is registered with its secret printed once and stored only as a
hash, listed and shown without it, its secret rotated (the old one stops), removed; signing
keys rotated with the old ones still published; each change audited as `cli`."""

from __future__ import annotations

import json

from sqlalchemy import select

from tests.unit.cli.conftest import TwofaCli
from twofa.services.idp.applications import verify_secret
from twofa.services.runtime import Gateway
from twofa.storage.tables import ApplicationRow

JIRA_CALLBACK = "https://jira.example.com/plugins/servlet/oidc/callback"


def _printed(output: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in output.strip().splitlines())


def _secret_works(cli: TwofaCli, client_id: str, secret: str) -> bool:
    async def check(gateway: Gateway) -> bool:
        async with gateway.db() as db:
            query = select(ApplicationRow).where(ApplicationRow.client_id == client_id)
            row = await db.scalar(query)
        assert row is not None
        assert row.client_secret_hash is not None
        assert secret not in row.client_secret_hash
        return verify_secret(row, secret)

    return cli.query(check)


def test_add_prints_the_secret_once_and_list_and_show_never_do(cli: TwofaCli) -> None:
    result = cli.ok(
        "oidc", "client", "add", "Jira", "--redirect-uri", JIRA_CALLBACK, "--group", "staff"
    )
    printed = _printed(result.stdout)
    assert "only time the secret is shown" in result.stderr
    assert _secret_works(cli, printed["client_id"], printed["client_secret"])

    [listed] = json.loads(cli.ok("oidc", "client", "list", "--json").stdout)
    assert listed["client_id"] == printed["client_id"]
    assert listed["allowed_groups"] == ["staff"]
    assert listed["second_factor_required"] is True
    assert printed["client_secret"] not in cli.ok("oidc", "client", "list").stdout
    shown = cli.ok("oidc", "client", "show", "Jira").stdout
    assert json.loads(shown)["redirect_uris"] == [JIRA_CALLBACK]
    assert printed["client_secret"] not in shown


def test_rotate_secret_stops_the_old_one_and_remove_ends_the_client(cli: TwofaCli) -> None:
    first = _printed(
        cli.ok("oidc", "client", "add", "Jira", "--redirect-uri", JIRA_CALLBACK).stdout
    )
    second = _printed(cli.ok("oidc", "client", "rotate-secret", first["client_id"]).stdout)

    assert not _secret_works(cli, first["client_id"], first["client_secret"])
    assert _secret_works(cli, first["client_id"], second["client_secret"])
    cli.ok("oidc", "client", "remove", "Jira")
    assert json.loads(cli.ok("oidc", "client", "list", "--json").stdout) == []
    assert cli("oidc", "client", "show", "Jira").exit_code != 0
    outcomes = [(row.kind, row.outcome) for row in cli.audit_rows("cli")]
    assert outcomes == [
        ("application", "added"),
        ("application", "secret_rotated"),
        ("application", "removed"),
    ]


def test_a_bad_redirect_uri_is_refused(cli: TwofaCli) -> None:
    refused = cli("oidc", "client", "add", "Jira", "--redirect-uri", "http://jira.example.com/cb")
    assert refused.exit_code != 0
    assert "https" in refused.output
    assert json.loads(cli.ok("oidc", "client", "list", "--json").stdout) == []


def test_keys_rotate_makes_new_keys_and_keeps_the_old_ones_published(cli: TwofaCli) -> None:
    async def published(gateway: Gateway) -> set[str]:
        return {key["kid"] for key in (await gateway.oidc_keys.jwks())["keys"]}

    before = cli.query(published)
    new = set(cli.ok("oidc", "keys", "rotate").stdout.split(": ", 1)[1].strip().split(", "))
    assert len(new) == 2
    assert not new & before
    assert cli.query(published) == before | new
