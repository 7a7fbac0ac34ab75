"""`twofa oidc client add --backchannel-logout-uri`: the application is told there when a
sign-in session ends (OpenID Connect Back-Channel Logout); the URI is checked as redirect
URIs are, and shown by `client show`."""

from __future__ import annotations

import json

from tests.unit.cli.conftest import TwofaCli

CALLBACK = "https://jira.example.com/plugins/servlet/oidc/callback"
BACKCHANNEL = "https://jira.example.com/plugins/servlet/oidc/backchannel-logout"


def test_add_keeps_the_backchannel_logout_uri_and_show_prints_it(cli: TwofaCli) -> None:
    cli.ok(
        "oidc", "client", "add", "Jira", "--redirect-uri", CALLBACK,
        "--backchannel-logout-uri", BACKCHANNEL,
    )  # fmt: skip
    shown = json.loads(cli.ok("oidc", "client", "show", "Jira").stdout)
    assert shown["backchannel_logout_uri"] == BACKCHANNEL
    cli.ok("oidc", "client", "add", "Wiki", "--redirect-uri", CALLBACK)
    assert (
        json.loads(cli.ok("oidc", "client", "show", "Wiki").stdout)["backchannel_logout_uri"]
        is None
    )


def test_a_backchannel_logout_uri_in_clear_off_loopback_is_refused(cli: TwofaCli) -> None:
    refused = cli(
        "oidc", "client", "add", "Jira", "--redirect-uri", CALLBACK,
        "--backchannel-logout-uri", "http://jira.example.com/backchannel",
    )  # fmt: skip
    assert refused.exit_code != 0
    assert "https" in refused.output
    assert json.loads(cli.ok("oidc", "client", "list", "--json").stdout) == []
